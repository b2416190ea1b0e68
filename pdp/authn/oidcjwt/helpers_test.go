package oidcjwt_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tollgate/tollgate/pdp/authn"
	"github.com/tollgate/tollgate/pdp/authn/authntest"
	"github.com/tollgate/tollgate/pdp/authn/oidcjwt"
	"github.com/tollgate/tollgate/pdp/credential"
)

// clock is an injectable clock that moves only when told. Its After fires
// when Advance reaches the deadline; WaitForWaiters tells a test that the
// background loops are asleep (so a refresh has ended), without sleeping.
type clock struct {
	mu      sync.Mutex
	cond    *sync.Cond
	t       time.Time
	waiters []waiter
}

type waiter struct {
	at time.Time
	ch chan time.Time
}

func newClock() *clock {
	c := &clock{t: time.Now().Truncate(time.Second)}
	c.cond = sync.NewCond(&c.mu)
	return c
}

// After implements oidcjwt.Config.After on the fake time.
func (c *clock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	if d <= 0 {
		ch <- c.t
		return ch
	}
	c.waiters = append(c.waiters, waiter{at: c.t.Add(d), ch: ch})
	c.cond.Broadcast()
	return ch
}

// WaitForWaiters waits until n goroutines wait on After and returns how long
// from now each waits, soonest first.
func (c *clock) WaitForWaiters(t testing.TB, n int) []time.Duration {
	t.Helper()
	const guard = 10 * time.Second // a failure guard, not a timing assertion
	deadline := time.Now().Add(guard)
	wake := time.AfterFunc(guard, func() { c.mu.Lock(); c.cond.Broadcast(); c.mu.Unlock() })
	defer wake.Stop()
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(c.waiters) != n {
		if time.Now().After(deadline) {
			t.Fatalf("clock: %d goroutines wait on the clock, want %d", len(c.waiters), n)
		}
		c.cond.Wait()
	}
	out := make([]time.Duration, len(c.waiters))
	for i, w := range c.waiters {
		out[i] = w.at.Sub(c.t)
	}
	slices.Sort(out)
	return out
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock and fires the waiters whose deadline it reaches.
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
	kept := c.waiters[:0]
	for _, w := range c.waiters {
		if w.at.After(c.t) {
			kept = append(kept, w)
			continue
		}
		w.ch <- c.t
	}
	c.waiters = kept
	c.cond.Broadcast()
}

// fixture is one test issuer and an authenticator trusting it, on one clock.
type fixture struct {
	iss   *authntest.Issuer
	clock *clock
	auth  *oidcjwt.Authenticator
}

// newFixture starts an issuer and an authenticator for it. edit may change
// the config before New.
func newFixture(t testing.TB, edit func(*oidcjwt.Config)) *fixture {
	t.Helper()
	c := newClock()
	iss := authntest.NewIssuer(t, authntest.WithNow(c.Now))
	cfg := oidcjwt.Config{
		Issuers: []oidcjwt.IssuerConfig{{Issuer: iss.URL(), Audiences: []string{authntest.Audience}}},
		Now:     c.Now,
		After:   c.After,
	}
	if edit != nil {
		edit(&cfg)
	}
	a, err := oidcjwt.New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(a.Close)
	return &fixture{iss: iss, clock: c, auth: a}
}

func bearer(tok string) credential.Credential {
	return credential.Credential{
		Type:      credential.TypeBearer,
		Placement: credential.PlacementHeader,
		Name:      "authorization",
		Secret:    credential.NewSecret(tok),
	}
}

func (f *fixture) authenticate(t testing.TB, tok string) (authn.Outcome, error) {
	t.Helper()
	return f.auth.Authenticate(context.Background(), bearer(tok))
}

func (f *fixture) mustAccept(t testing.TB, tok string) *authn.Identity {
	t.Helper()
	out, err := f.authenticate(t, tok)
	if err != nil {
		t.Fatalf("Authenticate: unexpected error: %v", err)
	}
	if out.Result != authn.Authenticated || out.Identity == nil {
		t.Fatalf("Authenticate = %+v, want Authenticated", out)
	}
	return out.Identity
}

func (f *fixture) mustReject(t testing.TB, tok, reason string) {
	t.Helper()
	out, err := f.authenticate(t, tok)
	if err != nil {
		t.Fatalf("Authenticate: unexpected error: %v", err)
	}
	if out.Result != authn.Rejected || out.Reason != reason {
		t.Fatalf("Authenticate = %+v, want Rejected %q", out, reason)
	}
	if out.Identity != nil {
		t.Fatalf("rejected outcome carries an identity: %+v", out.Identity)
	}
}

// mustFail expects an error (the token could not be judged), never a plain
// rejection, and returns it.
func (f *fixture) mustFail(t testing.TB, tok string) error {
	t.Helper()
	out, err := f.authenticate(t, tok)
	if err == nil {
		t.Fatalf("Authenticate = %+v, want an error", out)
	}
	if out.Result != authn.Rejected || out.Reason != authn.ReasonUnavailable || out.Identity != nil {
		t.Fatalf("with an error, outcome = %+v, want Rejected %q", out, authn.ReasonUnavailable)
	}
	return err
}

// claims returns the issuer's default claims for alice, changed by edit.
func (f *fixture) claims(edit func(map[string]any)) map[string]any {
	c := f.iss.Claims("alice")
	if edit != nil {
		edit(c)
	}
	return c
}
