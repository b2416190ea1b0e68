package bench

import (
	"bufio"
	"context"
	"crypto/elliptic"
	"encoding/base64"
	"log/slog"
	"math/big"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/bundle"

	"github.com/tollgate/tollgate/bundles"
	"github.com/tollgate/tollgate/pdp"
	"github.com/tollgate/tollgate/pdp/authn"
	"github.com/tollgate/tollgate/pdp/authn/apikey"
	"github.com/tollgate/tollgate/pdp/authn/authntest"
	"github.com/tollgate/tollgate/pdp/authn/oidcjwt"
	"github.com/tollgate/tollgate/pdp/authn/tokencache"
	"github.com/tollgate/tollgate/pdp/credential"
	"github.com/tollgate/tollgate/pdp/policy"
	"github.com/tollgate/tollgate/pdp/request"
)

// fixtureOptions change what newFixture builds; the zero value is the
// small table: the embedded bundle's five routes, one API key, the token
// cache with its defaults.
type fixtureOptions struct {
	// routes, when set, replaces data.tollgate.routes of the embedded bundle.
	routes []any
	// store, when set, is the API key store; otherwise one key is made.
	store *apikey.Store
	// cache configures the token cache.
	cache tokencache.Config
	// engine configures the policy engine with the decision cache (the
	// other engine has it off).
	engine policy.Options
	// engines says which engines (and so which deciders) are built.
	engines engines
}

// engines selects the policy engines a fixture builds.
type engines int

const (
	// bothEngines builds both engines and every decider.
	bothEngines engines = iota
	// onlyDecisionCache builds the engine with the decision cache
	// (fixture.engine, fixture.decider), so memory figures count one.
	onlyDecisionCache
	// onlyNoDecisionCache builds the engine without it (fixture.noDC,
	// fixture.deciderNoDC, fixture.cold).
	onlyNoDecisionCache
)

// fixture is the whole pipeline as a server builds it, over a real test
// issuer (JWKS over loopback HTTP) and a real API key store.
type fixture struct {
	bundle *bundle.Bundle
	// engine has the decision cache (on by default); noDC has it off, so
	// every evaluation runs the policy.
	engine, noDC *policy.Engine
	issuer       *authntest.Issuer
	jwts         *oidcjwt.Authenticator
	counted      *countingVerifier // jwts, counting the verifications the cache did not spare
	cache        *tokencache.Authenticator
	keys         *apikey.Authenticator
	// decider has the token cache in front of oidcjwt, then API keys, and
	// the engine with the decision cache: the pipeline as it runs in a
	// server. Nil with onlyNoDecisionCache.
	decider *pdp.Decider
	// deciderNoDC is decider without the decision cache. Nil with
	// onlyDecisionCache, as is cold.
	deciderNoDC *pdp.Decider
	// cold has oidcjwt alone, then API keys, and no decision cache:
	// every token is verified, every decision evaluated.
	cold *pdp.Decider

	rsToken, esToken string // alice, customer 42, customers:read; esToken has a high S
	key              string // an API key of "billing" with products:read
}

func newFixture(b *testing.B, opt fixtureOptions) *fixture {
	b.Helper()
	ctx := context.Background()
	f := &fixture{issuer: authntest.NewIssuer(b)}
	claims := f.issuer.Claims("alice")
	claims["customer_number"] = "42"
	claims["scope"] = "customers:read"
	claims["email"] = "alice@example.com"
	f.rsToken = f.issuer.Mint(claims) // RS256
	// An ES256 signature's S is random: half are above N/2, and those cost
	// more (the credential's digest is taken over the low-S form). Keep
	// the costlier kind, so that the figure does not depend on the draw.
	for f.esToken = ""; !highS(b, f.esToken); {
		f.esToken = f.issuer.Mint(claims, authntest.WithAlg("ES256"))
	}

	var err error
	if f.bundle, err = bundles.Load(ctx, "embedded"); err != nil {
		b.Fatal(err)
	}
	if opt.routes != nil {
		f.bundle.Data["tollgate"].(map[string]any)["routes"] = opt.routes
	}
	activate := func(o policy.Options) *policy.Engine {
		e := policy.NewEngine(o)
		if err := e.Activate(ctx, f.bundle); err != nil {
			b.Fatal(err)
		}
		return e
	}
	if opt.engines != onlyNoDecisionCache {
		f.engine = activate(opt.engine)
	}
	if opt.engines != onlyDecisionCache {
		noDC := opt.engine
		noDC.DecisionCacheEntries = -1
		f.noDC = activate(noDC)
	}
	if f.jwts, err = oidcjwt.New(ctx, oidcjwt.Config{Issuers: []oidcjwt.IssuerConfig{{Issuer: f.issuer.URL(), Audiences: []string{authntest.Audience}}}}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(f.jwts.Close)
	f.counted = &countingVerifier{next: f.jwts}
	if opt.cache.ClockSkew == 0 {
		opt.cache.ClockSkew = oidcjwt.DefaultClockSkew // as tollgate serve configures it
	}
	if f.cache, err = tokencache.New(f.counted, opt.cache); err != nil {
		b.Fatal(err)
	}

	gen, err := apikey.Generate(nil)
	if err != nil {
		b.Fatal(err)
	}
	f.key = gen.Key.Reveal()
	store := opt.store
	if store == nil {
		store, err = apikey.NewStore([]apikey.Record{{ID: gen.ID, Hash: gen.Hash, Owner: "billing", Scopes: []string{"products:read"}, Created: time.Now().Add(-time.Hour)}})
		if err != nil {
			b.Fatal(err)
		}
	}
	f.keys = apikey.New(store, apikey.Options{})

	// A long deadline, so that a busy machine does not turn a slow
	// verification into a deny (the deadline's cost does not depend on it).
	logger := slog.New(slog.NewTextHandler(benchLog{b}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	newDecider := func(e *policy.Engine, authns ...authn.Authenticator) *pdp.Decider {
		d, err := pdp.New(pdp.Config{Engine: e, Authenticators: authns, DecisionTimeout: 30 * time.Second, Logger: logger})
		if err != nil {
			b.Fatal(err)
		}
		return d
	}
	if f.engine != nil {
		f.decider = newDecider(f.engine, f.cache, f.keys)
	}
	if f.noDC != nil {
		f.deciderNoDC = newDecider(f.noDC, f.cache, f.keys)
		f.cold = newDecider(f.noDC, f.jwts, f.keys)
	}
	return f
}

// benchLog writes the deciders' warnings to the benchmark's log.
type benchLog struct{ b *testing.B }

func (l benchLog) Write(p []byte) (int, error) {
	l.b.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// highS reports whether tok is a compact ES256 JWS whose signature's S is
// above half the P-256 group order.
func highS(b *testing.B, tok string) bool {
	b.Helper()
	if tok == "" {
		return false
	}
	sig, err := base64.RawURLEncoding.DecodeString(tok[strings.LastIndexByte(tok, '.')+1:])
	if err != nil || len(sig) != 64 {
		b.Fatalf("not an ES256 signature: %d bytes, %v", len(sig), err)
	}
	n := elliptic.P256().Params().N
	return new(big.Int).SetBytes(sig[32:]).Cmp(new(big.Int).Rsh(n, 1)) > 0
}

// countingVerifier counts the tokens that reach the verifier behind the
// token cache (its misses). It passes the key epoch and Peek through, so
// the cache behaves as it does over oidcjwt directly (without Peek, an API
// key would be judged under a deadline that serve never sets for it).
type countingVerifier struct {
	next  *oidcjwt.Authenticator
	calls atomic.Int64
}

func (c *countingVerifier) Authenticate(ctx context.Context, cred credential.Credential) (authn.Outcome, error) {
	c.calls.Add(1)
	return c.next.Authenticate(ctx, cred)
}

func (c *countingVerifier) KeyEpoch() uint64 { return c.next.KeyEpoch() }

func (c *countingVerifier) Peek(cred credential.Credential) (authn.Outcome, bool) {
	return c.next.Peek(cred)
}

// browserHeaders are the headers a gateway typically forwards, plus extra
// name/value pairs.
func browserHeaders(extra ...string) map[string][]string {
	h := map[string][]string{
		"User-Agent":      {"Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"},
		"Accept":          {"application/json"},
		"Accept-Encoding": {"gzip, br"},
		"Accept-Language": {"en-GB,en;q=0.9"},
		"X-Request-Id":    {"0f4c2a9be1d84c7f"},
		"X-Forwarded-For": {"203.0.113.7"},
		"Traceparent":     {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
	}
	for i := 0; i+1 < len(extra); i += 2 {
		h[extra[i]] = []string{extra[i+1]}
	}
	return h
}

// jwtRequest asks for a customer's orders (a sensitive route with an
// owner) with token.
func jwtRequest(token, customer string) request.Raw {
	return request.Raw{Method: "GET", Target: "/customers/" + customer + "/orders?page=2&size=50", Host: "api.example.com", Scheme: "https",
		Headers: browserHeaders("Authorization", "Bearer "+token), SourceIP: "203.0.113.7"}
}

// keyRequest asks for a product (an internal route) with an API key.
func keyRequest(key string) request.Raw {
	return request.Raw{Method: "GET", Target: "/products/7", Host: "api.example.com", Scheme: "https",
		Headers: browserHeaders("X-Api-Key", key), SourceIP: "203.0.113.7"}
}

// requests are n requests that differ only in the value of one header
// (the credential) and in the target. The values are kept as strings, which
// the garbage collector need not scan, and each builder reuses one headers
// map: holding 100,000 requests costs their strings, not 100,000 maps.
type requests struct {
	header  string   // the header that carries the credential
	values  []string // its value, per request
	targets []string // per request
}

func (rs *requests) len() int { return len(rs.values) }

// builder returns a function that gives request i. It reuses one headers
// map (Decide only reads it), so a builder belongs to one goroutine.
func (rs *requests) builder() func(i int) request.Raw {
	h := browserHeaders(rs.header, "")
	v := h[rs.header]
	return func(i int) request.Raw {
		v[0] = rs.values[i]
		return request.Raw{Method: "GET", Target: rs.targets[i], Host: "api.example.com", Scheme: "https", Headers: h, SourceIP: "203.0.113.7"}
	}
}

// decideLoop decides the n requests at gives in turn; each must be
// allowed. It reports allocations. Before the clock starts it decides up
// to 4,096 of them once, so that each has been seen before (the caches
// hold it) when the loop meets it.
//
// When verified is not nil it counts the verifications behind the token
// cache: the loop reports how many each decision needed (verifies/op).
func decideLoop(b *testing.B, d *pdp.Decider, n int, at func(i int) request.Raw, verified *atomic.Int64) {
	b.Helper()
	ctx := context.Background()
	for i := range min(n, 4096) {
		if dec := d.Decide(ctx, at(i)); !dec.Allow {
			b.Fatalf("setup: decision %+v", dec)
		}
	}
	if verified != nil {
		before := verified.Load()
		defer func() { b.ReportMetric(float64(verified.Load()-before)/float64(b.N), "verifies/op") }()
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if dec := d.Decide(ctx, at(i)); !dec.Allow {
			b.Fatalf("decision %+v", dec)
		}
		if i++; i == n {
			i = 0
		}
	}
}

// decideOne decides raw over and over; see decideLoop.
func decideOne(b *testing.B, d *pdp.Decider, raw request.Raw) {
	b.Helper()
	decideLoop(b, d, 1, func(int) request.Raw { return raw }, nil)
}

// memory is what the process holds: the Go heap in use after a full
// collection, and the resident set size as the kernel counts it.
type memory struct {
	heapInUse uint64
	rss       uint64
}

// measureMemory collects garbage, returns what it can to the OS, and reads
// the heap in use (runtime.ReadMemStats) and VmRSS (/proc/self/status).
func measureMemory(b *testing.B) memory {
	b.Helper()
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return memory{heapInUse: ms.HeapInuse, rss: vmRSS(b)}
}

// vmRSS is VmRSS from /proc/self/status, in bytes; 0 where there is none.
func vmRSS(b *testing.B) uint64 {
	b.Helper()
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:")
		if !ok {
			continue
		}
		kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		if err != nil {
			b.Fatalf("VmRSS: %v", err)
		}
		return kb << 10
	}
	return 0
}

// reportMemory reports the heap in use and the RSS now, and how much the
// heap grew since before (what the benchmark's setup holds). keep is what
// must not be collected before the measurement.
func reportMemory(b *testing.B, before memory, keep ...any) memory {
	b.Helper()
	now := measureMemory(b)
	runtime.KeepAlive(keep)
	b.ReportMetric(float64(now.heapInUse)/mb, "heap-MB")
	b.ReportMetric((float64(now.heapInUse)-float64(before.heapInUse))/mb, "setup-heap-MB")
	b.ReportMetric(float64(now.rss)/mb, "rss-MB")
	return now
}

const mb = 1 << 20
