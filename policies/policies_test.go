package policies_test

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/cover"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/tester"

	"github.com/tollgate/tollgate/bundles"
	"github.com/tollgate/tollgate/pdp/authn"
	"github.com/tollgate/tollgate/pdp/credential"
	"github.com/tollgate/tollgate/pdp/policy"
	"github.com/tollgate/tollgate/pdp/request"
	"github.com/tollgate/tollgate/policies"
)

// minCoverage is the Rego line coverage the policy modules must keep.
const minCoverage = 100.0

// readEmbedded reads the embedded bundle with OPA's reader, test modules
// included (bundles.Load leaves them out).
func readEmbedded(t testing.TB) *bundle.Bundle {
	t.Helper()
	loader, err := bundle.NewFSLoader(policies.FS())
	if err != nil {
		t.Fatal(err)
	}
	b, err := bundle.NewCustomReader(loader).
		WithRegoVersion(ast.RegoV1).
		WithProcessAnnotations(true).
		Read()
	if err != nil {
		t.Fatalf("reading the embedded bundle: %v", err)
	}
	return &b
}

// TestEmbeddedFiles checks that every bundle file in this directory is
// embedded, and nothing else.
func TestEmbeddedFiles(t *testing.T) {
	var onDisk []string
	err := fs.WalkDir(os.DirFS("."), ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		base := filepath.Base(path)
		if base == ".manifest" || strings.HasSuffix(base, ".rego") || base == "data.json" || base == "data.yaml" || base == "data.yml" {
			onDisk = append(onDisk, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(onDisk) < 4 {
		t.Fatalf("found only %v on disk", onDisk)
	}
	for _, name := range onDisk {
		if _, err := fs.Stat(policies.FS(), name); err != nil {
			t.Errorf("embedded bundle lacks %s: %v", name, err)
		}
	}
	for _, name := range []string{"embed.go", "policies_test.go"} {
		if _, err := fs.Stat(policies.FS(), name); err == nil {
			t.Errorf("embedded bundle holds %s", name)
		}
	}
}

// TestRego runs the policy's Rego unit tests (the same as `opa test
// policies/`) with builtin errors raised, and checks their coverage.
func TestRego(t *testing.T) {
	ctx := context.Background()
	b := readEmbedded(t)

	store := inmem.NewWithOpts(inmem.OptRoundTripOnWrite(false))
	txn, err := store.NewTransaction(ctx, storage.WriteParams)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Abort(ctx, txn)

	cov := cover.New()
	runner := tester.NewRunner().
		SetStore(store).
		SetBundles(map[string]*bundle.Bundle{"policies": b}).
		RaiseBuiltinErrors(true).
		CapturePrintOutput(true).
		SetCoverageQueryTracer(cov).
		SetCoverageRuns(nil).
		SetTimeout(2 * time.Minute) // generous: the race detector and busy CI machines
	ch, err := runner.RunTests(ctx, txn)
	if err != nil {
		t.Fatalf("compiling the policy and its tests: %v", err)
	}
	var results []*tester.Result
	for r := range ch {
		results = append(results, r)
	}
	if len(results) == 0 {
		t.Fatal("no Rego tests found")
	}
	slices.SortFunc(results, func(x, y *tester.Result) int {
		return cmp.Or(strings.Compare(x.Package, y.Package), strings.Compare(x.Name, y.Name))
	})
	for _, r := range results {
		t.Run(strings.TrimPrefix(r.Package, "data.")+"."+r.Name, func(t *testing.T) {
			if r.Skip {
				t.Skip("todo_ test")
			}
			if !r.Pass() {
				t.Error(describe(r))
			}
		})
	}
	cases := 0
	for _, r := range results {
		cases += max(1, len(r.SubResults))
	}
	t.Logf("%d Rego tests, %d cases", len(results), cases)

	if t.Failed() {
		return // coverage of a failing suite says nothing
	}
	modules := map[string]*ast.Module{}
	for _, m := range b.Modules {
		modules[m.Path] = m.Parsed
	}
	report := cov.Report(modules)
	for file, fr := range report.Files {
		if strings.HasSuffix(file, "_test.rego") {
			continue
		}
		t.Logf("%s: %.1f%% covered", file, fr.Coverage)
		if fr.Coverage < minCoverage {
			var lines []string
			for _, rng := range fr.NotCovered {
				lines = append(lines, fmt.Sprintf("%d-%d", rng.Start.Row, rng.End.Row))
			}
			t.Errorf("%s: coverage %.1f%% < %.0f%%; not covered: lines %s", file, fr.Coverage, minCoverage, strings.Join(lines, ", "))
		}
	}
}

func describe(r *tester.Result) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "%v: %s", r.Location, r.String())
	if r.Error != nil {
		fmt.Fprintf(&sb, "\nerror: %v", r.Error)
	}
	if r.FailedAt != nil {
		fmt.Fprintf(&sb, "\nfailed at: %v (%v)", r.FailedAt, r.FailedAt.Location)
	}
	if len(r.Output) > 0 {
		fmt.Fprintf(&sb, "\noutput:\n%s", r.Output)
	}
	return sb.String()
}

// TestEmbeddedBundleActivates: the embedded bundle, loaded the way tollgate
// serve loads it, passes the policy engine's bundle check (bundle_errors)
// and decides; the same bundle with a malformed route is refused and the
// previous revision keeps deciding.
func TestEmbeddedBundleActivates(t *testing.T) {
	ctx := context.Background()
	b, err := bundles.Load(ctx, bundles.SourceEmbedded)
	if err != nil {
		t.Fatal(err)
	}
	e := policy.NewEngine(policy.Options{})
	if err := e.Activate(ctx, b); err != nil {
		t.Fatalf("activating the embedded bundle: %v", err)
	}
	public := policy.Input{
		Request: &request.Request{Method: "GET", Path: "/public/docs", Segments: []string{"public", "docs"}},
		Status:  policy.StatusAbsent,
	}
	d, err := e.Evaluate(ctx, public)
	if err != nil || !d.Allow || d.PolicyRevision != b.Manifest.Revision {
		t.Fatalf("public request: %#v, %v", d, err)
	}

	broken, err := bundles.Load(ctx, bundles.SourceEmbedded)
	if err != nil {
		t.Fatal(err)
	}
	broken.Manifest.Revision = "broken"
	routes := broken.Data["tollgate"].(map[string]any)["routes"].([]any)
	routes[0].(map[string]any)["sensitivity"] = "open"
	err = e.Activate(ctx, broken)
	if !errors.Is(err, policy.ErrBundleCheck) ||
		!strings.Contains(err.Error(), "data.tollgate.routes[0]: sensitivity must be one of public, internal, sensitive") {
		t.Fatalf("activating a bundle with a malformed route: %v, want it refused", err)
	}
	if e.Revision() != b.Manifest.Revision {
		t.Errorf("revision %q after a refused bundle, want %q", e.Revision(), b.Manifest.Revision)
	}
}

// BenchmarkDecision measures one decision on the embedded bundle, the way a
// server evaluates it: a prepared query, one input per evaluation.
func BenchmarkDecision(b *testing.B) {
	ctx := context.Background()
	bndl := readEmbedded(b)
	inputs := map[string]map[string]any{
		"sensitive allow": {
			"request":    map[string]any{"method": "GET", "path": "/customers/42/orders", "segments": []any{"customers", "42", "orders"}},
			"credential": map[string]any{"type": "bearer", "placement": "header", "status": "valid", "error": ""},
			"identity": map[string]any{
				"kind": "user", "subject": "alice", "issuer": "https://idp.example.com/",
				"claims": map[string]any{"customer_number": "42"}, "scopes": []any{"customers:read"},
			},
		},
		"no route": {
			"request":    map[string]any{"method": "GET", "path": "/nowhere", "segments": []any{"nowhere"}},
			"credential": map[string]any{"type": "none", "placement": "none", "status": "absent", "error": ""},
		},
	}
	pq, err := rego.New(
		rego.Query("data.tollgate.authz.decision"),
		rego.ParsedBundle("policies", bndl),
		rego.StrictBuiltinErrors(true),
	).PrepareForEval(ctx)
	if err != nil {
		b.Fatal(err)
	}
	for name, input := range inputs {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				rs, err := pq.Eval(ctx, rego.EvalInput(input))
				if err != nil || len(rs) != 1 {
					b.Fatalf("eval: %v, %d results", err, len(rs))
				}
			}
		})
	}
}

// BenchmarkEngineDecision measures one decision on the embedded bundle
// through Tollgate's policy engine, the way Decide evaluates it (input
// built from Go values, the route matched natively and handed to the
// policy as input.route), with the embedded table of 5 routes and with a
// table of 10,000 (2,000 services with the same five routes under their
// own prefix; the requests go to the last service).
func BenchmarkEngineDecision(b *testing.B) {
	ctx := context.Background()
	small, err := bundles.Load(ctx, bundles.SourceEmbedded)
	if err != nil {
		b.Fatal(err)
	}
	large, err := bundles.Load(ctx, bundles.SourceEmbedded)
	if err != nil {
		b.Fatal(err)
	}
	large.Data = map[string]any{"tollgate": map[string]any{"routes": largeRoutes(b, 10000)}}
	for _, table := range []struct {
		name   string
		bundle *bundle.Bundle
		prefix string
	}{
		{"routes=5", small, ""},
		{"routes=10000", large, "/svc1999"},
	} {
		// The decision cache off: this measures the evaluation itself.
		e := policy.NewEngine(policy.Options{DecisionCacheEntries: -1})
		if err := e.Activate(ctx, table.bundle); err != nil {
			b.Fatal(err)
		}
		for _, bc := range []struct {
			name  string
			in    policy.Input
			allow bool
		}{
			{"sensitive allow", benchUser(table.prefix+"/customers/42/orders", "customers:read"), true},
			{"internal api key", benchService(table.prefix+"/products/7", "products:read"), true},
			{"no route", benchUser(table.prefix+"/nowhere", "customers:read"), false},
		} {
			b.Run(table.name+"/"+bc.name, func(b *testing.B) {
				if d, err := e.Evaluate(ctx, bc.in); err != nil || d.Allow != bc.allow {
					b.Fatalf("setup: %+v, %v", d, err)
				}
				b.ReportAllocs()
				for b.Loop() {
					if _, err := e.Evaluate(ctx, bc.in); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

func benchRequest(path string) *request.Request {
	return &request.Request{
		ID: "0f4c2a9be1d84c7f", Method: "GET", Path: path, Segments: strings.FieldsFunc(path, func(r rune) bool { return r == '/' }),
		Host: "api.example.com", Scheme: "https", Query: map[string][]string{"page": {"2"}},
		Headers: map[string][]string{"user-agent": {"bench"}, "x-request-id": {"0f4c2a9be1d84c7f"}}, SourceIP: "203.0.113.7",
	}
}

func benchUser(path, scope string) policy.Input {
	return policy.Input{
		Request:    benchRequest(path),
		Credential: credential.Credential{Type: credential.TypeBearer, Placement: credential.PlacementHeader, Name: "authorization"},
		Status:     policy.StatusValid,
		Identity: &authn.Identity{
			Kind: authn.KindUser, Subject: "alice", Issuer: "https://idp.example.com/",
			Claims: map[string]any{"sub": "alice", "customer_number": "42", "scope": scope},
			Scopes: []string{scope},
		},
	}
}

func benchService(path, scope string) policy.Input {
	return policy.Input{
		Request:    benchRequest(path),
		Credential: credential.Credential{Type: credential.TypeAPIKey, Placement: credential.PlacementHeader, Name: "x-api-key"},
		Status:     policy.StatusValid,
		Identity:   &authn.Identity{Kind: authn.KindService, Subject: "billing", KeyID: "key_7f3a", Scopes: []string{scope}},
	}
}
