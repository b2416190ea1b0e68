package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/pdp/decisiontable"
)

func TestReplay(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "starter")
	if out, code := runCLI(t, "init", dir); code != 0 {
		t.Fatalf("init: exit %d\n%s", code, out)
	}
	policyDir := filepath.Join(dir, "policy")
	sample := filepath.Join(dir, "decisions", "sample.jsonl")
	// The candidate drops the owner check of customers-read and the scope
	// of products-read.
	routes := filepath.Join(policyDir, "tollgate", "routes", "data.json")
	b, err := os.ReadFile(routes)
	if err != nil {
		t.Fatal(err)
	}
	var table []map[string]any
	if err := json.Unmarshal(b, &table); err != nil {
		t.Fatal(err)
	}
	for _, r := range table {
		if r["id"] == "customers-read" {
			delete(r, "owner")
		}
		if r["id"] == "products-read" {
			r["scopes"] = []string{"catalog:read"}
		}
	}
	b, _ = json.Marshal(table)
	if err := os.WriteFile(routes, b, 0o644); err != nil {
		t.Fatal(err)
	}
	// A refused request (no input) is skipped.
	f, err := os.OpenFile(sample, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"decision_id": "refused-1", "result": {"allow": false, "status": 400, "reasons": ["invalid_request"]}, "tollgate": {"refused": {"reason": "invalid_request"}}}` + "\n")
	f.Close()

	out, code := runCLI(t, "replay", "--bundle", policyDir, sample)
	if code != exitFailed {
		t.Fatalf("exit %d, want %d\n%s", code, exitFailed, out)
	}
	for _, want := range []string{
		"(1 skipped: no policy input)",
		"deny to allow on customers-read (/customers/{customer_number}): 1 decision(s) [UNEXPECTED]",
		`was: deny 403 ["not_owner"]`,
		"now: allow 200 []",
		"GET /customers/43",
		"allow to deny on products-read",
		`now: deny 403 ["insufficient_scope"]`,
		"unexpected",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}

	// Expecting only one of the two changes still fails; expecting both passes.
	one := filepath.Join(dir, "one.yaml")
	os.WriteFile(one, []byte("- change: deny_to_allow\n  route: customers-read\n  why: owner check moves to the upstream\n"), 0o644)
	out, code = runCLI(t, "replay", "--bundle", policyDir, "--expect", one, sample)
	if code != exitFailed || !strings.Contains(out, "[expected: owner check moves to the upstream]") || !strings.Contains(out, "allow to deny on products-read") {
		t.Errorf("one expected: exit %d\n%s", code, out)
	}
	both := filepath.Join(dir, "both.yaml")
	os.WriteFile(both, []byte("- change: deny_to_allow\n  route: /customers/{customer_number}\n- change: allow_to_deny\n  route: products-read\n  reasons: [insufficient_scope]\n- change: status\n  route: admin\n"), 0o644)
	out, code = runCLI(t, "replay", "--bundle", policyDir, "--expect", both, sample)
	if code != 0 || !strings.Contains(out, "PASS: ") || !strings.Contains(out, `expected flip not seen: change "status" route "admin"`) {
		t.Errorf("both expected: exit %d\n%s", code, out)
	}

	var rep replayReport
	out, code = runCLI(t, "replay", "--format", "json", "--bundle", policyDir, "--expect", both, sample)
	if err := json.Unmarshal([]byte(out), &rep); code != 0 || err != nil || rep.Flips < 2 || rep.Unexpected != 0 || rep.Skipped != 1 {
		t.Errorf("json: exit %d %v %+v", code, err, rep)
	}

	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("- change: sideways\n"), 0o644)
	for _, args := range [][]string{
		{"replay", "--bundle", policyDir, "--expect", bad, sample},
		{"replay", "--bundle", policyDir, filepath.Join(dir, "missing.jsonl")},
		{"replay", sample},
	} {
		if out, code := runCLI(t, args...); code != exitError {
			t.Errorf("%v: exit %d, want %d\n%s", args, code, exitError, out)
		}
	}
	os.WriteFile(filepath.Join(dir, "junk.jsonl"), []byte("not json\n"), 0o644)
	if out, code := runCLI(t, "replay", "--bundle", policyDir, filepath.Join(dir, "junk.jsonl")); code != exitError || !strings.Contains(out, "junk.jsonl:1: not a decision-log event") {
		t.Errorf("junk: exit %d\n%s", code, out)
	}
}

// TestReplayDecisionLogEvents: replay reads what Tollgate's decision logger
// writes (the starter's sample is written by it), and flips nothing against
// the bundle that made the decisions.
func TestReplayDecisionLogEvents(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "starter")
	if out, code := runCLI(t, "init", dir); code != 0 {
		t.Fatalf("init: exit %d\n%s", code, out)
	}
	sample, err := os.ReadFile(filepath.Join(dir, "decisions", "sample.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(sample)), "\n")
	parsed, err := decisiontable.Parse("cases.yaml", starterCases)
	if err != nil {
		t.Fatal(err)
	}
	cases := len(parsed)
	if len(lines) != cases {
		t.Fatalf("%d events for %d cases", len(lines), cases)
	}
	for _, l := range lines {
		var ev struct {
			Bundles map[string]struct{ Revision string }
			Input   map[string]any
			Result  map[string]any
		}
		if err := json.Unmarshal([]byte(l), &ev); err != nil || ev.Bundles["policy"].Revision != starterRevision || ev.Input["request"] == nil || ev.Result["status"] == nil {
			t.Fatalf("event %v: %.200s", err, l)
		}
	}
	out, code := runCLI(t, "replay", "--bundle", filepath.Join(dir, "policy"), filepath.Join(dir, "decisions", "sample.jsonl"))
	want := fmt.Sprintf("replayed %d of %d decisions", cases, cases)
	if code != 0 || !strings.Contains(out, want) || !strings.Contains(out, "PASS: 0 flip(s), 0 unexpected") {
		t.Errorf("exit %d, want %q\n%s", code, want, out)
	}
}
