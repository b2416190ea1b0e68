package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"

	"github.com/tollgate/tollgate/pdp"
	"github.com/tollgate/tollgate/pdp/policy"
	"github.com/tollgate/tollgate/pdp/server"
)

const allowPublic = `package tollgate.authz

decision := {"allow": true, "status": 200, "reasons": [], "headers": {"x-path": input.request.path}} if startswith(input.request.path, "/public")
else := {"allow": false, "status": 403, "reasons": ["no_route"], "headers": {}}
`

func newDecider(t *testing.T, active bool) *pdp.Decider {
	t.Helper()
	e := policy.NewEngine(policy.Options{})
	if active {
		mod, err := ast.ParseModuleWithOpts("p.rego", allowPublic, ast.ParserOptions{RegoVersion: ast.RegoV1})
		if err != nil {
			t.Fatal(err)
		}
		b := &bundle.Bundle{Manifest: bundle.Manifest{Revision: "r1"}, Modules: []bundle.ModuleFile{{Path: "p.rego", URL: "p.rego", Raw: []byte(allowPublic), Parsed: mod}}, Data: map[string]any{}}
		if err := e.Activate(context.Background(), b); err != nil {
			t.Fatal(err)
		}
	}
	d, err := pdp.New(pdp.Config{Engine: e})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestHealth(t *testing.T) {
	for _, active := range []bool{false, true} {
		srv := httptest.NewServer(server.Handler(newDecider(t, active), server.Options{}))
		defer srv.Close()
		live := get(t, srv.URL+"/health/live")
		ready := get(t, srv.URL+"/health/ready")
		if live != 200 {
			t.Errorf("live = %d", live)
		}
		if want := map[bool]int{false: 503, true: 200}[active]; ready != want {
			t.Errorf("active=%v: ready = %d, want %d", active, ready, want)
		}
	}
}

func get(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestLimitsAndKeepsServing sends bad and oversized requests over a real
// listener and checks each gets its status and the server keeps serving.
func TestLimitsAndKeepsServing(t *testing.T) {
	d := newDecider(t, true)
	s := server.New(d, server.Options{MaxBodyBytes: 4 << 10, MaxHeaderBytes: 8 << 10})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	base := "http://" + ln.Addr().String()

	post := func(body string, hdr map[string]string) (int, string) {
		req, _ := http.NewRequest(http.MethodPost, base+"/v1/decision", strings.NewReader(body))
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	cases := []struct {
		name   string
		body   string
		hdr    map[string]string
		status int
	}{
		{"garbage", "{{{", nil, 400},
		{"oversized body", `{"method":"GET","path":"/` + strings.Repeat("a", 8<<10) + `"}`, nil, 413},
		{"oversized header", `{"method":"GET","path":"/public"}`, map[string]string{"X-Big": strings.Repeat("b", 16<<10)}, 431},
		{"valid after all that", `{"method":"GET","path":"/public/a"}`, nil, 200},
	}
	for _, tc := range cases {
		code, body := post(tc.body, tc.hdr)
		if code != tc.status {
			t.Errorf("%s: status %d, want %d (%s)", tc.name, code, tc.status, body)
		}
	}
	code, body := post(`{"method":"GET","path":"/public/../public/a"}`, nil)
	var dec map[string]any
	if err := json.Unmarshal([]byte(body), &dec); err != nil || code != 200 || dec["allow"] != true {
		t.Fatalf("decision %d %s", code, body)
	}
	if h := dec["headers"].(map[string]any)["x-path"]; h != "/public/a" {
		t.Errorf("policy saw path %v", h)
	}
	if get(t, base+"/health/live") != 200 {
		t.Error("not live after bad requests")
	}
	if get(t, base+"/v1/decision") != http.StatusMethodNotAllowed {
		t.Error("GET /v1/decision must be 405")
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("shutdown: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("server did not shut down")
	}
}

// TestRouterDoesNotCleanPaths is a security regression test: the router must
// hand forward-auth prefix paths to the normalizer untouched (gorilla/mux
// would otherwise redirect "/v1/forward-auth/public/../admin").
func TestRouterDoesNotCleanPaths(t *testing.T) {
	h := server.Handler(newDecider(t, true), server.Options{})
	r := httptest.NewRequest(http.MethodGet, "/v1/forward-auth/public/../admin", nil)
	r.RemoteAddr = "127.0.0.1:1"
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	// No proxy is trusted in a zero config: 403 untrusted_proxy, never a redirect.
	if w.Code != http.StatusForbidden || !bytes.Contains(w.Body.Bytes(), []byte("untrusted_proxy")) {
		t.Fatalf("status %d body %s", w.Code, w.Body)
	}
}

func TestMetrics(t *testing.T) {
	srv := httptest.NewServer(server.Handler(newDecider(t, true), server.Options{}))
	defer srv.Close()
	resp, err := http.Post(srv.URL+"/v1/decision", "application/json", strings.NewReader(`{"method":"GET","path":"/public/a"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	resp, err = http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, want := range []string{
		`tollgate_http_requests_total{code="200",endpoint="decision"} 1`,
		`tollgate_policy_ready 1`,
		`tollgate_http_request_duration_seconds_count{endpoint="decision"} 1`,
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// TestEndpointsByPath pins which endpoint answers which method and path,
// through the hot-path dispatch and the router alike: the dispatch takes
// only what the router would have given the same handler.
func TestEndpointsByPath(t *testing.T) {
	h := server.Handler(newDecider(t, true), server.Options{})
	for _, tc := range []struct {
		method, target string
		code           int
		body           string // a part of the answer
	}{
		{"POST", "/v1/decision", 200, `"allow":true`},
		{"GET", "/v1/decision", 405, "method not allowed"},
		{"PUT", "/v1/decision", 405, "method not allowed"},
		{"POST", "/v1/decision/", 404, "not found"},
		{"POST", "/v1/decisions", 404, "not found"},
		{"POST", "/v1/Decision", 404, "not found"},
		{"POST", "/v1/decision%2F", 404, "not found"},
		{"POST", "//v1/decision", 404, "not found"},
		{"GET", "/v1/forward-auth", 403, "untrusted_proxy"},
		{"POST", "/v1/forward-auth/public/a", 403, "untrusted_proxy"},
		{"GET", "/v1/forward-auth/", 403, "untrusted_proxy"},
		{"GET", "/v1/forward-authx", 404, "not found"},
		{"GET", "/v1/forward-auth%2Fpublic", 404, "not found"},
		{"GET", "/health/live", 200, "live"},
		{"POST", "/v1/data/tollgate/authz/decision", 200, `"allow":true`},
	} {
		t.Run(tc.method+" "+tc.target, func(t *testing.T) {
			body := `{"method":"GET","path":"/public/a"}`
			if strings.HasPrefix(tc.target, "/v1/data") {
				body = `{"input":` + body + `}`
			}
			r := httptest.NewRequest(tc.method, tc.target, strings.NewReader(body))
			r.RemoteAddr = "192.0.2.1:1"
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tc.code || !strings.Contains(w.Body.String(), tc.body) {
				t.Errorf("%d %s, want %d with %q", w.Code, w.Body, tc.code, tc.body)
			}
		})
	}
}
