package credential

import (
	"bytes"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"math/big"
	"strings"
	"unsafe"
)

// Digest returns the SHA-256 of the secret's canonical form, the key to use
// for anything that must treat two spellings of one credential as one (a
// cache of verification results, counting a token's uses). It is over the
// secret's exact bytes, except for a compact JWS signed with ECDSA (ES256,
// ES384, ES512), whose signature is taken in its low-S form: (r, s) and
// (r, n-s) are both valid signatures of the same token, and anyone can turn
// one into the other without the key.
//
// Every other spelling of a token is refused by the verifier, never
// canonicalized here: non-canonical base64url (padding, characters outside
// the alphabet, non-zero unused bits in a part's last character) is
// malformed, so the exact bytes of a token that can be accepted are its
// canonical form. Two secrets with equal digests are therefore either both
// acceptable or both refused.
func (s Secret) Digest() [sha256.Size]byte {
	if s.v == "" {
		return digest("") // the zero Secret
	}
	return s.sum
}

// digest computes Digest. The string's bytes are passed to SHA-256 without
// a copy: Sum256 only reads them, and strings are immutable.
func digest(v string) [sha256.Size]byte {
	if canon, ok := lowSJWS(v); ok {
		v = canon
	}
	return sha256.Sum256(unsafe.Slice(unsafe.StringData(v), len(v)))
}

// Fingerprint returns a short, non-reversible identifier of the secret,
// "sha256:" followed by the first 12 hex digits of its Digest, or "" for an
// empty secret. It lets logs correlate requests without storing the secret;
// it is too short to be a cache key (use Digest).
func (s Secret) Fingerprint() string {
	if s.v == "" {
		return ""
	}
	sum := s.Digest()
	return "sha256:" + hex.EncodeToString(sum[:6])
}

// ecdsaCurve returns the curve of an ECDSA JWS algorithm, nil for others.
func ecdsaCurve(alg string) elliptic.Curve {
	switch alg {
	case "ES256":
		return elliptic.P256()
	case "ES384":
		return elliptic.P384()
	case "ES512":
		return elliptic.P521()
	}
	return nil
}

// lowSJWS returns v with its ECDSA signature in low-S form, when v is a
// compact JWS of canonical base64url parts whose header names an ECDSA
// algorithm and whose signature is R||S of that curve's size with S above
// half the group order. Otherwise ok is false and v is its own canonical
// form.
func lowSJWS(v string) (canon string, ok bool) {
	h, rest, found := strings.Cut(v, ".")
	if !found {
		return "", false
	}
	p, sig, found := strings.Cut(rest, ".")
	if !found || strings.Contains(sig, ".") {
		return "", false
	}
	// Cheap filter first: an ECDSA signature is 64, 96 or 132 bytes, and
	// its length names the curve.
	n := base64.RawURLEncoding.DecodedLen(len(sig))
	if len(sig) != base64.RawURLEncoding.EncodedLen(n) || len(h) > 4096 {
		return "", false
	}
	var curve elliptic.Curve
	switch n {
	case 64:
		curve = elliptic.P256()
	case 96:
		curve = elliptic.P384()
	case 132:
		curve = elliptic.P521()
	default:
		return "", false
	}
	var raw [132]byte
	if _, err := base64.RawURLEncoding.Strict().Decode(raw[:n], unsafe.Slice(unsafe.StringData(sig), len(sig))); err != nil {
		return "", false
	}
	order, size := curve.Params().N, n/2
	sv := new(big.Int).SetBytes(raw[size:n])
	half := new(big.Int).Rsh(order, 1)
	if sv.Cmp(half) <= 0 || sv.Cmp(order) >= 0 {
		// Already low-S (or not a valid S at all): whatever the algorithm,
		// the token is its own canonical form. Most tokens end here, before
		// their header is read.
		return "", false
	}
	// A high S: canonicalize only if the header names this curve's ECDSA.
	hb, err := base64.RawURLEncoding.Strict().DecodeString(h)
	if err != nil {
		return "", false
	}
	alg, ok := headerAlg(hb)
	if !ok || ecdsaCurve(alg) != curve {
		return "", false
	}
	sv.Sub(order, sv)
	low := make([]byte, n)
	copy(low, raw[:size])
	sv.FillBytes(low[size:])
	return h + "." + p + "." + base64.RawURLEncoding.EncodeToString(low), true
}

// headerAlg reads the alg member of a JOSE header the way the verifier does:
// the header is one JSON object, "alg" is matched exactly (after
// unescaping) and must be a string, and a header with two alg members or a
// case variant ("ALG") has none. encoding/json's Unmarshal would match
// "ALG" too, and could then see ES256 where the verifier sees EdDSA, so that
// an altered EdDSA signature would share a digest with the real one.
func headerAlg(b []byte) (string, bool) {
	dec := json.NewDecoder(bytes.NewReader(b))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return "", false
	}
	alg, found := "", false
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return "", false
		}
		key, _ := t.(string)
		switch {
		case key == "alg":
			if found {
				return "", false
			}
			v, err := dec.Token()
			if alg, found = v.(string); err != nil || !found {
				return "", false
			}
			continue
		case strings.EqualFold(key, "alg"):
			return "", false
		}
		var skip json.RawMessage
		if dec.Decode(&skip) != nil {
			return "", false
		}
	}
	if t, err := dec.Token(); err != nil || t != json.Delim('}') {
		return "", false
	}
	if _, err := dec.Token(); err != io.EOF {
		return "", false
	}
	return alg, found
}
