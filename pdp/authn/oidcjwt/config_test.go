package oidcjwt_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

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
		{"negative durations and sizes", oidcjwt.Config{Issuers: []oidcjwt.IssuerConfig{ok()}, ClockSkew: -time.Second, MaxTokenBytes: -1, RefetchInterval: -time.Second},
			[]string{"clock_skew", "max_token_bytes", "refetch_interval"}},
		{"jwks_refresh_interval under 1s", oidcjwt.Config{Issuers: with(func(ic *oidcjwt.IssuerConfig) { ic.JWKSRefreshInterval = 999 * time.Millisecond })},
			[]string{"issuers[0].jwks_refresh_interval: 999ms is below the minimum 1s"}},
		{"jwks_refresh_interval without a unit", oidcjwt.Config{Issuers: with(func(ic *oidcjwt.IssuerConfig) { ic.JWKSRefreshInterval = 30 })},
			[]string{"issuers[0].jwks_refresh_interval: 30ns is below the minimum 1s", `write e.g. "5m"`}},
		{"jwks_refresh_interval negative", oidcjwt.Config{Issuers: with(func(ic *oidcjwt.IssuerConfig) { ic.JWKSRefreshInterval = -time.Minute })},
			[]string{"issuers[0].jwks_refresh_interval: -1m0s is below the minimum"}},
		{"jwks_refresh_interval absurd", oidcjwt.Config{Issuers: with(func(ic *oidcjwt.IssuerConfig) { ic.JWKSRefreshInterval = 24*time.Hour + time.Second })},
			[]string{"issuers[0].jwks_refresh_interval: 24h0m1s is above the maximum 24h0m0s"}},
		{"jwks_refresh_interval of the second issuer", oidcjwt.Config{Issuers: []oidcjwt.IssuerConfig{ok(), {Issuer: "https://other.example.com", Audiences: []string{"a"}, JWKSRefreshInterval: 1000 * time.Hour}}},
			[]string{"issuers[1].jwks_refresh_interval"}},
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

func TestJWKSRefreshIntervalBoundsAccepted(t *testing.T) {
	for _, d := range []time.Duration{0, oidcjwt.MinJWKSRefreshInterval, time.Minute, oidcjwt.MaxJWKSRefreshInterval} {
		f := newFixture(t, func(c *oidcjwt.Config) { c.Issuers[0].JWKSRefreshInterval = d })
		want := d
		if d == 0 {
			want = oidcjwt.DefaultJWKSRefreshInterval
		}
		if got := f.clock.WaitForWaiters(t, 1)[0]; got != want {
			t.Errorf("jwks_refresh_interval %v: next refresh in %v, want %v", d, got, want)
		}
		if err := oidcjwt.CheckJWKSRefreshInterval(want); err != nil {
			t.Errorf("CheckJWKSRefreshInterval(%v) = %v", want, err)
		}
	}
}

// TestDiscoveryFailureDoesNotStopNew (issue 5, operability): an issuer whose
// discovery fails at startup no longer stops New. Its tokens cannot be judged
// (verifier_unavailable) while discovery is retried in the background; the
// other issuers work.
func TestDiscoveryFailureDoesNotStopNew(t *testing.T) {
	oversized := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte(`{"pad":"` + strings.Repeat("x", oidcjwt.MaxResponseBytes) + `"}`))
	}))
	defer oversized.Close()
	cases := []struct {
		name    string
		setup   func(is *authntest.Issuer) (issuerName string)
		errHas  string
		recover func(is *authntest.Issuer) bool // repairs, if the case can be repaired
	}{
		{name: "issuer unreachable", setup: func(is *authntest.Issuer) string { is.Close(); return is.URL() }, errHas: "connection refused"},
		{name: "status 500", errHas: "500",
			setup: func(is *authntest.Issuer) string {
				is.SetDiscoveryResponse(http.StatusInternalServerError, []byte("down"))
				return is.URL()
			},
			recover: func(is *authntest.Issuer) bool { is.ResetDiscovery(); return true }},
		{name: "not JSON", errHas: "decode",
			setup: func(is *authntest.Issuer) string {
				is.SetDiscoveryResponse(http.StatusOK, []byte("<html>"))
				return is.URL()
			},
			recover: func(is *authntest.Issuer) bool { is.ResetDiscovery(); return true }},
		{name: "issuer mismatch", setup: func(is *authntest.Issuer) string { return is.URL() + "/" }, errHas: "did not match"},
		{name: "oversized discovery document", setup: func(*authntest.Issuer) string { return oversized.URL }, errHas: "too large"},
		{name: "jwks_uri not https for an https issuer", errHas: "jwks_uri",
			setup: func(is *authntest.Issuer) string {
				is.SetDiscoveryResponse(http.StatusOK, []byte(`{"issuer":"`+is.URL()+`","jwks_uri":"file:///etc/passwd"}`))
				return is.URL()
			},
			recover: func(is *authntest.Issuer) bool { is.ResetDiscovery(); return true }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newClock()
			good := authntest.NewIssuer(t, authntest.WithNow(c.Now))
			bad := authntest.NewIssuer(t, authntest.WithNow(c.Now))
			badName := tc.setup(bad)
			reg := prometheus.NewRegistry()
			a, err := oidcjwt.New(context.Background(), oidcjwt.Config{
				Issuers: []oidcjwt.IssuerConfig{
					{Issuer: good.URL(), Audiences: []string{authntest.Audience}},
					{Issuer: badName, Audiences: []string{authntest.Audience}},
				},
				Now: c.Now, After: c.After, Registerer: reg,
			})
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			t.Cleanup(a.Close)
			st := a.Status()
			if len(st) != 2 || st[0].State != oidcjwt.StateReady || st[1].State != oidcjwt.StateDiscovering ||
				st[1].Issuer != badName || !strings.Contains(st[1].LastError, tc.errHas) || st[1].Keys != 0 {
				t.Fatalf("Status = %+v; want the second issuer discovering with an error mentioning %q", st, tc.errHas)
			}
			if got := gauge(t, reg, "tollgate_issuer_ready", badName); got != 0 {
				t.Errorf("tollgate_issuer_ready for the failing issuer = %v", got)
			}

			f := &fixture{iss: good, clock: c, auth: a}
			f.mustAccept(t, good.Mint(good.Claims("alice")))
			claims := bad.Claims("alice")
			claims["iss"] = badName
			tok := bad.Mint(claims)
			err = f.mustFail(t, tok)
			if !errors.Is(err, oidcjwt.ErrNotDiscovered) {
				t.Fatalf("error %v is not ErrNotDiscovered", err)
			}
			if bad.JWKSFetches() != 0 {
				t.Fatal("a JWKS was fetched for an issuer not discovered")
			}

			// Retried in the background, with backoff.
			n := bad.DiscoveryFetches()
			waits := c.WaitForWaiters(t, 2) // the good issuer's refresh, the bad one's retry
			if waits[0] < 500*time.Millisecond || waits[0] > time.Second {
				t.Fatalf("first retry in %v, want 0.5s to 1s (1s with jitter)", waits[0])
			}
			c.Advance(waits[0])
			waits = c.WaitForWaiters(t, 2)
			if tc.name != "issuer unreachable" && tc.name != "oversized discovery document" && bad.DiscoveryFetches() != n+1 {
				t.Fatalf("DiscoveryFetches = %d, want %d", bad.DiscoveryFetches(), n+1)
			}
			if waits[0] < time.Second || waits[0] > 2*time.Second {
				t.Fatalf("second retry in %v, want 1s to 2s", waits[0])
			}
			if tc.recover == nil {
				return
			}
			tc.recover(bad)
			c.Advance(waits[0])
			c.WaitForWaiters(t, 2) // discovered, fetched, asleep until the next refresh
			if st := a.Status(); st[1].State != oidcjwt.StateReady || st[1].LastError != "" || st[1].Keys != 2 {
				t.Fatalf("after recovery: %+v", st[1])
			}
			f.mustAccept(t, tok)
			if got := gauge(t, reg, "tollgate_issuer_ready", badName); got != 1 {
				t.Errorf("tollgate_issuer_ready after recovery = %v", got)
			}
		})
	}
}

// gauge is the value of a gauge or counter series whose first label is issuer
// (and, with result, whose second label is result).
func gauge(t *testing.T, reg *prometheus.Registry, name, issuer string, result ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			l := m.GetLabel()
			if l[0].GetValue() != issuer || (len(result) > 0 && l[1].GetValue() != result[0]) {
				continue
			}
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("no %s for %s %v", name, issuer, result)
	return 0
}

func TestNewWithEndedContextFails(t *testing.T) {
	is := authntest.NewIssuer(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := oidcjwt.New(ctx, oidcjwt.Config{
		Issuers: []oidcjwt.IssuerConfig{{Issuer: is.URL(), Audiences: []string{"a"}}},
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("New: %v, want context.Canceled", err)
	}
}

func TestCustomClockSkew(t *testing.T) {
	f := newFixture(t, func(c *oidcjwt.Config) { c.ClockSkew = 2 * time.Minute })
	f.mustAccept(t, f.iss.Mint(f.claims(func(c map[string]any) {
		c["iat"], c["nbf"], c["exp"] = at(f, -time.Hour), at(f, -time.Hour), at(f, -90*time.Second)
	})))
	f.mustAccept(t, f.iss.Mint(f.claims(func(c map[string]any) { c["nbf"] = at(f, 90*time.Second) })))
	f.mustReject(t, f.iss.Mint(f.claims(func(c map[string]any) { c["nbf"] = at(f, 3*time.Minute) })), authn.ReasonNotYetValid)
}

func TestCustomRefetchInterval(t *testing.T) {
	f := newFixture(t, func(c *oidcjwt.Config) { c.RefetchInterval = 2 * time.Minute })
	f.mustReject(t, f.iss.MintUnknownKey(f.claims(nil)), authn.ReasonUnknownKey) // a fetch caused by a token
	f.iss.Rotate()
	f.clock.Advance(oidcjwt.DefaultRefetchInterval)
	tok := f.iss.Mint(f.claims(nil))
	f.mustReject(t, tok, authn.ReasonUnknownKey)
	f.clock.Advance(2 * time.Minute)
	f.mustAccept(t, tok)
	if n := f.iss.JWKSFetches(); n != 3 {
		t.Fatalf("JWKSFetches = %d, want 3 (New, two caused by tokens)", n)
	}
}
