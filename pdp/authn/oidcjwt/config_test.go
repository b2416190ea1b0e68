package oidcjwt_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"

	"github.com/tollgate/tollgate/pdp/authn"
	"github.com/tollgate/tollgate/pdp/authn/authntest"
	"github.com/tollgate/tollgate/pdp/authn/oidcjwt"
)

func TestConfigValidation(t *testing.T) {
	const idp = "https://idp.example.com/"
	ok := func() oidcjwt.IssuerConfig {
		return oidcjwt.IssuerConfig{Issuer: idp, Audiences: []string{"orders-api"}}
	}
	with := func(edit func(*oidcjwt.IssuerConfig)) []oidcjwt.IssuerConfig {
		ic := ok()
		edit(&ic)
		return []oidcjwt.IssuerConfig{ic}
	}
	cases := []struct {
		name string
		cfg  oidcjwt.Config
		want []string // substrings of the error
	}{
		{"no issuers", oidcjwt.Config{}, []string{"issuers: at least one issuer is required"}},
		{"no audiences", oidcjwt.Config{Issuers: with(func(ic *oidcjwt.IssuerConfig) { ic.Audiences = nil })},
			[]string{"issuers[0].audiences: at least one audience is required"}},
		{"empty audience", oidcjwt.Config{Issuers: with(func(ic *oidcjwt.IssuerConfig) { ic.Audiences = []string{"a", " "} })},
			[]string{"issuers[0].audiences[1]: empty"}},
		{"alg none", oidcjwt.Config{Issuers: with(func(ic *oidcjwt.IssuerConfig) { ic.Algorithms = []string{"RS256", "none"} })},
			[]string{`issuers[0].algorithms[1]: "none" is never allowed`}},
		{"alg HS256", oidcjwt.Config{Issuers: with(func(ic *oidcjwt.IssuerConfig) { ic.Algorithms = []string{"HS256"} })},
			[]string{`issuers[0].algorithms[0]: "HS256" is not allowed: an HMAC secret`}},
		{"alg hs512 in lower case", oidcjwt.Config{Issuers: with(func(ic *oidcjwt.IssuerConfig) { ic.Algorithms = []string{"hs512"} })},
			[]string{`"hs512" is not allowed`}},
		{"unknown alg", oidcjwt.Config{Issuers: with(func(ic *oidcjwt.IssuerConfig) { ic.Algorithms = []string{"rs256"} })},
			[]string{`"rs256" is not a supported algorithm`}},
		{"no issuer", oidcjwt.Config{Issuers: with(func(ic *oidcjwt.IssuerConfig) { ic.Issuer = "" })},
			[]string{"issuers[0].issuer: required"}},
		{"issuer not a URL", oidcjwt.Config{Issuers: with(func(ic *oidcjwt.IssuerConfig) { ic.Issuer = "idp.example.com" })},
			[]string{"issuers[0].issuer:", "not an absolute http(s) URL"}},
		{"issuer with a query", oidcjwt.Config{Issuers: with(func(ic *oidcjwt.IssuerConfig) { ic.Issuer = idp + "?tenant=1" })},
			[]string{"has a query or fragment"}},
		{"issuer twice", oidcjwt.Config{Issuers: []oidcjwt.IssuerConfig{ok(), ok()}},
			[]string{"issuers[1].issuer:", "configured twice"}},
		{"negative durations and sizes", oidcjwt.Config{Issuers: []oidcjwt.IssuerConfig{ok()}, ClockSkew: -time.Second, MaxTokenBytes: -1, JWKSRefreshInterval: -time.Second},
			[]string{"clock_skew", "max_token_bytes", "jwks_refresh_interval"}},
		{"every problem at once", oidcjwt.Config{Issuers: with(func(ic *oidcjwt.IssuerConfig) {
			ic.Audiences, ic.Algorithms = nil, []string{"none", "HS256"}
		})}, []string{"audiences", "algorithms[0]", "algorithms[1]"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a, err := oidcjwt.New(context.Background(), tc.cfg)
			if err == nil || a != nil {
				t.Fatalf("New = %v, %v; want an error", a, err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestNewFailsWhenDiscoveryFails(t *testing.T) {
	t.Run("issuer unreachable", func(t *testing.T) {
		is := authntest.NewIssuer(t)
		is.Close()
		_, err := oidcjwt.New(context.Background(), oidcjwt.Config{
			Issuers: []oidcjwt.IssuerConfig{{Issuer: is.URL(), Audiences: []string{"a"}}},
		})
		if err == nil || !strings.Contains(err.Error(), is.URL()) {
			t.Fatalf("New: %v", err)
		}
	})
	t.Run("issuer mismatch", func(t *testing.T) {
		is := authntest.NewIssuer(t)
		_, err := oidcjwt.New(context.Background(), oidcjwt.Config{
			Issuers: []oidcjwt.IssuerConfig{{Issuer: is.URL() + "/", Audiences: []string{"a"}}},
		})
		var mm *oidc.IssuerMismatchError
		if !errors.As(err, &mm) {
			t.Fatalf("New: %v, want an *oidc.IssuerMismatchError", err)
		}
	})
	t.Run("second issuer fails", func(t *testing.T) {
		good, bad := authntest.NewIssuer(t), authntest.NewIssuer(t)
		bad.Close()
		_, err := oidcjwt.New(context.Background(), oidcjwt.Config{
			Issuers: []oidcjwt.IssuerConfig{
				{Issuer: good.URL(), Audiences: []string{"a"}},
				{Issuer: bad.URL(), Audiences: []string{"a"}},
			},
		})
		if err == nil {
			t.Fatal("New succeeded with an unreachable issuer")
		}
	})
	t.Run("oversized discovery document", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			_, _ = w.Write([]byte(`{"pad":"` + strings.Repeat("x", oidcjwt.MaxResponseBytes) + `"}`))
		}))
		defer srv.Close()
		_, err := oidcjwt.New(context.Background(), oidcjwt.Config{
			Issuers: []oidcjwt.IssuerConfig{{Issuer: srv.URL, Audiences: []string{"a"}}},
		})
		if err == nil {
			t.Fatal("New accepted an oversized discovery document")
		}
	})
	t.Run("canceled context", func(t *testing.T) {
		is := authntest.NewIssuer(t)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := oidcjwt.New(ctx, oidcjwt.Config{
			Issuers: []oidcjwt.IssuerConfig{{Issuer: is.URL(), Audiences: []string{"a"}}},
		})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("New: %v, want context.Canceled", err)
		}
	})
}

func TestCustomClockSkew(t *testing.T) {
	f := newFixture(t, func(c *oidcjwt.Config) { c.ClockSkew = 2 * time.Minute })
	f.mustAccept(t, f.iss.Mint(f.claims(func(c map[string]any) {
		c["iat"], c["nbf"], c["exp"] = at(f, -time.Hour), at(f, -time.Hour), at(f, -90*time.Second)
	})))
	f.mustAccept(t, f.iss.Mint(f.claims(func(c map[string]any) { c["nbf"] = at(f, 90*time.Second) })))
	f.mustReject(t, f.iss.Mint(f.claims(func(c map[string]any) { c["nbf"] = at(f, 3*time.Minute) })), authn.ReasonNotYetValid)
}

func TestCustomRefreshInterval(t *testing.T) {
	f := newFixture(t, func(c *oidcjwt.Config) { c.JWKSRefreshInterval = 5 * time.Minute })
	f.mustAccept(t, f.iss.Mint(f.claims(nil)))
	f.iss.Rotate()
	f.clock.Advance(oidcjwt.DefaultJWKSRefreshInterval)
	tok := f.iss.Mint(f.claims(nil))
	f.mustReject(t, tok, authn.ReasonUnknownKey)
	f.clock.Advance(5 * time.Minute)
	f.mustAccept(t, tok)
	if n := f.iss.JWKSFetches(); n != 2 {
		t.Fatalf("JWKSFetches = %d, want 2", n)
	}
}
