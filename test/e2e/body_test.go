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
		body   string
		status int
		says   string // the error message contains this, case-insensitively
	}{
		{"not JSON", `method=GET&path=/public/x`, 400, "JSON"},
		{"empty", ``, 400, "empty"},
		{"truncated", `{"method":"GET","path":"/public/x"`, 400, "JSON"},
		{"an array", `[{"method":"GET","path":"/public/x"}]`, 400, "JSON object"},
		{"null", `null`, 400, "required"},
		{"method a number", `{"method":1,"path":"/public/x"}`, 400, "method"},
		{"path an object", `{"method":"GET","path":{"a":1}}`, 400, "path"},
		{"headers a list", `{"method":"GET","path":"/public/x","headers":["a"]}`, 400, "headers"},
		{"header value a number", `{"method":"GET","path":"/public/x","headers":{"x-a":1}}`, 400, "header"},
		{"missing method", `{"path":"/public/x"}`, 400, "method"},
		{"missing path", `{"method":"GET"}`, 400, "path"},
		{"unknown field", `{"method":"GET","path":"/public/x","verb":"GET"}`, 400, "unknown field"},
		{"member name in another case", `{"method":"GET","PATH":"/public/x"}`, 400, "unknown field"},
		{"member name with a long s", `{"method":"GET","path":"/public/x","ſource_ip":"10.0.0.1"}`, 400, "unknown field"},
		{"duplicate member", `{"method":"GET","path":"/admin/users","path":"/public/x"}`, 400, "duplicate"},
		{"duplicate header", `{"method":"GET","path":"/public/x","headers":{"X-Api-Key":"a","X-Api-Key":"b"}}`, 400, "duplicate header"},
		{"invalid UTF-8", "{\"method\":\"GET\",\"path\":\"/public/\xc0\xae\xc0\xae/admin\"}", 400, "UTF-8"},
		{"lone surrogate", `{"method":"GET","path":"/public/\ud800/admin"}`, 400, "escape"},
		{"trailing garbage", `{"method":"GET","path":"/public/x"} garbage`, 400, "one JSON object"},
		{"two objects", `{"method":"GET","path":"/public/x"}{"method":"GET","path":"/admin"}`, 400, "one"},
		{"over 64 KiB", `{"method":"GET","path":"/public/x","headers":{"x-pad":"` + pad + `"}}`, 413, "bytes"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, ctype, body := e.postDecision(t, e.tg, "application/json", []byte(c.body))
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
			t.Logf("HTTP %d %q", status, eb.Error)
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
