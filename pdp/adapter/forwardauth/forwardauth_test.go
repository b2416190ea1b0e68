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

// trustedLoopback is the trusted-proxy list of most tests.
var trustedLoopback = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}

// ask sends one forward-auth request from a trusted address: target exactly
// as given (httptest reads it like a server would), headers added in order
// under the keys given, not canonicalized, as a Go program might.
func ask(t *testing.T, method, target, host string, headers [][2]string) (*httptest.ResponseRecorder, *recorder) {
	t.Helper()
	rec := &recorder{answer: allow()}
	h := forwardauth.New(rec, forwardauth.Options{TrustedProxies: trustedLoopback})
	r := httptest.NewRequest(method, target, nil)
	r.RemoteAddr = "127.0.0.1:9"
	if host != "" {
		r.Host = host
	}
	for _, kv := range headers {
		r.Header[kv[0]] = append(r.Header[kv[0]], kv[1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w, rec
}

// judged is the path the policy would see for what the decider was asked,
// or the normalizer's refusal.
func judged(raw request.Raw) (string, error) {
	req, err := request.Normalize(raw)
	if err != nil {
		return "", err
	}
	return req.Path, nil
}

// refused checks a refusal before the policy with the given reason.
func refused(t *testing.T, w *httptest.ResponseRecorder, rec *recorder, reason string) {
	t.Helper()
	if rec.called {
		t.Fatalf("the policy was asked about %s %s; want a refusal %s before it", rec.got.Method, rec.got.Target, reason)
	}
	if w.Code != http.StatusForbidden || !strings.Contains(w.Body.String(), `"`+reason+`"`) {
		t.Fatalf("HTTP %d %s, want 403 %s", w.Code, w.Body, reason)
	}
	if w.Header().Get("X-User-Id") != "" {
		t.Error("a refusal carries identity headers")
	}
}

// TestForwardAuthEnvoyPrefixForm: the path after the prefix is the request
// judged, exactly as sent, with the request's own method and Host, and the
// normalizer decides what it means.
func TestForwardAuthEnvoyPrefixForm(t *testing.T) {
	tests := []struct {
		name       string
		method     string
		target     string
		host       string
		headers    [][2]string
		wantTarget string
		wantJudged string // the normalized path; "" when the normalizer refuses it
		wantHost   string
		wantScheme string
	}{
		{name: "path and query after the prefix", method: "PATCH", target: "/v1/forward-auth/customers/42?x=1", wantTarget: "/customers/42?x=1", wantJudged: "/customers/42"},
		{name: "root", method: "GET", target: "/v1/forward-auth/", wantTarget: "/", wantJudged: "/"},
		{name: "query only after the slash", method: "GET", target: "/v1/forward-auth/?x=1", wantTarget: "/?x=1", wantJudged: "/"},
		{name: "doubled slash after the prefix", method: "GET", target: "/v1/forward-auth//admin//users", wantTarget: "//admin//users", wantJudged: "/admin/users"},
		{name: "dot segments resolved by the normalizer", method: "GET", target: "/v1/forward-auth/public/../admin/users", wantTarget: "/public/../admin/users", wantJudged: "/admin/users"},
		{name: "encoded dots resolved by the normalizer", method: "GET", target: "/v1/forward-auth/public/%2e%2e/admin/users", wantTarget: "/public/%2e%2e/admin/users", wantJudged: "/admin/users"},
		{name: "encoded dots above the root refused by the normalizer", method: "GET", target: "/v1/forward-auth/%2e%2e/admin", wantTarget: "/%2e%2e/admin"},
		{name: "dots above the root refused by the normalizer", method: "GET", target: "/v1/forward-auth/../admin", wantTarget: "/../admin"},
		{name: "encoded slash refused by the normalizer", method: "GET", target: "/v1/forward-auth/public/..%2Fadmin", wantTarget: "/public/..%2Fadmin"},
		{name: "a second prefix is part of the original path", method: "DELETE", target: "/v1/forward-auth/v1/forward-auth/admin", wantTarget: "/v1/forward-auth/admin", wantJudged: "/v1/forward-auth/admin"},
		{name: "host is the request's own, X-Forwarded-Host is not read", method: "GET", target: "/v1/forward-auth/public/x", host: "api.example.com",
			headers: [][2]string{{"X-Forwarded-Host", "evil.example"}, {"Forwarded", "host=evil.example;proto=https"}}, wantTarget: "/public/x", wantJudged: "/public/x", wantHost: "api.example.com"},
		{name: "X-Forwarded-Proto is Envoy's and is read", method: "GET", target: "/v1/forward-auth/public/x",
			headers: [][2]string{{"X-Forwarded-Proto", "https"}}, wantTarget: "/public/x", wantJudged: "/public/x", wantScheme: "https"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w, rec := ask(t, tc.method, tc.target, tc.host, tc.headers)
			if !rec.called {
				t.Fatalf("not asked (HTTP %d %s)", w.Code, w.Body)
			}
			if rec.got.Method != tc.method || rec.got.Target != tc.wantTarget {
				t.Fatalf("asked about %s %s, want %s %s", rec.got.Method, rec.got.Target, tc.method, tc.wantTarget)
			}
			if tc.wantHost != "" && rec.got.Host != tc.wantHost {
				t.Errorf("host %q, want %q", rec.got.Host, tc.wantHost)
			}
			if rec.got.Scheme != tc.wantScheme {
				t.Errorf("scheme %q, want %q", rec.got.Scheme, tc.wantScheme)
			}
			for name := range rec.got.Headers {
				if c := http.CanonicalHeaderKey(name); strings.HasPrefix(c, "X-Forwarded-") || c == "Forwarded" {
					t.Errorf("forwarding header %s passed on to the policy", name)
				}
			}
			path, err := judged(rec.got)
			switch {
			case tc.wantJudged == "" && err == nil:
				t.Errorf("judged as %s; want the normalizer to refuse %s", path, tc.wantTarget)
			case tc.wantJudged != "" && path != tc.wantJudged:
				t.Errorf("judged as %q (%v), want %q", path, err, tc.wantJudged)
			}
		})
	}
}

// TestForwardAuthPrefixFormRefusesRequestLineHeaders is a security
// regression test: DELETE /v1/forward-auth/admin/users with X-Original-Method
// GET and X-Original-URI /public/x was judged as GET /public/x. In the prefix
// form, any header that names a request line is refused, whatever its
// spelling, value or repetition, and whether or not it agrees.
func TestForwardAuthPrefixFormRefusesRequestLineHeaders(t *testing.T) {
	type attempt struct {
		method, target string
		headers        [][2]string
	}
	attempts := map[string]attempt{
		"reported":       {"DELETE", "/v1/forward-auth/admin/users", [][2]string{{"X-Original-Method", "GET"}, {"X-Original-Uri", "/public/x"}}},
		"Traefik family": {"DELETE", "/v1/forward-auth/admin/users", [][2]string{{"X-Forwarded-Method", "GET"}, {"X-Forwarded-Uri", "/public/x"}}},
		"both families agreeing": {"POST", "/v1/forward-auth/admin/users", [][2]string{
			{"X-Original-Method", "GET"}, {"X-Original-Uri", "/public/x"}, {"X-Forwarded-Method", "GET"}, {"X-Forwarded-Uri", "/public/x"}}},
		"headers agreeing with the prefix form": {"GET", "/v1/forward-auth/public/x", [][2]string{{"X-Original-Method", "GET"}, {"X-Original-Uri", "/public/x"}}},
		"method only":                           {"DELETE", "/v1/forward-auth/admin/users", [][2]string{{"X-Original-Method", "GET"}}},
		"uri only":                              {"GET", "/v1/forward-auth/admin/users", [][2]string{{"X-Forwarded-Uri", "/public/x"}}},
		"full URL":                              {"GET", "/v1/forward-auth/admin/users", [][2]string{{"X-Original-Url", "http://api.example.com/public/x"}}},
		"prefix":                                {"GET", "/v1/forward-auth/admin/users", [][2]string{{"X-Forwarded-Prefix", "/public"}}},
		"lower case":                            {"DELETE", "/v1/forward-auth/admin/users", [][2]string{{"x-original-method", "GET"}, {"x-original-uri", "/public/x"}}},
		"upper case":                            {"DELETE", "/v1/forward-auth/admin/users", [][2]string{{"X-ORIGINAL-URI", "/public/x"}}},
		"mixed spellings":                       {"DELETE", "/v1/forward-auth/admin/users", [][2]string{{"X-Forwarded-Uri", "/public/x"}, {"x-forwarded-uri", "/public/y"}}},
		"repeated":                              {"DELETE", "/v1/forward-auth/admin/users", [][2]string{{"X-Original-Uri", "/public/x"}, {"X-Original-Uri", "/public/x"}}},
		"empty value":                           {"DELETE", "/v1/forward-auth/admin/users", [][2]string{{"X-Original-Uri", ""}}},
		"query in the target":                   {"GET", "/v1/forward-auth/admin/users?x=1", [][2]string{{"X-Original-Uri", "/public/x"}}},
		"dot segments":                          {"GET", "/v1/forward-auth/public/../admin", [][2]string{{"X-Original-Uri", "/public/x"}}},
		"root":                                  {"GET", "/v1/forward-auth/", [][2]string{{"X-Original-Method", "GET"}, {"X-Original-Uri", "/customers/42"}}},
		"with other forwarded":                  {"GET", "/v1/forward-auth/admin", [][2]string{{"X-Forwarded-Host", "a"}, {"X-Forwarded-Method", "GET"}}},
	}
	for name, a := range attempts {
		t.Run(name, func(t *testing.T) {
			w, rec := ask(t, a.method, a.target, "", a.headers)
			refused(t, w, rec, forwardauth.ReasonConflictingHeaders)
		})
	}
	t.Run("control: the same target without them is judged", func(t *testing.T) {
		_, rec := ask(t, "DELETE", "/v1/forward-auth/admin/users", "", [][2]string{{"X-Forwarded-For", "203.0.113.7"}})
		if !rec.called || rec.got.Method != "DELETE" || rec.got.Target != "/admin/users" || rec.got.SourceIP != "203.0.113.7" {
			t.Fatalf("called %v with %s %s from %s", rec.called, rec.got.Method, rec.got.Target, rec.got.SourceIP)
		}
	})
}

// TestForwardAuthTargets: a request target is the header form (the prefix
// exactly, with or without a query), the prefix form (prefix + "/"), or
// refused; never a guess between them.
func TestForwardAuthTargets(t *testing.T) {
	nginx := [][2]string{{"X-Original-Method", "GET"}, {"X-Original-Uri", "/customers/42"}}
	tests := []struct {
		name       string
		target     string
		headers    [][2]string
		wantReason string // a refusal before the policy, or "" when asked
		wantTarget string
	}{
		{name: "header form", target: "/v1/forward-auth", headers: nginx, wantTarget: "/customers/42"},
		{name: "header form with a query (Caddy keeps the original's)", target: "/v1/forward-auth?a=1", headers: nginx, wantTarget: "/customers/42"},
		{name: "header form with an empty query", target: "/v1/forward-auth?", headers: nginx, wantTarget: "/customers/42"},
		{name: "query only, no headers", target: "/v1/forward-auth?x", wantReason: forwardauth.ReasonNoOriginalRequest},
		{name: "a path in the query is not the prefix form", target: "/v1/forward-auth?/public/x", wantReason: forwardauth.ReasonNoOriginalRequest},
		{name: "bare prefix, no headers", target: "/v1/forward-auth", wantReason: forwardauth.ReasonNoOriginalRequest},
		{name: "look-alike prefix", target: "/v1/forward-authX", headers: nginx, wantReason: forwardauth.ReasonNoOriginalRequest},
		{name: "look-alike prefix with a path", target: "/v1/forward-authx/public/x", wantReason: forwardauth.ReasonNoOriginalRequest},
		{name: "look-alike prefix with a path and headers", target: "/v1/forward-auth-x/public/x", headers: nginx, wantReason: forwardauth.ReasonNoOriginalRequest},
		{name: "encoded slash after the prefix", target: "/v1/forward-auth%2Fpublic/x", wantReason: forwardauth.ReasonNoOriginalRequest},
		{name: "encoded character in the prefix", target: "/v1/forward%2Dauth/public/x", wantReason: forwardauth.ReasonNoOriginalRequest},
		{name: "encoded slash in the prefix", target: "/v1%2Fforward-auth/public/x", headers: nginx, wantReason: forwardauth.ReasonNoOriginalRequest},
		{name: "upper-case prefix", target: "/V1/FORWARD-AUTH/public/x", wantReason: forwardauth.ReasonNoOriginalRequest},
		{name: "dot segment before the prefix", target: "/x/../v1/forward-auth/public/x", wantReason: forwardauth.ReasonNoOriginalRequest},
		{name: "absolute form", target: "http://tollgate.internal/v1/forward-auth/public/x", wantReason: forwardauth.ReasonNoOriginalRequest},
		{name: "absolute form of the header form", target: "http://tollgate.internal/v1/forward-auth", headers: nginx, wantReason: forwardauth.ReasonNoOriginalRequest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w, rec := ask(t, http.MethodGet, tc.target, "", tc.headers)
			if tc.wantReason != "" {
				refused(t, w, rec, tc.wantReason)
				return
			}
			if !rec.called || rec.got.Target != tc.wantTarget {
				t.Fatalf("called %v about %q (HTTP %d), want %q", rec.called, rec.got.Target, w.Code, tc.wantTarget)
			}
		})
	}
}

// TestForwardAuthHeaderFormReadsOnlyItsHeaders: in the header form only
// X-Original-Method/-URI and X-Forwarded-Method/-Uri name the request;
// X-Original-URL, X-Forwarded-Prefix and Forwarded are never read, and no
// forwarding header reaches the policy, whatever its spelling.
func TestForwardAuthHeaderFormReadsOnlyItsHeaders(t *testing.T) {
	for name, extra := range map[string][][2]string{
		"X-Original-URL":     {{"X-Original-Url", "http://api.example.com/public/x"}},
		"X-Forwarded-Prefix": {{"X-Forwarded-Prefix", "/public"}},
		"Forwarded":          {{"Forwarded", `for=198.51.100.1;host=evil.example;proto=http`}},
		"lower-case keys":    {{"x-original-url", "/public/x"}, {"x-forwarded-prefix", "/public"}, {"forwarded", "host=evil.example"}},
	} {
		t.Run(name, func(t *testing.T) {
			headers := append([][2]string{{"X-Original-Method", "DELETE"}, {"X-Original-Uri", "/admin/users"}, {"X-Forwarded-Host", "api.example.com"}}, extra...)
			_, rec := ask(t, http.MethodGet, "/v1/forward-auth", "", headers)
			if !rec.called || rec.got.Method != "DELETE" || rec.got.Target != "/admin/users" || rec.got.Host != "api.example.com" {
				t.Fatalf("called %v about %s %s at %s, want DELETE /admin/users at api.example.com", rec.called, rec.got.Method, rec.got.Target, rec.got.Host)
			}
			for name := range rec.got.Headers {
				c := http.CanonicalHeaderKey(name)
				if strings.HasPrefix(c, "X-Original-") || strings.HasPrefix(c, "X-Forwarded-") || c == "Forwarded" {
					t.Errorf("forwarding header %s passed on to the policy", name)
				}
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
		{name: "repeated identical header", headers: [][2]string{{"X-Original-Method", "GET"}, {"X-Original-Uri", "/public/x"}, {"X-Original-Uri", "/public/x"}}},
		{name: "repeated method", headers: [][2]string{{"X-Forwarded-Method", "GET"}, {"X-Forwarded-Method", "DELETE"}, {"X-Forwarded-Uri", "/admin/x"}}},
		{name: "uri families disagree in other spellings", headers: [][2]string{{"x-original-method", "GET"}, {"x-original-uri", "/admin/x"}, {"X-FORWARDED-URI", "/public/x"}}},
		{name: "one header under two spellings", headers: [][2]string{{"X-Original-Method", "GET"}, {"X-Original-Uri", "/admin/x"}, {"x-original-uri", "/public/x"}}},
		{name: "repeated host", headers: [][2]string{{"X-Original-Method", "GET"}, {"X-Original-Uri", "/public/x"}, {"X-Forwarded-Host", "a.example"}, {"X-Forwarded-Host", "b.example"}}},
		{name: "repeated proto", headers: [][2]string{{"X-Original-Method", "GET"}, {"X-Original-Uri", "/public/x"}, {"X-Forwarded-Proto", "https"}, {"x-forwarded-proto", "http"}}},
		{name: "families agree", headers: [][2]string{{"X-Original-Method", "GET"}, {"X-Forwarded-Method", "GET"}, {"X-Original-Uri", "/public/x"}, {"X-Forwarded-Uri", "/public/x"}}, wantCalled: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{answer: allow()}
			h := forwardauth.New(rec, forwardauth.Options{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}})
			r := httptest.NewRequest(http.MethodGet, "/v1/forward-auth", nil)
			r.RemoteAddr = "127.0.0.1:1"
			for _, kv := range tc.headers {
				r.Header[kv[0]] = append(r.Header[kv[0]], kv[1])
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
