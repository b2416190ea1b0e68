package authntest_test

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/tollgate/tollgate/pdp/authn/authntest"
)

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatal(err)
	}
}

func fetchKeys(t *testing.T, is *authntest.Issuer) jose.JSONWebKeySet {
	t.Helper()
	var set jose.JSONWebKeySet
	getJSON(t, is.JWKSURL(), &set)
	return set
}

func TestDiscoveryAndJWKS(t *testing.T) {
	is := authntest.NewIssuer(t)
	var doc struct {
		Issuer  string   `json:"issuer"`
		JWKSURI string   `json:"jwks_uri"`
		Algs    []string `json:"id_token_signing_alg_values_supported"`
	}
	getJSON(t, is.URL()+"/.well-known/openid-configuration", &doc)
	if doc.Issuer != is.URL() || doc.JWKSURI != is.JWKSURL() || len(doc.Algs) != 2 {
		t.Fatalf("discovery = %+v", doc)
	}
	set := fetchKeys(t, is)
	if len(set.Keys) != 2 || set.Keys[0].KeyID != authntest.KeyIDRSA || set.Keys[1].KeyID != authntest.KeyIDEC {
		t.Fatalf("keys = %+v", set.Keys)
	}
	for _, k := range set.Keys {
		if !k.IsPublic() {
			t.Fatalf("key %s is not public", k.KeyID)
		}
	}
	if got := is.JWKSFetches(); got != 1 {
		t.Fatalf("JWKSFetches = %d, want 1", got)
	}
}

func TestMintVerifiesAgainstJWKS(t *testing.T) {
	is := authntest.NewIssuer(t)
	set := fetchKeys(t, is)
	for _, alg := range []string{"RS256", "ES256", "PS256"} {
		tok := is.Mint(is.Claims("alice"), authntest.WithAlg(alg), authntest.WithType("at+jwt"))
		jws, err := jose.ParseSignedCompact(tok, []jose.SignatureAlgorithm{jose.SignatureAlgorithm(alg)})
		if err != nil {
			t.Fatalf("%s: %v", alg, err)
		}
		h := jws.Signatures[0].Header
		if h.ExtraHeaders["typ"] != "at+jwt" {
			t.Fatalf("%s: typ = %v", alg, h.ExtraHeaders["typ"])
		}
		keys := set.Key(h.KeyID)
		if len(keys) != 1 {
			t.Fatalf("%s: kid %q not published", alg, h.KeyID)
		}
		payload, err := jws.Verify(keys[0])
		if err != nil {
			t.Fatalf("%s: %v", alg, err)
		}
		var c map[string]any
		if err := json.Unmarshal(payload, &c); err != nil || c["sub"] != "alice" || c["aud"] != authntest.Audience || c["iss"] != is.URL() {
			t.Fatalf("%s: claims %v, %v", alg, c, err)
		}
	}
}

func TestRotateAndRemoveKey(t *testing.T) {
	is := authntest.NewIssuer(t)
	k := is.Rotate()
	if k.ID != "rsa-2" || is.SigningKey() != k {
		t.Fatalf("Rotate = %q, signing %q", k.ID, is.SigningKey().ID)
	}
	if got := len(fetchKeys(t, is).Keys); got != 3 {
		t.Fatalf("after Rotate: %d keys", got)
	}
	is.RemoveKey(authntest.KeyIDRSA)
	set := fetchKeys(t, is)
	if len(set.Keys) != 2 || len(set.Key(authntest.KeyIDRSA)) != 0 {
		t.Fatalf("after RemoveKey: %+v", set.Keys)
	}
	if is.JWKSFetches() != 2 {
		t.Fatalf("JWKSFetches = %d", is.JWKSFetches())
	}
}

func header(t *testing.T, tok string) map[string]any {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[0])
	if err != nil {
		t.Fatal(err)
	}
	var h map[string]any
	if err := json.Unmarshal(b, &h); err != nil {
		t.Fatal(err)
	}
	return h
}

func TestForgeries(t *testing.T) {
	is := authntest.NewIssuer(t)
	c := is.Claims("mallory")

	if tok := is.ForgeNone(c); !strings.HasSuffix(tok, ".") || header(t, tok)["alg"] != "none" {
		t.Fatalf("ForgeNone = %q", tok)
	}
	for _, tok := range []string{is.ForgeHS256PEM(c), is.ForgeHS256DER(c)} {
		if h := header(t, tok); h["alg"] != "HS256" || h["kid"] != authntest.KeyIDRSA {
			t.Fatalf("HS256 header = %v", h)
		}
	}
	if tok := is.MintJSON(c); !strings.HasPrefix(tok, "{") {
		t.Fatalf("MintJSON = %q", tok)
	}
	if h := header(t, is.MintUnknownKey(c)); h["kid"] != "unknown-1" {
		t.Fatalf("MintUnknownKey header = %v", h)
	}
	if h := header(t, is.Mint(c, authntest.WithoutKid())); h["kid"] != nil {
		t.Fatalf("WithoutKid header = %v", h)
	}

	tok := is.Mint(c)
	tampered := authntest.Tamper(tok, func(m map[string]any) { m["sub"] = "admin" })
	tp, pp := strings.Split(tok, "."), strings.Split(tampered, ".")
	if tp[0] != pp[0] || tp[2] != pp[2] || tp[1] == pp[1] {
		t.Fatal("Tamper must change only the payload")
	}
	set := fetchKeys(t, is)
	jws, err := jose.ParseSignedCompact(tampered, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jws.Verify(set.Key(authntest.KeyIDRSA)[0]); err == nil {
		t.Fatal("tampered token verifies")
	}
}

func TestJWKSOverrides(t *testing.T) {
	is := authntest.NewIssuer(t)
	is.SetJWKSResponse(http.StatusServiceUnavailable, []byte("down"))
	resp, err := http.Get(is.JWKSURL())
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || string(body) != "down" {
		t.Fatalf("override: %s %q", resp.Status, body)
	}
	is.ResetJWKS()
	if len(fetchKeys(t, is).Keys) != 2 {
		t.Fatal("ResetJWKS did not restore the key set")
	}
	is.Close()
	if _, err := http.Get(is.JWKSURL()); err == nil {
		t.Fatal("server still answers after Close")
	}
}

func TestMintWithAnAlgNoPublishedKeyFits(t *testing.T) {
	is := authntest.NewIssuer(t)
	for _, alg := range []string{"ES384", "ES512", "EdDSA"} {
		tok := is.Mint(is.Claims("alice"), authntest.WithAlg(alg))
		h := header(t, tok)
		if h["alg"] != alg || h["kid"] != "unpublished-"+alg {
			t.Fatalf("%s: header %v", alg, h)
		}
		if again := header(t, is.Mint(is.Claims("bob"), authntest.WithAlg(alg))); again["kid"] != h["kid"] {
			t.Fatalf("%s: a second unpublished key", alg)
		}
		if set := fetchKeys(t, is); len(set.Key("unpublished-"+alg)) != 0 {
			t.Fatalf("%s: unpublished key is in the JWKS", alg)
		}
		k := is.AddKey(alg)
		if h := header(t, is.Mint(is.Claims("alice"), authntest.WithAlg(alg))); h["kid"] != k.ID {
			t.Fatalf("%s: after AddKey, kid %v, want %s", alg, h["kid"], k.ID)
		}
	}
}
