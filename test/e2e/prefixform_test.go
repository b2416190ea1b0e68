package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"testing"
	"time"
)

// rawForwardAuth writes one request to tg byte for byte (Go's client would
// clean or re-encode the target), from loopback, a trusted proxy address.
func (e *env) rawForwardAuth(t *testing.T, tg *tollgate, method, target string, headers [][2]string) (*http.Response, []byte) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", tg.addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	fmt.Fprintf(conn, "%s %s HTTP/1.1\r\nHost: api.example.com\r\nConnection: close\r\n", method, target)
	for _, kv := range headers {
		fmt.Fprintf(conn, "%s: %s\r\n", kv[0], kv[1])
	}
	fmt.Fprint(conn, "\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	e.recordResponse("raw "+method+" "+target, resp, body)
	return resp, body
}

// testForwardAuthPrefixForm asks the real binary in Envoy's prefix form
// (/v1/forward-auth + the original path, the original method). Headers that
// name a request line are refused there, whatever their spelling; targets
// that are neither form are refused or not routed; every other target is
// judged on the path Tollgate normalizes.
func testForwardAuthPrefixForm(t *testing.T, e *env) {
	token := e.mint("alice", map[string]any{"customer_number": "42", "scope": "customers:read"})
	const (
		conflicting = "conflicting_forwarded_headers"
		missing     = "missing_original_request"
		noCred      = "credential_missing"
		invalid     = "invalid_request"
	)
	cases := []struct {
		name    string
		method  string
		target  string
		headers [][2]string
		status  int
		reason  string // the first reason of a deny
	}{
		// The reported bypass and its variants: never 200.
		{"reported: X-Original-* over a DELETE", "DELETE", "/v1/forward-auth/admin/users", [][2]string{{"X-Original-Method", "GET"}, {"X-Original-URI", "/public/x"}}, 403, conflicting},
		{"X-Forwarded-Method and -Uri", "DELETE", "/v1/forward-auth/admin/users", [][2]string{{"X-Forwarded-Method", "GET"}, {"X-Forwarded-Uri", "/public/x"}}, 403, conflicting},
		{"lower-case names", "DELETE", "/v1/forward-auth/admin/users", [][2]string{{"x-original-method", "GET"}, {"x-original-uri", "/public/x"}}, 403, conflicting},
		{"upper-case names", "DELETE", "/v1/forward-auth/admin/users", [][2]string{{"X-ORIGINAL-URI", "/public/x"}}, 403, conflicting},
		{"repeated", "GET", "/v1/forward-auth/admin/users", [][2]string{{"X-Original-URI", "/public/x"}, {"X-Original-URI", "/public/x"}}, 403, conflicting},
		{"X-Original-URL", "GET", "/v1/forward-auth/admin/users", [][2]string{{"X-Original-URL", "http://api.example.com/public/x"}}, 403, conflicting},
		{"X-Forwarded-Prefix", "GET", "/v1/forward-auth/admin/users", [][2]string{{"X-Forwarded-Prefix", "/public"}}, 403, conflicting},
		{"headers that agree with the path", "GET", "/v1/forward-auth/customers/42", [][2]string{{"Authorization", "Bearer " + token}, {"X-Original-Method", "GET"}, {"X-Original-URI", "/customers/42"}}, 403, conflicting},
		// Targets: judged on the normalized path, or refused.
		{"control: public path", "GET", "/v1/forward-auth/public/x", nil, 200, ""},
		{"control: the method is the request's own", "DELETE", "/v1/forward-auth/admin/users", nil, 401, noCred},
		{"control: a token for the customer", "GET", "/v1/forward-auth/customers/42", [][2]string{{"Authorization", "Bearer " + token}}, 200, ""},
		{"X-Forwarded-Host is not read", "GET", "/v1/forward-auth/public/x", [][2]string{{"X-Forwarded-Host", "admin.example"}}, 200, ""},
		{"dot segments", "GET", "/v1/forward-auth/public/../admin/users", nil, 401, noCred},
		{"encoded dot segments", "GET", "/v1/forward-auth/public/%2e%2e/admin/users", nil, 401, noCred},
		{"doubled slashes", "GET", "/v1/forward-auth//admin//users", nil, 401, noCred},
		{"encoded dots above the root", "GET", "/v1/forward-auth/%2e%2e/admin", nil, 403, invalid},
		{"dots above the root", "GET", "/v1/forward-auth/../admin", nil, 403, invalid},
		{"encoded slash", "GET", "/v1/forward-auth/public/..%2Fadmin", nil, 403, invalid},
		{"query only", "GET", "/v1/forward-auth?x", nil, 403, missing},
		{"a path in the query", "GET", "/v1/forward-auth?/public/x", nil, 403, missing},
		{"look-alike prefix", "GET", "/v1/forward-authX/public/x", nil, 404, ""},
		{"encoded prefix", "GET", "/v1/forward%2Dauth/public/x", nil, 404, ""},
		{"encoded slash in the prefix", "GET", "/v1%2Fforward-auth/public/x", nil, 404, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp, body := e.rawForwardAuth(t, e.tg, c.method, c.target, c.headers)
			if resp.StatusCode != c.status {
				t.Fatalf("HTTP %d, want %d: %s", resp.StatusCode, c.status, body)
			}
			if c.reason != "" {
				if r := forwardAuthReasons(t, body); len(r) == 0 || r[0] != c.reason {
					t.Errorf("reasons %q, want %s first", r, c.reason)
				}
			}
			if c.status != http.StatusOK && resp.Header.Get("X-User-Id") != "" {
				t.Error("a deny carries X-User-Id")
			}
			if c.status == http.StatusOK && slices.Contains(c.headers, [2]string{"Authorization", "Bearer " + token}) && resp.Header.Get("X-User-Id") != "alice" {
				t.Errorf("X-User-Id %q, want alice", resp.Header.Get("X-User-Id"))
			}
		})
	}
}
