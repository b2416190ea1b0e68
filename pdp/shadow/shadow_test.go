package shadow_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate/tollgate/pdp"
	"github.com/tollgate/tollgate/pdp/decision"
	"github.com/tollgate/tollgate/pdp/policy"
	"github.com/tollgate/tollgate/pdp/request"
	"github.com/tollgate/tollgate/pdp/shadow"
)

// defaultBundle reads the default policy bundle from the repository
// (policies/) with OPA's reader, leaving out test files, and lets edit
// change its route table.
func defaultBundle(t *testing.T, rev string, edit func(routes []any)) *bundle.Bundle {
	t.Helper()
	b, err := bundle.NewCustomReader(bundle.NewDirectoryLoader("../../policies")).WithRegoVersion(ast.RegoV1).Read()
	if err != nil {
		t.Fatal(err)
	}
	var mods []bundle.ModuleFile
	for _, m := range b.Modules {
		if !strings.HasSuffix(m.Path, "_test.rego") {
			mods = append(mods, m)
		}
	}
	b.Modules = mods
	b.Manifest.Revision = rev
	if edit != nil {
		edit(b.Data["tollgate"].(map[string]any)["routes"].([]any))
	}
	return &b
}

func engine(t *testing.T, b *bundle.Bundle) *policy.Engine {
	t.Helper()
	e := policy.NewEngine(policy.Options{})
	if err := e.Activate(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	return e
}

func route(routes []any, id string) map[string]any {
	for _, r := range routes {
		if m := r.(map[string]any); m["id"] == id {
			return m
		}
	}
	panic("no route " + id)
}

func TestShadowCountsExactlyTheFlippedRoutes(t *testing.T) {
	live := engine(t, defaultBundle(t, "live", nil))
	// The candidate moves the public route to /open/** and allows only GET
	// on /admin/**.
	cand := engine(t, defaultBundle(t, "candidate", func(routes []any) {
		route(routes, "public")["paths"] = []any{"/open/**"}
		route(routes, "admin")["methods"] = []any{"GET"}
	}))
	s := shadow.New(shadow.Options{Candidate: cand, QueueSize: 100})
	d, err := pdp.New(pdp.Config{Engine: live, Shadow: s})
	if err != nil {
		t.Fatal(err)
	}
	requests := []struct {
		method, target string
		want           string
	}{
		{"GET", "/public/a", shadow.ResultAllowToDeny},
		{"GET", "/public/b/c", shadow.ResultAllowToDeny},
		{"GET", "/open/a", shadow.ResultDenyToAllow},
		{"DELETE", "/admin/users", shadow.ResultChanged}, // 401 (credential needed) -> 403 no_route
		{"POST", "/admin/x", shadow.ResultChanged},
		{"GET", "/admin/x", shadow.ResultAgree}, // 401 both
		{"GET", "/products", shadow.ResultAgree},
		{"GET", "/nowhere", shadow.ResultAgree},
		{"GET", "/customers/42", shadow.ResultAgree},
	}
	want := map[string]float64{}
	for _, r := range requests {
		d.Decide(context.Background(), request.Raw{Method: r.method, Target: r.target, Host: "api.example.com", Scheme: "https", SourceIP: "192.0.2.1"})
		want[r.want]++
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(s.Collectors()...)
	deadline := time.Now().Add(30 * time.Second)
	for total(t, reg) < float64(len(requests)) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	for _, result := range []string{shadow.ResultAgree, shadow.ResultAllowToDeny, shadow.ResultDenyToAllow, shadow.ResultChanged} {
		if got := value(t, reg, result); got != want[result] {
			t.Errorf("tollgate_shadow_decisions_total{result=%q} = %v, want %v", result, got, want[result])
		}
	}
}

func TestShadowNeverBlocks(t *testing.T) {
	cand := engine(t, defaultBundle(t, "candidate", nil))
	s := shadow.New(shadow.Options{Candidate: cand, QueueSize: 2})
	// Nothing runs the queue: Observe must still return, dropping.
	for range 10 {
		s.Observe(policy.Input{}, decision.Deny(403, "no_route"))
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(s.Collectors()...)
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == "tollgate_shadow_dropped_total" {
			if got := mf.GetMetric()[0].GetCounter().GetValue(); got != 8 {
				t.Errorf("dropped = %v, want 8", got)
			}
			return
		}
	}
	t.Error("no tollgate_shadow_dropped_total")
}

func TestCompare(t *testing.T) {
	allow := decision.Decision{Allow: true, Status: 200, Reasons: []string{}}
	tests := []struct {
		live, cand decision.Decision
		want       string
	}{
		{allow, allow, shadow.ResultAgree},
		{decision.Deny(403, "no_route"), decision.Deny(403, "no_route"), shadow.ResultAgree},
		{allow, decision.Deny(403, "no_route"), shadow.ResultAllowToDeny},
		{decision.Deny(401, "credential_missing"), allow, shadow.ResultDenyToAllow},
		{decision.Deny(401, "credential_missing"), decision.Deny(403, "credential_missing"), shadow.ResultChanged},
		{decision.Deny(403, "a"), decision.Deny(403, "b"), shadow.ResultChanged},
	}
	for _, tt := range tests {
		if got := shadow.Compare(tt.live, tt.cand); got != tt.want {
			t.Errorf("Compare(%+v, %+v) = %s, want %s", tt.live, tt.cand, got, tt.want)
		}
	}
}

func value(t *testing.T, reg *prometheus.Registry, result string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "tollgate_shadow_decisions_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == result {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func total(t *testing.T, reg *prometheus.Registry) float64 {
	var n float64
	for _, r := range []string{shadow.ResultAgree, shadow.ResultAllowToDeny, shadow.ResultDenyToAllow, shadow.ResultChanged} {
		n += value(t, reg, r)
	}
	return n
}
