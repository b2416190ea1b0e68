package policy

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"reflect"
	"runtime"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/tollgate/tollgate/bundles"
	"github.com/tollgate/tollgate/pdp/authn"
	"github.com/tollgate/tollgate/pdp/credential"
	"github.com/tollgate/tollgate/pdp/decision"
	"github.com/tollgate/tollgate/pdp/request"
)

// TestAnalyzeReads checks which input parts a policy is found to read, and
// that every construct the analysis cannot pin down turns the cache off.
func TestAnalyzeReads(t *testing.T) {
	tests := []struct {
		name    string
		body    string // rules of package tollgate.authz, decision included
		want    reads
		off     string // a part of the reason the cache is off; "" when on
		testMod string // a test module beside it
	}{
		{
			name: "fields",
			body: `decision := {"allow": input.request.method == "GET", "status": 200, "reasons": [input.credential.status], "headers": {}}`,
			want: reads{method: true, status: true},
		},
		{
			name: "segments is the path; identity and route as a whole",
			body: `decision := {"allow": count(input.request.segments) > 0, "status": 200, "reasons": [], "headers": {"x": input.identity.claims[input.route.owner]}}`,
			want: reads{path: true, identity: true, route: true},
		},
		{
			name: "request as a whole",
			body: `decision := {"allow": true, "status": 200, "reasons": [], "headers": {}} if input.request`,
			off:  "request id",
		},
		{
			name: "a computed key",
			body: `k := "method"
decision := {"allow": input.request[k] == "GET", "status": 200, "reasons": [], "headers": {}}`,
			off: "request id",
		},
		{
			name: "one part of the request as a whole",
			body: `decision := {"allow": count(input.request.headers) > 0, "status": 200, "reasons": [], "headers": {}}`,
			want: reads{headers: true},
		},
		{
			name: "input whole",
			body: `decision := {"allow": count(input) > 0, "status": 200, "reasons": [], "headers": {}}`,
			off:  "input as a whole",
		},
		{
			name: "input by a computed top-level key",
			body: `k := "request"
decision := {"allow": input[k].method == "GET", "status": 200, "reasons": [], "headers": {}}`,
			off: "computed key",
		},
		{
			name: "a non-deterministic built-in",
			body: `decision := {"allow": time.now_ns() > 0, "status": 200, "reasons": [], "headers": {}}`,
			off:  "time.now_ns",
		},
		{
			name: "a non-deterministic built-in nested in a call",
			body: `decision := {"allow": abs(time.now_ns()) > 0, "status": 200, "reasons": [], "headers": {}}`,
			off:  "time.now_ns",
		},
		{
			name: "with input",
			body: `f := x if x := input.request.method
g if {
	f with input as {}
}
decision := {"allow": g, "status": 200, "reasons": [], "headers": {}}`,
			off: "input as a whole",
		},
		{
			name:    "test modules are not production",
			body:    `decision := {"allow": input.request.host == "h", "status": 200, "reasons": [], "headers": {}}`,
			want:    reads{host: true},
			testMod: "package tollgate.authz\n\ntest_x if decision with input as {}\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mods := []string{"package tollgate.authz\n\n" + tt.body}
			b := testBundle("r1", nil, mods...)
			if tt.testMod != "" {
				tb := testBundle("r1", nil, tt.testMod)
				tb.Modules[0].Path, tb.Modules[0].URL = "authz_test.rego", "authz_test.rego"
				b.Modules = append(b.Modules, tb.Modules...)
			}
			var log strings.Builder
			e := NewEngine(Options{Capabilities: ast.CapabilitiesForThisVersion(), Logger: slog.New(slog.NewTextHandler(&log, nil))})
			if err := e.Activate(context.Background(), b); err != nil {
				t.Fatal(err)
			}
			p := e.active.Load()
			if tt.off != "" {
				if p.cache != nil {
					t.Fatalf("cache on with reads %+v; want off (%s)", p.cache.reads, tt.off)
				}
				if !strings.Contains(log.String(), "decision cache off") || !strings.Contains(log.String(), tt.off) {
					t.Errorf("the log does not say why the cache is off (%q):\n%s", tt.off, log.String())
				}
				return
			}
			if p.cache == nil {
				t.Fatal("cache off")
			}
			if p.cache.reads != tt.want {
				t.Errorf("reads %+v\nwant  %+v", p.cache.reads, tt.want)
			}
		})
	}
}

// TestDecisionCacheIsInvisible is the differential test: over the default
// policy and many generated inputs, an engine with the decision cache gives
// exactly the decisions of one without it, whether the cache misses or hits.
func TestDecisionCacheIsInvisible(t *testing.T) {
	ctx := context.Background()
	b, err := bundles.Load(ctx, "embedded")
	if err != nil {
		t.Fatal(err)
	}
	cached, plain := NewEngine(Options{}), NewEngine(Options{DecisionCacheEntries: -1})
	for _, e := range []*Engine{cached, plain} {
		if err := e.Activate(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	if cached.active.Load().cache == nil {
		t.Fatal("the default policy is not cacheable")
	}
	if plain.active.Load().cache != nil {
		t.Fatal("the cache is on though turned off")
	}
	rng := rand.New(rand.NewPCG(1, 2))
	inputs := make([]Input, 3000)
	for i := range inputs {
		inputs[i] = randomInput(rng)
	}
	hits := 0
	for pass := range 2 { // the first pass fills the cache, the second hits it
		for i, in := range inputs {
			want, werr := plain.Evaluate(ctx, in)
			_, hit, _ := cached.active.Load().cache.lookup(in)
			got, gerr := cached.Evaluate(ctx, in)
			if hit {
				hits++
			}
			if (werr == nil) != (gerr == nil) || !sameDecision(got, want) {
				t.Fatalf("pass %d input %d (%s):\n cached %+v (%v)\n plain  %+v (%v)", pass, i, describe(in), got, gerr, want, werr)
			}
		}
	}
	if hits < len(inputs) {
		t.Errorf("only %d hits over %d inputs asked twice: the cache is not used", hits, 2*len(inputs))
	}
}

// FuzzDecisionCache compares cached and uncached decisions on fuzzed
// requests and identities.
func FuzzDecisionCache(f *testing.F) {
	ctx := context.Background()
	b, err := bundles.Load(ctx, "embedded")
	if err != nil {
		f.Fatal(err)
	}
	cached, plain := NewEngine(Options{}), NewEngine(Options{DecisionCacheEntries: -1})
	for _, e := range []*Engine{cached, plain} {
		if err := e.Activate(ctx, b); err != nil {
			f.Fatal(err)
		}
	}
	f.Add(uint64(1), "GET", "/customers/42/orders", "42", "customers:read", true)
	f.Add(uint64(2), "PUT", "/customers/7", "7", "customers:write", false)
	f.Add(uint64(3), "GET", "/products/9", "", "products:read", true)
	f.Fuzz(func(t *testing.T, seed uint64, method, path, customer, scope string, withKey bool) {
		rng := rand.New(rand.NewPCG(seed, seed>>1))
		in := randomInput(rng)
		req, err := request.Normalize(request.Raw{Method: method, Target: path})
		if err != nil {
			return
		}
		in.Request = req
		if in.Identity != nil && in.Identity.Claims != nil {
			id := *in.Identity
			id.Claims = map[string]any{"customer_number": customer, "scope": scope}
			id.Scopes = strings.Split(scope, " ")
			id.ContentKey = ""
			if withKey { // equal keys, equal identities: every field is in it
				id.ContentKey = fmt.Sprintf("jwt:%q:%q:%q:%q:%q:%q", id.Kind, id.Subject, id.Issuer, customer, scope, id.Roles)
			}
			in.Identity = &id
		}
		for range 2 {
			want, werr := plain.Evaluate(ctx, in)
			got, gerr := cached.Evaluate(ctx, in)
			if (werr == nil) != (gerr == nil) || !sameDecision(got, want) {
				t.Fatalf("%s:\n cached %+v (%v)\n plain  %+v (%v)", describe(in), got, gerr, want, werr)
			}
		}
	})
}

func sameDecision(a, b decision.Decision) bool {
	norm := func(d decision.Decision) decision.Decision {
		if len(d.Reasons) == 0 {
			d.Reasons = nil
		}
		if len(d.Headers) == 0 {
			d.Headers = nil
		}
		return d
	}
	return reflect.DeepEqual(norm(a), norm(b))
}

func describe(in Input) string {
	s := fmt.Sprintf("%s %s cred=%s/%s status=%s error=%s", in.Request.Method, in.Request.Path, in.Credential.Type, in.Credential.Placement, in.Status, in.Error)
	if in.Identity != nil {
		s += fmt.Sprintf(" identity=%+v", *in.Identity)
	}
	return s
}

// randomInput draws a request and a caller from small sets, so that inputs
// repeat, differ in one part, and reach every outcome of the policy.
func randomInput(rng *rand.Rand) Input {
	pick := func(s ...string) string { return s[rng.IntN(len(s))] }
	method := pick("GET", "GET", "PUT", "PATCH", "DELETE", "POST")
	target := pick("/public/docs", "/public", "/products", "/products/7", "/products/8", "/products/7/x",
		"/customers/42", "/customers/42/orders", "/customers/42/orders/9", "/customers/43/orders", "/customers/7",
		"/admin/users", "/admin", "/other", "/")
	target += pick("", "", "?page=2", "?api_key=abc", "?access_token=t")
	req, err := request.Normalize(request.Raw{Method: method, Target: target, Headers: map[string][]string{"X-Request-Id": {fmt.Sprint(rng.Int())}}})
	if err != nil {
		panic(err)
	}
	in := Input{Request: req}
	switch rng.IntN(6) {
	case 0:
		in.Credential, in.Status = credential.None(), StatusAbsent
		return in
	case 1:
		in.Credential = credential.Credential{Type: credential.TypeBearer, Placement: credential.PlacementHeader, Name: "authorization", Secret: credential.NewSecret("t")}
		in.Status, in.Error = StatusInvalid, pick(authn.ReasonExpired, authn.ReasonBadSignature, authn.ReasonUnavailable)
		return in
	case 2:
		in.Credential = credential.Credential{Type: credential.TypeAPIKey, Placement: credential.Placement(pick("header", "query")), Name: "x-api-key", Secret: credential.NewSecret("k")}
		in.Status = StatusValid
		in.Identity = &authn.Identity{Kind: authn.KindService, Subject: pick("billing", "ops"), KeyID: pick("k1", "k2"),
			Scopes: [][]string{{"products:read"}, nil, {"customers:read"}}[rng.IntN(3)]}
		return in
	}
	placement := credential.Placement(pick("header", "header", "cookie", "query"))
	in.Credential = credential.Credential{Type: credential.TypeBearer, Placement: placement, Name: "authorization", Secret: credential.NewSecret("t")}
	in.Status = StatusValid
	customer := pick("42", "43", "7")
	scope := pick("customers:read", "customers:write", "products:read", "customers:read customers:write", "")
	claims := map[string]any{"sub": "u" + customer, "customer_number": customer, "scope": scope}
	var roles []string
	if rng.IntN(4) == 0 {
		roles = []string{"admin"}
		claims["roles"] = []any{"admin"}
	}
	in.Identity = &authn.Identity{Kind: authn.KindUser, Subject: "u" + customer, Issuer: "https://idp.example.com/",
		Claims: claims, Scopes: strings.Fields(scope), Roles: roles,
		ContentKey: fmt.Sprintf("jwt:%s:%s:%v", customer, scope, roles)}
	if rng.IntN(10) == 0 {
		in.Identity.ContentKey = "" // not cacheable: must still decide the same
	}
	return in
}

// TestDecisionWeightFollowsTheHeap fills a decision cache and compares the
// heap it takes with the weight it estimates, so that
// limits.decision_cache_bytes bounds real memory: the estimate may be
// above the heap by a little, never far below it.
func TestDecisionWeightFollowsTheHeap(t *testing.T) {
	if testing.Short() {
		t.Skip("fills a cache of 50,000 decisions")
	}
	for _, tc := range []struct {
		name    string
		headers int
	}{
		{"deny, one reason", 0},
		{"allow, four identity headers", 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := newDecisionCache(reads{}, 1_000_000, 1<<40, nil)
			if err != nil {
				t.Fatal(err)
			}
			const n = 50_000
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			var weight uint64
			for i := range n {
				k := fmt.Sprintf("m\x03GETp\x16/customers/%06d/ordersI\x01kk\x40%064d", i, i)
				d := decision.Decision{Allow: true, Status: 200, Reasons: []string{}, Headers: map[string]string{}, PolicyRevision: "default-2026.12.1"}
				if tc.headers == 0 {
					d = decision.Decision{Status: 403, Reasons: []string{strings.Clone("not_owner")}, Headers: map[string]string{}, PolicyRevision: d.PolicyRevision}
				}
				for h := range tc.headers {
					d.Headers[fmt.Sprintf("x-header-%d", h)] = fmt.Sprintf("value-%06d", i)
				}
				c.store(k, d)
				weight += decisionWeight(k, d)
			}
			runtime.GC()
			runtime.ReadMemStats(&after)
			heap := float64(after.HeapInuse) - float64(before.HeapInuse)
			runtime.KeepAlive(c)
			if got := c.cache.EstimatedSize(); got != n {
				t.Fatalf("the cache holds %d decisions, want %d", got, n)
			}
			ratio := float64(weight) / heap
			t.Logf("heap %.0f B/entry, estimate %.0f B/entry (%.2f×)", heap/n, float64(weight)/n, ratio)
			if ratio < 0.85 || ratio > 1.5 {
				t.Errorf("the estimate is %.2f× the heap, want 0.85–1.5×", ratio)
			}
		})
	}
}

// TestDecisionCacheStats: hits and misses count across revisions; entries
// are the active revision's.
func TestDecisionCacheStats(t *testing.T) {
	ctx := context.Background()
	b, err := bundles.Load(ctx, "embedded")
	if err != nil {
		t.Fatal(err)
	}
	e := NewEngine(Options{})
	in := randomInput(rand.New(rand.NewPCG(5, 6)))
	other := randomInput(rand.New(rand.NewPCG(7, 8)))
	want := func(step string, hits, misses uint64, entries int) {
		t.Helper()
		if p := e.active.Load(); p != nil && p.cache != nil {
			p.cache.cache.CleanUp()
		}
		if h, m, n := e.DecisionCacheStats(); h != hits || m != misses || n != entries {
			t.Fatalf("%s: hits %d misses %d entries %d, want %d %d %d", step, h, m, n, hits, misses, entries)
		}
	}
	want("no policy", 0, 0, 0)
	if err := e.Activate(ctx, b); err != nil {
		t.Fatal(err)
	}
	if _, hit := e.Cached(in); hit {
		t.Fatal("a hit on an empty cache")
	}
	want("Cached on an empty cache counts nothing", 0, 0, 0)
	_, _ = e.Evaluate(ctx, in)
	want("evaluated", 0, 1, 1)
	_, _ = e.Evaluate(ctx, in)
	want("Evaluate from the cache", 1, 1, 1)
	if _, hit := e.Cached(in); !hit {
		t.Fatal("no hit")
	}
	want("Cached from the cache", 2, 1, 1)
	_, _ = e.Evaluate(ctx, other)
	want("another input", 2, 2, 2)
	b2 := *b
	b2.Manifest.Revision = "r2"
	if err := e.Activate(ctx, &b2); err != nil {
		t.Fatal(err)
	}
	want("a new revision starts empty; the counts go on", 2, 2, 0)
	_, _ = e.Evaluate(ctx, in)
	want("evaluated on the new revision", 2, 3, 1)
}
