package oidcjwt_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate/tollgate/pdp/authn"
	"github.com/tollgate/tollgate/pdp/authn/authntest"
	"github.com/tollgate/tollgate/pdp/authn/oidcjwt"
	"github.com/tollgate/tollgate/pdp/telemetry/telemetrytest"
)

// interval is the minimum time between fetches caused by unknown kids.
const interval = oidcjwt.DefaultRefetchInterval

// refreshed advances the fixture's clock by d and waits until the issuer's
// background loop has run its refresh and sleeps again.
func (f *fixture) refreshed(t testing.TB, d time.Duration) {
	t.Helper()
	f.clock.WaitForWaiters(t, 1)
	f.clock.Advance(d)
	f.clock.WaitForWaiters(t, 1)
}

func (f *fixture) status(t testing.TB) oidcjwt.IssuerStatus {
	t.Helper()
	st := f.auth.Status()
	if len(st) != 1 {
		t.Fatalf("Status = %+v, want one issuer", st)
	}
	return st[0]
}

// within runs fn and fails the test if it has not returned after a generous
// guard: for "must not wait" checks, never a timing assertion.
func within(t *testing.T, what string, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); fn() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s did not return: it waits behind a fetch", what)
	}
}

func TestJWKSFetchedOnceAtStart(t *testing.T) {
	f := newFixture(t, nil)
	if n := f.iss.JWKSFetches(); n != 1 {
		t.Fatalf("New fetched the JWKS %d times, want 1", n)
	}
	if st := f.status(t); st.State != oidcjwt.StateReady || st.Keys != 2 || st.LastSuccess.IsZero() || st.LastError != "" {
		t.Fatalf("status = %+v", st)
	}
	for range 5 {
		f.mustAccept(t, f.iss.Mint(f.claims(nil)))
		f.mustAccept(t, f.iss.Mint(f.claims(nil), authntest.WithAlg("ES256")))
	}
	if n := f.iss.JWKSFetches(); n != 1 {
		t.Fatalf("known kids fetched: JWKSFetches = %d, want 1", n)
	}
}

func TestKeyRotation(t *testing.T) {
	f := newFixture(t, nil)
	old := f.iss.Mint(f.claims(nil))
	f.mustAccept(t, old)
	n := f.iss.JWKSFetches()

	f.clock.Advance(interval + time.Second)
	if k := f.iss.Rotate(); k.ID == authntest.KeyIDRSA {
		t.Fatal("Rotate kept the kid")
	}
	f.mustAccept(t, f.iss.Mint(f.claims(nil)))
	if got := f.iss.JWKSFetches(); got != n+1 {
		t.Fatalf("after rotation: JWKSFetches = %d, want %d (exactly one refetch)", got, n+1)
	}
	f.mustAccept(t, f.iss.Mint(f.claims(nil)))
	f.mustAccept(t, old)
	if got := f.iss.JWKSFetches(); got != n+1 {
		t.Fatalf("known kids refetched: JWKSFetches = %d, want %d", got, n+1)
	}
}

// A kid the issuer publishes right after the last fetch caused by a token is
// picked up once the refetch interval has passed, not before.
func TestRotationWaitsForTheInterval(t *testing.T) {
	f := newFixture(t, nil)
	f.mustAccept(t, f.iss.Mint(f.claims(nil)))
	f.mustReject(t, f.iss.MintUnknownKey(f.claims(nil)), authn.ReasonUnknownKey) // a fetch caused by a token
	n := f.iss.JWKSFetches()

	f.iss.Rotate()
	tok := f.iss.Mint(f.claims(nil))
	f.mustReject(t, tok, authn.ReasonUnknownKey)
	if got := f.iss.JWKSFetches(); got != n {
		t.Fatalf("refetched within the interval: %d fetches, want %d", got, n)
	}
	f.clock.Advance(interval)
	f.mustAccept(t, tok)
	if got := f.iss.JWKSFetches(); got != n+1 {
		t.Fatalf("JWKSFetches = %d, want %d", got, n+1)
	}
}

func TestRemovedKeyDroppedOnNextRefetch(t *testing.T) {
	f := newFixture(t, nil)
	old := f.iss.Mint(f.claims(nil))
	f.mustAccept(t, old)
	f.iss.Rotate()
	f.iss.RemoveKey(authntest.KeyIDRSA)
	f.mustAccept(t, old) // cached until a refetch

	f.clock.Advance(interval)
	f.mustAccept(t, f.iss.Mint(f.claims(nil))) // new kid: refetch
	f.mustReject(t, old, authn.ReasonUnknownKey)
}

// TestWithdrawnKeyStopsVerifyingAtTheScheduledRefresh is a security
// regression test (issue 5, item 2): a key the issuer removed from its JWKS
// must stop verifying at the next scheduled refresh, with or without a kid in
// the token, though no token ever names an unknown kid.
func TestWithdrawnKeyStopsVerifyingAtTheScheduledRefresh(t *testing.T) {
	cases := []struct {
		name     string
		every    time.Duration // jwks_refresh_interval; 0: the default
		withdraw string        // kid removed
		opts     []authntest.MintOption
		reason   string // for the token signed by the withdrawn key
	}{
		{"RSA key with kid, default interval", 0, authntest.KeyIDRSA, nil, authn.ReasonUnknownKey},
		{"RSA key without kid, default interval", 0, authntest.KeyIDRSA, []authntest.MintOption{authntest.WithoutKid()}, authn.ReasonBadSignature},
		{"EC key with kid, 1s interval", time.Second, authntest.KeyIDEC, []authntest.MintOption{authntest.WithAlg("ES256")}, authn.ReasonUnknownKey},
		{"EC key without kid, 1h interval", time.Hour, authntest.KeyIDEC, []authntest.MintOption{authntest.WithAlg("ES256"), authntest.WithoutKid()}, authn.ReasonBadSignature},
		{"RSA key without kid, 24h interval", 24 * time.Hour, authntest.KeyIDRSA, []authntest.MintOption{authntest.WithoutKid()}, authn.ReasonBadSignature},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, func(c *oidcjwt.Config) { c.Issuers[0].JWKSRefreshInterval = tc.every })
			every := tc.every
			if every == 0 {
				every = oidcjwt.DefaultJWKSRefreshInterval
			}
			if waits := f.clock.WaitForWaiters(t, 1); waits[0] != every {
				t.Fatalf("next refresh in %v, want %v", waits[0], every)
			}
			key := f.iss.Key(tc.withdraw)
			tok := f.iss.Mint(f.claims(nil), append([]authntest.MintOption{authntest.WithKey(key)}, tc.opts...)...)
			f.mustAccept(t, tok)
			gen := f.auth.KeyEpoch()

			f.iss.RemoveKey(tc.withdraw)
			f.mustAccept(t, tok) // cached until the refresh
			f.refreshed(t, every)
			f.mustReject(t, tok, tc.reason)
			if f.auth.KeyEpoch() == gen {
				t.Error("KeyEpoch did not change when a key left the set")
			}
			if st := f.status(t); st.State != oidcjwt.StateReady || st.Keys != 1 || st.KeyEpoch != 1 {
				t.Errorf("status = %+v", st)
			}
			// The remaining key still verifies, without a fetch.
			n := f.iss.JWKSFetches()
			if tc.withdraw == authntest.KeyIDRSA {
				f.mustAccept(t, f.iss.Mint(f.claims(nil), authntest.WithAlg("ES256")))
			} else {
				f.mustAccept(t, f.iss.Mint(f.claims(nil)))
			}
			if f.iss.JWKSFetches() != n {
				t.Error("a known kid caused a fetch")
			}
		})
	}
}

// TestKeyEpochChangesOnlyWhenAKeyLeaves: the signal a cache of verified
// tokens relies on.
func TestKeyEpochChangesOnlyWhenAKeyLeaves(t *testing.T) {
	f := newFixture(t, nil)
	every := oidcjwt.DefaultJWKSRefreshInterval
	g := f.auth.KeyEpoch()
	steps := []struct {
		name    string
		do      func()
		changes bool
	}{
		{"unchanged set (304)", func() {}, false},
		{"key added", func() { f.iss.Rotate() }, false},
		{"failed refresh", func() { f.iss.SetJWKSResponse(http.StatusInternalServerError, nil) }, false},
		{"repaired", func() { f.iss.ResetJWKS() }, false},
		{"key removed", func() { f.iss.RemoveKey(authntest.KeyIDRSA) }, true},
		{"another key removed", func() { f.iss.RemoveKey(authntest.KeyIDEC) }, true},
		{"set holding only weak keys (unusable)", func() {
			f.iss.SetJWKSResponse(http.StatusOK, weakOnlyJWKS(f.iss.AddRSAKey(1024)))
		}, false},
	}
	for _, s := range steps {
		s.do()
		f.refreshed(t, every)
		got := f.auth.KeyEpoch()
		if (got != g) != s.changes {
			t.Errorf("%s: key epoch %d -> %d, want a change: %v", s.name, g, got, s.changes)
		}
		g = got
	}
	if n := f.iss.JWKSNotModified(); n < 1 {
		t.Errorf("JWKSNotModified = %d: the ETag was not sent back", n)
	}
}

// weakOnlyJWKS is a JWKS holding only the public halves of ks.
func weakOnlyJWKS(ks ...*authntest.Key) []byte {
	set := jose.JSONWebKeySet{}
	for _, k := range ks {
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: k.Public(), KeyID: k.ID, Algorithm: k.Algorithm, Use: "sig"})
	}
	b, err := json.Marshal(set)
	if err != nil {
		panic(err) // public keys always marshal
	}
	return b
}

// TestFailedRefreshKeepsTheCachedKeys: an outage of the JWKS is not a
// withdrawal; it is logged and counted, and the issuer shows as stale.
func TestFailedRefreshKeepsTheCachedKeys(t *testing.T) {
	cases := []struct {
		name   string
		break_ func(*authntest.Issuer)
		errHas string
	}{
		{"status 500", func(is *authntest.Issuer) { is.SetJWKSResponse(http.StatusInternalServerError, []byte("oops")) }, "500"},
		{"not JSON", func(is *authntest.Issuer) { is.SetJWKSResponse(http.StatusOK, []byte("<html>")) }, "decoding JWKS"},
		{"empty set", func(is *authntest.Issuer) { is.SetJWKSResponse(http.StatusOK, []byte(`{"keys":[]}`)) }, "no usable signing key"},
		{"only symmetric keys", func(is *authntest.Issuer) {
			is.SetJWKSResponse(http.StatusOK, []byte(`{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}`))
		}, "no usable signing key"},
		{"only weak RSA keys", func(is *authntest.Issuer) {
			is.SetJWKSResponse(http.StatusOK, weakOnlyJWKS(is.AddRSAKey(1024), is.AddRSAKey(1536)))
		}, "2 RSA keys under 2048 bits refused"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var logs telemetrytest.LogBuffer
			f := newFixture(t, func(c *oidcjwt.Config) { c.Logger = slog.New(slog.NewTextHandler(&logs, nil)) })
			tok := f.iss.Mint(f.claims(nil))
			f.mustAccept(t, tok)
			tc.break_(f.iss)
			f.refreshed(t, oidcjwt.DefaultJWKSRefreshInterval)

			f.mustAccept(t, tok)
			f.mustAccept(t, f.iss.Mint(f.claims(nil), authntest.WithAlg("ES256")))
			st := f.status(t)
			if st.State != oidcjwt.StateStale || st.Keys != 2 || !strings.Contains(st.LastError, tc.errHas) {
				t.Fatalf("status = %+v, want stale with an error mentioning %q", st, tc.errHas)
			}
			if !strings.Contains(logs.String(), "jwks fetch failed") {
				t.Errorf("the failure is not logged: %s", logs.String())
			}
			// The retry comes sooner than the interval (backoff), never later.
			if w := f.clock.WaitForWaiters(t, 1)[0]; w > oidcjwt.DefaultJWKSRefreshInterval || w < 500*time.Millisecond {
				t.Errorf("retry in %v", w)
			}
			f.iss.ResetJWKS()
			f.refreshed(t, oidcjwt.DefaultJWKSRefreshInterval)
			if st := f.status(t); st.State != oidcjwt.StateReady || st.LastError != "" {
				t.Errorf("after repair: %+v", st)
			}
		})
	}
}

// TestCacheControlMaxAge: a max-age shortens the wait before the next
// refresh within bounds: never below 1s, never past the configured interval.
func TestCacheControlMaxAge(t *testing.T) {
	cases := []struct {
		header string
		every  time.Duration
		want   time.Duration
	}{
		{"", 5 * time.Minute, 5 * time.Minute},
		{"public, max-age=60", 5 * time.Minute, time.Minute},
		{"max-age=3600", 5 * time.Minute, 5 * time.Minute},
		{"max-age=86400, must-revalidate", time.Hour, time.Hour},
		{"max-age=60", 10 * time.Second, 10 * time.Second},
		{"max-age=0", 5 * time.Minute, 5 * time.Minute},
		{"no-store", 5 * time.Minute, 5 * time.Minute},
		{"no-cache, max-age=60", 5 * time.Minute, 5 * time.Minute},
		{"max-age=abc", 5 * time.Minute, 5 * time.Minute},
		{"max-age=-5", 5 * time.Minute, 5 * time.Minute},
		{`max-age="90"`, 5 * time.Minute, 90 * time.Second},
		{"MAX-AGE=30", 5 * time.Minute, 30 * time.Second},
		{"max-age=99999999999999999999", 5 * time.Minute, 5 * time.Minute},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("%q every %v", tc.header, tc.every), func(t *testing.T) {
			f := newFixture(t, func(c *oidcjwt.Config) { c.Issuers[0].JWKSRefreshInterval = tc.every })
			f.iss.SetJWKSCacheControl(tc.header)
			f.refreshed(t, tc.every) // this refresh sees the header
			if got := f.clock.WaitForWaiters(t, 1)[0]; got != tc.want {
				t.Fatalf("next refresh in %v, want %v", got, tc.want)
			}
		})
	}
}

// TestWeakRSAKeysAreRefused is a security regression test (issue 5, item 6):
// RSA keys under 2048 bits in a JWKS never verify (RFC 7518 section 3.3), and
// each is logged once, not on every fetch or request.
func TestWeakRSAKeysAreRefused(t *testing.T) {
	var logs telemetrytest.LogBuffer
	f := newFixture(t, func(c *oidcjwt.Config) { c.Logger = slog.New(slog.NewTextHandler(&logs, nil)) })
	weak := []*authntest.Key{f.iss.AddRSAKey(1024), f.iss.AddRSAKey(1536), f.iss.AddRSAKey(2040)}
	strong := []*authntest.Key{f.iss.AddRSAKey(2048), f.iss.AddRSAKey(3072)}
	f.refreshed(t, oidcjwt.DefaultJWKSRefreshInterval)
	if st := f.status(t); st.Keys != 2+len(strong) {
		t.Fatalf("status = %+v, want %d keys", st, 2+len(strong))
	}
	for _, k := range weak {
		f.mustReject(t, f.iss.Mint(f.claims(nil), authntest.WithKey(k)), authn.ReasonUnknownKey)
		f.mustReject(t, f.iss.Mint(f.claims(nil), authntest.WithKey(k), authntest.WithoutKid()), authn.ReasonBadSignature)
	}
	for _, k := range strong {
		f.mustAccept(t, f.iss.Mint(f.claims(nil), authntest.WithKey(k)))
		f.mustAccept(t, f.iss.Mint(f.claims(nil), authntest.WithKey(k), authntest.WithoutKid()))
	}
	// More fetches (scheduled, and caused by unknown kids) log nothing new.
	f.refreshed(t, oidcjwt.DefaultJWKSRefreshInterval)
	f.clock.Advance(interval)
	f.mustReject(t, f.iss.MintUnknownKey(f.claims(nil)), authn.ReasonUnknownKey)
	f.refreshed(t, oidcjwt.DefaultJWKSRefreshInterval)
	if f.iss.JWKSFetches() < 4 {
		t.Fatalf("JWKSFetches = %d", f.iss.JWKSFetches())
	}
	out := logs.String()
	for _, k := range weak {
		if n := strings.Count(out, "kid="+k.ID+" "); n != 1 {
			t.Errorf("weak key %s logged %d times, want once:\n%s", k.ID, n, out)
		}
	}
	for _, k := range strong {
		if strings.Contains(out, "kid="+k.ID+" ") {
			t.Errorf("strong key %s logged as refused", k.ID)
		}
	}
}

// TestUnknownKidSprayIsThrottled is a security regression test: tokens with
// random kids must not make every request fetch the JWKS.
func TestUnknownKidSprayIsThrottled(t *testing.T) {
	const every = 10 * time.Second // scheduled refreshes within the refetch interval
	f := newFixture(t, func(c *oidcjwt.Config) { c.Issuers[0].JWKSRefreshInterval = every })
	valid := f.iss.Mint(f.claims(nil))
	f.mustAccept(t, valid)
	n := f.iss.JWKSFetches()

	spray := func(round int) []string {
		toks := make([]string, 50)
		for i := range toks {
			toks[i] = f.iss.MintUnknownKey(f.claims(nil), authntest.WithKid(fmt.Sprintf("spray-%d-%d", round, i)))
		}
		return toks
	}

	for _, tok := range spray(1) {
		f.mustReject(t, tok, authn.ReasonUnknownKey)
	}
	// A scheduled refresh in between does not reopen the door.
	f.refreshed(t, every)
	n++
	for _, tok := range spray(3) {
		f.mustReject(t, tok, authn.ReasonUnknownKey)
	}
	if got := f.iss.JWKSFetches(); got > n+1 {
		t.Fatalf("50 unknown kids within the interval: %d extra fetches, want at most 1", got-n)
	}
	f.mustAccept(t, valid)

	// Once the interval has passed: one fetch, even for a concurrent spray.
	f.clock.Advance(interval)
	f.clock.WaitForWaiters(t, 1) // the scheduled refresh it caused has ended
	n = f.iss.JWKSFetches()
	toks := spray(2)
	var wg sync.WaitGroup
	for _, tok := range toks {
		wg.Go(func() {
			out, err := f.authenticate(t, tok)
			if err != nil || out.Result != authn.Rejected || out.Reason != authn.ReasonUnknownKey {
				t.Errorf("spray: %+v, %v", out, err)
			}
		})
	}
	wg.Wait()
	if got := f.iss.JWKSFetches(); got != n+1 {
		t.Fatalf("concurrent spray after the interval: %d extra fetches, want 1", got-n)
	}
	f.mustAccept(t, valid)
}

func TestConcurrentRefetchesCollapse(t *testing.T) {
	f := newFixture(t, nil)
	f.iss.Rotate()
	f.clock.Advance(interval)
	n := f.iss.JWKSFetches()
	hold := f.iss.HoldJWKS()
	toks := make([]string, 20)
	for i := range toks {
		toks[i] = f.iss.Mint(f.claims(nil))
	}
	var wg sync.WaitGroup
	for _, tok := range toks {
		wg.Go(func() {
			if out, err := f.authenticate(t, tok); err != nil || out.Result != authn.Authenticated {
				t.Errorf("%+v, %v", out, err)
			}
		})
	}
	<-hold.Arrived()
	hold.Release()
	wg.Wait()
	if got := f.iss.JWKSFetches(); got != n+1 {
		t.Fatalf("JWKSFetches = %d, want %d", got, n+1)
	}
}

// TestJWKSUnavailableIsAnError: when the keys cannot be fetched the token is
// not judged: Authenticate returns an error, never a plain rejection.
func TestJWKSUnavailableIsAnError(t *testing.T) {
	big := []byte(`{"keys":[],"pad":"` + strings.Repeat("x", oidcjwt.MaxResponseBytes) + `"}`)
	cases := []struct {
		name   string
		config func(*oidcjwt.Config)
		break_ func(*authntest.Issuer)
		is     error
	}{
		{name: "server down", break_: (*authntest.Issuer).Close},
		{name: "status 500", break_: func(is *authntest.Issuer) { is.SetJWKSResponse(http.StatusInternalServerError, []byte("oops")) }},
		{name: "status 404", break_: func(is *authntest.Issuer) { is.SetJWKSResponse(http.StatusNotFound, nil) }},
		{name: "not JSON", break_: func(is *authntest.Issuer) { is.SetJWKSResponse(http.StatusOK, []byte("<html>")) }},
		{name: "no usable key", break_: func(is *authntest.Issuer) {
			is.SetJWKSResponse(http.StatusOK, []byte(`{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}`))
		}},
		{name: "oversized", break_: func(is *authntest.Issuer) { is.SetJWKSResponse(http.StatusOK, big) }, is: oidcjwt.ErrResponseTooLarge},
		{name: "timeout",
			config: func(c *oidcjwt.Config) { c.HTTPClient = &http.Client{Timeout: 100 * time.Millisecond} },
			break_: func(is *authntest.Issuer) { is.SetJWKSDelay(5 * time.Second) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, tc.config)
			f.iss.Rotate() // tokens name a kid the cached set lacks
			tc.break_(f.iss)
			f.clock.Advance(interval)
			tok := f.iss.Mint(f.claims(nil))
			err := f.mustFail(t, tok)
			var fe *oidcjwt.FetchError
			if !errors.As(err, &fe) || fe.Issuer != f.iss.URL() || fe.URL != f.iss.JWKSURL() {
				t.Fatalf("error %v is not a *FetchError for this issuer", err)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Fatalf("error %v is not %v", err, tc.is)
			}
			if tc.name == "timeout" {
				var ne net.Error
				if !errors.As(err, &ne) || !ne.Timeout() {
					t.Fatalf("error %v is not a timeout", err)
				}
			}
			// Within the interval, the failure is remembered, not retried.
			n := f.iss.JWKSFetches()
			f.mustFail(t, tok)
			if got := f.iss.JWKSFetches(); got != n {
				t.Fatalf("retried within the interval: %d fetches, want %d", got, n)
			}
			// Known keys still verify.
			f.mustAccept(t, f.iss.Mint(f.claims(nil), authntest.WithAlg("ES256")))
			if tc.name == "server down" {
				return
			}
			// Repaired and the interval passed: the same token is accepted.
			f.iss.ResetJWKS()
			f.clock.Advance(interval)
			f.mustAccept(t, tok)
		})
	}
}

// TestFirstFetchFailsThenRecovers: discovery works but the JWKS does not
// at startup: the issuer is in error, its tokens cannot be judged, and the
// background loop retries.
func TestFirstFetchFailsThenRecovers(t *testing.T) {
	c := newClock()
	iss := authntest.NewIssuer(t, authntest.WithNow(c.Now))
	iss.SetJWKSResponse(http.StatusServiceUnavailable, nil)
	a, err := oidcjwt.New(context.Background(), oidcjwt.Config{
		Issuers: []oidcjwt.IssuerConfig{{Issuer: iss.URL(), Audiences: []string{authntest.Audience}}},
		Now:     c.Now, After: c.After,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	f := &fixture{iss: iss, clock: c, auth: a}
	if st := f.status(t); st.State != oidcjwt.StateError || st.Keys != 0 || !strings.Contains(st.LastError, "503") {
		t.Fatalf("status = %+v", st)
	}
	tok := iss.Mint(f.claims(nil))
	var fe *oidcjwt.FetchError
	if err := f.mustFail(t, tok); !errors.As(err, &fe) {
		t.Fatalf("error %v is not a *FetchError", err)
	}
	iss.ResetJWKS()
	f.refreshed(t, oidcjwt.DefaultJWKSRefreshInterval)
	f.mustAccept(t, tok)
	if st := f.status(t); st.State != oidcjwt.StateReady {
		t.Fatalf("status = %+v", st)
	}
}

func TestCachedKeysSurviveAnOutage(t *testing.T) {
	f := newFixture(t, nil)
	f.mustAccept(t, f.iss.Mint(f.claims(nil)))
	f.iss.SetJWKSResponse(http.StatusBadGateway, nil)
	f.clock.Advance(interval)

	n := f.iss.JWKSFetches()
	f.mustAccept(t, f.iss.Mint(f.claims(nil), authntest.WithAlg("ES256"))) // known kid: no fetch
	if got := f.iss.JWKSFetches(); got != n {
		t.Fatalf("a known kid caused a fetch")
	}
	// An unknown kid while the JWKS is down cannot be judged: it may be a rotation.
	f.mustFail(t, f.iss.MintUnknownKey(f.claims(nil)))
	f.mustAccept(t, f.iss.Mint(f.claims(nil)))

	f.iss.ResetJWKS()
	f.clock.Advance(interval)
	f.mustReject(t, f.iss.MintUnknownKey(f.claims(nil)), authn.ReasonUnknownKey)
}

// TestStalledFetchEndsWithTheContext (issue 5, item 12): a token with an
// unknown kid waits for the JWKS only as long as its context allows; the
// fetch goes on without it and the next caller uses its result.
func TestStalledFetchEndsWithTheContext(t *testing.T) {
	for _, how := range []string{"cancel", "deadline"} {
		t.Run(how, func(t *testing.T) {
			f := newFixture(t, nil)
			f.iss.Rotate()
			f.clock.Advance(interval)
			hold := f.iss.HoldJWKS()
			tok := f.iss.Mint(f.claims(nil))

			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			want := context.Canceled
			if how == "deadline" {
				// Not a timing assertion: the request must simply end once the deadline passes.
				ctx, cancel = context.WithTimeout(ctx, 100*time.Millisecond)
				defer cancel()
				want = context.DeadlineExceeded
			}
			type result struct {
				out authn.Outcome
				err error
			}
			done := make(chan result, 1)
			go func() {
				out, err := f.auth.Authenticate(ctx, bearer(tok))
				done <- result{out, err}
			}()
			<-hold.Arrived()
			if how == "cancel" {
				cancel()
			}
			var r result
			within(t, "a stalled request after its context ended", func() { r = <-done })
			if !errors.Is(r.err, want) || r.out.Result != authn.Rejected || r.out.Reason != authn.ReasonUnavailable {
				t.Fatalf("Authenticate = %+v, %v; want %v and %s", r.out, r.err, want, authn.ReasonUnavailable)
			}

			n := f.iss.JWKSFetches()
			hold.Release()
			within(t, "the next request", func() { f.mustAccept(t, tok) })
			if got := f.iss.JWKSFetches(); got != n {
				t.Fatalf("JWKSFetches = %d, want %d: the stalled fetch should have been reused", got, n)
			}
		})
	}
}

// TestKnownKeysNeverWaitBehindAFetch (issue 5, item 12): while a JWKS fetch
// is stalled (caused by an unknown kid, or scheduled), tokens whose keys are
// cached verify at once.
func TestKnownKeysNeverWaitBehindAFetch(t *testing.T) {
	for _, stall := range []string{"unknown kid", "scheduled refresh"} {
		t.Run(stall, func(t *testing.T) {
			f := newFixture(t, nil)
			hold := f.iss.HoldJWKS()
			stalled := make(chan error, 1)
			switch stall {
			case "unknown kid":
				f.clock.Advance(interval)
				go func() {
					_, err := f.authenticate(t, f.iss.MintUnknownKey(f.claims(nil)))
					stalled <- err
				}()
			case "scheduled refresh":
				f.clock.WaitForWaiters(t, 1)
				f.clock.Advance(oidcjwt.DefaultJWKSRefreshInterval)
				close(stalled)
			}
			<-hold.Arrived()

			toks := map[string]string{
				"RS256 with kid":    f.iss.Mint(f.claims(nil)),
				"ES256 with kid":    f.iss.Mint(f.claims(nil), authntest.WithAlg("ES256")),
				"RS256 without kid": f.iss.Mint(f.claims(nil), authntest.WithoutKid()),
			}
			for name, tok := range toks {
				within(t, name, func() { f.mustAccept(t, tok) })
			}
			hold.Release()
			if err := <-stalled; err != nil {
				t.Fatalf("the stalled request: %v", err)
			}
		})
	}
}

// TestMetrics: tollgate_jwks_fetches_total{issuer,result}, the issuer state
// gauges, one Authenticator per registry, and Close unregisters.
func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	f := newFixture(t, func(c *oidcjwt.Config) { c.Registerer = reg })
	name := f.iss.URL()
	fetches := func(result string) float64 { return gauge(t, reg, "tollgate_jwks_fetches_total", name, result) }
	check := func(step string, success, notModified, failed float64) {
		t.Helper()
		if s, nm, e := fetches("success"), fetches("not_modified"), fetches("error"); s != success || nm != notModified || e != failed {
			t.Errorf("%s: fetches success %v, not_modified %v, error %v; want %v, %v, %v", step, s, nm, e, success, notModified, failed)
		}
	}
	check("after New", 1, 0, 0)
	if gauge(t, reg, "tollgate_issuer_ready", name) != 1 || gauge(t, reg, "tollgate_jwks_keys", name) != 2 ||
		gauge(t, reg, "tollgate_jwks_last_success_timestamp_seconds", name) != float64(f.clock.Now().Unix()) {
		t.Error("state gauges after New")
	}
	if gauge(t, reg, "tollgate_oidc_discoveries_total", name, "success") != 1 {
		t.Error("discoveries")
	}
	f.refreshed(t, oidcjwt.DefaultJWKSRefreshInterval)
	check("unchanged set", 1, 1, 0)
	f.iss.SetJWKSResponse(http.StatusInternalServerError, nil)
	f.refreshed(t, oidcjwt.DefaultJWKSRefreshInterval)
	check("outage", 1, 1, 1)
	if gauge(t, reg, "tollgate_issuer_ready", name) != 1 {
		t.Error("a stale issuer still verifies: ready must stay 1")
	}
	f.iss.ResetJWKS()
	f.iss.Rotate()
	f.refreshed(t, oidcjwt.DefaultJWKSRefreshInterval)
	check("rotated", 2, 1, 1)

	// Labels carry configured issuer names and fixed results only.
	mfs, err := reg.Gather()
	if err != nil || len(mfs) < 5 {
		t.Fatalf("Gather: %d families, %v", len(mfs), err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "issuer" && l.GetValue() != name {
					t.Errorf("%s{issuer=%q}", mf.GetName(), l.GetValue())
				}
			}
		}
	}

	// One Authenticator per registry; Close frees it.
	if _, err := oidcjwt.New(context.Background(), oidcjwt.Config{
		Issuers:    []oidcjwt.IssuerConfig{{Issuer: f.iss.URL(), Audiences: []string{"a"}}},
		Registerer: reg,
	}); err == nil || !strings.Contains(err.Error(), "already registered") {
		t.Fatalf("second New on one registry: %v", err)
	}
	f.auth.Close()
	a, err := oidcjwt.New(context.Background(), oidcjwt.Config{
		Issuers:    []oidcjwt.IssuerConfig{{Issuer: f.iss.URL(), Audiences: []string{"a"}}},
		Registerer: reg,
	})
	if err != nil {
		t.Fatalf("New after Close: %v", err)
	}
	a.Close()

}

// The token cache's consumer-owned interface (pdp/authn/tokencache.Epocher).
var _ interface{ KeyEpoch() uint64 } = (*oidcjwt.Authenticator)(nil)
