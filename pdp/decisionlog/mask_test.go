package decisionlog_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/plugins/logs"

	"github.com/tollgate/tollgate/pdp/telemetry/telemetrytest"
)

// logMaskPolicy uses OPA's system.log.mask and system.log.drop, with
// OPA's semantics: drop is a boolean; mask is a set of paths to remove or
// {"op", "path", "value"} objects.
const logMaskPolicy = `package system.log

drop if input.tollgate.route == "/public/**"

mask contains "/input/request/headers/x-internal-note"

mask contains {"op": "upsert", "path": "/input/request/source_ip", "value": "0.0.0.0"}

mask contains "/result/headers/x-user-id" if input.result.allow
`

// TestMaskAndDropPolicy (issue 10): the active bundle's system.log.drop
// leaves events out (counted apart, not as lost), its system.log.mask
// removes and upserts fields as OPA does and records them in erased and
// masked, and the console sink writes one JSON line per kept event.
func TestMaskAndDropPolicy(t *testing.T) {
	console := &telemetrytest.LogBuffer{}
	f := newFixture(t, fixtureOptions{console: console, modules: map[string]string{"log.rego": logMaskPolicy}})
	token := f.token("alice")
	kept := f.decider.Decide(context.Background(), rawRequest("/orders/1", map[string][]string{
		"Authorization": {"Bearer " + token}, "X-Internal-Note": {"ticket 42"}, "User-Agent": {"curl/8.5"}}))
	dropped := f.decider.Decide(context.Background(), rawRequest("/public/x", nil))
	denied := f.decider.Decide(context.Background(), rawRequest("/orders/1", map[string][]string{"X-Internal-Note": {"ticket 43"}}))
	waitFor(t, "two console lines", func() bool { return strings.Count(console.String(), "\n") >= 2 })
	waitFor(t, "the dropped event counted", func() bool {
		return counter(t, f.reg, "tollgate_decision_log_events_suppressed_total", nil) == 1
	})

	events := map[string]logs.EventV1{}
	for _, line := range strings.Split(strings.TrimSpace(console.String()), "\n") {
		var e logs.EventV1
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("console line is not an OPA event: %v", err)
		}
		events[e.DecisionID] = e
	}
	if _, ok := events[dropped.ID]; ok {
		t.Error("system.log.drop did not drop the /public event")
	}
	for _, tc := range []struct {
		id          string
		allow       bool
		wantErased  []string
		wantMasked  []string
		wantSubject bool
	}{
		{kept.ID, true, []string{"/input/request/headers/x-internal-note", "/result/headers/x-user-id"}, []string{"/input/request/source_ip"}, true},
		{denied.ID, false, []string{"/input/request/headers/x-internal-note"}, []string{"/input/request/source_ip"}, false},
	} {
		e, ok := events[tc.id]
		if !ok {
			t.Fatalf("no event for %s", tc.id)
		}
		for _, p := range tc.wantErased {
			if !contains(e.Erased, p) {
				t.Errorf("%s: erased %q, want %q in it", tc.id, e.Erased, p)
			}
		}
		for _, p := range tc.wantMasked {
			if !contains(e.Masked, p) {
				t.Errorf("%s: masked %q, want %q in it", tc.id, e.Masked, p)
			}
		}
		in := (*e.Input).(map[string]any)
		req := in["request"].(map[string]any)
		if req["source_ip"] != "0.0.0.0" {
			t.Errorf("source_ip = %v, want the upserted 0.0.0.0", req["source_ip"])
		}
		hdrs := req["headers"].(map[string]any)
		if _, ok := hdrs["x-internal-note"]; ok {
			t.Error("x-internal-note not removed")
		}
		if _, ok := hdrs["user-agent"]; !ok && tc.allow {
			t.Error("user-agent removed: the masks took too much")
		}
		if _, ok := in["identity"].(map[string]any); ok != tc.wantSubject {
			t.Errorf("identity present = %v, want %v", ok, tc.wantSubject)
		}
		if tc.allow {
			res := (*e.Result).(map[string]any)
			if _, ok := res["headers"].(map[string]any)["x-user-id"]; ok {
				t.Error("result header x-user-id not removed by the mask")
			}
		}
		if strings.Contains(console.String(), token) {
			t.Fatal("the token reached the console")
		}
	}
	if got := counter(t, f.reg, "tollgate_decision_log_events_total", map[string]string{"result": "delivered"}); got != 2 {
		t.Errorf("console-only delivered = %v, want 2", got)
	}
}
