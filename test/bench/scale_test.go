package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/tollgate/tollgate/bundles"
	"github.com/tollgate/tollgate/pdp"
	"github.com/tollgate/tollgate/pdp/authn"
	"github.com/tollgate/tollgate/pdp/authn/apikey"
	"github.com/tollgate/tollgate/pdp/authn/authntest"
	"github.com/tollgate/tollgate/pdp/authn/tokencache"
	"github.com/tollgate/tollgate/pdp/credential"
	"github.com/tollgate/tollgate/pdp/request"
)

// scaleEnv turns on the full sizes of BenchmarkScale. Without it the
// benchmark runs at small sizes, so the brief run of every benchmark
// (test/run) keeps it compiling and working.
const scaleEnv = "TOLLGATE_BENCH_SCALE"

// scaleSizes are the large table sizes: the issue's, or small ones.
func scaleSizes() (routes, keys, tokens int) {
	if os.Getenv(scaleEnv) == "1" {
		return 10_000, 1_000_000, 100_000
	}
	return 200, 2_000, 200
}

// BenchmarkScale measures Decide with a large table next to the small one,
// for each of the three tables that grow with a deployment:
//
//   - routes_N: N routes in data.tollgate.routes (generated: many
//     services, versions, parameters, methods, "**" tails; the embedded
//     routes last, so the one that matches is the last in table order), a
//     JWT seen before on a sensitive route and an API key on an internal
//     route;
//   - apikeys_N: an API key store of N keys, Decide cycling over up to
//     4,096 of them;
//   - tokens_N: N distinct live ES256 tokens, each seen once before (the
//     token cache is warm), Decide cycling over all of them in a random
//     order; verifies/op counts the tokens the cache did not answer. The
//     token cache is sized for N tokens; tokens_N_default_limits runs it
//     with its defaults, which hold fewer tokens of this size.
//
// Each runs the pipeline as a server does (token cache and decision cache,
// "decision_cache") and without the decision cache ("no_decision_cache"):
// with many distinct callers the decision cache hits less, so the second is
// the bound to read.
//
// Each reports heap-MB (Go heap in use after a collection), setup-heap-MB
// (what the sub-benchmark's setup added to it) and rss-MB (VmRSS); the
// token benchmarks also caches-heap-MB (what warming the caches and the
// loop added), cached-tokens and verifies/op. RSS is the whole process's:
// run one table size per process for a clean figure, e.g.
//
//	TOLLGATE_BENCH_SCALE=1 go test -run '^$' -bench 'Scale/tokens_100000$/' -benchmem -timeout 30m ./test/bench/
func BenchmarkScale(b *testing.B) {
	nRoutes, nKeys, nTokens := scaleSizes()
	// modes are the two pipelines each size runs: as a server runs it
	// (token cache and decision cache), and without the decision cache.
	// Each builds its own fixture, so that memory counts one engine.
	type mode struct {
		name    string
		engines engines
	}
	modes := []mode{{"decision_cache", onlyDecisionCache}, {"no_decision_cache", onlyNoDecisionCache}}
	decider := func(f *fixture) *pdp.Decider {
		if f.decider != nil {
			return f.decider
		}
		return f.deciderNoDC
	}
	for _, n := range []int{0, nRoutes} {
		name := "routes_" + strconv.Itoa(n)
		if n == 0 {
			name = "routes_small"
		}
		b.Run(name, func(b *testing.B) {
			for _, m := range modes {
				b.Run(m.name, func(b *testing.B) {
					before := measureMemory(b)
					opt := fixtureOptions{engines: m.engines}
					start := time.Now()
					if n > 0 {
						opt.routes = generateRoutes(b, n)
					}
					f := newFixture(b, opt)
					b.Logf("%d routes: table generated, engine activated, fixture built in %s",
						len(f.bundle.Data["tollgate"].(map[string]any)["routes"].([]any)), time.Since(start).Round(time.Millisecond))
					for _, bc := range []struct {
						name string
						raw  request.Raw
					}{
						{"jwt_sensitive_seen_before", jwtRequest(f.rsToken, "42")},
						{"apikey_internal", keyRequest(f.key)},
					} {
						b.Run(bc.name, func(b *testing.B) {
							decideOne(b, decider(f), bc.raw)
							reportMemory(b, before, f)
						})
					}
				})
			}
		})
	}
	// apikeys_1 is one caller; apikeys_4096 the 4,096 callers a large
	// table's run takes in turn (its sample), from a small table: next to
	// the large table, it tells the table's size from the number of
	// callers (each is an identity and a decision cache entry).
	keySizes := []int{1, nKeys}
	if nKeys > 4096 {
		keySizes = []int{1, 4096, nKeys}
	}
	for _, n := range keySizes {
		b.Run("apikeys_"+strconv.Itoa(n), func(b *testing.B) {
			for _, m := range modes {
				b.Run(m.name, func(b *testing.B) {
					before := measureMemory(b)
					start := time.Now()
					store, sample := generateKeys(b, n)
					b.Logf("%d API keys generated and stored in %s", n, time.Since(start).Round(time.Millisecond))
					f := newFixture(b, fixtureOptions{store: store, engines: m.engines})
					rs := &requests{header: "X-Api-Key", values: sample, targets: make([]string, len(sample))}
					for i := range rs.targets {
						rs.targets[i] = "/products/" + strconv.Itoa(i)
					}
					decideLoop(b, decider(f), rs.len(), rs.builder(), nil)
					reportMemory(b, before, f, rs)
				})
			}
		})
	}
	for _, tc := range []struct {
		name  string
		n     int
		cache tokencache.Config
		modes []mode
	}{
		{"tokens_1", 1, tokencache.Config{}, modes},
		// The token cache sized for n tokens: entries up to 2n, 5 KiB of
		// estimated weight each (these identities are estimated at about
		// 3.9 KiB and take about 3.7 KiB of heap, see docs/BENCHMARKS.md).
		{"tokens_" + strconv.Itoa(nTokens), nTokens, tokencache.Config{MaxEntries: 2 * nTokens, MaxBytes: 5 << 10 * int64(nTokens)}, modes},
		// The token cache with its defaults (100,000 tokens, 256 MiB), as a
		// server runs it.
		{"tokens_" + strconv.Itoa(nTokens) + "_default_limits", nTokens, tokencache.Config{}, modes[:1]},
	} {
		n := tc.n
		b.Run(tc.name, func(b *testing.B) {
			for _, m := range tc.modes {
				b.Run(m.name, func(b *testing.B) {
					before := measureMemory(b)
					f := newFixture(b, fixtureOptions{cache: tc.cache, engines: m.engines})
					start := time.Now()
					tokens := mintES256(b, f.issuer, n)
					b.Logf("%d ES256 tokens minted in %s", n, time.Since(start).Round(time.Millisecond))
					rs := &requests{header: "Authorization", values: make([]string, n), targets: make([]string, n)}
					for i, tok := range tokens {
						rs.values[i] = "Bearer " + tok
						rs.targets[i] = "/customers/" + strconv.Itoa(i) + "/orders?page=2&size=50"
					}
					tokens = nil
					rand.New(rand.NewPCG(1, 2)).Shuffle(n, func(i, j int) {
						rs.values[i], rs.values[j] = rs.values[j], rs.values[i]
						rs.targets[i], rs.targets[j] = rs.targets[j], rs.targets[i]
					})
					beforeCaches := measureMemory(b)
					start = time.Now()
					warm(b, f.cache, rs)
					b.Logf("%d tokens verified into the token cache in %s; it holds %d", n, time.Since(start).Round(time.Millisecond), f.cache.Len())
					decideLoop(b, decider(f), rs.len(), rs.builder(), &f.counted.calls)
					b.ReportMetric(float64(f.cache.Len()), "cached-tokens")
					now := reportMemory(b, before, f, rs)
					b.ReportMetric((float64(now.heapInUse)-float64(beforeCaches.heapInUse))/mb, "caches-heap-MB")
				})
			}
		})
	}
}

// generateRoutes builds a route table of n routes in the shape of the
// default policy's: 40 routes per service (10 resources, each with a read
// route, a write route with a role, a tenant-owned sensitive route with a
// "**" tail, and an operations route for any method; the first resource's
// is public), then the embedded bundle's routes, last.
func generateRoutes(b *testing.B, n int) []any {
	b.Helper()
	embedded := newEmbeddedRoutes(b)
	resources := []string{"orders", "invoices", "shipments", "users", "items", "reports", "tickets", "events", "payments", "accounts"}
	words := []string{"inventory", "billing", "catalog", "search", "identity", "ledger", "shipping", "support", "analytics", "media"}
	var routes []any
	for s := 0; len(routes) < n-len(embedded); s++ {
		svc := fmt.Sprintf("%s-%03d", words[s%len(words)], s)
		for r, res := range resources {
			base := "/" + svc + "/v1/" + res
			ops := map[string]any{"id": svc + "." + res + ".ops", "methods": []any{"*"}, "paths": []any{"/" + svc + "/internal/" + res + "/**"}, "sensitivity": "sensitive", "roles": []any{"admin"}}
			if r == 0 {
				ops = map[string]any{"id": svc + "." + res + ".docs", "methods": []any{"GET", "HEAD"}, "paths": []any{"/" + svc + "/docs/" + res + "/**"}, "sensitivity": "public"}
			}
			routes = append(routes,
				map[string]any{"id": svc + "." + res + ".read", "methods": []any{"GET", "HEAD"}, "paths": []any{base, base + "/{id}"}, "sensitivity": "internal", "scopes": []any{svc + ":read"}},
				map[string]any{"id": svc + "." + res + ".write", "methods": []any{"POST", "PUT", "PATCH", "DELETE"}, "paths": []any{base, base + "/{id}"}, "sensitivity": "internal", "scopes": []any{svc + ":write"}, "roles": []any{"editor"}},
				map[string]any{"id": svc + "." + res + ".tenant", "methods": []any{"GET"}, "paths": []any{"/" + svc + "/v2/tenants/{tenant}/" + res + "/{id}/**"}, "sensitivity": "sensitive", "scopes": []any{svc + ":read"}, "owner": "tenant"},
				ops,
			)
		}
	}
	routes = routes[:n-len(embedded)]
	return append(routes, embedded...)
}

// newEmbeddedRoutes is the embedded bundle's route table.
func newEmbeddedRoutes(b *testing.B) []any {
	b.Helper()
	bndl, err := bundles.Load(context.Background(), "embedded")
	if err != nil {
		b.Fatal(err)
	}
	return bndl.Data["tollgate"].(map[string]any)["routes"].([]any)
}

// generateKeys builds a store of n API keys (from a seeded generator, so
// it takes seconds, not crypto/rand's time) and returns up to 4,096 of the
// keys, spread over the store.
func generateKeys(b *testing.B, n int) (*apikey.Store, []string) {
	b.Helper()
	rng := rand.NewChaCha8([32]byte{'t', 'o', 'l', 'l', 'g', 'a', 't', 'e'})
	created := time.Now().Add(-time.Hour)
	scopes := []string{"products:read"}
	owners := make([]string, 1000)
	for i := range owners {
		owners[i] = fmt.Sprintf("team-%04d", i)
	}
	every := max(n/4096, 1)
	recs := make([]apikey.Record, n)
	var sample []string
	for i := range recs {
		g, err := apikey.Generate(rng)
		if err != nil {
			b.Fatal(err)
		}
		recs[i] = apikey.Record{ID: g.ID, Hash: g.Hash, Owner: owners[i%len(owners)], Scopes: scopes, Created: created}
		if i%every == 0 {
			sample = append(sample, g.Key.Reveal())
		}
	}
	store, err := apikey.NewStore(recs)
	if err != nil {
		b.Fatal(err)
	}
	return store, sample
}

// mintES256 signs n distinct tokens (one user and customer number each)
// with the issuer's EC key, one signer per CPU. ES256 rather than RS256:
// see BenchmarkMintToken.
func mintES256(b *testing.B, is *authntest.Issuer, n int) []string {
	b.Helper()
	key := is.Key(authntest.KeyIDEC)
	now := time.Now()
	tokens := make([]string, n)
	workers := runtime.GOMAXPROCS(0)
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key.Private},
				(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", key.ID))
			if err != nil {
				errs <- err
				return
			}
			for i := w; i < n; i += workers {
				payload, err := json.Marshal(map[string]any{
					"iss": is.URL(), "aud": authntest.Audience, "sub": "user-" + strconv.Itoa(i),
					"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(time.Hour).Unix(),
					"customer_number": strconv.Itoa(i), "scope": "customers:read", "email": "user-" + strconv.Itoa(i) + "@example.com",
				})
				if err != nil {
					errs <- err
					return
				}
				jws, err := signer.Sign(payload)
				if err != nil {
					errs <- err
					return
				}
				if tokens[i], err = jws.CompactSerialize(); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
	return tokens
}

// warm verifies every token once through the token cache, one worker per
// CPU, so that the cache holds them (as if each had been seen once).
func warm(b *testing.B, cache *tokencache.Authenticator, rs *requests) {
	b.Helper()
	workers := runtime.GOMAXPROCS(0)
	var wg sync.WaitGroup
	rejected := make(chan string, workers)
	for w := range workers {
		wg.Go(func() {
			for i := w; i < rs.len(); i += workers {
				tok := strings.TrimPrefix(rs.values[i], "Bearer ")
				cred := credential.Credential{Type: credential.TypeBearer, Placement: credential.PlacementHeader, Name: "authorization", Secret: credential.NewSecret(tok)}
				if out, err := cache.Authenticate(context.Background(), cred); err != nil || out.Result != authn.Authenticated {
					rejected <- fmt.Sprintf("%+v, %v", out, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(rejected)
	if r, ok := <-rejected; ok {
		b.Fatalf("warming the token cache: %s", r)
	}
}

// BenchmarkMintToken is the cost of minting one test token, which decides
// the algorithm of BenchmarkScale's 100,000 tokens.
func BenchmarkMintToken(b *testing.B) {
	is := authntest.NewIssuer(b)
	claims := is.Claims("alice")
	for _, alg := range []string{"RS256", "ES256"} {
		b.Run(alg, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				is.Mint(claims, authntest.WithAlg(alg))
			}
		})
	}
}
