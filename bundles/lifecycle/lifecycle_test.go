package lifecycle_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate/tollgate/bundles"
	"github.com/tollgate/tollgate/bundles/bundletest"
	"github.com/tollgate/tollgate/bundles/lifecycle"
	"github.com/tollgate/tollgate/pdp/credential"
	"github.com/tollgate/tollgate/pdp/policy"
	"github.com/tollgate/tollgate/pdp/request"
)

// revisions builds variants of the default policy: "r1" is the default,
// "r2" serves the public route at /open/** instead of /public/**, so
// GET /public/x is allowed by r1 and denied (no_route) by r2.
type revisions struct {
	r1, r2 lifecycle.Candidate
}

func newRevisions(t testing.TB) revisions {
	t.Helper()
	read := func(dir, rev string) lifecycle.Candidate {
		data := bundletest.Build(t, dir, rev, nil)
		b, err := bundles.ReadTarball(rev, data, bundles.ReadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return lifecycle.Candidate{Bundle: b, Raw: data, Source: "test"}
	}
	return revisions{
		r1: read(bundletest.PolicyDir(t, nil), "r1"),
		r2: read(bundletest.PolicyDir(t, bundletest.MovePublic("/open")), "r2"),
	}
}

// decidePublic evaluates GET /public/x without a credential.
func decidePublic(t testing.TB, e *policy.Engine) (allow bool, revision string, err error) {
	req, nerr := request.Normalize(request.Raw{ID: "t", Method: "GET", Target: "/public/x", Host: "api.example.com", Scheme: "https"})
	if nerr != nil {
		t.Fatal(nerr)
	}
	d, err := e.Evaluate(context.Background(), policy.Input{Request: req, Credential: credential.None(), Status: policy.StatusAbsent})
	return d.Allow, d.PolicyRevision, err
}

func newBundle(t testing.TB, e lifecycle.Engine, dir string, m *lifecycle.Metrics) *lifecycle.Bundle {
	t.Helper()
	b, err := lifecycle.New(lifecycle.Options{Name: "tollgate", Engine: e, Dir: dir, Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// brokenCandidate is a bundle that reads but does not activate.
func brokenCandidate(t testing.TB, rev, module string) lifecycle.Candidate {
	t.Helper()
	b := &bundle.Bundle{
		Manifest: bundle.Manifest{Revision: rev},
		Modules:  []bundle.ModuleFile{{Path: "authz.rego", URL: "authz.rego", Raw: []byte(module)}},
		Data:     map[string]any{},
	}
	return lifecycle.Candidate{Bundle: b, Source: "test"}
}

func TestRefusedCandidateKeepsTheActiveRevision(t *testing.T) {
	revs := newRevisions(t)
	// The check query fails: a route with an unknown sensitivity.
	badRoutes := bundletest.PolicyDir(t, func(rs []bundletest.Route) []bundletest.Route {
		rs[0]["sensitivity"] = "secret-ish"
		return rs
	})
	badData := bundletest.Build(t, badRoutes, "bad-check", nil)
	badCheck, err := bundles.ReadTarball("bad-check", badData, bundles.ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		c    lifecycle.Candidate
		is   error
	}{
		{"does not compile", brokenCandidate(t, "bad-compile", "package tollgate.authz\n\ndecision := no_such_function(1)\n"), nil},
		{"does not parse", brokenCandidate(t, "bad-parse", "package tollgate.authz\n\ndecision := {\n"), nil},
		{"fails its check query", lifecycle.Candidate{Bundle: badCheck, Raw: badData, Source: "test"}, policy.ErrBundleCheck},
		{"defines no decision", brokenCandidate(t, "bad-nodecision", "package tollgate.other\n\nx := 1\n"), policy.ErrNoDecisionRule},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			engine := policy.NewEngine(policy.Options{})
			m := lifecycle.NewMetrics()
			lb := newBundle(t, engine, "", m)
			if err := lb.Offer(context.Background(), revs.r1); err != nil {
				t.Fatal(err)
			}
			err := lb.Offer(context.Background(), tt.c)
			if err == nil {
				t.Fatal("Offer accepted a bad bundle")
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("Offer = %v, want %v", err, tt.is)
			}
			allow, rev, err := decidePublic(t, engine)
			if err != nil || !allow || rev != "r1" {
				t.Errorf("after the refusal: allow=%v revision=%q err=%v, want r1 answering", allow, rev, err)
			}
			s := lb.Status()
			if s.Active == nil || s.Active.Revision != "r1" {
				t.Errorf("active = %+v, want r1", s.Active)
			}
			if s.LastError == nil || s.LastError.Revision != tt.c.Bundle.Manifest.Revision || s.LastError.Error == "" {
				t.Errorf("last_error = %+v, want the refused revision and its error", s.LastError)
			}
			if len(s.History) != 1 {
				t.Errorf("history = %+v, want only r1", s.History)
			}
			if n := metricValue(t, m, "tollgate_bundle_activations_total", "refused"); n != 1 {
				t.Errorf("refused = %v, want 1", n)
			}
			if n := metricValue(t, m, "tollgate_bundle_info", "r1"); n != 1 {
				t.Errorf("tollgate_bundle_info{revision=r1} = %v, want 1", n)
			}
		})
	}
}

// metricValue is the value of the metric name of bundle "tollgate" whose
// other label (result or revision) is value; 0 when there is none.
func metricValue(t testing.TB, m *lifecycle.Metrics, name, value string) float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(m.Collectors()...)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, mt := range mf.GetMetric() {
			for _, l := range mt.GetLabel() {
				if l.GetName() == "bundle" && l.GetValue() != "tollgate" {
					continue metrics
				}
				if (l.GetName() == "result" || l.GetName() == "revision") && l.GetValue() != value {
					continue metrics
				}
			}
			if c := mt.GetCounter(); c != nil {
				return c.GetValue()
			}
			return mt.GetGauge().GetValue()
		}
	}
	return 0
}

func TestConcurrentActivationsAnswerByTheRevisionTheyName(t *testing.T) {
	revs := newRevisions(t)
	engine := policy.NewEngine(policy.Options{})
	lb := newBundle(t, engine, "", nil)
	ctx := context.Background()
	for _, c := range []lifecycle.Candidate{revs.r2, revs.r1} {
		if err := lb.Offer(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	want := map[string]bool{"r1": true, "r2": false} // GET /public/x
	var stop atomic.Bool
	var decisions, failures atomic.Int64
	var wg sync.WaitGroup
	var mu sync.Mutex
	var mismatches []string
	seen := map[string]int{}
	for range 2 {
		wg.Go(func() {
			for !stop.Load() {
				// Decisions keep coming without starving the activations
				// of CPU (a busy CI machine, the race detector).
				time.Sleep(200 * time.Microsecond)
				allow, rev, err := decidePublic(t, engine)
				decisions.Add(1)
				if err != nil {
					failures.Add(1)
					continue
				}
				mu.Lock()
				seen[rev]++
				if w, ok := want[rev]; !ok || w != allow {
					mismatches = append(mismatches, rev)
				}
				mu.Unlock()
			}
		})
	}
	for i := range 100 {
		rev := "r1"
		if i%2 == 0 {
			rev = "r2"
		}
		if err := lb.ActivateRevision(ctx, rev); err != nil {
			t.Errorf("activation %d (%s): %v", i, rev, err)
		}
	}
	stop.Store(true)
	wg.Wait()
	if failures.Load() != 0 {
		t.Errorf("%d of %d decisions failed", failures.Load(), decisions.Load())
	}
	if len(mismatches) != 0 {
		t.Errorf("%d decisions answered otherwise than the revision they name (first: %s)", len(mismatches), mismatches[0])
	}
	if seen["r1"] == 0 || seen["r2"] == 0 {
		t.Errorf("decisions by revision = %v, want both revisions to have answered during the activations", seen)
	}
	if got := engine.Revision(); got != "r1" {
		t.Errorf("revision after 100 activations = %q, want r1 (the last)", got)
	}
}

func TestPinning(t *testing.T) {
	revs := newRevisions(t)
	ctx := context.Background()
	engine := policy.NewEngine(policy.Options{})
	lb := newBundle(t, engine, "", nil)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(lb.Offer(ctx, revs.r1))
	must(lb.Offer(ctx, revs.r2))
	if allow, rev, _ := decidePublic(t, engine); allow || rev != "r2" {
		t.Fatalf("after r2: allow=%v rev=%s", allow, rev)
	}

	// Roll back: takes effect on the next decision, and pins.
	must(lb.ActivateRevision(ctx, "r1"))
	if allow, rev, _ := decidePublic(t, engine); !allow || rev != "r1" {
		t.Fatalf("after rollback: allow=%v rev=%s, want r1", allow, rev)
	}
	if !lb.Status().Pinned {
		t.Error("not pinned after ActivateRevision")
	}
	// While pinned, a new revision from the source is kept but not active.
	r3 := revs.r2
	r3.Bundle = cloneWithRevision(t, revs.r2, "r3")
	r3.Raw = nil
	must(lb.Offer(ctx, r3))
	if got := engine.Revision(); got != "r1" {
		t.Fatalf("pinned, after the source offered r3: active %s, want r1", got)
	}
	// Unknown revisions are refused, with the active one kept.
	if err := lb.ActivateRevision(ctx, "nope"); !errors.Is(err, lifecycle.ErrUnknownRevision) {
		t.Errorf("ActivateRevision(nope) = %v, want ErrUnknownRevision", err)
	}
	// Unpin: the source's newest valid revision becomes active.
	must(lb.Unpin(ctx))
	if got := engine.Revision(); got != "r3" {
		t.Errorf("after unpin: %s, want r3", got)
	}
	if lb.Status().Pinned {
		t.Error("still pinned after Unpin")
	}
}

func cloneWithRevision(t testing.TB, c lifecycle.Candidate, rev string) *bundle.Bundle {
	t.Helper()
	b, err := bundles.ReadTarball(rev, c.Raw, bundles.ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b.Manifest.Revision = rev
	return b
}

func TestHistoryIsBounded(t *testing.T) {
	revs := newRevisions(t)
	engine := policy.NewEngine(policy.Options{})
	lb, err := lifecycle.New(lifecycle.Options{Name: "tollgate", Engine: engine, History: 3})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 6 {
		c := revs.r1
		c.Bundle = cloneWithRevision(t, revs.r1, "r"+string(rune('a'+i)))
		c.Raw = nil
		if err := lb.Offer(context.Background(), c); err != nil {
			t.Fatal(err)
		}
	}
	h := lb.Status().History
	if len(h) != 3 || h[0].Revision != "rf" || h[2].Revision != "rd" {
		t.Errorf("history = %+v, want rf, re, rd", h)
	}
}

func TestRestoreComesUpOnTheLastGoodRevision(t *testing.T) {
	revs := newRevisions(t)
	ctx := context.Background()
	dir := t.TempDir()
	first := newBundle(t, policy.NewEngine(policy.Options{}), dir, nil)
	for _, c := range []lifecycle.Candidate{revs.r1, revs.r2} {
		if err := first.Offer(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	_ = first.Offer(ctx, brokenCandidate(t, "bad", "package tollgate.authz\n\ndecision := {\n"))

	// A restart: a new engine, nothing from the source.
	engine := policy.NewEngine(policy.Options{})
	second := newBundle(t, engine, dir, nil)
	ok, err := second.Restore(ctx)
	if err != nil || !ok {
		t.Fatalf("Restore = %v, %v", ok, err)
	}
	if allow, rev, _ := decidePublic(t, engine); allow || rev != "r2" {
		t.Errorf("restored: allow=%v rev=%s, want r2 (the last good one)", allow, rev)
	}
	if h := second.Status().History; len(h) != 2 {
		t.Errorf("restored history = %+v, want r2, r1", h)
	}

	// A pin survives a restart too.
	if err := second.ActivateRevision(ctx, "r1"); err != nil {
		t.Fatal(err)
	}
	third := newBundle(t, policy.NewEngine(policy.Options{}), dir, nil)
	if ok, err := third.Restore(ctx); err != nil || !ok {
		t.Fatalf("Restore = %v, %v", ok, err)
	}
	if s := third.Status(); s.Active == nil || s.Active.Revision != "r1" || !s.Pinned {
		t.Errorf("after restart: %+v, want r1 pinned", s)
	}
}

// signedR1 is revision r1 signed with a new key: the key's verification
// config, the tarball, and the bundle read from it.
func signedR1(t *testing.T) (*bundle.VerificationConfig, []byte, *bundle.Bundle) {
	t.Helper()
	key := bundletest.NewKey(t)
	vc, err := bundles.Verification(key.Public, "", "", "")
	if err != nil {
		t.Fatal(err)
	}
	data := bundletest.Build(t, bundletest.PolicyDir(t, nil), "r1", &key)
	b, err := bundles.ReadTarball("r1", data, bundles.ReadOptions{Verification: vc})
	if err != nil {
		t.Fatal(err)
	}
	return vc, data, b
}

func TestRestoreRefusesTamperedFiles(t *testing.T) {
	vc, data, b := signedR1(t)
	ctx := context.Background()
	dir := t.TempDir()
	first, err := lifecycle.New(lifecycle.Options{Name: "tollgate", Engine: policy.NewEngine(policy.Options{}), Dir: dir, Verification: vc})
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Offer(ctx, lifecycle.Candidate{Bundle: b, Raw: data, Source: "test"}); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.tar.gz"))
	if len(files) != 1 {
		t.Fatalf("persisted files = %v, want one", files)
	}
	if err := os.WriteFile(files[0], bundletest.Tamper(t, data, "authz.rego"), 0o600); err != nil {
		t.Fatal(err)
	}
	engine := policy.NewEngine(policy.Options{})
	second, err := lifecycle.New(lifecycle.Options{Name: "tollgate", Engine: engine, Dir: dir, Verification: vc})
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := second.Restore(ctx); ok || engine.Ready() {
		t.Errorf("a tampered persisted bundle was restored")
	}
}

// A signed bundle handed over without its tarball (OPA's OCI downloader
// hands only the parsed bundle) is written with its signature, so that it
// verifies again after a restart.
func TestRestoreSignedBundleWrittenFromParsed(t *testing.T) {
	vc, _, b := signedR1(t)
	ctx := context.Background()
	dir := t.TempDir()
	first, err := lifecycle.New(lifecycle.Options{Name: "tollgate", Engine: policy.NewEngine(policy.Options{}), Dir: dir, Verification: vc})
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Offer(ctx, lifecycle.Candidate{Bundle: b, Source: "oci"}); err != nil {
		t.Fatal(err)
	}
	engine := policy.NewEngine(policy.Options{})
	second, err := lifecycle.New(lifecycle.Options{Name: "tollgate", Engine: engine, Dir: dir, Verification: vc})
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := second.Restore(ctx); !ok || err != nil || engine.Revision() != "r1" {
		t.Fatalf("Restore = %v, %v; revision %q, want r1 verified again", ok, err, engine.Revision())
	}
}

// Two contents with one revision (a directory edited without changing its
// .manifest) get two names, so each decision names the content that made
// it; content seen before keeps its name.
func TestReusedRevisionIsRenamed(t *testing.T) {
	revs := newRevisions(t)
	ctx := context.Background()
	engine := policy.NewEngine(policy.Options{})
	dir := t.TempDir()
	lb := newBundle(t, engine, dir, nil)
	second := revs.r2
	second.Bundle = cloneWithRevision(t, revs.r2, "r1") // other content, same revision
	second.Raw = nil
	for _, c := range []lifecycle.Candidate{revs.r1, second} {
		if err := lb.Offer(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	s := lb.Status()
	if len(s.History) != 2 || s.History[0].Revision == "r1" || !strings.HasPrefix(s.History[0].Revision, "r1+") {
		t.Fatalf("history = %+v, want the second content renamed r1+<digest>", s.History)
	}
	if allow, rev, _ := decidePublic(t, engine); allow || rev != s.History[0].Revision {
		t.Errorf("decision: allow=%v rev=%s, want a deny naming %s", allow, rev, s.History[0].Revision)
	}
	if err := lb.ActivateRevision(ctx, "r1"); err != nil {
		t.Fatal(err)
	}
	if allow, rev, _ := decidePublic(t, engine); !allow || rev != "r1" {
		t.Errorf("rolled back to r1: allow=%v rev=%s", allow, rev)
	}
	// The renamed revision survives a restart under its name.
	renamed := s.History[0].Revision
	if err := lb.ActivateRevision(ctx, renamed); err != nil {
		t.Fatal(err)
	}
	e2 := policy.NewEngine(policy.Options{})
	if ok, err := newBundle(t, e2, dir, nil).Restore(ctx); !ok || err != nil {
		t.Fatalf("Restore = %v, %v", ok, err)
	}
	if allow, rev, _ := decidePublic(t, e2); allow || rev != renamed {
		t.Errorf("restored: allow=%v rev=%s, want a deny naming %s", allow, rev, renamed)
	}
}
