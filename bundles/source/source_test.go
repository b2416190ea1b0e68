package source_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/download"
	"github.com/open-policy-agent/opa/v1/plugins/rest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate/tollgate/bundles"
	"github.com/tollgate/tollgate/bundles/bundletest"
	"github.com/tollgate/tollgate/bundles/lifecycle"
	"github.com/tollgate/tollgate/bundles/source"
	"github.com/tollgate/tollgate/pdp/credential"
	"github.com/tollgate/tollgate/pdp/policy"
	"github.com/tollgate/tollgate/pdp/request"
)

// bundleServer is a real HTTP bundle server on loopback, with ETags as
// OPA's bundle API has (bundletest.Server).
type bundleServer struct {
	bundletest.Server
	URL string
}

func newBundleServer(t *testing.T) *bundleServer {
	s := &bundleServer{}
	hs := httptest.NewServer(&s.Server)
	t.Cleanup(hs.Close)
	s.URL = hs.URL
	return s
}

// replica is one polling engine.
type replica struct {
	engine *policy.Engine
	life   *lifecycle.Bundle
	m      *lifecycle.Metrics
}

func startReplica(t *testing.T, ctx context.Context, url string, vc *bundle.VerificationConfig, minDelay, maxDelay int64) replica {
	t.Helper()
	client, err := rest.New([]byte(`{"name": "policy-server", "url": "`+url+`"}`), nil)
	if err != nil {
		t.Fatal(err)
	}
	dc := download.Config{}
	dc.Polling.MinDelaySeconds, dc.Polling.MaxDelaySeconds = &minDelay, &maxDelay
	if err := dc.ValidateAndInjectDefaults(); err != nil {
		t.Fatal(err)
	}
	r := replica{engine: policy.NewEngine(policy.Options{}), m: lifecycle.NewMetrics()}
	r.life, err = lifecycle.New(lifecycle.Options{Name: "tollgate", Engine: r.engine, Metrics: r.m, Verification: vc})
	if err != nil {
		t.Fatal(err)
	}
	source.Remote{
		Name: "tollgate", Client: client, Resource: "bundles/tollgate.tar.gz", Config: dc,
		Verification: vc, Sink: r.life,
	}.Start(ctx)
	return r
}

func decidePublic(t testing.TB, e *policy.Engine) (bool, string) {
	req, err := request.Normalize(request.Raw{ID: "t", Method: "GET", Target: "/public/x", Host: "api.example.com", Scheme: "https"})
	if err != nil {
		t.Fatal(err)
	}
	d, _ := e.Evaluate(context.Background(), policy.Input{Request: req, Credential: credential.None(), Status: policy.StatusAbsent})
	return d.Allow, d.PolicyRevision
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestRemoteRefusesBadBundlesAndKeepsTheLastGood(t *testing.T) {
	key, other := bundletest.NewKey(t), bundletest.NewKey(t)
	vc, err := bundles.Verification(key.Public, "", "", "")
	if err != nil {
		t.Fatal(err)
	}
	dir := bundletest.PolicyDir(t, nil)
	good := bundletest.Build(t, dir, "r1", &key)
	moved := bundletest.PolicyDir(t, bundletest.MovePublic("/open"))
	badCheck := bundletest.PolicyDir(t, func(rs []bundletest.Route) []bundletest.Route {
		rs[0]["sensitivity"] = "secret-ish"
		return rs
	})
	srv := newBundleServer(t)
	srv.Serve(good)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := startReplica(t, ctx, srv.URL, vc, 0, 1)
	waitFor(t, 30*time.Second, "r1 active", func() bool { return r.engine.Revision() == "r1" })

	tests := []struct {
		name string
		data []byte
	}{
		{"tampered module", bundletest.Tamper(t, bundletest.Build(t, moved, "r2-tampered", &key), "authz.rego")},
		{"tampered data", bundletest.Tamper(t, bundletest.Build(t, moved, "r2-tampered-data", &key), "data.json")},
		{"unsigned", bundletest.Build(t, moved, "r2-unsigned", nil)},
		{"signed by an unknown key", bundletest.Build(t, moved, "r2-other-key", &other)},
		{"fails its check query", bundletest.Build(t, badCheck, "r2-bad-check", &key)},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv.Serve(tt.data)
			// The refusal of this bundle: recorded after it was sent.
			waitFor(t, 30*time.Second, "refusal recorded", func() bool {
				s, sent := r.life.Status(), srv.SentAt()
				return !sent.IsZero() && s.LastError != nil && s.LastError.At.After(sent)
			})
			s := r.life.Status()
			if allow, rev := decidePublic(t, r.engine); !allow || rev != "r1" {
				t.Errorf("after the refusal: allow=%v revision=%s, want r1 answering", allow, rev)
			}
			if s.Active == nil || s.Active.Revision != "r1" {
				t.Errorf("active = %+v, want r1", s.Active)
			}
			if n := counter(t, r.m, "refused"); n < float64(i+1) {
				t.Errorf("refused counter = %v, want at least %d", n, i+1)
			}
		})
	}
	// A good revision after all that is taken.
	srv.Serve(bundletest.Build(t, moved, "r3", &key))
	waitFor(t, 30*time.Second, "r3 active", func() bool { return r.engine.Revision() == "r3" })
	if allow, _ := decidePublic(t, r.engine); allow {
		t.Error("r3 allows /public/x; its public route is /open/**")
	}
}

// counter is tollgate_bundle_activations_total{bundle="tollgate",result}.
func counter(t testing.TB, m *lifecycle.Metrics, result string) float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(m.Collectors()...)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "tollgate_bundle_activations_total" {
			continue
		}
		for _, mt := range mf.GetMetric() {
			for _, l := range mt.GetLabel() {
				if l.GetName() == "result" && l.GetValue() == result {
					return mt.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

func TestReplicasConvergeWithinThePollingInterval(t *testing.T) {
	key := bundletest.NewKey(t)
	vc, err := bundles.Verification(key.Public, "", "", "")
	if err != nil {
		t.Fatal(err)
	}
	srv := newBundleServer(t)
	srv.Serve(bundletest.Build(t, bundletest.PolicyDir(t, nil), "r1", &key))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const minDelay, maxDelay = 1, 2
	var rs []replica
	for range 3 {
		rs = append(rs, startReplica(t, ctx, srv.URL, vc, minDelay, maxDelay))
	}
	for _, r := range rs {
		waitFor(t, 30*time.Second, "replica r1", func() bool { return r.engine.Revision() == "r1" })
	}
	srv.Serve(bundletest.Build(t, bundletest.PolicyDir(t, bundletest.MovePublic("/open")), "r2", &key))
	published := time.Now()
	// Each replica polls again within max_delay_seconds (the jittered
	// delay is at most that); one download and one activation more.
	bound := maxDelay*time.Second + 5*time.Second
	for _, r := range rs {
		waitFor(t, bound-time.Since(published), "replica converges on r2", func() bool { return r.engine.Revision() == "r2" })
	}
}

func TestWatchedDirectoryReloadsOncePerBurst(t *testing.T) {
	dir := bundletest.PolicyDir(t, nil)
	engine := policy.NewEngine(policy.Options{})
	life, err := lifecycle.New(lifecycle.Options{Name: "tollgate", Engine: engine})
	if err != nil {
		t.Fatal(err)
	}
	sink := &countingSink{Bundle: life}
	w := source.Watch{Source: bundles.SourceDirPrefix + dir, Sink: sink, Quiet: 200 * time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := w.Load(ctx); err != nil {
		t.Fatal(err)
	}
	go func() { _ = w.Run(ctx) }()
	time.Sleep(300 * time.Millisecond) // the watch is set up

	// A burst of writes: the route table rewritten 20 times, the last one
	// moving the public route.
	routes := filepath.Join(dir, "tollgate", "routes", "data.json")
	orig, err := os.ReadFile(routes)
	if err != nil {
		t.Fatal(err)
	}
	var rs []map[string]any
	if err := json.Unmarshal(orig, &rs); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if i == 19 {
			rs[0]["paths"] = []string{"/open/**"}
		}
		b, _ := json.Marshal(rs)
		if err := os.WriteFile(routes, b, 0o644); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	waitFor(t, 10*time.Second, "reload", func() bool { allow, _ := decidePublic(t, engine); return !allow })
	time.Sleep(600 * time.Millisecond) // any further reload would have happened
	if n := sink.offers.Load(); n != 2 {
		t.Errorf("offers = %d, want 2 (the initial load and one reload for the burst)", n)
	}

	// A broken write is refused; the last good revision keeps answering.
	if err := os.WriteFile(routes, []byte("{not json"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "refusal", func() bool { return life.Status().LastError != nil })
	if allow, rev := decidePublic(t, engine); allow || rev == "" {
		t.Errorf("after a broken write: allow=%v rev=%q, want the last good revision", allow, rev)
	}
}

type countingSink struct {
	*lifecycle.Bundle
	offers atomic.Int64
}

func (s *countingSink) Offer(ctx context.Context, c lifecycle.Candidate) error {
	s.offers.Add(1)
	return s.Bundle.Offer(ctx, c)
}

func TestWatchedSymlinkSwap(t *testing.T) {
	releases := t.TempDir()
	v1 := bundletest.PolicyDir(t, nil)
	v2 := bundletest.PolicyDir(t, bundletest.MovePublic("/open"))
	link := filepath.Join(releases, "current")
	if err := os.Symlink(v1, link); err != nil {
		t.Fatal(err)
	}
	engine := policy.NewEngine(policy.Options{})
	life, err := lifecycle.New(lifecycle.Options{Name: "tollgate", Engine: engine})
	if err != nil {
		t.Fatal(err)
	}
	w := source.Watch{Source: bundles.SourceDirPrefix + link, Sink: life, Quiet: 100 * time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := w.Load(ctx); err != nil {
		t.Fatal(err)
	}
	go func() { _ = w.Run(ctx) }()
	time.Sleep(300 * time.Millisecond)
	// Swap the link atomically, as deploy tools do.
	tmp := filepath.Join(releases, "current.tmp")
	if err := os.Symlink(v2, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, link); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "v2 after the swap", func() bool { allow, _ := decidePublic(t, engine); return !allow })
	// And the new tree is watched: a change inside v2 reloads.
	routes := filepath.Join(v2, "tollgate", "routes", "data.json")
	b, err := os.ReadFile(routes)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(routes, bytes.ReplaceAll(b, []byte("/open/**"), []byte("/public/**")), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "change inside the new target", func() bool { allow, _ := decidePublic(t, engine); return allow })
}
