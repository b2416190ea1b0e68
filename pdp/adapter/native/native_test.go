package native_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/pdp/adapter/native"
	"github.com/tollgate/tollgate/pdp/credential"
	"github.com/tollgate/tollgate/pdp/decision"
	"github.com/tollgate/tollgate/pdp/request"
)

type recorder struct {
	got    request.Raw
	called bool
}

func (r *recorder) Decide(_ context.Context, raw request.Raw) decision.Decision {
	r.got, r.called = raw, true
	return decision.Decision{ID: "d1", Allow: true, Status: 200, Reasons: []string{}, Headers: map[string]string{"x-user-id": "alice"}, PolicyRevision: "rev-1"}
}

func TestDecisionBody(t *testing.T) {
	tests := []struct {
		name       string
		body       string
		ctype      string
		wantStatus int
		wantErr    string // substring of the error message
	}{
		{name: "valid", body: `{"method":"GET","path":"/products?page=2","host":"api","scheme":"https","headers":{"Authorization":"Bearer x","Accept":["a","b"]},"source_ip":"203.0.113.7"}`, wantStatus: 200},
		{name: "not json", body: `method=GET`, wantStatus: 400, wantErr: "not valid JSON"},
		{name: "empty", body: ``, wantStatus: 400, wantErr: "empty"},
		{name: "truncated", body: `{"method":"GET"`, wantStatus: 400, wantErr: "not valid JSON"},
		{name: "wrong type", body: `{"method":1,"path":"/"}`, wantStatus: 400, wantErr: `"method"`},
		{name: "header number", body: `{"method":"GET","path":"/","headers":{"a":1}}`, wantStatus: 400, wantErr: `must be a string or a list of strings`},
		{name: "header list of numbers", body: `{"method":"GET","path":"/","headers":{"a":["x",1]}}`, wantStatus: 400, wantErr: `must be a string or a list of strings`},
		{name: "headers not object", body: `{"method":"GET","path":"/","headers":[]}`, wantStatus: 400, wantErr: `"headers" must be an object`},
		{name: "missing method", body: `{"path":"/"}`, wantStatus: 400, wantErr: "required"},
		{name: "missing path", body: `{"method":"GET"}`, wantStatus: 400, wantErr: "required"},
		{name: "unknown field", body: `{"method":"GET","path":"/","pathh":"/x"}`, wantStatus: 400, wantErr: "unknown field"},
		{name: "trailing data", body: `{"method":"GET","path":"/"} {}`, wantStatus: 400, wantErr: "exactly one"},
		{name: "array", body: `[]`, wantStatus: 400, wantErr: "must be a JSON object"},
		{name: "oversized", body: `{"method":"GET","path":"/` + strings.Repeat("a", 2000) + `"}`, wantStatus: 413, wantErr: "over 1024 bytes"},
		{name: "content type is not required", body: `{"method":"GET","path":"/products?page=2","scheme":"https","headers":{"Accept":["a","b"]},"source_ip":"203.0.113.7"}`, ctype: "application/x-www-form-urlencoded", wantStatus: 200},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{}
			h := native.New(rec, native.Options{MaxBodyBytes: 1024})
			r := httptest.NewRequest(http.MethodPost, "/v1/decision", strings.NewReader(tc.body))
			if tc.ctype != "" {
				r.Header.Set("Content-Type", tc.ctype)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tc.wantStatus {
				t.Fatalf("status = %d, want %d; body %s", w.Code, tc.wantStatus, w.Body)
			}
			var out map[string]any
			if err := json.Unmarshal(w.Body.Bytes(), &out); err != nil {
				t.Fatalf("answer is not JSON: %v: %s", err, w.Body)
			}
			if tc.wantStatus != 200 {
				if rec.called {
					t.Fatal("decider called for a bad body")
				}
				msg, _ := out["error"].(string)
				if !strings.Contains(msg, tc.wantErr) {
					t.Fatalf("error = %q, want it to mention %q", msg, tc.wantErr)
				}
				return
			}
			for _, k := range []string{"decision_id", "allow", "status", "reasons", "headers", "policy_revision"} {
				if _, ok := out[k]; !ok {
					t.Errorf("answer lacks %q: %s", k, w.Body)
				}
			}
			if rec.got.Target != "/products?page=2" || rec.got.SourceIP != "203.0.113.7" || rec.got.Scheme != "https" {
				t.Errorf("raw = %+v", rec.got)
			}
			if got := rec.got.Headers["Accept"]; len(got) != 2 {
				t.Errorf("list header = %q", got)
			}
		})
	}
}

// post sends body to a fresh handler and returns the status, the error text
// (for a 4xx) and what the decider was given, if it was called.
func post(t *testing.T, body string) (int, string, *request.Raw) {
	t.Helper()
	rec := &recorder{}
	h := native.New(rec, native.Options{})
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/v1/decision", strings.NewReader(body)))
	var out struct {
		Error string `json:"error"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &out); err != nil {
		t.Fatalf("answer is not JSON: %v: %q", err, w.Body)
	}
	if w.Code != http.StatusOK && rec.called {
		t.Fatalf("HTTP %d but the decider was called", w.Code)
	}
	if rec.called {
		return w.Code, out.Error, &rec.got
	}
	return w.Code, out.Error, nil
}

// TestDecisionBodyStrict is the regression test for the lenient decoding of
// the decision API: invalid UTF-8 and lone surrogates were replaced by
// U+FFFD, duplicate members took the last value, member names matched in
// any case. Each class is tried in several members and spellings; each
// must be a 400 that names the class, and the decider is never called.
func TestDecisionBodyStrict(t *testing.T) {
	// wrap puts a JSON string literal's body (already escaped as needed)
	// into each place a string can be.
	wrap := map[string]func(string) string{
		"path":      func(v string) string { return `{"method":"GET","path":"/public/` + v + `/admin"}` },
		"method":    func(v string) string { return `{"method":"G` + v + `","path":"/"}` },
		"host":      func(v string) string { return `{"method":"GET","path":"/","host":"h` + v + `"}` },
		"source_ip": func(v string) string { return `{"method":"GET","path":"/","source_ip":"` + v + `"}` },
		"header value": func(v string) string {
			return `{"method":"GET","path":"/","headers":{"Authorization":"Bearer ` + v + `"}}`
		},
		"header list": func(v string) string { return `{"method":"GET","path":"/","headers":{"X-Api-Key":["a","` + v + `"]}}` },
		"header name": func(v string) string { return `{"method":"GET","path":"/","headers":{"X-` + v + `":"x"}}` },
		"member name": func(v string) string { return `{"method":"GET","path":"/","` + v + `":"x"}` },
	}
	classes := []struct {
		name    string
		values  []string
		wantErr string
	}{
		{"invalid UTF-8", []string{
			"\xc0\xae\xc0\xae", // overlong "." twice
			"\xe0\x80\xae",     // three-byte overlong "."
			"\xf0\x80\x80\xae", // four-byte overlong "."
			"\xc1\x9c",         // overlong backslash
			"\xff", "\xfe\xff", // never valid
			"\xe2\x82",         // truncated sequence
			"\xed\xa0\x80",     // a surrogate encoded in UTF-8 (CESU-8)
			"\xf4\x90\x80\x80", // above U+10FFFF
			"\x80",             // a lone continuation byte
		}, "not valid UTF-8"},
		{"lone surrogate escape", []string{
			`\ud800`, `\udfff`, `\uDBFF`, `\ud800\u0041`, `\udc00\ud800`, `\ud83d`, `x\ud800x`,
		}, "invalid string escape"},
	}
	for _, class := range classes {
		for where, mk := range wrap {
			for _, v := range class.values {
				body := mk(v)
				t.Run(class.name+"/"+where, func(t *testing.T) {
					status, msg, got := post(t, body)
					if status != http.StatusBadRequest || got != nil {
						t.Fatalf("%q: HTTP %d (decider given %+v), want 400", body, status, got)
					}
					if !strings.Contains(msg, class.wantErr) {
						t.Errorf("%q: error %q does not say %q", body, msg, class.wantErr)
					}
				})
			}
		}
	}

	other := []struct{ name, body, wantErr string }{
		{"duplicate path", `{"method":"GET","path":"/admin","path":"/public/x"}`, `duplicate member name in request body (in "path"`},
		{"duplicate method", `{"method":"DELETE","path":"/x","method":"GET"}`, `duplicate member name in request body (in "method"`},
		{"duplicate headers", `{"method":"GET","path":"/x","headers":{},"headers":{"a":"b"}}`, `duplicate member name`},
		{"duplicate source_ip", `{"method":"GET","path":"/x","source_ip":"10.0.0.1","source_ip":"203.0.113.7"}`, `duplicate member name`},
		{"duplicate path, escaped spelling", `{"method":"GET","path":"/admin","\u0070ath":"/public/x"}`, `duplicate member name`},
		{"duplicate header", `{"method":"GET","path":"/x","headers":{"Authorization":"Bearer a","Authorization":"Bearer b"}}`, `duplicate header name`},
		{"duplicate header, string and list", `{"method":"GET","path":"/x","headers":{"X-Api-Key":["a"],"X-Api-Key":"b"}}`, `duplicate header name`},
		{"duplicate header, escaped spelling", `{"method":"GET","path":"/x","headers":{"Cookie":"a=1","\u0043ookie":"a=2"}}`, `duplicate header name`},
		{"upper-case member", `{"method":"GET","PATH":"/public/x"}`, `unknown field`},
		{"capitalised member", `{"Method":"GET","path":"/x"}`, `unknown field`},
		{"long s (U+017F) member", `{"method":"GET","path":"/x","ſource_ip":"10.0.0.1"}`, `unknown field`},
		{"Kelvin sign (U+212A) member", `{"method":"GET","path":"/x","headers":{},"\u212aey":"x"}`, `unknown field`},
		{"member with trailing space", `{"method":"GET","path ":"/x"}`, `unknown field`},
		{"member case variant after the real one", `{"method":"GET","path":"/public/x","Path":"/admin"}`, `unknown field`},
		{"headers null members", `{"method":"GET","path":"/x","headers":{"a":null}}`, `must be a string or a list of strings`},
		{"nested object in header list", `{"method":"GET","path":"/x","headers":{"a":[{"b":"c"}]}}`, `must be a string or a list of strings`},
	}
	for _, tc := range other {
		t.Run(tc.name, func(t *testing.T) {
			status, msg, got := post(t, tc.body)
			if status != http.StatusBadRequest || got != nil {
				t.Fatalf("HTTP %d (decider given %+v), want 400", status, got)
			}
			if !strings.Contains(msg, tc.wantErr) {
				t.Errorf("error %q does not say %q", msg, tc.wantErr)
			}
		})
	}

	// Controls: the valid spellings of the same requests are decided.
	for _, body := range []string{
		`{"method":"GET","path":"/public/\u00e9/x"}`,
		`{"method":"GET","path":"/public/\ud83d\ude00/x"}`, // a valid surrogate pair
		"{\"method\":\"GET\",\"path\":\"/public/\xc3\xa9\"}",
		`{"\u006dethod":"GET","path":"/x"}`, // an escaped spelling of a known name
		`{"method":"GET","path":"/x","headers":null}`,
		`{"method":"GET","path":"/x","headers":{"a":[]}}`,
	} {
		if status, msg, got := post(t, body); status != http.StatusOK || got == nil {
			t.Errorf("control %q: HTTP %d %q, want a decision", body, status, msg)
		}
	}
}

// TestDecisionBodyNotTrimmed checks that the method and header names reach
// the pipeline exactly as sent (the pipeline refuses them; trimming would
// judge another request than the one described), and that header names that
// differ only in case are one header whose values are all kept.
func TestDecisionBodyNotTrimmed(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		check      func(request.Raw) bool
	}{
		{"method with spaces", `{"method":" GET ","path":"/x"}`, func(r request.Raw) bool { return r.Method == " GET " }},
		{"method with no-break space", `{"method":"GET\u00a0","path":"/x"}`, func(r request.Raw) bool { return r.Method == "GET\u00a0" }},
		{"method with next line", `{"method":"\u0085GET","path":"/x"}`, func(r request.Raw) bool { return r.Method == "\u0085GET" }},
		{"header name with tab", `{"method":"GET","path":"/x","headers":{"Authorization\t":"Bearer a"}}`, func(r request.Raw) bool { return r.Headers["Authorization\t"] != nil }},
		{"header name with ideographic space", `{"method":"GET","path":"/x","headers":{"\u3000X-Api-Key":"k"}}`, func(r request.Raw) bool { return r.Headers["\u3000X-Api-Key"] != nil }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, msg, got := post(t, tc.body)
			if status != http.StatusOK || got == nil {
				t.Fatalf("HTTP %d %q, want the request passed on", status, msg)
			}
			if !tc.check(*got) {
				t.Fatalf("passed on changed: %+v", *got)
			}
			if _, err := request.Normalize(*got); !errors.Is(err, request.ErrInvalidRequest) {
				t.Errorf("Normalize accepted it (%v); want invalid_request", err)
			}
		})
	}

	// Case variants of one header: every value reaches the credential stage,
	// so two credentials are multiple_credentials, whatever their order.
	for _, body := range []string{
		`{"method":"GET","path":"/x","headers":{"authorization":"Bearer a","Authorization":"Bearer b"}}`,
		`{"method":"GET","path":"/x","headers":{"Authorization":"Bearer b","AUTHORIZATION":["Bearer a"]}}`,
		`{"method":"GET","path":"/x","headers":{"x-api-key":"k1","X-API-Key":"k2"}}`,
		`{"method":"GET","path":"/x","headers":{"Authorization":["Bearer a","Bearer b"]}}`,
	} {
		status, msg, got := post(t, body)
		if status != http.StatusOK || got == nil {
			t.Fatalf("%s: HTTP %d %q, want the request passed on", body, status, msg)
		}
		req, err := request.Normalize(*got)
		if err != nil {
			t.Fatalf("%s: %v", body, err)
		}
		if c := credential.NewFinder(credential.DefaultLocations()).Find(req); c.Problem != credential.ErrMultipleCredentials {
			t.Errorf("%s: credential problem %q, want %q", body, c.Problem, credential.ErrMultipleCredentials)
		}
	}
}

// TestDecisionBodyErrorsQuoteNoInput plants a secret wherever a malformed
// body can hold one: the JSON decoder's own messages quote input, so none
// may reach the answer.
func TestDecisionBodyErrorsQuoteNoInput(t *testing.T) {
	const secret = "tgk_live_7Qm2ZpX9aR4vW1cY8bN3dK6fH0jL5sT"
	for _, body := range []string{
		`{"method":"GET","path":"/x?api_key=` + secret + `\x"}`,
		`{"method":"GET","path":"/x","headers":{"Authorization":"Bearer ` + secret + `\ud800"}}`,
		"{\"method\":\"GET\",\"path\":\"/x\",\"headers\":{\"Cookie\":\"s=" + secret + "\xff\"}}",
		`{"method":"GET","path":"/x","headers":{"Authorization":"Bearer ` + secret + `","Authorization":"x"}}`,
		`{"method":"GET","path":"/x","headers":{"` + secret + `":"a","` + secret + `":"b"}}`,
		`{"method":"GET","path":"/x","` + secret + `":1}`,
		`{"method":"GET","path":"/x","` + secret + `":"` + secret + `"}`,
		`{"method":"GET","path":"/x","` + secret + `":1,"` + secret + `":2}`,
		`{"method":"GET","path":"/x","headers":{"X-Api-Key":` + secret + `}}`,
		`{"method":"GET","path":"/x","headers":{"X-Api-Key":["` + secret + `",1]}}`,
		`{"method":"GET","path":"/x","source_ip":"` + secret + `"` + "\n\t",
		`{"method":"GET","path":"/x"} "` + secret + `"`,
		`{"method":"GET","path":"/x"}` + secret,
		`{"method":"GET","path":` + secret + `}`,
		`{"method":"GET","path":"` + secret + `"` + strings.Repeat(" ", 1<<17),
		`["` + secret + `"]`,
		`"` + secret + `"`,
		secret,
	} {
		status, msg, got := post(t, body)
		if status < 400 || got != nil {
			t.Errorf("%.60q: HTTP %d, want a refusal", body, status)
		}
		for i := 0; i+8 <= len(secret); i++ {
			if strings.Contains(msg, secret[i:i+8]) {
				t.Errorf("%.60q: error %q quotes the secret", body, msg)
				break
			}
		}
	}
}
