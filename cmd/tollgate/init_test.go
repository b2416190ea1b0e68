package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestInitPassesEveryCheck: a starter bundle, as created, passes fmt
// --check, lint, test --coverage --threshold 95, check and replay.
func TestInitPassesEveryCheck(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "starter")
	out, code := runCLI(t, "init", dir)
	if code != 0 || !strings.Contains(out, "Created a starter policy in "+dir) {
		t.Fatalf("init: exit %d\n%s", code, out)
	}
	policyDir := filepath.Join(dir, "policy")
	steps := [][]string{
		{"fmt", "--check", policyDir},
		{"lint", policyDir},
		{"test", "--bundle", policyDir, "--coverage", "--threshold", "95"},
		{"check", "--bundle", policyDir, filepath.Join(dir, "cases", "routes.yaml")},
		{"replay", "--bundle", policyDir, filepath.Join(dir, "decisions", "sample.jsonl")},
	}
	for _, args := range steps {
		if out, code := runCLI(t, args...); code != 0 {
			t.Errorf("%v: exit %d\n%s", args, code, out)
		}
	}
	manifest, err := os.ReadFile(filepath.Join(policyDir, ".manifest"))
	if err != nil || !strings.Contains(string(manifest), `"revision": "starter-1"`) {
		t.Errorf(".manifest: %v %s", err, manifest)
	}
	if st, err := os.Stat(filepath.Join(dir, "policy-ci.sh")); err != nil || st.Mode()&0o100 == 0 {
		t.Errorf("policy-ci.sh is not executable: %v", err)
	}
	sample, err := os.ReadFile(filepath.Join(dir, "decisions", "sample.jsonl"))
	if err != nil || strings.Contains(string(sample), "tgk_") || strings.Contains(string(sample), "eyJ") {
		t.Errorf("sample decisions hold a credential (or are missing: %v)", err)
	}

	// init refuses a directory that is not empty.
	if out, code := runCLI(t, "init", dir); code != exitError || !strings.Contains(out, "not empty") {
		t.Errorf("second init: exit %d\n%s", code, out)
	}
}

// TestInitFailures: the starter's gate catches a failing unit test, a
// coverage drop and a decision-table miss.
func TestInitFailures(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "starter")
	if out, code := runCLI(t, "init", dir); code != 0 {
		t.Fatalf("init: exit %d\n%s", code, out)
	}
	policyDir := filepath.Join(dir, "policy")
	write := func(name, content string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// A failing unit test shows the failed expression and its values.
	write("policy/extra_test.rego", `package tollgate.extra_test

import data.tollgate.authz

test_admin_is_public if {
	d := authz.decision with input as {"request": {"method": "GET", "path": "/admin", "segments": ["admin"]}, "credential": {"status": "absent", "type": "none", "placement": "none"}}
	d.status == 200
}
`)
	out, code := runCLI(t, "test", "--bundle", policyDir)
	if code != exitFailed || !strings.Contains(out, "test_admin_is_public: FAIL") || !strings.Contains(out, "d.status == 200") {
		t.Errorf("failing unit test: exit %d\n%s", code, out)
	}
	if err := os.Remove(filepath.Join(policyDir, "extra_test.rego")); err != nil {
		t.Fatal(err)
	}

	// A coverage drop: rules no test reaches.
	write("policy/extra.rego", `package tollgate.extra

uncovered(x) := y if {
	y := x + 1
	y > 2
}

also_uncovered(x) := concat("-", [x, x])
`)
	out, code = runCLI(t, "test", "--bundle", policyDir, "--coverage", "--threshold", "100")
	if code != exitFailed || !strings.Contains(out, "is below the threshold") || !strings.Contains(out, "not covered: ") || !strings.Contains(out, "extra.rego:3,4,5,8") {
		t.Errorf("coverage drop: exit %d\n%s", code, out)
	}

	// A decision-table miss after a route table change.
	write("policy/tollgate/routes/data.json", `[
  {"id": "public", "methods": ["GET"], "paths": ["/public/**"], "sensitivity": "public"},
  {"id": "products-read", "methods": ["GET"], "paths": ["/products", "/products/{id}"], "sensitivity": "internal", "scopes": ["products:write"]}
]`)
	out, code = runCLI(t, "check", "--bundle", policyDir, filepath.Join(dir, "cases", "routes.yaml"))
	if code != exitFailed || !strings.Contains(out, "products, API key with the scope: FAIL") || !strings.Contains(out, `reasons=["insufficient_scope"]`) {
		t.Errorf("decision-table miss: exit %d\n%s", code, out)
	}
}
