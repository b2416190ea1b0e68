package telemetry_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tollgate/tollgate/pdp"
	"github.com/tollgate/tollgate/pdp/authn"
	"github.com/tollgate/tollgate/pdp/credential"
	"github.com/tollgate/tollgate/pdp/decision"
	"github.com/tollgate/tollgate/pdp/decisionlog"
	"github.com/tollgate/tollgate/pdp/policy"
	"github.com/tollgate/tollgate/pdp/request"
	"github.com/tollgate/tollgate/pdp/telemetry"
)

// reasonPolicy denies with the reason the request's x-reason header names
// (so a test can make the policy invent reasons), allows a valid
// credential otherwise, and says 401 without one.
const reasonPolicy = `package tollgate.authz

default decision := {"allow": false, "status": 401, "reasons": ["credential_missing"], "headers": {}}

decision := {"allow": false, "status": 403, "reasons": [input.request.headers["x-reason"][0]], "headers": {}} if {
	input.request.headers["x-reason"]
}

decision := {"allow": true, "status": 200, "reasons": [], "headers": {}} if {
	not input.request.headers["x-reason"]
	input.credential.status == "valid"
}

decision := {"allow": false, "status": 401, "reasons": ["credential_invalid"], "headers": {}} if {
	not input.request.headers["x-reason"]
	input.credential.status == "invalid"
}
`

type keyAuthn struct{}

func (keyAuthn) Authenticate(_ context.Context, c credential.Credential) (authn.Outcome, error) {
	if c.Secret.Reveal() == "good-secret-value" {
		return authn.Accept(&authn.Identity{Kind: authn.KindService, Subject: "svc"}), nil
	}
	return authn.Reject(authn.ReasonInvalid), nil
}

func engineOf(t testing.TB) *policy.Engine {
	t.Helper()
	mod, err := ast.ParseModuleWithOpts("p.rego", reasonPolicy, ast.ParserOptions{RegoVersion: ast.RegoV1})
	if err != nil {
		t.Fatal(err)
	}
	e := policy.NewEngine(policy.Options{})
	b := &bundle.Bundle{Manifest: bundle.Manifest{Revision: "r1"}, Modules: []bundle.ModuleFile{{Path: "p.rego", URL: "p.rego", Raw: []byte(reasonPolicy), Parsed: mod}}, Data: map[string]any{}}
	if err := e.Activate(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	return e
}

func newDecider(t *testing.T, m *telemetry.Metrics) *pdp.Decider {
	t.Helper()
	d, err := pdp.New(pdp.Config{Engine: engineOf(t), Authenticators: []authn.Authenticator{keyAuthn{}}, Recorders: []pdp.Recorder{m}})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestMetricsMoveAsExpected (issue 10): a known sequence of decisions
// moves tollgate_decisions_total, tollgate_credentials_total and
// tollgate_decision_duration_seconds by exactly what it should; reasons a
// policy invents are bounded (past the bound, and when not shaped like a
// code, "other"), and no label carries a credential.
func TestMetricsMoveAsExpected(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := telemetry.NewMetrics(reg, telemetry.MetricsOptions{MaxReasons: 6})
	if err != nil {
		t.Fatal(err)
	}
	d := newDecider(t, m)
	ask := func(target string, hdr map[string][]string) {
		d.Decide(context.Background(), request.Raw{Method: "GET", Target: target, Headers: hdr})
	}
	key := map[string][]string{"X-Api-Key": {"good-secret-value"}}
	for range 3 {
		ask("/a", key) // allow, api_key header valid
	}
	ask("/a?api_key=good-secret-value", nil)                                                            // allow, api_key query valid
	ask("/a?access_token=bad-secret-value", nil)                                                        // 401 credential_invalid, bearer query invalid
	ask("/a", map[string][]string{"Authorization": {"Bearer bad-secret-value"}})                        // 401, bearer header invalid
	ask("/a", nil)                                                                                      // 401 credential_missing, none
	ask("/a/..%2f", nil)                                                                                // 400 invalid_request, refused before the policy
	d.Refused(context.Background(), decision.Deny(403, "untrusted_proxy"), "forward-auth", "192.0.2.1") // 403 refusal
	for i := range 10 {                                                                                 // invented reasons: the first few are kept, the rest are "other"
		ask("/a", map[string][]string{"X-Reason": {fmt.Sprintf("made_up_%d", i)}})
	}
	ask("/a", map[string][]string{"X-Reason": {"Bearer good-secret-value"}}) // not a code: "other"

	wantDecisions := map[[3]string]float64{
		{"true", "200", "none"}:                4,
		{"false", "401", "credential_invalid"}: 2,
		{"false", "401", "credential_missing"}: 1,
		{"false", "400", "invalid_request"}:    1,
		{"false", "403", "untrusted_proxy"}:    1,
		{"false", "403", "made_up_0"}:          1,
		{"false", "403", telemetry.Other}:      10, // made_up_1..9 and the non-code
	}
	vec := counterVec(t, reg, "tollgate_decisions_total")
	total := 0.0
	for _, sr := range vec {
		k, v := sr.labels, sr.value
		total += v
		if want := wantDecisions[[3]string{k["allow"], k["status"], k["reason"]}]; v != want {
			t.Errorf("tollgate_decisions_total%v = %v, want %v", k, v, want)
		}
	}
	if total != 20 {
		t.Errorf("decisions counted %v, want 20", total)
	}
	if got := testutil.CollectAndCount(reg, "tollgate_decisions_total"); got != len(wantDecisions) {
		t.Errorf("%d series of tollgate_decisions_total: the reason bound did not hold", got)
	}

	creds := counterVec(t, reg, "tollgate_credentials_total")
	wantCreds := map[[3]string]float64{
		{"api_key", "header", "valid"}:  3,
		{"api_key", "query", "valid"}:   1,
		{"bearer", "query", "invalid"}:  1,
		{"bearer", "header", "invalid"}: 1,
		{"none", "none", "absent"}:      12,
	}
	for _, sr := range creds {
		k, v := sr.labels, sr.value
		if want := wantCreds[[3]string{k["type"], k["placement"], k["status"]}]; v != want {
			t.Errorf("tollgate_credentials_total%v = %v, want %v", k, v, want)
		}
	}

	// Every policy decision observed each stage; the refusals only what ran.
	for stage, want := range map[string]uint64{"normalize": 19, "authn": 18, "eval": 18} {
		if got := histogramCount(t, reg, "tollgate_decision_duration_seconds", stage); got != want {
			t.Errorf("duration{stage=%q} count = %d, want %d", stage, got, want)
		}
	}
	text := exposition(t, reg)
	for _, secret := range []string{"good-secret-value", "bad-secret-value", "Bearer"} {
		if strings.Contains(text, secret) {
			t.Errorf("a credential (%q) is in a metric", secret)
		}
	}
}

// BenchmarkRecord shows what counting one decision costs: no allocation.
func BenchmarkRecord(b *testing.B) {
	m, err := telemetry.NewMetrics(prometheus.NewRegistry(), telemetry.MetricsOptions{})
	if err != nil {
		b.Fatal(err)
	}
	in := &policy.Input{Credential: credential.Credential{Type: credential.TypeBearer, Placement: credential.PlacementHeader}, Status: policy.StatusValid}
	rec := decisionlog.Record{Decision: decision.Deny(403, "insufficient_scope"), Input: in,
		Stages: decisionlog.Stages{Normalize: time.Microsecond, Authn: 2 * time.Microsecond, Eval: 3 * time.Microsecond}}
	b.ReportAllocs()
	for b.Loop() {
		m.Record(rec)
	}
}

type series struct {
	labels map[string]string
	value  float64
}

func counterVec(t *testing.T, reg prometheus.Gatherer, name string) []series {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []series
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = lp.GetValue()
			}
			out = append(out, series{labels, m.GetCounter().GetValue()})
		}
	}
	return out
}

func histogramCount(t *testing.T, reg prometheus.Gatherer, name, stage string) uint64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "stage" && lp.GetValue() == stage {
					return m.GetHistogram().GetSampleCount()
				}
			}
		}
	}
	return 0
}

func exposition(t *testing.T, reg prometheus.Gatherer) string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sb strings.Builder
	for _, mf := range mfs {
		sb.WriteString(mf.String())
	}
	return sb.String()
}

// TestBundleCollector: the bundle's activation and confirmation times are
// exported for stale-bundle alerts; a bundle never confirmed has none.
func TestBundleCollector(t *testing.T) {
	at := time.Unix(1_800_000_000, 0)
	times := []telemetry.BundleTimes{{Name: "tollgate", ActivatedAt: at, CheckedAt: at.Add(time.Minute)}, {Name: "fresh"}}
	reg := prometheus.NewRegistry()
	reg.MustRegister(telemetry.NewBundleCollector(func() []telemetry.BundleTimes { return times }))
	want := `# HELP tollgate_bundle_activated_timestamp_seconds When the active revision of the bundle was activated (Unix seconds).
# TYPE tollgate_bundle_activated_timestamp_seconds gauge
tollgate_bundle_activated_timestamp_seconds{bundle="tollgate"} 1.8e+09
# HELP tollgate_bundle_checked_timestamp_seconds When the bundle's source last confirmed the active revision (Unix seconds).
# TYPE tollgate_bundle_checked_timestamp_seconds gauge
tollgate_bundle_checked_timestamp_seconds{bundle="tollgate"} 1.80000006e+09
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
}
