// Package apikey verifies API keys against a file of key hashes.
//
// # Keys
//
// A key is the 60-character string
//
//	tgk_<id>_<secret>
//
// where <id> is 12 characters of lower-case RFC 4648 base32 (a–z, 2–7)
// carrying 60 random bits, and <secret> is 32 random bytes (256 bits) in
// unpadded base64url (43 characters). The id is public: it names the key in
// the key file, in `tollgate apikey list` and in the policy input
// (identity.key_id). Ids only need to be unique within one file, which Add
// checks; 60 bits make a collision practically impossible anyway. The secret
// may itself contain "_", so a key is parsed by position, never by splitting.
//
// # Storage
//
// The key file holds only "sha256:" + hex(SHA-256(key)), never the key.
// A fast hash is the right choice here, unlike for passwords: a key carries
// 256 bits chosen by crypto/rand, so there is nothing for a slow, salted hash
// (bcrypt, argon2) to protect against — brute-forcing 2^256 candidates is out
// of reach at any hashing speed — and a fast hash keeps verification cheap on
// every request. See LoadFile for the file format.
//
// # Verification
//
// Authenticator checks a presented key in this order: size (ReasonTooLarge),
// format (ReasonMalformed, without any lookup), then id lookup and a
// constant-time comparison of the hashes. An unknown id and a wrong secret
// give the same outcome (ReasonInvalid), and the comparison runs against a
// dummy digest when the id is unknown, so neither the outcome nor the timing
// tells a caller which ids exist. Only once the secret has matched are
// revocation (ReasonRevoked) and expiry (ReasonExpired) reported.
//
// Nothing in this package logs, and no error or outcome carries a raw key.
package apikey

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/tollgate/tollgate/pdp/credential"
)

// Key format constants.
const (
	// Prefix starts every key; it lets secret scanners recognise leaked keys.
	Prefix = "tgk_"
	// IDLen is the length of a key id: 12 base32 characters, 60 bits.
	IDLen = 12
	// SecretLen is the length of a key's secret part: 32 bytes in unpadded
	// base64url.
	SecretLen = 43
	// KeyLen is the length of a whole key.
	KeyLen = len(Prefix) + IDLen + 1 + SecretLen
	// MaxPresentedLen is the largest credential Authenticate examines;
	// anything longer is rejected with authn.ReasonTooLarge before parsing.
	MaxPresentedLen = 256

	// HashPrefix starts every stored hash.
	HashPrefix = "sha256:"

	idRandomBytes     = 8 // base32 gives 13 characters; the first 12 (60 bits) are kept
	secretRandomBytes = 32
)

// ErrMalformedKey reports a string that is not a well-formed key. It never
// carries the string itself.
var ErrMalformedKey = errors.New("apikey: malformed key")

// Generated is a freshly generated key: the key to hand to its owner once,
// and the id and hash the key file keeps.
type Generated struct {
	// Key is the whole key, tgk_<id>_<secret>. It prints as "[redacted]";
	// call Key.Reveal() to show it to its owner, once.
	Key credential.Secret
	// ID is the key's public id.
	ID string
	// Hash is the value the key file stores: "sha256:" + hex(SHA-256(key)).
	Hash string
}

// Generate creates a new key from r, or from crypto/rand when r is nil.
// Pass a deterministic reader only in tests.
func Generate(r io.Reader) (Generated, error) {
	if r == nil {
		r = rand.Reader
	}
	var buf [idRandomBytes + secretRandomBytes]byte
	defer clear(buf[:])
	if _, err := io.ReadFull(r, buf[:]); err != nil {
		return Generated{}, fmt.Errorf("apikey: generate: reading randomness: %w", err)
	}
	id := strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(buf[:idRandomBytes]))[:IDLen]
	secret := base64.RawURLEncoding.EncodeToString(buf[idRandomBytes:])
	key := credential.NewSecret(Prefix + id + "_" + secret)
	return Generated{Key: key, ID: id, Hash: HashKey(key)}, nil
}

// HashKey returns the stored form of a key: "sha256:" + hex(SHA-256(key)).
func HashKey(key credential.Secret) string {
	sum := sha256.Sum256([]byte(key.Reveal()))
	return HashPrefix + hex.EncodeToString(sum[:])
}

// KeyID returns the id of a well-formed key, or ErrMalformedKey. It checks
// the format only; it says nothing about whether the key is valid.
func KeyID(key string) (string, error) {
	id, ok := parseKey(key)
	if !ok {
		return "", ErrMalformedKey
	}
	return id, nil
}

// ValidID reports whether id has the form of a key id.
func ValidID(id string) bool {
	if len(id) != IDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if (c < 'a' || c > 'z') && (c < '2' || c > '7') {
			return false
		}
	}
	return true
}

// parseKey checks the whole format of key and returns its id.
func parseKey(key string) (id string, ok bool) {
	if len(key) != KeyLen || !strings.HasPrefix(key, Prefix) {
		return "", false
	}
	id = key[len(Prefix) : len(Prefix)+IDLen]
	if !ValidID(id) || key[len(Prefix)+IDLen] != '_' {
		return "", false
	}
	secret := key[len(Prefix)+IDLen+1:]
	for i := 0; i < len(secret); i++ {
		if !isBase64URL(secret[i]) {
			return "", false
		}
	}
	return id, true
}

func isBase64URL(c byte) bool {
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_'
}

// parseHash decodes a stored hash into its digest.
func parseHash(h string) (digest [sha256.Size]byte, ok bool) {
	hx, found := strings.CutPrefix(h, HashPrefix)
	if !found || len(hx) != 2*sha256.Size {
		return digest, false
	}
	for i := 0; i < len(hx); i++ {
		c := hx[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') { // lower case only: one spelling per hash
			return digest, false
		}
	}
	if _, err := hex.Decode(digest[:], []byte(hx)); err != nil {
		return digest, false
	}
	return digest, true
}
