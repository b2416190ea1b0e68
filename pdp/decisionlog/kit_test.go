package decisionlog_test

import (
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/plugins/logs"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate/tollgate/pdp"
	"github.com/tollgate/tollgate/pdp/authn"
	"github.com/tollgate/tollgate/pdp/authn/apikey"
	"github.com/tollgate/tollgate/pdp/authn/authntest"
	"github.com/tollgate/tollgate/pdp/authn/oidcjwt"
	"github.com/tollgate/tollgate/pdp/decisionlog"
	"github.com/tollgate/tollgate/pdp/policy"
	"github.com/tollgate/tollgate/pdp/telemetry/telemetrytest"
)

// collector is an OPA decision-log collector on loopback: it accepts
// POST /logs with a gzip-compressed JSON array, decodes it with OPA's own
// event type, and keeps every event (and its raw JSON). It can be stopped
// and started again on the same address.
type collector struct {
	t    testing.TB
	addr string

	mu     sync.Mutex
	srv    *http.Server
	events []logs.EventV1
	raw    []json.RawMessage
	posts  int
	bad    []string
}

func newCollector(t testing.TB) *collector {
	c := &collector{t: t}
	c.start("127.0.0.1:0")
	t.Cleanup(c.stop)
	return c
}

func (c *collector) url() string { return "http://" + c.addr }

func (c *collector) start(addr string) {
	c.t.Helper()
	var ln net.Listener
	var err error
	for range 50 { // the port of a stopped collector may take a moment to free
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		c.t.Fatal(err)
	}
	c.addr = ln.Addr().String()
	srv := &http.Server{Handler: http.HandlerFunc(c.serve), ReadHeaderTimeout: 5 * time.Second}
	c.mu.Lock()
	c.srv = srv
	c.mu.Unlock()
	go func() { _ = srv.Serve(ln) }()
}

func (c *collector) stop() {
	c.mu.Lock()
	srv := c.srv
	c.srv = nil
	c.mu.Unlock()
	if srv != nil {
		_ = srv.Close()
	}
}

func (c *collector) restart() { c.start(c.addr) }

func (c *collector) serve(w http.ResponseWriter, r *http.Request) {
	problem := func(s string) {
		c.mu.Lock()
		c.bad = append(c.bad, s)
		c.mu.Unlock()
		http.Error(w, s, http.StatusBadRequest)
	}
	if r.Method != http.MethodPost || r.URL.Path != "/logs" {
		problem("want POST /logs, got " + r.Method + " " + r.URL.Path)
		return
	}
	if r.Header.Get("Content-Encoding") != "gzip" || r.Header.Get("Content-Type") != "application/json" {
		problem("want gzip JSON")
		return
	}
	zr, err := gzip.NewReader(r.Body)
	if err != nil {
		problem("not gzip")
		return
	}
	body, err := io.ReadAll(zr)
	if err != nil {
		problem("bad gzip")
		return
	}
	var events []logs.EventV1
	var raw []json.RawMessage
	if err := json.Unmarshal(body, &events); err != nil {
		problem("not an array of OPA events: " + err.Error())
		return
	}
	if err := json.Unmarshal(body, &raw); err != nil {
		problem("not JSON")
		return
	}
	c.mu.Lock()
	c.events = append(c.events, events...)
	c.raw = append(c.raw, raw...)
	c.posts++
	c.mu.Unlock()
	w.WriteHeader(http.StatusOK)
}

func (c *collector) snapshot() ([]logs.EventV1, []json.RawMessage, []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]logs.EventV1(nil), c.events...), append([]json.RawMessage(nil), c.raw...), append([]string(nil), c.bad...)
}

// routedPolicy is a small policy in the default policy's shape: routes
// are data (input.route comes from the engine's route table), a credential
// in the query is refused, a valid credential elsewhere is allowed.
const routedPolicy = `package tollgate.authz

default decision := {"allow": false, "status": 403, "reasons": ["no_route"], "headers": {}}

decision := {"allow": false, "status": 401, "reasons": ["credential_missing"], "headers": {}} if {
	input.route.matched
	input.credential.status == "absent"
}

decision := {"allow": false, "status": 403, "reasons": ["credential_in_query"], "headers": {}} if {
	input.route.matched
	input.credential.placement == "query"
}

decision := {"allow": true, "status": 200, "reasons": [], "headers": {"x-user-id": input.identity.subject}} if {
	input.route.matched
	input.credential.status == "valid"
	input.credential.placement != "query"
}

decision := {"allow": false, "status": 401, "reasons": ["credential_invalid", input.credential.error], "headers": {}} if {
	input.route.matched
	input.credential.status == "invalid"
	input.credential.placement != "query"
}
`

// newBundle builds a bundle of modules (path → source) with the route
// table of routedPolicy.
func newBundle(t testing.TB, revision string, modules map[string]string) *bundle.Bundle {
	t.Helper()
	b := &bundle.Bundle{
		Manifest: bundle.Manifest{Revision: revision},
		Data: map[string]any{"tollgate": map[string]any{"routes": []any{
			map[string]any{"methods": []any{"GET"}, "paths": []any{"/orders/{id}"}},
			map[string]any{"methods": []any{"*"}, "paths": []any{"/public/**"}},
		}}},
	}
	for path, src := range modules {
		mod, err := ast.ParseModuleWithOpts(path, src, ast.ParserOptions{RegoVersion: ast.RegoV1})
		if err != nil {
			t.Fatal(err)
		}
		b.Modules = append(b.Modules, bundle.ModuleFile{Path: path, URL: path, Raw: []byte(src), Parsed: mod})
	}
	return b
}

// fixture is a Decider with a real OIDC issuer, a real API key store, the
// routed policy, and a decision logger uploading to a collector.
type fixture struct {
	issuer  *authntest.Issuer
	key     string // a valid API key
	engine  *policy.Engine
	act     decisionlog.Activator
	decider *pdp.Decider
	logger  *decisionlog.Logger
	reg     *prometheus.Registry
	logs    *telemetrytest.LogBuffer // operational logs of every part
	authns  []authn.Authenticator
}

type fixtureOptions struct {
	upload  *decisionlog.Upload
	console io.Writer
	modules map[string]string
	queue   int
	extra   []pdp.Recorder
}

func newFixture(t testing.TB, opts fixtureOptions) *fixture {
	t.Helper()
	f := &fixture{issuer: authntest.NewIssuer(t), reg: prometheus.NewRegistry(), logs: &telemetrytest.LogBuffer{}}
	log := slog.New(slog.NewJSONHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	jwts, err := oidcjwt.New(context.Background(), oidcjwt.Config{
		Issuers:    []oidcjwt.IssuerConfig{{Issuer: f.issuer.URL(), Audiences: []string{authntest.Audience}}},
		Logger:     log,
		Registerer: f.reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(jwts.Close)
	gen, err := apikey.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	f.key = gen.Key.Reveal()
	store, err := apikey.NewStore([]apikey.Record{{ID: gen.ID, Hash: gen.Hash, Owner: "billing", Scopes: []string{"orders:read"}, Created: time.Now().Add(-time.Hour)}})
	if err != nil {
		t.Fatal(err)
	}
	f.logger, err = decisionlog.New(decisionlog.Options{
		Console:    opts.console,
		Upload:     opts.upload,
		Labels:     map[string]string{"id": "test-instance", "version": "test"},
		QueueLen:   opts.queue,
		Registerer: f.reg,
		Logger:     log,
	})
	if err != nil {
		t.Fatal(err)
	}
	f.engine = policy.NewEngine(policy.Options{Logger: log})
	f.act = f.logger.Following(f.engine)
	modules := map[string]string{"authz.rego": routedPolicy}
	for k, v := range opts.modules {
		modules[k] = v
	}
	if err := f.act.Activate(context.Background(), newBundle(t, "rev-1", modules)); err != nil {
		t.Fatal(err)
	}
	f.authns = []authn.Authenticator{jwts, apikey.New(store, apikey.Options{})}
	f.decider, err = pdp.New(pdp.Config{
		Engine:         f.engine,
		Authenticators: f.authns,
		Logger:         log,
		Recorders:      append([]pdp.Recorder{f.logger}, opts.extra...),
	})
	if err != nil {
		t.Fatal(err)
	}
	f.logger.Start()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		f.logger.Stop(ctx)
	})
	return f
}

// withoutRecorders is f's decider without the decision log.
func withoutRecorders(t testing.TB, f *fixture) *pdp.Decider {
	t.Helper()
	d, err := pdp.New(pdp.Config{Engine: f.engine, Authenticators: f.authns})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// token mints a valid JWT for sub.
func (f *fixture) token(sub string) string {
	return f.issuer.Mint(f.issuer.Claims(sub))
}

// counter reads a counter or gauge of reg by name and labels.
func counter(t testing.TB, reg prometheus.Gatherer, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if want, ok := labels[lp.GetName()]; ok && want != lp.GetValue() {
					continue metric
				}
			}
			switch {
			case m.Counter != nil:
				return m.GetCounter().GetValue()
			case m.Gauge != nil:
				return m.GetGauge().GetValue()
			case m.Histogram != nil:
				return float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return 0
}

// exposition is everything reg exposes, as text, for leak checks.
func exposition(t testing.TB, reg prometheus.Gatherer) string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sb strings.Builder
	for _, mf := range mfs {
		sb.WriteString(mf.String())
		sb.WriteByte('\n')
	}
	return sb.String()
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

var errNoEvent = errors.New("no event")

// findEvent returns the event with decision id id.
func findEvent(events []logs.EventV1, id string) (logs.EventV1, error) {
	for _, e := range events {
		if e.DecisionID == id {
			return e, nil
		}
	}
	return logs.EventV1{}, errNoEvent
}
