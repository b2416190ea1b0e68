package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
)

func TestEval(t *testing.T) {
	dir := writeTree(t, map[string]string{
		"req.json": `{"method": "GET", "path": "/admin/users", "host": "api.example.com", "headers": {"x-request-id": "r-1"}}`,
		"bad.json": `{"method": "GET", "path": "/x", "verb": "GET"}`,
	})
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"not the owner", []string{"--path", "/customers/43", "--jwt-sub", "alice", "--jwt-claims", `{"scope":"customers:read","customer_number":"42"}`},
			[]string{"decision:   DENY, status 403, reasons [\"not_owner\"]", "credential: valid, bearer in header", `route:      #2 customers-read`, `params {"customer_number":"43"}`, "checks:     1 failed", `"not_owner"`}},
		{"owner", []string{"--path", "/customers/42", "--jwt-claims", `{"scope":"customers:read","customer_number":"42"}`},
			[]string{"decision:   ALLOW, status 200", `"x-customer-number":"42"`, "checks:     every check passed"}},
		{"api key in query", []string{"--path", "/products", "--api-key-scopes", "products:read", "--placement", "query"},
			[]string{"ALLOW", "api_key in query", "products-read"}},
		{"api key without scope", []string{"--path", "/products", "--api-key-scopes", ""},
			[]string{"DENY, status 403", "insufficient_scope"}},
		{"raw invalid token", []string{"--path", "/products", "--header", "Authorization: Bearer nope"},
			[]string{"DENY, status 401", "credential: invalid, bearer in header"}},
		{"no route", []string{"--method", "POST", "--path", "/nowhere"},
			[]string{"route:      none matches", `"no_route"`}},
		{"file", []string{"--input", filepath.Join(dir, "req.json")},
			[]string{"DENY, status 401", "credential_missing", "admin"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, code := runCLI(t, append([]string{"eval"}, tc.args...)...)
			if code != 0 {
				t.Fatalf("exit %d\n%s", code, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			if strings.Contains(out, "eyJ") || strings.Contains(out, "tgk_") || strings.Contains(out, "nope") {
				t.Errorf("the output shows a credential:\n%s", out)
			}
		})
	}

	out, code := runCLI(t, "eval", "--format", "json", "--path", "/customers/42", "--jwt-claims", `{"scope":"customers:read","customer_number":"42"}`)
	var rep struct {
		Decision struct{ Allow bool }
		Route    map[string]any
		Checks   []any
	}
	if err := json.Unmarshal([]byte(out), &rep); code != 0 || err != nil || !rep.Decision.Allow || rep.Route["id"] != "customers-read" || rep.Checks == nil {
		t.Errorf("json: exit %d, %v, %+v\n%s", code, err, rep, out)
	}

	for _, args := range [][]string{
		{"eval"},
		{"eval", "--input", filepath.Join(dir, "bad.json")},
		{"eval", "--path", "/x", "--jwt-claims", "[1]"},
		{"eval", "--path", "/x", "--jwt-claims", "{}", "--api-key-scopes", "a"},
		{"eval", "--path", "/x", "--bundle", filepath.Join(dir, "missing")},
	} {
		if out, code := runCLI(t, args...); code != exitError {
			t.Errorf("%v: exit %d, want %d\n%s", args, code, exitError, out)
		}
	}
}

// TestEvalDevToken: a token of `tollgate token` verifies with --dev only.
func TestEvalDevToken(t *testing.T) {
	t.Setenv(devKeyEnv, filepath.Join(t.TempDir(), "dev.pem"))
	tok, code := runCLI(t, "token", "--sub", "alice", "--claim", "customer_number=42", "--scope", "customers:read")
	if code != 0 {
		t.Fatalf("token: exit %d\n%s", code, tok)
	}
	header := "Authorization: Bearer " + strings.TrimSpace(tok)
	out, code := runCLI(t, "eval", "--dev", "--path", "/customers/42", "--header", header)
	if code != 0 || !strings.Contains(out, "ALLOW") || !strings.Contains(out, `"x-auth-issuer":"https://dev.tollgate.invalid/"`) {
		t.Errorf("--dev: exit %d\n%s", code, out)
	}
	out, code = runCLI(t, "eval", "--path", "/customers/42", "--header", header)
	if code != 0 || !strings.Contains(out, `reasons ["credential_invalid","unknown_issuer"]`) {
		t.Errorf("without --dev: exit %d\n%s", code, out)
	}
	if strings.Contains(out, strings.TrimSpace(tok)) {
		t.Errorf("the output shows the token")
	}
}
