package oidcjwt_test

import (
	"crypto/elliptic"
	"encoding/base64"
	"math/big"
	"slices"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/pdp/authn"
	"github.com/tollgate/tollgate/pdp/authn/authntest"
	"github.com/tollgate/tollgate/pdp/authn/oidcjwt"
	"github.com/tollgate/tollgate/pdp/credential"
)

// allAlgs are the signature algorithms the verifier supports.
var allAlgs = []string{"RS256", "PS256", "ES256", "ES384", "ES512", "EdDSA"}

// newAllAlgsFixture trusts one issuer with every supported algorithm and
// returns, per algorithm, a published key to sign with.
func newAllAlgsFixture(t *testing.T) (*fixture, map[string]*authntest.Key) {
	t.Helper()
	f := newFixture(t, func(cfg *oidcjwt.Config) { cfg.Issuers[0].Algorithms = allAlgs })
	keys := map[string]*authntest.Key{"RS256": f.iss.SigningKey(), "ES256": f.iss.Key(authntest.KeyIDEC)}
	for _, alg := range allAlgs {
		if keys[alg] == nil {
			keys[alg] = f.iss.AddKey(alg)
		}
	}
	return f, keys
}

// unusedBits reports how many low bits of a base64url part's last character
// encode nothing (0, 2 or 4).
func unusedBits(part string) int {
	switch len(part) % 4 {
	case 2:
		return 4
	case 3:
		return 2
	}
	return 0
}

// flipLowBit returns part with the lowest (unused) bit of its last
// character set: the same bytes, another spelling.
func flipLowBit(part string) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	i := strings.IndexByte(alphabet, part[len(part)-1])
	return part[:len(part)-1] + string(alphabet[i^1])
}

// mintWithUnusedBits mints a token for alg whose header and payload both
// have unused bits in their last character, by padding them with a member
// of the right length.
func mintWithUnusedBits(t *testing.T, f *fixture, key *authntest.Key) string {
	t.Helper()
	for hpad := 0; hpad < 3; hpad++ {
		for ppad := 0; ppad < 3; ppad++ {
			c := f.claims(func(c map[string]any) { c["pad"] = strings.Repeat("p", ppad) })
			tok := f.iss.Mint(c, authntest.WithKey(key), authntest.WithHeader("x-pad", strings.Repeat("h", hpad)))
			parts := strings.Split(tok, ".")
			if unusedBits(parts[0]) > 0 && unusedBits(parts[1]) > 0 {
				return tok
			}
		}
	}
	t.Fatal("no padding gives both parts unused bits")
	return ""
}

// TestNonCanonicalBase64Refused: one token has one spelling. Every other
// spelling of any of its three parts (a set unused bit, padding, the
// standard alphabet, whitespace) is refused as malformed, for every
// algorithm, though the decoded bytes and so the signature are the same.
func TestNonCanonicalBase64Refused(t *testing.T) {
	f, keys := newAllAlgsFixture(t)
	segments := []string{"header", "payload", "signature"}
	variants := []struct {
		name string
		edit func(part string) (string, bool)
	}{
		{"unused low bit set", func(p string) (string, bool) { return flipLowBit(p), unusedBits(p) > 0 }},
		{"padding", func(p string) (string, bool) {
			return p + strings.Repeat("=", (4-len(p)%4)%4), len(p)%4 != 0
		}},
		{"extra padding", func(p string) (string, bool) { return p + "==", true }},
		{"standard alphabet", func(p string) (string, bool) {
			r := strings.NewReplacer("-", "+", "_", "/").Replace(p)
			return r, r != p
		}},
		{"trailing space", func(p string) (string, bool) { return p + " ", true }},
		{"inner newline", func(p string) (string, bool) { return p[:4] + "\n" + p[4:], true }},
		{"trailing NBSP", func(p string) (string, bool) { return p + "\u00a0", true }},
	}
	for _, alg := range allAlgs {
		tok := mintWithUnusedBits(t, f, keys[alg])
		t.Run(alg+"/control", func(t *testing.T) { f.mustAccept(t, tok) })
		for i, seg := range segments {
			for _, v := range variants {
				parts := strings.Split(tok, ".")
				edited, ok := v.edit(parts[i])
				if !ok {
					continue // e.g. an ES384 signature (96 bytes) has no unused bits
				}
				parts[i] = edited
				bad := strings.Join(parts, ".")
				t.Run(alg+"/"+seg+"/"+v.name, func(t *testing.T) {
					if bad == tok {
						t.Fatal("variant equals the token")
					}
					f.mustReject(t, bad, authn.ReasonMalformed)
				})
			}
		}
	}
}

// TestUnusedBitVariantsExist guards the table above: the low-bit variant
// decodes, with the lenient decoder go-jose uses, to the very same bytes, so
// only the canonical-encoding check refuses it.
func TestUnusedBitVariantsExist(t *testing.T) {
	f, keys := newAllAlgsFixture(t)
	signatures := 0
	for _, alg := range allAlgs {
		tok := mintWithUnusedBits(t, f, keys[alg])
		for i, part := range strings.Split(tok, ".") {
			if unusedBits(part) == 0 {
				if i < 2 {
					t.Fatalf("%s: part %d has no unused bits", alg, i)
				}
				continue
			}
			if i == 2 {
				signatures++
			}
			a, errA := base64.RawURLEncoding.DecodeString(part)
			b, errB := base64.RawURLEncoding.DecodeString(flipLowBit(part))
			if errA != nil || errB != nil || string(a) != string(b) {
				t.Fatalf("%s part %d: lenient decoding differs (%v, %v)", alg, i, errA, errB)
			}
		}
	}
	if signatures < 4 { // RS256, PS256, ES256, EdDSA
		t.Fatalf("only %d signatures with unused bits", signatures)
	}
}

// otherS returns tok with its ECDSA signature (r, s) replaced by (r, n-s),
// which verifies just as well.
func otherS(t *testing.T, tok string, curve elliptic.Curve) string {
	t.Helper()
	parts := strings.Split(tok, ".")
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		t.Fatal(err)
	}
	n := curve.Params().N
	size := (n.BitLen() + 7) / 8
	if len(sig) != 2*size {
		t.Fatalf("signature of %d bytes, want %d", len(sig), 2*size)
	}
	s := new(big.Int).SetBytes(sig[size:])
	s.Sub(n, s)
	s.FillBytes(sig[size:])
	parts[2] = base64.RawURLEncoding.EncodeToString(sig)
	return strings.Join(parts, ".")
}

// TestHighSSignatureIsTheSameToken: (r, s) and (r, n-s) both verify (RFC
// 7518 does not require low S, and most ECDSA signers, Go's and Java's
// among them, produce high S half the time, so refusing it would refuse
// half of an ES issuer's tokens). Both spellings are accepted as the same
// identity, and have one fingerprint and one digest, so logs and caches see
// one token.
func TestHighSSignatureIsTheSameToken(t *testing.T) {
	f, keys := newAllAlgsFixture(t)
	curves := map[string]elliptic.Curve{"ES256": elliptic.P256(), "ES384": elliptic.P384(), "ES512": elliptic.P521()}
	for alg, curve := range curves {
		for i := range 4 { // different signatures: some low-S, some high-S
			tok := f.iss.Mint(f.claims(func(c map[string]any) { c["n"] = i }), authntest.WithKey(keys[alg]))
			other := otherS(t, tok, curve)
			t.Run(alg, func(t *testing.T) {
				a, b := f.mustAccept(t, tok), f.mustAccept(t, other)
				if a.Subject != b.Subject || a.Claims["n"] != b.Claims["n"] {
					t.Fatalf("identities differ: %+v / %+v", a, b)
				}
				sa, sb := credential.NewSecret(tok), credential.NewSecret(other)
				if sa.Fingerprint() != sb.Fingerprint() || sa.Digest() != sb.Digest() {
					t.Fatalf("fingerprints differ: %s / %s", sa.Fingerprint(), sb.Fingerprint())
				}
				// A different token still has a different fingerprint.
				if sa.Fingerprint() == credential.NewSecret(f.iss.Mint(f.claims(nil), authntest.WithKey(keys[alg]))).Fingerprint() {
					t.Fatal("two tokens share a fingerprint")
				}
			})
		}
	}
}

// TestScopesSplitOnSpaceOnly: scope tokens are separated by U+0020 alone
// (RFC 6749 section 3.3). Any other whitespace is part of a token, so it
// cannot make a scope appear.
func TestScopesSplitOnSpaceOnly(t *testing.T) {
	f := newFixture(t, nil)
	cases := []struct {
		name   string
		claims map[string]any
		want   []string
	}{
		{"space", map[string]any{"scope": "openid customers:read"}, []string{"openid", "customers:read"}},
		{"NBSP", map[string]any{"scope": "openid\u00a0customers:read"}, []string{"openid\u00a0customers:read"}},
		{"tab", map[string]any{"scope": "openid\tcustomers:read"}, []string{"openid\tcustomers:read"}},
		{"newline", map[string]any{"scope": "openid\ncustomers:read"}, []string{"openid\ncustomers:read"}},
		{"carriage return", map[string]any{"scope": "openid\r\ncustomers:read"}, []string{"openid\r\ncustomers:read"}},
		{"em space U+2003", map[string]any{"scope": "openid\u2003customers:read"}, []string{"openid\u2003customers:read"}},
		{"ideographic space U+3000", map[string]any{"scope": "openid\u3000customers:read"}, []string{"openid\u3000customers:read"}},
		{"next line U+0085", map[string]any{"scope": "openid\u0085customers:read"}, []string{"openid\u0085customers:read"}},
		{"vertical tab and form feed", map[string]any{"scope": "a\vb\fcustomers:read"}, []string{"a\vb\fcustomers:read"}},
		{"leading, trailing and repeated spaces", map[string]any{"scope": "  openid   customers:read  "}, []string{"openid", "customers:read"}},
		{"only spaces", map[string]any{"scope": "   "}, nil},
		{"duplicates", map[string]any{"scope": "a a b a"}, []string{"a", "b"}},
		{"scp string", map[string]any{"scp": "openid customers:read"}, []string{"openid", "customers:read"}},
		{"scp string with NBSP", map[string]any{"scp": "openid\u00a0customers:read"}, []string{"openid\u00a0customers:read"}},
		{"scp string with U+3000", map[string]any{"scp": "x\u3000customers:read "}, []string{"x\u3000customers:read"}},
		{"scp list", map[string]any{"scp": []any{"openid", "customers:read"}}, []string{"openid", "customers:read"}},
		{"scp list members are whole", map[string]any{"scp": []any{"openid customers:read", "x\u00a0y", ""}}, []string{"openid customers:read", "x\u00a0y"}},
		{"scope and scp merged", map[string]any{"scope": "a b", "scp": []any{"b", "c"}}, []string{"a", "b", "c"}},
		{"scope not a string", map[string]any{"scope": []any{"customers:read"}}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			id := f.mustAccept(t, f.iss.Mint(f.claims(func(c map[string]any) {
				for k, v := range tc.claims {
					c[k] = v
				}
			})))
			if !slices.Equal(id.Scopes, tc.want) {
				t.Fatalf("scopes = %q, want %q", id.Scopes, tc.want)
			}
		})
	}
}
