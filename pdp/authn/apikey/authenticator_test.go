package apikey_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate/tollgate/pdp/authn"
	"github.com/tollgate/tollgate/pdp/authn/apikey"
	"github.com/tollgate/tollgate/pdp/credential"
)

func apiKey(v string) credential.Credential {
	return credential.Credential{
		Type:      credential.TypeAPIKey,
		Placement: credential.PlacementHeader,
		Name:      "x-api-key",
		Secret:    credential.NewSecret(v),
	}
}

// withSecret replaces the secret part of key, keeping its id.
func withSecret(key, secret string) string {
	return key[:apikey.KeyLen-apikey.SecretLen] + secret
}

type fixture struct {
	auth                      *apikey.Authenticator
	valid, revoked, expired   apikey.Generated
	future, revokedAndExpired apikey.Generated
	validRec                  apikey.Record
	now                       time.Time
}

func newFixture(t testing.TB) fixture {
	t.Helper()
	now := created.Add(30 * 24 * time.Hour)
	f := fixture{now: now}
	var recs []apikey.Record
	var r apikey.Record

	f.valid, f.validRec = newRecord(t, "billing-service", "products:read", "orders:read")
	recs = append(recs, f.validRec)

	f.revoked, r = newRecord(t, "revoked-service", "products:read")
	r.Revoked = now.Add(-time.Hour)
	recs = append(recs, r)

	f.expired, r = newRecord(t, "expired-service", "products:read")
	r.Expires = now.Add(-time.Second)
	recs = append(recs, r)

	f.future, r = newRecord(t, "future-service")
	r.Expires = now.Add(time.Hour)
	recs = append(recs, r)

	f.revokedAndExpired, r = newRecord(t, "old-service")
	r.Expires = now.Add(-time.Hour)
	r.Revoked = now.Add(-2 * time.Hour)
	recs = append(recs, r)

	s, err := apikey.NewStore(recs)
	if err != nil {
		t.Fatal(err)
	}
	f.auth = apikey.New(s, apikey.Options{Now: func() time.Time { return now }})
	return f
}

func TestAuthenticate(t *testing.T) {
	f := newFixture(t)
	valid := f.valid.Key.Reveal()
	otherSecret := strings.Repeat("A", apikey.SecretLen-1) + "w"

	tests := []struct {
		name   string
		cred   credential.Credential
		result authn.Result
		reason string
	}{
		{"generated key verifies", apiKey(valid), authn.Authenticated, ""},
		{"key expiring later verifies", apiKey(f.future.Key.Reveal()), authn.Authenticated, ""},
		{"wrong secret", apiKey(withSecret(valid, otherSecret)), authn.Rejected, authn.ReasonInvalid},
		{"secret off by the last character", apiKey(valid[:len(valid)-1] + flip(valid[len(valid)-1])), authn.Rejected, authn.ReasonInvalid},
		{"unknown id", apiKey("tgk_zzzzzzzzzzzz_" + valid[17:]), authn.Rejected, authn.ReasonInvalid},
		{"malformed", apiKey("not-a-key"), authn.Rejected, authn.ReasonMalformed},
		{"malformed: empty", apiKey(""), authn.Rejected, authn.ReasonMalformed},
		{"malformed: bearer prefix kept", apiKey("Bearer " + valid), authn.Rejected, authn.ReasonMalformed},
		{"malformed: trailing newline", apiKey(valid + "\n"), authn.Rejected, authn.ReasonMalformed},
		{"malformed: upper-case id", apiKey(strings.ToUpper(valid[:17]) + valid[17:]), authn.Rejected, authn.ReasonMalformed},
		{"malformed: at the size limit", apiKey(strings.Repeat("a", apikey.MaxPresentedLen)), authn.Rejected, authn.ReasonMalformed},
		{"oversized", apiKey(strings.Repeat("a", apikey.MaxPresentedLen+1)), authn.Rejected, authn.ReasonTooLarge},
		{"oversized valid prefix", apiKey(valid + strings.Repeat("A", 300)), authn.Rejected, authn.ReasonTooLarge},
		{"revoked", apiKey(f.revoked.Key.Reveal()), authn.Rejected, authn.ReasonRevoked},
		{"expired", apiKey(f.expired.Key.Reveal()), authn.Rejected, authn.ReasonExpired},
		{"revoked and expired reports revoked", apiKey(f.revokedAndExpired.Key.Reveal()), authn.Rejected, authn.ReasonRevoked},
		{"revoked with wrong secret does not reveal revocation", apiKey(withSecret(f.revoked.Key.Reveal(), otherSecret)), authn.Rejected, authn.ReasonInvalid},
		{"expired with wrong secret does not reveal expiry", apiKey(withSecret(f.expired.Key.Reveal(), otherSecret)), authn.Rejected, authn.ReasonInvalid},
		{"credential problem", func() credential.Credential {
			c := apiKey(valid)
			c.Problem = credential.ErrMultipleCredentials
			return c
		}(), authn.Rejected, credential.ErrMultipleCredentials},
		{"bearer not applicable", credential.Credential{Type: credential.TypeBearer, Secret: credential.NewSecret(valid)}, authn.NotApplicable, ""},
		{"none not applicable", credential.None(), authn.NotApplicable, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := f.auth.Authenticate(context.Background(), tt.cred)
			if err != nil {
				t.Fatalf("err = %v", err)
			}
			if out.Result != tt.result || out.Reason != tt.reason {
				t.Fatalf("outcome = %v %q, want %v %q", out.Result, out.Reason, tt.result, tt.reason)
			}
			if (out.Identity != nil) != (tt.result == authn.Authenticated) {
				t.Fatalf("identity = %+v for result %v", out.Identity, out.Result)
			}
			if s := fmt.Sprintf("%+v %+v", out, out.Identity); tt.cred.Secret.Reveal() != "" && strings.Contains(s, tt.cred.Secret.Reveal()) {
				t.Fatalf("outcome reveals the key: %s", s)
			}
		})
	}
}

func flip(c byte) string {
	if c == 'A' {
		return "B"
	}
	return "A"
}

func TestAuthenticateIdentity(t *testing.T) {
	f := newFixture(t)
	out, _ := f.auth.Authenticate(context.Background(), apiKey(f.valid.Key.Reveal()))
	want := &authn.Identity{
		Kind:    authn.KindService,
		Subject: "billing-service",
		KeyID:   f.valid.ID,
		Scopes:  []string{"products:read", "orders:read"},
	}
	if !reflect.DeepEqual(out.Identity, want) {
		t.Fatalf("identity = %+v, want %+v", out.Identity, want)
	}
	// Identities are built once per key and shared read-only by every
	// decision, as the token cache shares JWT identities.
	again, _ := f.auth.Authenticate(context.Background(), apiKey(f.valid.Key.Reveal()))
	if again.Identity != out.Identity {
		t.Errorf("a second use built another identity")
	}
	if rec, ok := f.auth.Store().Get(f.valid.ID); !ok || !reflect.DeepEqual(rec.Scopes, out.Identity.Scopes) {
		t.Fatalf("record %+v, identity scopes %v", rec, out.Identity.Scopes)
	}
}

func TestUnknownIDAndWrongSecretAreIndistinguishable(t *testing.T) {
	f := newFixture(t)
	key := f.valid.Key.Reveal()
	unknown, _ := f.auth.Authenticate(context.Background(), apiKey("tgk_zzzzzzzzzzzz_"+key[17:]))
	wrong, _ := f.auth.Authenticate(context.Background(), apiKey(withSecret(key, strings.Repeat("B", apikey.SecretLen))))
	if !reflect.DeepEqual(unknown, wrong) {
		t.Fatalf("unknown id %+v differs from wrong secret %+v", unknown, wrong)
	}
}

func TestExpiryBoundary(t *testing.T) {
	g, r := newRecord(t, "svc")
	r.Expires = created.Add(time.Hour)
	s, err := apikey.NewStore([]apikey.Record{r})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		now    time.Time
		result authn.Result
	}{
		{r.Expires.Add(-time.Nanosecond), authn.Authenticated},
		{r.Expires, authn.Authenticated}, // valid up to and including the instant
		{r.Expires.Add(time.Nanosecond), authn.Rejected},
	} {
		a := apikey.New(s, apikey.Options{Now: func() time.Time { return tt.now }})
		out, _ := a.Authenticate(context.Background(), apiKey(g.Key.Reveal()))
		if out.Result != tt.result {
			t.Errorf("at %v: result %v, want %v", tt.now, out.Result, tt.result)
		}
	}
}

func TestEmptyAuthenticatorsRejectEverything(t *testing.T) {
	g, _ := newRecord(t, "svc")
	for name, a := range map[string]*apikey.Authenticator{
		"nil store": apikey.New(nil, apikey.Options{}),
		"zero":      new(apikey.Authenticator),
	} {
		out, err := a.Authenticate(context.Background(), apiKey(g.Key.Reveal()))
		if err != nil || out.Result != authn.Rejected || out.Reason != authn.ReasonInvalid {
			t.Errorf("%s: outcome %+v, %v; want rejected invalid", name, out, err)
		}
	}
}

func TestReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.yaml")
	g1, r1 := newRecord(t, "first")
	if err := apikey.Add(path, r1); err != nil {
		t.Fatal(err)
	}
	a, err := apikey.NewFromFile(path, apikey.Options{})
	if err != nil {
		t.Fatal(err)
	}
	g2, r2 := newRecord(t, "second")
	if err := apikey.Add(path, r2); err != nil {
		t.Fatal(err)
	}
	check := func(g apikey.Generated, want authn.Result, reason string) {
		t.Helper()
		out, _ := a.Authenticate(context.Background(), apiKey(g.Key.Reveal()))
		if out.Result != want || out.Reason != reason {
			t.Errorf("key %s: %v %q, want %v %q", g.ID, out.Result, out.Reason, want, reason)
		}
	}
	check(g2, authn.Rejected, authn.ReasonInvalid) // not reloaded yet
	if err := a.Reload(path); err != nil {
		t.Fatal(err)
	}
	check(g1, authn.Authenticated, "")
	check(g2, authn.Authenticated, "")

	if _, err := apikey.Revoke(path, g1.ID, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := a.Reload(path); err != nil {
		t.Fatal(err)
	}
	check(g1, authn.Rejected, authn.ReasonRevoked)

	// A broken file keeps the current store.
	if err := os.WriteFile(path, []byte("keys: [\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := a.Reload(path); err == nil {
		t.Fatal("Reload of a broken file must fail")
	}
	check(g2, authn.Authenticated, "")
	if a.Store().Len() != 2 {
		t.Errorf("store has %d records after a failed reload", a.Store().Len())
	}
	if _, err := apikey.NewFromFile(path, apikey.Options{}); err == nil {
		t.Error("NewFromFile of a broken file must fail")
	}
}

func TestConcurrentAuthenticate(t *testing.T) {
	f := newFixture(t)
	other, err := apikey.NewStore(nil)
	if err != nil {
		t.Fatal(err)
	}
	full := f.auth.Store()
	ctx := context.Background()
	creds := []credential.Credential{
		apiKey(f.valid.Key.Reveal()),
		apiKey(f.revoked.Key.Reveal()),
		apiKey("tgk_zzzzzzzzzzzz_" + f.valid.Key.Reveal()[17:]),
		apiKey("garbage"),
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Go(func() { // swap whole stores while others authenticate
		for i := 0; ; i++ {
			select {
			case <-stop:
				f.auth.SetStore(full)
				return
			default:
			}
			if i%2 == 0 {
				f.auth.SetStore(other)
			} else {
				f.auth.SetStore(full)
			}
		}
	})
	var workers sync.WaitGroup
	for w := range 8 {
		workers.Go(func() {
			for i := range 500 {
				c := creds[(w+i)%len(creds)]
				out, err := f.auth.Authenticate(ctx, c)
				if err != nil {
					t.Error(err)
					return
				}
				if out.Result == authn.Authenticated && out.Identity.Subject != "billing-service" {
					t.Errorf("wrong identity %+v", out.Identity)
					return
				}
			}
		})
	}
	workers.Wait()
	close(stop)
	wg.Wait()
	out, _ := f.auth.Authenticate(ctx, creds[0])
	if out.Result != authn.Authenticated {
		t.Fatalf("after swaps: %+v", out)
	}
}

func BenchmarkAuthenticate(b *testing.B) {
	const n = 1000
	recs := make([]apikey.Record, 0, n)
	var keys []apikey.Generated
	for i := range n {
		g, r := newRecord(b, fmt.Sprintf("svc-%d", i), "products:read")
		recs = append(recs, r)
		keys = append(keys, g)
	}
	s, err := apikey.NewStore(recs)
	if err != nil {
		b.Fatal(err)
	}
	a := apikey.New(s, apikey.Options{})
	ctx := context.Background()
	valid := keys[n/2].Key.Reveal()
	cases := []struct {
		name string
		cred credential.Credential
		want authn.Result
	}{
		{"valid", apiKey(valid), authn.Authenticated},
		{"wrong_secret", apiKey(withSecret(valid, strings.Repeat("A", apikey.SecretLen))), authn.Rejected},
		{"unknown_id", apiKey("tgk_zzzzzzzzzzzz_" + valid[17:]), authn.Rejected},
		{"malformed", apiKey("not-a-key"), authn.Rejected},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				out, _ := a.Authenticate(ctx, c.cred)
				if out.Result != c.want {
					b.Fatalf("result %v", out.Result)
				}
			}
		})
	}
	b.Run("valid_parallel", func(b *testing.B) {
		b.ReportAllocs()
		cred := apiKey(valid)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if out, _ := a.Authenticate(ctx, cred); out.Result != authn.Authenticated {
					b.Errorf("result %v", out.Result)
					return
				}
			}
		})
	})
}
