package tokencache

import (
	"context"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/tollgate/tollgate/pdp/authn"
	"github.com/tollgate/tollgate/pdp/authn/authntest"
	"github.com/tollgate/tollgate/pdp/authn/oidcjwt"
	"github.com/tollgate/tollgate/pdp/credential"
)

// TestWeightFollowsTheHeap fills the cache with identities the real
// verifier built from real tokens and compares the estimated weight with
// the heap they take: the bytes bound is only worth what the estimate is.
func TestWeightFollowsTheHeap(t *testing.T) {
	if testing.Short() {
		t.Skip("verifies 6,000 tokens")
	}
	ctx := context.Background()
	is := authntest.NewIssuer(t)
	jwts, err := oidcjwt.New(ctx, oidcjwt.Config{Issuers: []oidcjwt.IssuerConfig{{Issuer: is.URL(), Audiences: []string{authntest.Audience}}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(jwts.Close)
	for _, tc := range []struct {
		name   string
		claims func(i int) map[string]any
	}{
		{"the load harness's access token (9 claims)", func(i int) map[string]any {
			c := is.Claims("user-" + strconv.Itoa(i))
			c["customer_number"], c["scope"], c["email"] = strconv.Itoa(i), "customers:read", "user-"+strconv.Itoa(i)+"@example.com"
			return c
		}},
		{"an ID token with nested claims (16 claims)", func(i int) map[string]any {
			c := is.Claims("user-" + strconv.Itoa(i))
			c["name"], c["given_name"], c["family_name"] = "User Number "+strconv.Itoa(i), "User", "Number "+strconv.Itoa(i)
			c["email"], c["email_verified"], c["locale"] = "user-"+strconv.Itoa(i)+"@example.com", true, "en-GB"
			c["roles"], c["scp"] = []any{"reader", "writer"}, []any{"customers:read", "orders:read", "orders:write"}
			c["address"] = map[string]any{"country": "GB", "locality": "London", "postal_code": "EC1A 1BB"}
			c["auth_time"] = time.Now().Unix()
			return c
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const n = 3000
			creds := make([]credential.Credential, n)
			for i := range creds {
				tok := is.Mint(tc.claims(i), authntest.WithKey(is.Key(authntest.KeyIDEC))) // ES256: quick to mint
				creds[i] = credential.Credential{Type: credential.TypeBearer, Placement: credential.PlacementHeader, Name: "authorization", Secret: credential.NewSecret(tok)}
			}
			a, err := New(jwts, Config{MaxEntries: 1 << 30, MaxBytes: 1 << 36}) // a floor of 64 bytes per entry
			if err != nil {
				t.Fatal(err)
			}
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			for _, cred := range creds {
				if out, err := a.Authenticate(ctx, cred); err != nil || out.Result != authn.Authenticated {
					t.Fatalf("%+v, %v", out, err)
				}
			}
			a.cache.CleanUp()
			runtime.GC()
			runtime.ReadMemStats(&after)
			heap := float64(after.HeapInuse) - float64(before.HeapInuse)
			if got := a.Len(); got != n {
				t.Fatalf("the cache holds %d tokens, want %d", got, n)
			}
			weight := float64(a.cache.WeightedSize())
			runtime.KeepAlive(creds)
			ratio := weight / heap
			t.Logf("heap %.0f B/token, estimate %.0f B/token (%.2f×)", heap/n, weight/n, ratio)
			if ratio < 0.95 || ratio > 1.25 {
				t.Errorf("the estimate is %.2f× the heap, want 0.95–1.25×", ratio)
			}
		})
	}
}
