package tokencache

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate/tollgate/pdp/authn"
	"github.com/tollgate/tollgate/pdp/credential"
)

// verifier is a stand-in for oidcjwt: it accepts tokens listed in ok (with
// their expiry), rejects others, fails on "boom", and counts its calls.
type verifier struct {
	mu    sync.Mutex
	ok    map[string]time.Time
	calls atomic.Int64
	epoch atomic.Uint64
}

func (v *verifier) Authenticate(_ context.Context, cred credential.Credential) (authn.Outcome, error) {
	v.calls.Add(1)
	raw := cred.Secret.Reveal()
	if raw == "boom" {
		return authn.Reject(authn.ReasonUnavailable), errors.New("jwks down")
	}
	v.mu.Lock()
	exp, ok := v.ok[raw]
	v.mu.Unlock()
	if !ok {
		return authn.Reject(authn.ReasonBadSignature), nil
	}
	return authn.Accept(&authn.Identity{Kind: authn.KindUser, Subject: "sub-" + raw, ExpiresAt: exp}), nil
}

func (v *verifier) KeyEpoch() uint64 { return v.epoch.Load() }

type clock struct{ t atomic.Int64 }

func (c *clock) now() time.Time          { return time.Unix(0, c.t.Load()) }
func (c *clock) advance(d time.Duration) { c.t.Add(int64(d)) }

func bearer(tok string) credential.Credential {
	return credential.Credential{Type: credential.TypeBearer, Placement: credential.PlacementHeader, Name: "authorization", Secret: credential.NewSecret(tok)}
}

func setup(t *testing.T, cfg Config) (*Authenticator, *verifier, *clock) {
	t.Helper()
	c := &clock{}
	c.t.Store(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	v := &verifier{ok: map[string]time.Time{}}
	cfg.Now = c.now
	a, err := New(v, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return a, v, c
}

func TestCache(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name string
		// run gets the cache, the verifier and the clock, and returns how
		// many times the verifier must have been called in all.
		run       func(t *testing.T, a *Authenticator, v *verifier, c *clock)
		wantCalls int64
	}{
		{"a token seen before is not verified again", func(t *testing.T, a *Authenticator, v *verifier, c *clock) {
			v.ok["good"] = c.now().Add(time.Hour)
			for range 5 {
				mustAccept(t, a, "good")
			}
		}, 1},
		{"rejections are not cached", func(t *testing.T, a *Authenticator, v *verifier, c *clock) {
			for range 3 {
				mustReject(t, a, "bad", authn.ReasonBadSignature)
			}
		}, 3},
		{"errors are not cached and pass through", func(t *testing.T, a *Authenticator, v *verifier, c *clock) {
			for range 2 {
				out, err := a.Authenticate(ctx, bearer("boom"))
				if err == nil || out.Result != authn.Rejected {
					t.Fatalf("got %+v, %v; want the verifier's error", out, err)
				}
			}
		}, 2},
		{"an entry never outlives exp plus skew", func(t *testing.T, a *Authenticator, v *verifier, c *clock) {
			v.ok["good"] = c.now().Add(time.Minute)
			mustAccept(t, a, "good")
			c.advance(time.Minute + 29*time.Second) // within the 30s skew: still cached
			mustAccept(t, a, "good")
			c.advance(2 * time.Second) // past exp+skew: asks the verifier, which now says expired
			delete(v.ok, "good")
			mustReject(t, a, "good", authn.ReasonBadSignature)
		}, 2},
		{"a token already past exp plus skew is not kept", func(t *testing.T, a *Authenticator, v *verifier, c *clock) {
			v.ok["stale"] = c.now().Add(-time.Minute)
			mustAccept(t, a, "stale")
			mustAccept(t, a, "stale")
		}, 2},
		{"an identity without expiry is not kept", func(t *testing.T, a *Authenticator, v *verifier, c *clock) {
			v.ok["forever"] = time.Time{}
			mustAccept(t, a, "forever")
			mustAccept(t, a, "forever")
		}, 2},
		{"a key epoch change drops what was verified before", func(t *testing.T, a *Authenticator, v *verifier, c *clock) {
			v.ok["good"] = c.now().Add(time.Hour)
			mustAccept(t, a, "good")
			v.epoch.Add(1) // a key left the JWKS
			delete(v.ok, "good")
			mustReject(t, a, "good", authn.ReasonBadSignature)
			mustReject(t, a, "good", authn.ReasonBadSignature)
		}, 3},
		{"one byte more is another token", func(t *testing.T, a *Authenticator, v *verifier, c *clock) {
			v.ok["good"] = c.now().Add(time.Hour)
			mustAccept(t, a, "good")
			mustReject(t, a, "good ", authn.ReasonBadSignature)
			mustReject(t, a, "goo", authn.ReasonBadSignature)
		}, 3},
		{"other credential types go straight through", func(t *testing.T, a *Authenticator, v *verifier, c *clock) {
			key := credential.Credential{Type: credential.TypeAPIKey, Placement: credential.PlacementHeader, Secret: credential.NewSecret("good")}
			v.ok["good"] = c.now().Add(time.Hour)
			for range 2 {
				if out, _ := a.Authenticate(ctx, key); out.Result != authn.Authenticated {
					t.Fatalf("got %+v", out)
				}
			}
		}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, v, c := setup(t, Config{ClockSkew: 30 * time.Second})
			tt.run(t, a, v, c)
			if got := v.calls.Load(); got != tt.wantCalls {
				t.Errorf("verifier called %d times, want %d", got, tt.wantCalls)
			}
		})
	}
}

func TestBounds(t *testing.T) {
	tests := []struct {
		name       string
		cfg        Config
		tokens     int
		maxEntries int
	}{
		{"entries", Config{MaxEntries: 100}, 2000, 100},
		{"bytes", Config{MaxEntries: 1 << 20, MaxBytes: 100 * 1024}, 5000, 100 * 1024 / 256}, // an entry weighs at least 256
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, v, c := setup(t, tt.cfg)
			for i := range tt.tokens {
				tok := fmt.Sprintf("tok-%d", i)
				v.ok[tok] = c.now().Add(time.Hour)
				mustAccept(t, a, tok)
			}
			a.cache.CleanUp()
			if n := a.Len(); n > tt.maxEntries || n == 0 {
				t.Errorf("cache holds %d tokens, want between 1 and %d", n, tt.maxEntries)
			}
		})
	}
}

func TestConcurrent(t *testing.T) {
	a, v, c := setup(t, Config{})
	for i := range 50 {
		v.ok[fmt.Sprint(i)] = c.now().Add(time.Hour)
	}
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 500 {
				tok := fmt.Sprint((i + w) % 60) // 50 good, 10 bad
				out, _ := a.Authenticate(context.Background(), bearer(tok))
				if want := (i+w)%60 < 50; (out.Result == authn.Authenticated) != want {
					t.Errorf("token %s: got %+v", tok, out)
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestNewRejectsBadConfig(t *testing.T) {
	for _, cfg := range []Config{{MaxEntries: -1}, {MaxBytes: -1}, {MaxTTL: -1}} {
		if _, err := New(&verifier{}, cfg); err == nil {
			t.Errorf("New(%+v) accepted", cfg)
		}
	}
	if _, err := New(nil, Config{}); err == nil {
		t.Error("New(nil) accepted")
	}
}

func mustAccept(t *testing.T, a *Authenticator, tok string) {
	t.Helper()
	out, err := a.Authenticate(context.Background(), bearer(tok))
	if err != nil || out.Result != authn.Authenticated || out.Identity.Subject != "sub-"+tok {
		t.Fatalf("token %q: got %+v, %v; want accepted", tok, out, err)
	}
}

func mustReject(t *testing.T, a *Authenticator, tok, reason string) {
	t.Helper()
	out, err := a.Authenticate(context.Background(), bearer(tok))
	if err != nil || out.Result != authn.Rejected || out.Reason != reason {
		t.Fatalf("token %q: got %+v, %v; want rejected with %s", tok, out, err, reason)
	}
}

func BenchmarkHit(b *testing.B) {
	v := &verifier{ok: map[string]time.Time{}}
	tok := string(make([]byte, 900)) // the size of a typical RS256 access token
	v.ok[tok] = time.Now().Add(time.Hour)
	a, err := New(v, Config{})
	if err != nil {
		b.Fatal(err)
	}
	cred := bearer(tok)
	b.ReportAllocs()
	for b.Loop() {
		if out, _ := a.Authenticate(context.Background(), cred); out.Result != authn.Authenticated {
			b.Fatal(out)
		}
	}
}

// TestStats: a token answered from the cache (Authenticate or Peek) is a
// hit, one the verifier is asked about a miss; a Peek that cannot answer
// counts nothing (Authenticate follows it); other credentials count nothing.
func TestStats(t *testing.T) {
	a, v, c := setup(t, Config{})
	v.ok["good"] = c.now().Add(time.Hour)
	ctx := context.Background()
	steps := []struct {
		name         string
		do           func()
		hits, misses uint64
		entries      int
	}{
		{"peek, not cached", func() { a.Peek(bearer("good")) }, 0, 0, 0},
		{"verified", func() { _, _ = a.Authenticate(ctx, bearer("good")) }, 0, 1, 1},
		{"from the cache", func() { _, _ = a.Authenticate(ctx, bearer("good")) }, 1, 1, 1},
		{"peek from the cache", func() { a.Peek(bearer("good")) }, 2, 1, 1},
		{"a bad token is verified, not kept", func() { _, _ = a.Authenticate(ctx, bearer("bad")) }, 2, 2, 1},
		{"an API key is not the cache's", func() {
			_, _ = a.Authenticate(ctx, credential.Credential{Type: credential.TypeAPIKey, Secret: credential.NewSecret("k")})
		}, 2, 2, 1},
	}
	for _, s := range steps {
		s.do()
		a.cache.CleanUp()
		if h, m, n := a.Stats(); h != s.hits || m != s.misses || n != s.entries {
			t.Fatalf("%s: hits %d misses %d entries %d, want %d %d %d", s.name, h, m, n, s.hits, s.misses, s.entries)
		}
	}
}
