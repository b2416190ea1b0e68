package forwardauth_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/pdp/adapter/forwardauth"
	"github.com/tollgate/tollgate/pdp/decision"
	"github.com/tollgate/tollgate/pdp/request"
)

// recorder is an in-process Decider that records what it was asked and
// answers a fixed decision.
type recorder struct {
	got    request.Raw
	called bool
	answer decision.Decision
}

func (r *recorder) Decide(_ context.Context, raw request.Raw) decision.Decision {
	r.got, r.called = raw, true
	d := r.answer
	d.ID = "dec-1"
	return d
}

func allow() decision.Decision {
	return decision.Decision{Allow: true, Status: 200, Reasons: []string{}, Headers: map[string]string{"x-user-id": "alice"}}
}

func TestForwardAuth(t *testing.T) {
	loopback := []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	tests := []struct {
		name        string
		remote      string
		headers     map[string]string
		answer      decision.Decision
		wantStatus  int
		wantCalled  bool
		wantMethod  string
		wantTarget  string
		wantHost    string
		wantSource  string
		wantHeader  map[string]string
		wantNoInRaw []string
	}{
		{
			name:   "nginx style allow",
			remote: "127.0.0.1:5000",
			headers: map[string]string{"X-Original-Method": "GET", "X-Original-URI": "/customers/42?x=1",
				"Host": "api.example.com", "Authorization": "Bearer t", "X-Forwarded-For": "203.0.113.7"},
			answer: allow(), wantStatus: 200, wantCalled: true,
			wantMethod: "GET", wantTarget: "/customers/42?x=1", wantHost: "api.example.com", wantSource: "203.0.113.7",
			wantHeader:  map[string]string{"X-User-Id": "alice", "X-Decision-Id": "dec-1"},
			wantNoInRaw: []string{"X-Original-Method", "X-Original-Uri", "X-Forwarded-For"},
		},
		{
			name:   "traefik style deny 401",
			remote: "127.0.0.1:5000",
			headers: map[string]string{"X-Forwarded-Method": "PUT", "X-Forwarded-Uri": "/customers/42",
				"X-Forwarded-Host": "shop.example", "X-Forwarded-Proto": "https"},
			answer:     decision.Deny(401, "credential_missing"),
			wantStatus: 401, wantCalled: true, wantMethod: "PUT", wantTarget: "/customers/42", wantHost: "shop.example", wantSource: "127.0.0.1",
			wantHeader: map[string]string{"Www-Authenticate": `Bearer realm="tollgate"`, "X-Decision-Id": "dec-1"},
		},
		{
			name:    "invalid token challenge names invalid_token",
			remote:  "127.0.0.1:5000",
			headers: map[string]string{"X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/products"},
			answer:  decision.Deny(401, "credential_invalid", "expired"), wantStatus: 401, wantCalled: true,
			wantMethod: "GET", wantTarget: "/products", wantSource: "127.0.0.1",
			wantHeader: map[string]string{"Www-Authenticate": `Bearer realm="tollgate", error="invalid_token"`},
		},
		{
			name:    "deny 403",
			remote:  "127.0.0.1:5000",
			headers: map[string]string{"X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/admin"},
			answer:  decision.Deny(403, "missing_role"), wantStatus: 403, wantCalled: true,
			wantMethod: "GET", wantTarget: "/admin", wantSource: "127.0.0.1",
		},
		{
			name:    "untrusted peer is refused before the policy",
			remote:  "198.51.100.9:4000",
			headers: map[string]string{"X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/public/x"},
			answer:  allow(), wantStatus: 403,
		},
		{
			name:       "trusted peer without original request",
			remote:     "127.0.0.1:5000",
			answer:     allow(),
			wantStatus: 403,
		},
		{
			name:   "client cannot spoof source ip through a trusted chain",
			remote: "127.0.0.1:5000",
			headers: map[string]string{"X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/public/x",
				"X-Forwarded-For": "10.9.9.9, 198.51.100.1, 127.0.0.1"},
			answer: allow(), wantStatus: 200, wantCalled: true, wantMethod: "GET", wantTarget: "/public/x", wantSource: "198.51.100.1",
		},
		{
			name:    "policy error status 500 stays 500",
			remote:  "127.0.0.1:5000",
			headers: map[string]string{"X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/public/x"},
			answer:  decision.Deny(500, decision.ReasonPolicyError), wantStatus: 500, wantCalled: true,
			wantMethod: "GET", wantTarget: "/public/x", wantSource: "127.0.0.1",
		},
		{
			name:    "deny with a non-error status becomes 403",
			remote:  "127.0.0.1:5000",
			headers: map[string]string{"X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/public/x"},
			answer:  decision.Deny(302, "weird"), wantStatus: 403, wantCalled: true,
			wantMethod: "GET", wantTarget: "/public/x", wantSource: "127.0.0.1",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{answer: tc.answer}
			h := forwardauth.New(rec, forwardauth.Options{TrustedProxies: loopback})
			r := httptest.NewRequest(http.MethodGet, "/v1/forward-auth", nil)
			r.RemoteAddr = tc.remote
			for k, v := range tc.headers {
				if k == "Host" {
					r.Host = v
					continue
				}
				r.Header.Set(k, v)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tc.wantStatus {
				t.Fatalf("status = %d, want %d (body %s)", w.Code, tc.wantStatus, w.Body)
			}
			if w.Header().Get("X-Decision-Id") == "" {
				t.Error("X-Decision-Id missing")
			}
			if rec.called != tc.wantCalled {
				t.Fatalf("decider called = %v, want %v", rec.called, tc.wantCalled)
			}
			for k, v := range tc.wantHeader {
				if got := w.Header().Get(k); got != v {
					t.Errorf("header %s = %q, want %q", k, got, v)
				}
			}
			if !tc.wantCalled {
				return
			}
			if rec.got.Method != tc.wantMethod || rec.got.Target != tc.wantTarget || rec.got.SourceIP != tc.wantSource {
				t.Errorf("raw = %s %s from %s, want %s %s from %s", rec.got.Method, rec.got.Target, rec.got.SourceIP, tc.wantMethod, tc.wantTarget, tc.wantSource)
			}
			if tc.wantHost != "" && rec.got.Host != tc.wantHost {
				t.Errorf("host = %q, want %q", rec.got.Host, tc.wantHost)
			}
			for _, h := range tc.wantNoInRaw {
				if _, ok := rec.got.Headers[h]; ok {
					t.Errorf("forwarding header %s passed on to the policy", h)
				}
			}
			if !tc.answer.Allow && strings.Contains(w.Body.String(), "alice") {
				t.Error("deny body leaks identity headers")
			}
		})
	}
}

func TestForwardAuthNoTrustedProxiesDeniesAll(t *testing.T) {
	rec := &recorder{answer: allow()}
	h := forwardauth.New(rec, forwardauth.Options{})
	r := httptest.NewRequest(http.MethodGet, "/v1/forward-auth", nil)
	r.RemoteAddr = "127.0.0.1:1"
	r.Header.Set("X-Forwarded-Method", "GET")
	r.Header.Set("X-Forwarded-Uri", "/public/x")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != http.StatusForbidden || rec.called {
		t.Fatalf("status %d called %v: a zero config must trust nobody", w.Code, rec.called)
	}
	if !strings.Contains(w.Body.String(), forwardauth.ReasonUntrustedProxy) {
		t.Errorf("body %s does not name the reason", w.Body)
	}
}

func TestForwardAuthEnvoyPrefixForm(t *testing.T) {
	tests := []struct {
		name       string
		method     string
		uri        string
		headers    map[string]string
		wantCalled bool
		wantMethod string
		wantTarget string
	}{
		{name: "path after prefix", method: "PATCH", uri: "/v1/forward-auth/customers/42?x=1", wantCalled: true, wantMethod: "PATCH", wantTarget: "/customers/42?x=1"},
		{name: "raw path kept for the normalizer", method: "GET", uri: "/v1/forward-auth/public/..%2Fadmin", wantCalled: true, wantMethod: "GET", wantTarget: "/public/..%2Fadmin"},
		{name: "headers win over the prefix form", method: "POST", uri: "/v1/forward-auth/x",
			headers: map[string]string{"X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/products"}, wantCalled: true, wantMethod: "GET", wantTarget: "/products"},
		{name: "bare endpoint without headers", method: "GET", uri: "/v1/forward-auth", wantCalled: false},
		{name: "look-alike prefix", method: "GET", uri: "/v1/forward-authx/products", wantCalled: false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{answer: allow()}
			h := forwardauth.New(rec, forwardauth.Options{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
			r := httptest.NewRequest(tc.method, tc.uri, nil)
			r.RemoteAddr = "127.0.0.1:9"
			for k, v := range tc.headers {
				r.Header.Set(k, v)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if rec.called != tc.wantCalled {
				t.Fatalf("called = %v, want %v (status %d)", rec.called, tc.wantCalled, w.Code)
			}
			if tc.wantCalled && (rec.got.Method != tc.wantMethod || rec.got.Target != tc.wantTarget) {
				t.Fatalf("got %s %s, want %s %s", rec.got.Method, rec.got.Target, tc.wantMethod, tc.wantTarget)
			}
		})
	}
}

// TestForwardAuthConflictingFamilies is a security regression test: a
// gateway that sets only X-Original-* may pass a client's X-Forwarded-Uri
// through; the client must not choose what is judged.
func TestForwardAuthConflictingFamilies(t *testing.T) {
	tests := []struct {
		name       string
		headers    [][2]string
		wantCalled bool
	}{
		{name: "uri families disagree", headers: [][2]string{{"X-Original-Method", "GET"}, {"X-Original-Uri", "/admin/x"}, {"X-Forwarded-Uri", "/public/x"}}},
		{name: "method families disagree", headers: [][2]string{{"X-Original-Method", "DELETE"}, {"X-Forwarded-Method", "GET"}, {"X-Original-Uri", "/admin/x"}}},
		{name: "repeated header", headers: [][2]string{{"X-Original-Method", "GET"}, {"X-Original-Uri", "/admin/x"}, {"X-Original-Uri", "/public/x"}}},
		{name: "families agree", headers: [][2]string{{"X-Original-Method", "GET"}, {"X-Forwarded-Method", "GET"}, {"X-Original-Uri", "/public/x"}, {"X-Forwarded-Uri", "/public/x"}}, wantCalled: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{answer: allow()}
			h := forwardauth.New(rec, forwardauth.Options{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}})
			r := httptest.NewRequest(http.MethodGet, "/v1/forward-auth", nil)
			r.RemoteAddr = "127.0.0.1:1"
			for _, kv := range tc.headers {
				r.Header.Add(kv[0], kv[1])
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if rec.called != tc.wantCalled {
				t.Fatalf("called = %v, want %v", rec.called, tc.wantCalled)
			}
			if !tc.wantCalled && (w.Code != http.StatusForbidden || !strings.Contains(w.Body.String(), forwardauth.ReasonConflictingHeaders)) {
				t.Fatalf("status %d body %s", w.Code, w.Body)
			}
		})
	}
}

// TestForwardAuthStatusForNGINX: auth_request understands only 2xx, 401 and
// 403, so other client errors become 403; the decision id is never the
// client's X-Request-Id.
func TestForwardAuthStatusForNGINX(t *testing.T) {
	rec := &recorder{answer: decision.Deny(400, decision.ReasonInvalidRequest)}
	h := forwardauth.New(rec, forwardauth.Options{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}})
	r := httptest.NewRequest(http.MethodGet, "/v1/forward-auth", nil)
	r.RemoteAddr = "127.0.0.1:1"
	r.Header.Set("X-Original-Method", "GET")
	r.Header.Set("X-Original-Uri", "/a/..%2f")
	r.Header.Set("X-Request-Id", "client-chosen")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != http.StatusForbidden || !strings.Contains(w.Body.String(), decision.ReasonInvalidRequest) {
		t.Fatalf("status %d body %s", w.Code, w.Body)
	}
	if rec.got.ID == "client-chosen" {
		t.Fatal("client-chosen X-Request-Id used as the decision id")
	}
}
