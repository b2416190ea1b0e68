package oidcjwt_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate/tollgate/pdp/authn"
	"github.com/tollgate/tollgate/pdp/authn/authntest"
	"github.com/tollgate/tollgate/pdp/authn/oidcjwt"
)

const interval = oidcjwt.DefaultJWKSRefreshInterval

func TestJWKSFetchedLazilyOnce(t *testing.T) {
	f := newFixture(t, nil)
	if n := f.iss.JWKSFetches(); n != 0 {
		t.Fatalf("New fetched the JWKS %d times", n)
	}
	for range 5 {
		f.mustAccept(t, f.iss.Mint(f.claims(nil)))
		f.mustAccept(t, f.iss.Mint(f.claims(nil), authntest.WithAlg("ES256")))
	}
	if n := f.iss.JWKSFetches(); n != 1 {
		t.Fatalf("JWKSFetches = %d, want 1", n)
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

// A kid the issuer publishes right after the last fetch is picked up once the
// interval has passed, not before.
func TestRotationWaitsForTheInterval(t *testing.T) {
	f := newFixture(t, nil)
	f.mustAccept(t, f.iss.Mint(f.claims(nil)))
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

// TestUnknownKidSprayIsThrottled is a security regression test: tokens with
// random kids must not make every request fetch the JWKS.
func TestUnknownKidSprayIsThrottled(t *testing.T) {
	f := newFixture(t, nil)
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
	if got := f.iss.JWKSFetches(); got > n+1 {
		t.Fatalf("50 unknown kids within the interval: %d extra fetches, want at most 1", got-n)
	}
	f.mustAccept(t, valid)

	// Once the interval has passed: one fetch, even for a concurrent spray.
	f.clock.Advance(interval)
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
	f.iss.SetJWKSDelay(200 * time.Millisecond)
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
	wg.Wait()
	if got := f.iss.JWKSFetches(); got != 1 {
		t.Fatalf("JWKSFetches = %d, want 1", got)
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
			tc.break_(f.iss)
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

func TestCanceledContextIsAnError(t *testing.T) {
	f := newFixture(t, nil)
	f.iss.SetJWKSDelay(time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	out, err := f.auth.Authenticate(ctx, bearer(f.iss.Mint(f.claims(nil))))
	if !errors.Is(err, context.DeadlineExceeded) || out.Result != authn.Rejected || out.Reason != authn.ReasonUnavailable {
		t.Fatalf("Authenticate = %+v, %v; want a deadline error", out, err)
	}
	// The fetch went on without the impatient caller; the next one uses it.
	f.iss.SetJWKSDelay(0)
	f.mustAccept(t, f.iss.Mint(f.claims(nil)))
	if got := f.iss.JWKSFetches(); got != 1 {
		t.Fatalf("JWKSFetches = %d, want 1", got)
	}
}
