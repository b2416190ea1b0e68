package credential_test

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"math/big"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/pdp/credential"
)

var b64 = base64.RawURLEncoding

// signES signs header.payload with a fresh key of curve, returning the
// compact JWS and its signature's S.
func signES(t testing.TB, alg string, curve elliptic.Curve, payload string) (string, *big.Int) {
	t.Helper()
	key, err := ecdsa.GenerateKey(curve, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	input := b64.EncodeToString([]byte(`{"alg":"`+alg+`"}`)) + "." + b64.EncodeToString([]byte(payload))
	digest := sha256.Sum256([]byte(input)) // the hash does not matter here
	r, s, err := ecdsa.Sign(rand.Reader, key, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	size := (curve.Params().N.BitLen() + 7) / 8
	sig := make([]byte, 2*size)
	r.FillBytes(sig[:size])
	s.FillBytes(sig[size:])
	return input + "." + b64.EncodeToString(sig), s
}

// withS replaces the S half of tok's signature.
func withS(t testing.TB, tok string, curve elliptic.Curve, s *big.Int) string {
	t.Helper()
	i := strings.LastIndexByte(tok, '.')
	sig, err := b64.DecodeString(tok[i+1:])
	if err != nil {
		t.Fatal(err)
	}
	size := (curve.Params().N.BitLen() + 7) / 8
	s.FillBytes(sig[size:])
	return tok[:i+1] + b64.EncodeToString(sig)
}

// TestDigestOneTokenOneKey: an ECDSA-signed token and its (r, n-s) twin
// have one digest and one fingerprint, whichever of the two is low-S; the
// exact bytes are the canonical form of the low-S one.
func TestDigestOneTokenOneKey(t *testing.T) {
	curves := []struct {
		alg   string
		curve elliptic.Curve
	}{{"ES256", elliptic.P256()}, {"ES384", elliptic.P384()}, {"ES512", elliptic.P521()}}
	for _, c := range curves {
		n := c.curve.Params().N
		half := new(big.Int).Rsh(n, 1)
		seen := map[bool]bool{}
		for i := 0; i < 64 && len(seen) < 2; i++ {
			tok, s := signES(t, c.alg, c.curve, `{"sub":"alice"}`)
			twin := withS(t, tok, c.curve, new(big.Int).Sub(n, s))
			high := s.Cmp(half) > 0
			seen[high] = true
			a, b := credential.NewSecret(tok), credential.NewSecret(twin)
			if a.Digest() != b.Digest() || a.Fingerprint() != b.Fingerprint() {
				t.Fatalf("%s high=%v: digests differ", c.alg, high)
			}
			low := tok
			if high {
				low = twin
			}
			if a.Digest() != sha256.Sum256([]byte(low)) {
				t.Fatalf("%s high=%v: digest is not over the low-S spelling", c.alg, high)
			}
		}
		if len(seen) != 2 {
			t.Fatalf("%s: 64 signatures were all high-S or all low-S", c.alg)
		}
	}
}

// TestDigestExactBytes: everything that is not an ECDSA signature's S is
// hashed as it is. Non-canonical base64url is never folded into the
// canonical spelling (the verifier refuses it, so it must not share a
// cache entry with the token it imitates).
func TestDigestExactBytes(t *testing.T) {
	tok, s := signES(t, "ES256", elliptic.P256(), `{"sub":"alice"}`)
	n := elliptic.P256().Params().N
	if s.Cmp(new(big.Int).Rsh(n, 1)) > 0 {
		tok = withS(t, tok, elliptic.P256(), new(big.Int).Sub(n, s))
	}
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	last := strings.IndexByte(alphabet, tok[len(tok)-1])
	lowBit := tok[:len(tok)-1] + string(alphabet[last^1]) // 86 characters: 4 unused bits
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	edInput := b64.EncodeToString([]byte(`{"alg":"EdDSA"}`)) + "." + b64.EncodeToString([]byte(`{}`))
	edTok := edInput + "." + b64.EncodeToString(ed25519.Sign(edKey, []byte(edInput)))
	values := []string{
		tok,
		tok + "=",          // padding
		lowBit,             // an unused bit set
		"Bearer " + tok,    // not a token at all
		tok + ".x",         // four parts
		edTok,              // EdDSA: 64-byte signature, not ECDSA
		"k_live_abc.def.g", // an API key with dots
		"plain-api-key",
		strings.Repeat("a", 20000),
	}
	digests := map[[32]byte]string{}
	for _, v := range values {
		d := credential.NewSecret(v).Digest()
		if d != sha256.Sum256([]byte(v)) {
			t.Errorf("%.40q: digest is not over the exact bytes", v)
		}
		if prev, dup := digests[d]; dup {
			t.Errorf("%.40q and %.40q share a digest", v, prev)
		}
		digests[d] = v
	}
}

// TestDigestHighSOutOfRange: an S at or above the group order is not a
// signature; it is hashed as it is, never "normalized" into a valid one.
func TestDigestHighSOutOfRange(t *testing.T) {
	curve := elliptic.P256()
	n := curve.Params().N
	tok, _ := signES(t, "ES256", curve, `{}`)
	for _, s := range []*big.Int{new(big.Int).Set(n), new(big.Int).Add(n, big.NewInt(1)), new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 256), big.NewInt(1))} {
		bad := withS(t, tok, curve, s)
		if credential.NewSecret(bad).Digest() != sha256.Sum256([]byte(bad)) {
			t.Errorf("S=%x: digest is not over the exact bytes", s)
		}
	}
}

// TestFingerprintShape: "sha256:" and 12 hex digits of the digest.
func TestFingerprintShape(t *testing.T) {
	s := credential.NewSecret("some-key")
	d := s.Digest()
	if got, want := s.Fingerprint(), "sha256:"+hex.EncodeToString(d[:6]); got != want {
		t.Fatalf("fingerprint = %q, want %q", got, want)
	}
	if credential.NewSecret("").Fingerprint() != "" {
		t.Fatal("empty secret must have no fingerprint")
	}
}

// FuzzDigest: any value has a digest and a fingerprint of the right shape,
// the same on every call, without panicking on malformed JWS.
func FuzzDigest(f *testing.F) {
	f.Add("a.b.c")
	f.Add(b64.EncodeToString([]byte(`{"alg":"ES256"}`)) + ".e30." + strings.Repeat("_", 86))
	f.Add(b64.EncodeToString([]byte(`{"alg":"ES512"}`)) + ".e30." + strings.Repeat("A", 175) + "_")
	f.Fuzz(func(t *testing.T, v string) {
		s := credential.NewSecret(v)
		d1, d2 := s.Digest(), credential.NewSecret(strings.Clone(v)).Digest()
		if d1 != d2 || (v != "" && len(s.Fingerprint()) != len("sha256:")+12) {
			t.Fatal("unstable digest or bad fingerprint")
		}
	})
}

func BenchmarkFingerprint(b *testing.B) {
	es, s := signES(b, "ES256", elliptic.P256(), `{"sub":"alice","exp":1900000000}`)
	n := elliptic.P256().Params().N
	high := es
	if s.Cmp(new(big.Int).Rsh(n, 1)) <= 0 {
		high = withS(b, es, elliptic.P256(), new(big.Int).Sub(n, s))
	}
	rs := b64.EncodeToString([]byte(`{"alg":"RS256"}`)) + "." + b64.EncodeToString([]byte(`{"sub":"alice"}`)) + "." + strings.Repeat("A", 342)
	for name, v := range map[string]string{"RS256": rs, "ES256 high-S": high, "API key": "tgk_abcdefghijkl_" + strings.Repeat("x", 43)} {
		b.Run(name, func(b *testing.B) {
			s := credential.NewSecret(v)
			for b.Loop() {
				_ = s.Fingerprint()
			}
		})
	}
}

// TestDigestReadsAlgLikeTheVerifier: the S of a 64-byte signature is
// normalized only when the header's alg, read exactly as the verifier reads
// it, is ES256. A header the verifier would read as EdDSA (or refuse) never
// lets an altered signature share the digest of the real one.
func TestDigestReadsAlgLikeTheVerifier(t *testing.T) {
	n := elliptic.P256().Params().N
	sig := make([]byte, 64)
	sig[0] = 1                                             // r
	new(big.Int).Sub(n, big.NewInt(5)).FillBytes(sig[32:]) // a high S
	cases := []struct {
		header     string
		normalized bool
	}{
		{`{"alg":"ES256"}`, true},
		{`{"typ":"JWT","alg":"ES256","kid":"k"}`, true},
		{`{"\u0061lg":"ES256"}`, true}, // the verifier unescapes names too
		{`{"alg":"ES256","x":{"alg":"EdDSA","ALG":1}}`, true},
		{`{"alg":"EdDSA"}`, false},
		{`{"alg":"EdDSA","ALG":"ES256"}`, false},
		{`{"ALG":"ES256"}`, false},
		{`{"Alg":"ES256","alg":"ES256"}`, false},
		{`{"alg":"ES256","alg":"ES256"}`, false},
		{`{"alg":"ES384"}`, false}, // 64 bytes is not an ES384 signature
		{`{"alg":["ES256"]}`, false},
		{`{"alg":"ES256"} {}`, false},
		{`{"alg":"ES256"`, false},
		{`["alg","ES256"]`, false},
	}
	for _, tc := range cases {
		tok := b64.EncodeToString([]byte(tc.header)) + ".e30." + b64.EncodeToString(sig)
		raw := sha256.Sum256([]byte(tok))
		if got := credential.NewSecret(tok).Digest() != raw; got != tc.normalized {
			t.Errorf("%s: normalized = %v, want %v", tc.header, got, tc.normalized)
		}
	}
}
