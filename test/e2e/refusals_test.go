package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/pdp/authn/authntest"
)

// plant is one way a request can carry a secret: in the query of the
// request target, in a header value, or in a cookie.
type plant struct {
	name    string
	query   string            // appended to the target ("api_key=…"), "" for none
	headers map[string]string // header values
}

// plants returns every placement of the run's real credentials: a fresh
// user token and the billing API key, each in the query, a header and a
// cookie.
func (e *env) plants() []plant {
	token := e.mint("leak-probe", map[string]any{"customer_number": "42", "scope": "customers:read"})
	key := e.keys["billing"].Raw
	return []plant{
		{name: "token in query", query: "access_token=" + token},
		{name: "key in query", query: "api_key=" + key},
		{name: "token in header", headers: map[string]string{"Authorization": "Bearer " + token}},
		{name: "key in header", headers: map[string]string{"X-Api-Key": key}},
		{name: "token in cookie", headers: map[string]string{"Cookie": "theme=dark; session=" + token}},
		{name: "key in other header", headers: map[string]string{"X-Custom-Secret": key}},
	}
}

// withQuery appends p's query to target (before any fragment).
func (p plant) withQuery(target string) string {
	if p.query == "" {
		return target
	}
	path, frag, hasFrag := strings.Cut(target, "#")
	sep := "?"
	if strings.Contains(path, "?") {
		sep = "&"
	}
	if hasFrag {
		return path + sep + p.query + "#" + frag
	}
	return path + sep + p.query
}

// secretValue is the raw secret p carries (for planting it inside a
// malformed JSON body).
func (p plant) secretValue() string {
	if p.query != "" {
		_, v, _ := strings.Cut(p.query, "=")
		return v
	}
	for _, v := range p.headers {
		v = strings.TrimPrefix(v, "Bearer ")
		if _, after, ok := strings.Cut(v, "session="); ok {
			v = after
		}
		return v
	}
	return ""
}

// testRefusalLeaks is the regression test for secrets reaching logs and
// answers through error messages: every way tollgate refuses a request is
// tried with a real token and a real API key planted in the query, in a
// header value and in a cookie, with the decision log on. Each answer must
// be a refusal; the leak check at the end of the suite (testNoSecretLeaks)
// then finds none of the secrets in any answer, log line or decision-log
// entry.
func testRefusalLeaks(t *testing.T, e *env) {
	for _, p := range e.plants() {
		t.Run(p.name, func(t *testing.T) {
			e.refuseEverywhere(t, e.tg, p)
		})
	}
}

// refuseEverywhere sends p through every refusal path of tg.
func (e *env) refuseEverywhere(t *testing.T, tg *tollgate, p plant) {
	headers := func(extra map[string][]string) map[string][]string {
		h := map[string][]string{}
		for k, v := range p.headers {
			h[k] = []string{v}
		}
		for k, v := range extra {
			h[k] = append(h[k], v...)
		}
		return h
	}
	// Normalize refusals through /v1/decision: a decision with 400 and
	// invalid_request.
	targets := map[string]string{
		"fragment":            "/products#x",
		"absolute form":       "http://api.example.com/products",
		"authority form":      "api.example.com:443",
		"bad path escape":     "/products/%zz",
		"encoded slash":       "/products/..%2Fadmin",
		"NUL":                 "/products/%00",
		"literal NUL":         "/products/\x00",
		"bad query escape":    "/products?x=%zz",
		"semicolon in query":  "/products?x=1;y=2",
		"overlong dots":       "/public/%c0%ae%c0%ae/admin",
		"climbs above root":   "/../products",
		"over-long":           "/products?pad=" + strings.Repeat("A", 8200),
		"too many parameters": "/products?" + strings.Repeat("p=1&", 101),
	}
	for what, target := range targets {
		d := e.decide(t, tg, decisionRequest{Method: "GET", Path: p.withQuery(target), Headers: headers(nil)})
		if d.Allow || d.Status != http.StatusBadRequest || len(d.Reasons) != 1 || d.Reasons[0] != "invalid_request" {
			t.Errorf("/v1/decision %s: allow=%v %d %q, want 400 invalid_request", what, d.Allow, d.Status, d.Reasons)
		}
	}
	for what, dr := range map[string]decisionRequest{
		"CR LF in a header value":  {Method: "GET", Path: p.withQuery("/products"), Headers: headers(map[string][]string{"X-Note": {"a\r\nX-User-Id: admin"}})},
		"NUL in a header value":    {Method: "GET", Path: p.withQuery("/products"), Headers: headers(map[string][]string{"X-Note": {"a\x00b"}})},
		"secret with CR LF":        {Method: "GET", Path: "/products", Headers: map[string][]string{"Authorization": {"Bearer " + p.secretValue() + "\r\nX-User-Id: admin"}}},
		"secret in cookie with LF": {Method: "GET", Path: "/products", Headers: map[string][]string{"Cookie": {"session=" + p.secretValue() + "\n"}}},
		"method with a space":      {Method: "GET ", Path: p.withQuery("/products"), Headers: headers(nil)},
		"bad scheme":               {Method: "GET", Path: p.withQuery("/products"), Scheme: "ftp", Headers: headers(nil)},
		"host with a slash":        {Method: "GET", Path: p.withQuery("/products"), Host: "h/" + p.secretValue(), Headers: headers(nil)},
		"bad header name":          {Method: "GET", Path: p.withQuery("/products"), Headers: headers(map[string][]string{p.secretValue() + " x": {"v"}})},
	} {
		d := e.decide(t, tg, dr)
		if d.Allow || d.Status != http.StatusBadRequest {
			t.Errorf("/v1/decision %s: allow=%v %d %q, want 400 invalid_request", what, d.Allow, d.Status, d.Reasons)
		}
	}

	// JSON decoding refusals: 400 with an error body (the decoder's own
	// messages would quote the input).
	s := p.secretValue()
	hdr, _ := json.Marshal(headers(nil))
	path, _ := json.Marshal(p.withQuery("/products"))
	bodies := map[string]string{
		"secret in a string with a bad escape":   `{"method":"GET","path":"/products?api_key=` + s + `\x"}`,
		"secret before a lone surrogate":         `{"method":"GET","path":"/products","headers":{"Authorization":"Bearer ` + s + `\ud800"}}`,
		"secret before invalid UTF-8":            `{"method":"GET","path":"/products","headers":{"Cookie":"session=` + s + "\xc0\xae" + `"}}`,
		"secret in a duplicate header":           `{"method":"GET","path":"/products","headers":{"Authorization":"Bearer ` + s + `","Authorization":"Bearer ` + s + `"}}`,
		"secret as a duplicate header name":      `{"method":"GET","path":"/products","headers":{"` + s + `":"a","` + s + `":"b"}}`,
		"secret in a duplicate member":           `{"method":"GET","path":` + string(path) + `,"path":"/products?api_key=` + s + `"}`,
		"secret as an unknown field name":        `{"method":"GET","path":"/products","` + s + `":1}`,
		"secret as an unknown field value":       `{"method":"GET","path":"/products","x_secret":"` + s + `"}`,
		"secret as an unquoted value":            `{"method":"GET","path":"/products","headers":{"X-Api-Key":` + s + `}}`,
		"secret in a wrongly typed header":       `{"method":"GET","path":"/products","headers":{"X-Api-Key":["` + s + `",1]}}`,
		"secret in a truncated body":             `{"method":"GET","path":` + string(path) + `,"headers":` + string(hdr),
		"secret after the object":                `{"method":"GET","path":"/products"} "` + s + `"`,
		"secret with a case-variant member name": `{"method":"GET","PATH":` + string(path) + `,"headers":` + string(hdr) + `}`,
	}
	for what, body := range bodies {
		status, _, rb := e.postDecision(t, tg, "application/json", []byte(body))
		if status != http.StatusBadRequest || !bytes.Contains(rb, []byte(`"error"`)) {
			t.Errorf("/v1/decision %s: HTTP %d %s, want 400 with an error", what, status, rb)
		}
	}
	// 413: a body over the limit, the secret in it.
	big := fmt.Sprintf(`{"method":"GET","path":%s,"headers":{"X-Pad":%q,"X-Api-Key":%q}}`, path, strings.Repeat("A", 70<<10), s)
	if status, _, rb := e.postDecision(t, tg, "application/json", []byte(big)); status != http.StatusRequestEntityTooLarge {
		t.Errorf("/v1/decision over 64 KiB: HTTP %d %s, want 413", status, rb)
	}

	// Forward-auth refusals (tg trusts loopback).
	fa := func(what, target string, h map[string]string, multi map[string][]string) {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, tg.url+target, nil)
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range p.headers {
			req.Header.Add(k, v)
		}
		for k, v := range h {
			req.Header.Set(k, v)
		}
		for k, vs := range multi {
			for _, v := range vs {
				req.Header.Add(k, v)
			}
		}
		resp, body := e.do(t, req)
		if resp.StatusCode < 400 || resp.Header.Get("X-User-Id") != "" {
			t.Errorf("forward-auth %s: HTTP %d %s, want a refusal", what, resp.StatusCode, body)
		}
	}
	fa("missing_original_request", "/v1/forward-auth", nil, nil)
	fa("missing_original_request, look-alike prefix", "/v1/forward-authx?"+p.query, map[string]string{"X-Original-Method": "GET", "X-Original-URI": p.withQuery("/products")}, nil)
	fa("conflicting families", "/v1/forward-auth", map[string]string{
		"X-Original-Method": "GET", "X-Original-URI": p.withQuery("/products"),
		"X-Forwarded-Method": "GET", "X-Forwarded-Uri": p.withQuery("/public/x"),
	}, nil)
	fa("repeated X-Original-URI", "/v1/forward-auth", map[string]string{"X-Original-Method": "GET"},
		map[string][]string{"X-Original-URI": {p.withQuery("/public/x"), p.withQuery("/products")}})
	fa("prefix form with X-Original-URI", "/v1/forward-auth/products", map[string]string{"X-Original-Method": "GET", "X-Original-URI": p.withQuery("/public/x")}, nil)
	for what, target := range targets {
		if what == "literal NUL" {
			continue // not a valid header value on the wire
		}
		fa("X-Original-URI "+what, "/v1/forward-auth", map[string]string{"X-Original-Method": "GET", "X-Original-URI": p.withQuery(target)}, nil)
	}
	fa("oversized headers", "/v1/forward-auth", map[string]string{"X-Original-Method": "GET", "X-Original-URI": p.withQuery("/products"), "X-Pad": strings.Repeat("A", 40<<10)}, nil)
}

// testUntrustedRefusalLeaks starts a tollgate that trusts no proxy on this
// machine (decision log on) and sends it forward-auth requests carrying
// secrets: each is refused with untrusted_proxy, and nothing it writes or
// answers holds a secret.
func testUntrustedRefusalLeaks(t *testing.T, e *env) {
	var cfg tollgateConfig
	cfg.TrustedProxies = []string{"203.0.113.0/24"}
	cfg.Issuers = []issuerConfig{{Issuer: e.issuer.URL(), Audiences: []string{authntest.Audience}, Algorithms: []string{"RS256", "ES256"}}}
	cfg.APIKeys.File = e.keysFile
	cfg.DecisionLog.Enabled = true
	cfg.Log.Level = "debug"
	tg := startTollgate(t, "tollgate-untrusted", cfg)
	t.Cleanup(func() { testNoSecretLeaks(t, e, tg.process) })

	for _, p := range e.plants() {
		t.Run(p.name, func(t *testing.T) {
			for _, h := range []map[string]string{
				{"X-Original-Method": "GET", "X-Original-URI": p.withQuery("/products")},
				{"X-Forwarded-Method": "GET", "X-Forwarded-Uri": p.withQuery("/customers/42"), "X-Forwarded-Host": "api.example.com"},
				{"X-Original-Method": "GET", "X-Original-URI": p.withQuery("/products#frag")},
			} {
				for k, v := range p.headers {
					h[k] = v
				}
				resp, body := e.forwardAuth(t, tg, http.MethodGet, h)
				if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), "untrusted_proxy") {
					t.Errorf("HTTP %d %s, want 403 untrusted_proxy", resp.StatusCode, body)
				}
			}
			// The decision API answers anyone: its refusals too.
			e.refuseDecisionOnly(t, tg, p)
		})
	}
}

// refuseDecisionOnly sends one normalize refusal and one decoding refusal
// to tg's decision API, and one decision with the credential (so that the
// decision log has fingerprints to show).
func (e *env) refuseDecisionOnly(t *testing.T, tg *tollgate, p plant) {
	h := map[string][]string{}
	for k, v := range p.headers {
		h[k] = []string{v}
	}
	if d := e.decide(t, tg, decisionRequest{Method: "GET", Path: p.withQuery("/products#x"), Headers: h}); d.Allow || d.Status != http.StatusBadRequest {
		t.Errorf("fragment: %d %q, want 400", d.Status, d.Reasons)
	}
	body := `{"method":"GET","path":"/products","headers":{"X-Api-Key":"` + p.secretValue() + `\ud800"}}`
	if status, _, rb := e.postDecision(t, tg, "application/json", []byte(body)); status != http.StatusBadRequest {
		t.Errorf("lone surrogate: HTTP %d %s, want 400", status, rb)
	}
	e.decide(t, tg, decisionRequest{Method: "GET", Path: p.withQuery("/products"), Headers: h})
}

// testStrictParity is the regression test for lenient decoding: the same
// request, described to /v1/decision and asked about at /v1/forward-auth,
// must be refused by both, never allowed by one. Invalid UTF-8 was
// replaced by U+FFFD in the decision API (so /public/<overlong dots>/admin
// passed there), method names and header names were trimmed, and a
// repeated header kept only its last value.
func testStrictParity(t *testing.T, e *env) {
	token := e.mint("alice", map[string]any{"customer_number": "42", "scope": "customers:read"})
	other := e.mint("mallory", map[string]any{"customer_number": "43", "scope": "customers:read"})
	type ask struct {
		method, target string
		headers        [][2]string // in order; a name may repeat
	}
	cases := []struct {
		name string
		ask  ask
		// body is the decision API's spelling of the same request, when
		// JSON cannot carry it as forward-auth does; "" derives it.
		body string
	}{
		{name: "overlong dots, raw bytes", ask: ask{"GET", "/public/\xc0\xae\xc0\xae/admin/users", nil}},
		{name: "overlong dots, three bytes", ask: ask{"GET", "/public/\xe0\x80\xae\xe0\x80\xae/admin/users", nil}},
		{name: "overlong dots, percent-encoded", ask: ask{"GET", "/public/%c0%ae%c0%ae/admin/users", nil}},
		{name: "surrogate as CESU-8", ask: ask{"GET", "/public/\xed\xa0\x80/admin/users", nil},
			body: `{"method":"GET","path":"/public/\ud800/admin/users"}`},
		{name: "lone low surrogate", ask: ask{"GET", "/public/\xed\xb0\x80/../admin/users", nil},
			body: `{"method":"GET","path":"/public/\udc00/../admin/users"}`},
		{name: "invalid byte in a public path", ask: ask{"GET", "/public/\xff/x", nil}},
		{name: "method with a no-break space", ask: ask{"GET\u00a0", "/public/x", nil}},
		{name: "method with a next line", ask: ask{"\u0085GET", "/public/x", nil}},
		{name: "two Authorization headers", ask: ask{"GET", "/customers/42", [][2]string{{"Authorization", "Bearer " + other}, {"Authorization", "Bearer " + token}}},
			body: `{"method":"GET","path":"/customers/42","headers":{"Authorization":"Bearer ` + other + `","Authorization":"Bearer ` + token + `"}}`},
		{name: "two Authorization headers, case variants", ask: ask{"GET", "/customers/42", [][2]string{{"Authorization", "Bearer " + other}, {"authorization", "Bearer " + token}}},
			body: `{"method":"GET","path":"/customers/42","headers":{"Authorization":"Bearer ` + other + `","authorization":"Bearer ` + token + `"}}`},
		{name: "upper-case path member", ask: ask{"GET", "/customers/42", [][2]string{{"Authorization", "Bearer " + other}}},
			body: `{"method":"GET","path":"/public/x","PATH":"/customers/42","headers":{"Authorization":"Bearer ` + other + `"}}`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// /v1/decision
			body := c.body
			if body == "" {
				// Spell the strings byte for byte: json.Marshal would
				// replace invalid UTF-8 with U+FFFD itself.
				body = `{"method":"` + c.ask.method + `","path":"` + c.ask.target + `"}`
			}
			status, _, rb := e.postDecision(t, e.tg, "application/json", []byte(body))
			switch status {
			case http.StatusBadRequest:
			case http.StatusOK:
				var d decisionResponse
				if err := json.Unmarshal(rb, &d); err != nil {
					t.Fatal(err)
				}
				if d.Allow {
					t.Errorf("/v1/decision allowed it: %s", rb)
				}
			default:
				t.Errorf("/v1/decision: HTTP %d %s", status, rb)
			}

			// /v1/forward-auth, the same request
			req, err := http.NewRequest(http.MethodGet, e.tg.url+"/v1/forward-auth", nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header["X-Original-Method"] = []string{c.ask.method}
			req.Header["X-Original-Uri"] = []string{c.ask.target}
			for _, h := range c.ask.headers {
				req.Header[http.CanonicalHeaderKey(h[0])] = append(req.Header[http.CanonicalHeaderKey(h[0])], h[1])
			}
			resp, fb := e.do(t, req)
			if resp.StatusCode < 400 {
				t.Errorf("/v1/forward-auth allowed it: HTTP %d %s", resp.StatusCode, fb)
			}
		})
	}
}
