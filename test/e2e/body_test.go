package e2e

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// testMalformedBodies sends POST /v1/decision bodies that are not a decision
// request: each must get its 4xx with a JSON {"error": "..."} that says
// what is wrong, and the server must go on serving.
func testMalformedBodies(t *testing.T, e *env) {
	pad := strings.Repeat("A", 70<<10)
	cases := []struct {
		name   string
		ctype  string
		body   string
		status int
		says   string // the error message contains this, case-insensitively
	}{
		{"not JSON", "application/json", `method=GET&path=/public/x`, 400, "JSON"},
		{"empty", "application/json", ``, 400, "empty"},
		{"truncated", "application/json", `{"method":"GET","path":"/public/x"`, 400, "JSON"},
		{"an array", "application/json", `[{"method":"GET","path":"/public/x"}]`, 400, "type"},
		{"null", "application/json", `null`, 400, "required"},
		{"method a number", "application/json", `{"method":1,"path":"/public/x"}`, 400, "method"},
		{"path an object", "application/json", `{"method":"GET","path":{"a":1}}`, 400, "path"},
		{"headers a list", "application/json", `{"method":"GET","path":"/public/x","headers":["a"]}`, 400, "headers"},
		{"header value a number", "application/json", `{"method":"GET","path":"/public/x","headers":{"x-a":1}}`, 400, "header"},
		{"missing method", "application/json", `{"path":"/public/x"}`, 400, "method"},
		{"missing path", "application/json", `{"method":"GET"}`, 400, "path"},
		{"unknown field", "application/json", `{"method":"GET","path":"/public/x","verb":"GET"}`, 400, "verb"},
		{"trailing garbage", "application/json", `{"method":"GET","path":"/public/x"} garbage`, 400, ""},
		{"two objects", "application/json", `{"method":"GET","path":"/public/x"}{"method":"GET","path":"/admin"}`, 400, "one"},
		{"not JSON content type", "text/plain", `{"method":"GET","path":"/public/x"}`, 415, "application/json"},
		{"over 64 KiB", "application/json", `{"method":"GET","path":"/public/x","headers":{"x-pad":"` + pad + `"}}`, 413, "bytes"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, ctype, body := e.postDecision(t, e.tg, c.ctype, []byte(c.body))
			if status != c.status {
				t.Fatalf("HTTP %d, want %d: %s", status, c.status, body)
			}
			if !strings.HasPrefix(ctype, "application/json") {
				t.Errorf("Content-Type %q, want application/json", ctype)
			}
			var eb struct {
				Error string `json:"error"`
			}
			if err := json.Unmarshal(body, &eb); err != nil || eb.Error == "" {
				t.Fatalf("want a JSON body {\"error\": \"...\"}, got %q (%v)", body, err)
			}
			if !strings.Contains(strings.ToLower(eb.Error), strings.ToLower(c.says)) {
				t.Errorf("error %q does not mention %q", eb.Error, c.says)
			}
		})
	}

	t.Run("GET is not allowed", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodGet, e.tg.url+"/v1/decision", nil)
		if resp, body := e.do(t, req); resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("HTTP %d, want 405: %s", resp.StatusCode, body)
		}
	})

	t.Run("still serving", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodGet, e.tg.url+"/health/live", nil)
		if resp, body := e.do(t, req); resp.StatusCode != http.StatusOK {
			t.Fatalf("/health/live: HTTP %d: %s", resp.StatusCode, body)
		}
		d := e.decide(t, e.tg, decisionRequest{Method: "GET", Path: "/public/x"})
		if !d.Allow {
			t.Fatalf("GET /public/x denied after malformed requests: %d %q", d.Status, d.Reasons)
		}
	})
}
