package e2e

import (
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/pdp/authn/authntest"
)

// customerClaims are the claims that GET /customers/42 allows; every bad
// token below carries them, so only what makes it bad can deny it.
func customerClaims(is *authntest.Issuer) map[string]any {
	c := is.Claims("alice")
	c["customer_number"] = "42"
	c["scope"] = "customers:read"
	return c
}

// badToken is a token the verifier must reject: 401 credential_invalid, with
// the authenticator's rejection code (one of errs) as the second reason.
type badToken struct {
	name  string
	token string
	errs  []string
}

// badTokens forges them with the test issuer; other is a second, real
// issuer that tollgate is not configured to trust.
func badTokens(e *env, other *authntest.Issuer) []badToken {
	is := e.issuer
	now := time.Now()
	with := func(change func(c map[string]any)) map[string]any {
		c := customerClaims(is)
		change(c)
		return c
	}
	good := is.Mint(customerClaims(is))
	e.secret(good)
	foreign := customerClaims(other) // iss is the other issuer
	spoofedIss := customerClaims(is) // iss is ours, the key the other's
	long := strings.Repeat("a", 9000)
	return []badToken{
		{"alg none", is.ForgeNone(customerClaims(is)), []string{"algorithm_not_allowed", "malformed"}},
		{"HS256 with the RSA public key as PEM secret", is.ForgeHS256PEM(customerClaims(is)), []string{"algorithm_not_allowed"}},
		{"HS256 with the RSA public key as DER secret", is.ForgeHS256DER(customerClaims(is)), []string{"algorithm_not_allowed"}},
		{"expired", is.Mint(with(func(c map[string]any) {
			c["iat"], c["nbf"], c["exp"] = now.Add(-2*time.Hour).Unix(), now.Add(-2*time.Hour).Unix(), now.Add(-time.Hour).Unix()
		})), []string{"expired"}},
		{"not yet valid (nbf)", is.Mint(with(func(c map[string]any) {
			c["nbf"], c["exp"] = now.Add(time.Hour).Unix(), now.Add(2*time.Hour).Unix()
		})), []string{"not_yet_valid"}},
		{"issued in the future (iat)", is.Mint(with(func(c map[string]any) {
			c["iat"], c["exp"] = now.Add(time.Hour).Unix(), now.Add(2*time.Hour).Unix()
		})), []string{"not_yet_valid"}},
		{"no exp", is.Mint(with(func(c map[string]any) { delete(c, "exp") })), []string{"missing_exp"}},
		{"issuer not configured", other.Mint(foreign), []string{"unknown_issuer"}},
		{"our iss signed with another issuer's key", other.Mint(spoofedIss), []string{"bad_signature"}},
		{"wrong audience", is.Mint(with(func(c map[string]any) { c["aud"] = "billing-api" })), []string{"audience_mismatch"}},
		{"unknown kid", is.MintUnknownKey(customerClaims(is)), []string{"unknown_key"}},
		{"kid of the EC key on an RSA signature", is.Mint(customerClaims(is), authntest.WithKid(authntest.KeyIDEC)), []string{"bad_signature", "algorithm_not_allowed", "unknown_key"}},
		{"tampered payload", authntest.Tamper(good, func(c map[string]any) { c["customer_number"] = "43" }), []string{"bad_signature"}},
		{"tampered subject", authntest.Tamper(good, func(c map[string]any) { c["sub"] = "mallory" }), []string{"bad_signature"}},
		{"PS256, not in the allow-list", is.Mint(customerClaims(is), authntest.WithAlg("PS256")), []string{"algorithm_not_allowed"}},
		{"ES384, not in the allow-list", is.Mint(customerClaims(is), authntest.WithAlg("ES384")), []string{"algorithm_not_allowed"}},
		{"EdDSA, not in the allow-list", is.Mint(customerClaims(is), authntest.WithAlg("EdDSA")), []string{"algorithm_not_allowed"}},
		{"duplicate sub claim", is.MintRaw([]byte(`{"iss":"` + is.URL() + `","aud":"orders-api","sub":"mallory","sub":"alice",` +
			`"customer_number":"42","scope":"customers:read","iat":` + itoa(now.Unix()) + `,"exp":` + itoa(now.Add(time.Hour).Unix()) + `}`)),
			[]string{"duplicate_claim"}},
		{"header respelled (non-canonical base64url)", respell(good, 0), []string{"malformed"}},
		{"payload respelled (non-canonical base64url)", respell(good, 1), []string{"malformed"}},
		{"signature respelled (non-canonical base64url)", respell(good, 2), []string{"malformed"}},
		{"signature with base64 padding", good + "==", []string{"malformed"}},
		{"signature ending in '/' (standard alphabet)", good[:len(good)-1] + "/", []string{"malformed"}},
		{"JWS JSON serialization", is.MintJSON(customerClaims(is)), []string{"malformed"}},
		{"two parts", "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9", []string{"malformed"}},
		{"three garbage parts", "not.a.jwt", []string{"malformed"}},
		{"not base64", "!!!.???.***", []string{"malformed"}},
		{"header only", "eyJhbGciOiJSUzI1NiJ9..", []string{"malformed", "algorithm_not_allowed", "unknown_key", "bad_signature"}},
		{"too large", "eyJhbGciOiJSUzI1NiJ9." + long + "." + long, []string{"too_large"}},
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// testBadTokens sends every bad token as a bearer header to GET
// /customers/42, after checking that a good token with the same claims is
// allowed.
func testBadTokens(t *testing.T, e *env) {
	other := authntest.NewIssuer(t)
	ask := func(t *testing.T, token string) decisionResponse {
		t.Helper()
		return e.decide(t, e.tg, decisionRequest{
			Method:  http.MethodGet,
			Path:    "/customers/42",
			Headers: map[string][]string{"Authorization": {"Bearer " + token}},
		})
	}
	t.Run("control: good token is allowed", func(t *testing.T) {
		if d := ask(t, e.mint("alice", map[string]any{"customer_number": "42", "scope": "customers:read"})); !d.Allow {
			t.Fatalf("good token denied: %d %q", d.Status, d.Reasons)
		}
	})
	for _, bt := range badTokens(e, other) {
		e.secret(bt.token)
		t.Run(bt.name, func(t *testing.T) {
			d := ask(t, bt.token)
			if d.Allow || d.Status != http.StatusUnauthorized || len(d.Reasons) == 0 || d.Reasons[0] != "credential_invalid" {
				t.Fatalf("got allow=%v status=%d reasons=%q, want 401 [credential_invalid …]", d.Allow, d.Status, d.Reasons)
			}
			if len(d.Reasons) != 2 || !slices.Contains(bt.errs, d.Reasons[1]) {
				t.Errorf("reasons %q, want [credential_invalid X] with X one of %q", d.Reasons, bt.errs)
			}
		})
	}
}
