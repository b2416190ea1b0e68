package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// lintBundle is a small bundle with a clean decision rule; tests break one
// thing at a time.
func lintBundle(rego, routes string) map[string]string {
	return map[string]string{
		".manifest":                 `{"revision": "r1", "roots": ["tollgate"]}`,
		"authz.rego":                rego,
		"tollgate/routes/data.json": routes,
	}
}

const lintGoodRego = `package tollgate.authz

default decision := {"allow": false, "status": 403, "reasons": ["denied"], "headers": {}}

decision := {"allow": true, "status": 200, "reasons": [], "headers": {}} if {
	input.route.matched
}
`

const lintGoodRoutes = `[
  {"id": "public", "methods": ["GET"], "paths": ["/public/**"], "sensitivity": "public"},
  {"id": "items", "methods": ["GET"], "paths": ["/items/{id}"], "sensitivity": "internal", "scopes": ["items:read"]}
]`

func TestLint(t *testing.T) {
	tests := []struct {
		name   string
		rego   string
		routes string
		want   []string // findings, as file:line: rule: message prefixes (file relative to the bundle)
	}{
		{"clean", lintGoodRego, lintGoodRoutes, nil},
		{"the default policy", "", "", nil},
		{"no default", strings.Replace(lintGoodRego, "default decision", "decision", 1), lintGoodRoutes,
			[]string{"authz.rego:3: default-deny: decision has no default"}},
		{"default allows", strings.Replace(lintGoodRego, `"allow": false`, `"allow": true`, 1), lintGoodRoutes,
			[]string{"authz.rego:3: default-deny: the default of decision must deny"}},
		{"decision without status", strings.Replace(lintGoodRego, `"status": 200, `, "", 1), lintGoodRoutes,
			[]string{"authz.rego:5: decision-shape: this decision lacks status"}},
		{"else without reasons", lintGoodRego + `else := {"allow": false, "status": 401} if input.x
`, lintGoodRoutes, []string{"authz.rego:8: decision-shape: this decision lacks reasons"}},
		{"unused variable (strict)", lintGoodRego + `
helper if {
	x := 1
	input.y
}
`, lintGoodRoutes, []string{"authz.rego:10: strict:"}},
		{"built-in outside the capabilities", lintGoodRego + `
fetched := http.send({"method": "GET", "url": "https://example.com"})
`, lintGoodRoutes, []string{"authz.rego:9: capabilities: built-in http.send is not allowed"}},
		{"shadowed route", lintGoodRego, `[
  {"id": "items-any", "methods": ["*"], "paths": ["/items/**"], "sensitivity": "internal", "scopes": ["a"]},
  {"id": "items", "methods": ["GET"], "paths": ["/items/{id}"], "sensitivity": "internal", "scopes": ["b"]}
]`, []string{"tollgate/routes/data.json:3: unreachable-route: route 1 (items) can never match: route 0 (items-any)"}},
		{"partly shadowed route is reachable", lintGoodRego, `[
  {"id": "items-one", "methods": ["GET"], "paths": ["/items/{id}"], "sensitivity": "internal", "scopes": ["a"]},
  {"id": "items", "methods": ["GET", "PUT"], "paths": ["/items/{id}"], "sensitivity": "internal", "scopes": ["b"]}
]`, nil},
		{"sensitive route without scopes or roles", lintGoodRego, `[
  {"id": "secrets", "methods": ["GET"], "paths": ["/secrets"], "sensitivity": "sensitive"}
]`, []string{"tollgate/routes/data.json:2: route-requirements: route 0 (secrets) is sensitive but requires no scope and no role"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join("..", "..", "policies")
			if tc.rego != "" {
				dir = writeTree(t, lintBundle(tc.rego, tc.routes))
			}
			out, code := runCLI(t, "lint", dir)
			if len(tc.want) == 0 {
				if code != 0 || !strings.Contains(out, "no findings") {
					t.Fatalf("exit %d\n%s", code, out)
				}
				return
			}
			if code != exitFailed {
				t.Fatalf("exit %d, want %d\n%s", code, exitFailed, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, filepath.Join(dir, w)) && !strings.Contains(out, dir+"/"+w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
		})
	}
	if out, code := runCLI(t, "lint", filepath.Join(t.TempDir(), "none")); code != exitError {
		t.Errorf("missing dir: exit %d\n%s", code, out)
	}
	empty := t.TempDir()
	if err := os.WriteFile(filepath.Join(empty, "x.txt"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, code := runCLI(t, "lint", empty); code != exitError {
		t.Errorf("no rego: exit %d\n%s", code, out)
	}
}

func TestCoversTemplate(t *testing.T) {
	tests := []struct {
		a, b string
		want bool
	}{
		{"/a/**", "/a", true},
		{"/a/**", "/a/{x}/b", true},
		{"/a/**", "/a/**", true},
		{"/a/{x}", "/a/b", true},
		{"/a/{x}", "/a/{y}", true},
		{"/a/b", "/a/{y}", false},
		{"/a/{x}", "/a/**", false},
		{"/a/{x}/**", "/a", false},
		{"/a", "/a/b", false},
		{"/**", "/anything/**", true},
	}
	for _, tc := range tests {
		if got := coversTemplate(tc.a, tc.b); got != tc.want {
			t.Errorf("coversTemplate(%q, %q) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
}

// TestLintCapabilitiesFile: a built-in the operator allows with a
// policy.capabilities file is no finding with --capabilities.
func TestLintCapabilitiesFile(t *testing.T) {
	dir := writeTree(t, lintBundle(lintGoodRego+`
fetched := http.send({"method": "GET", "url": "https://example.com"})
`, lintGoodRoutes))
	caps := filepath.Join(t.TempDir(), "caps.json")
	if err := os.WriteFile(caps, []byte(`{"builtins": [{"name": "http.send"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, code := runCLI(t, "lint", dir); code != exitFailed || !strings.Contains(out, "capabilities: built-in http.send") {
		t.Fatalf("without --capabilities: exit %d\n%s", code, out)
	}
	if out, code := runCLI(t, "lint", "--capabilities", caps, dir); code != 0 {
		t.Errorf("with --capabilities: exit %d\n%s", code, out)
	}
	if out, code := runCLI(t, "lint", "--capabilities", filepath.Join(t.TempDir(), "none.json"), dir); code != exitError {
		t.Errorf("missing capabilities file: exit %d\n%s", code, out)
	}
}
