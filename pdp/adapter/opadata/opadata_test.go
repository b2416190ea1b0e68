package opadata_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/open-policy-agent/opa/v1/plugins/rest"
	"github.com/open-policy-agent/opa/v1/server/types"

	"github.com/tollgate/tollgate/pdp/adapter/opadata"
	"github.com/tollgate/tollgate/pdp/decision"
	"github.com/tollgate/tollgate/pdp/request"
)

// recorder answers with a fixed decision and records what it was asked.
type recorder struct {
	mu  sync.Mutex
	got []request.Raw
	dec decision.Decision
}

func (r *recorder) Decide(_ context.Context, raw request.Raw) decision.Decision {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, raw)
	d := r.dec
	d.ID = "dec-1"
	return d
}

func (r *recorder) calls() []request.Raw {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got)
}

var allowAlice = decision.Decision{Allow: true, Status: 200, Reasons: []string{},
	Headers: map[string]string{"x-user-id": "alice", "x-auth-kind": "user"}, PolicyRevision: "r1"}

// kongDocumented is the input Kong's OPA plugin documentation shows
// (developer.konghq.com/plugins/opa, "OPA input format"), with every
// optional entity included.
const kongDocumented = `{"input": {
  "request": {
    "http": {
      "host": "example.org",
      "port": "8000",
      "tls": {},
      "method": "GET",
      "scheme": "http",
      "path": "/foo/bar",
      "querystring": {"foo": "bar", "foo2": "bar2"},
      "headers": {"accept-encoding": "gzip, deflate", "connection": "keep-alive", "accept": "*\/*"},
      "uri_captures": {"named": {"foo": "bar"}, "unnamed": ["bar"]}
    }
  },
  "client_ip": "127.0.0.1",
  "service": {"host": "example.org", "id": "0d2f1a26", "name": "svc", "port": 80, "protocol": "http"},
  "route": {"id": "f0e6a8b9", "paths": ["/foo"]},
  "consumer": {"id": "1c3b6d2e", "username": "claimed-admin"}
}}`

// apisixDocumented is the input APISIX's opa plugin documentation shows
// (apisix.apache.org/docs/apisix/plugins/opa, "APISIX to OPA service"),
// wrapped in {"input": …} as its helper's build_opa_input sends it.
const apisixDocumented = `{"input": {
  "type": "http",
  "request": {
    "scheme": "http",
    "path": "\/get",
    "headers": {"user-agent": "curl\/7.68.0", "accept": "*\/*", "host": "127.0.0.1:9080"},
    "query": {},
    "port": 9080,
    "method": "GET",
    "host": "127.0.0.1"
  },
  "var": {
    "timestamp": 1701234567,
    "server_addr": "127.0.0.1",
    "server_port": "9080",
    "remote_port": "port",
    "remote_addr": "ip address"
  },
  "route": {"uri": "/*", "plugins": {"opa": {"host": "http://127.0.0.1:8181", "policy": "example1"}}},
  "consumer": {"username": "claimed-admin"}
}}`

func post(t *testing.T, h http.Handler, method, path, body string) (*http.Response, []byte) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, path, strings.NewReader(body)))
	resp := rec.Result()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

func TestParseDocumentedBodies(t *testing.T) {
	for _, tc := range []struct {
		name  string
		body  string
		shape opadata.Shape
		want  request.Raw
	}{
		{"Kong", kongDocumented, opadata.ShapeKong, request.Raw{
			Method: "GET", Target: "/foo/bar?foo=bar&foo2=bar2", Host: "example.org", Scheme: "http",
			Headers:  map[string][]string{"accept-encoding": {"gzip, deflate"}, "connection": {"keep-alive"}, "accept": {"*/*"}},
			SourceIP: "127.0.0.1",
		}},
		{"APISIX", apisixDocumented, opadata.ShapeAPISIX, request.Raw{
			Method: "GET", Target: "/get", Host: "127.0.0.1", Scheme: "http",
			Headers:  map[string][]string{"user-agent": {"curl/7.68.0"}, "accept": {"*/*"}, "host": {"127.0.0.1:9080"}},
			SourceIP: "ip address",
		}},
		{"OPA's other top-level members are ignored", `{"input": {"method": "GET", "path": "/x"}, "com.example/metadata": {"a": 1}}`, opadata.ShapeTollgate, request.Raw{
			Method: "GET", Target: "/x",
		}},
		{"Kong with the raw body included", `{"input": {"request": {"http": {"method": "POST", "path": "/orders", "body": "{}", "body_size": 2, "parsed_body": {}}}}}`,
			opadata.ShapeKong, request.Raw{Method: "POST", Target: "/orders"}},
		{"Tollgate", `{"input": {"method": "GET", "path": "/customers/42?page=2", "host": "api.example.com", "scheme": "https",
			"headers": {"Authorization": "Bearer x", "accept": ["a", "b"]}, "source_ip": "203.0.113.7"}}`, opadata.ShapeTollgate, request.Raw{
			Method: "GET", Target: "/customers/42?page=2", Host: "api.example.com", Scheme: "https",
			Headers:  map[string][]string{"Authorization": {"Bearer x"}, "accept": {"a", "b"}},
			SourceIP: "203.0.113.7",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			shape, raw, err := opadata.Parse([]byte(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			if shape != tc.shape {
				t.Errorf("shape %q, want %q", shape, tc.shape)
			}
			if !rawEqual(raw, tc.want) {
				t.Errorf("got  %+v\nwant %+v", raw, tc.want)
			}
		})
	}
}

func rawEqual(a, b request.Raw) bool {
	return a.Method == b.Method && a.Target == b.Target && a.Host == b.Host && a.Scheme == b.Scheme &&
		a.SourceIP == b.SourceIP && maps.EqualFunc(a.Headers, b.Headers, slices.Equal)
}

// TestQueryIsReencoded: Kong and APISIX send the query decoded, as an
// object; it goes back into the target so that a credential in the query
// is found there (credential_in_query), whatever characters it holds.
func TestQueryIsReencoded(t *testing.T) {
	for _, tc := range []struct {
		name, query, want string
	}{
		{"token", `{"access_token": "eyJ.a+b/c="}`, "?access_token=eyJ.a%2Bb%2Fc%3D"},
		{"api key beside other args, sorted by name", `{"page": "2", "api_key": "tgk_x_y"}`, "?api_key=tgk_x_y&page=2"},
		{"a flag without =", `{"debug": true, "access_token": "t"}`, "?access_token=t&debug"},
		{"repeated, order kept", `{"access_token": ["t1", "t2"]}`, "?access_token=t1&access_token=t2"},
		{"separators in a value stay in the value", `{"q": "a&access_token=b"}`, "?q=a%26access_token%3Db"},
		{"a name needing escapes", `{"a b&c": "1"}`, "?a+b%26c=1"},
		{"empty", `{}`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, shape := range []string{"kong", "apisix"} {
				var body string
				if shape == "kong" {
					body = `{"input": {"request": {"http": {"method": "GET", "path": "/customers/42", "querystring": ` + tc.query + `}}}}`
				} else {
					body = `{"input": {"type": "http", "request": {"method": "GET", "path": "/customers/42", "query": ` + tc.query + `}}}`
				}
				_, raw, err := opadata.Parse([]byte(body))
				if err != nil {
					t.Fatalf("%s: %v", shape, err)
				}
				if want := "/customers/42" + tc.want; raw.Target != want {
					t.Errorf("%s: target %q, want %q", shape, raw.Target, want)
				}
			}
		})
	}
}

// TestPathIsKeptInThePath: a path never gains a query or loses a part; the
// APISIX path is nginx's decoded $uri, so '%' is encoded again there.
func TestPathIsKeptInThePath(t *testing.T) {
	for _, tc := range []struct {
		name, path, kong, apisix string
	}{
		{"plain", "/customers/42", "/customers/42", "/customers/42"},
		{"question mark stays in the path", "/public/x?access_token=t", "/public/x%3Faccess_token=t", "/public/x%3Faccess_token=t"},
		{"hash", "/public/x#/../admin", "/public/x%23/../admin", "/public/x%23/../admin"},
		{"percent", "/public/%2e%2e/admin", "/public/%2e%2e/admin", "/public/%252e%252e/admin"},
		{"space and control", "/a b\u0001", "/a%20b%01", "/a%20b%01"},
		{"non-ASCII", "/caf\u00e9", "/caf%C3%A9", "/caf%C3%A9"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, _ := json.Marshal(tc.path)
			_, raw, err := opadata.Parse([]byte(`{"input": {"request": {"http": {"method": "GET", "path": ` + string(p) + `}}}}`))
			if err != nil || raw.Target != tc.kong {
				t.Errorf("Kong: target %q (%v), want %q", raw.Target, err, tc.kong)
			}
			_, raw, err = opadata.Parse([]byte(`{"input": {"type": "http", "request": {"method": "GET", "path": ` + string(p) + `}}}`))
			if err != nil || raw.Target != tc.apisix {
				t.Errorf("APISIX: target %q (%v), want %q", raw.Target, err, tc.apisix)
			}
		})
	}
}

// dataResponse is OPA's data API answer with the result left raw.
type dataResponse struct {
	DecisionID string          `json:"decision_id"`
	Result     json.RawMessage `json:"result"`
}

func TestResultShapes(t *testing.T) {
	deny401 := decision.Decision{Status: 401, Reasons: []string{"credential_invalid", "expired"}, Headers: map[string]string{}}
	deny403 := decision.Decision{Status: 403, Reasons: []string{"credential_in_query"}, Headers: map[string]string{}}
	tollgateBody := `{"input": {"method": "GET", "path": "/customers/42"}}`
	for _, tc := range []struct {
		name string
		body string
		dec  decision.Decision
		want string
	}{
		{"Kong allow", kongDocumented, allowAlice,
			`{"allow":true,"status":200,"headers":{"x-auth-kind":"user","x-decision-id":"dec-1","x-user-id":"alice"}}`},
		{"Kong 401", kongDocumented, deny401,
			`{"allow":false,"status":401,"headers":{"WWW-Authenticate":"Bearer realm=\"tollgate\", error=\"invalid_token\"","X-Decision-Id":"dec-1"},"message":{"decision_id":"dec-1","reasons":["credential_invalid","expired"]}}`},
		{"Kong 403", kongDocumented, deny403,
			`{"allow":false,"status":403,"headers":{"X-Decision-Id":"dec-1"},"message":{"decision_id":"dec-1","reasons":["credential_in_query"]}}`},
		{"APISIX allow", apisixDocumented, allowAlice,
			`{"allow":true,"status_code":200,"headers":{"x-auth-kind":"user","x-decision-id":"dec-1","x-user-id":"alice"}}`},
		{"APISIX 401", apisixDocumented, deny401,
			`{"allow":false,"status_code":401,"headers":{"WWW-Authenticate":"Bearer realm=\"tollgate\", error=\"invalid_token\"","X-Decision-Id":"dec-1"},"reason":{"decision_id":"dec-1","reasons":["credential_invalid","expired"]}}`},
		{"APISIX 403", apisixDocumented, deny403,
			`{"allow":false,"status_code":403,"headers":{"X-Decision-Id":"dec-1"},"reason":{"decision_id":"dec-1","reasons":["credential_in_query"]}}`},
		{"APISIX deny with a non-error status is 403", apisixDocumented, decision.Decision{Status: 200, Reasons: []string{"x"}},
			`{"allow":false,"status_code":403,"headers":{"X-Decision-Id":"dec-1"},"reason":{"decision_id":"dec-1","reasons":["x"]}}`},
		{"Tollgate allow", tollgateBody, allowAlice,
			`{"decision_id":"dec-1","allow":true,"status":200,"reasons":[],"headers":{"x-auth-kind":"user","x-user-id":"alice"},"policy_revision":"r1"}`},
		{"Tollgate 403", tollgateBody, deny403,
			`{"decision_id":"dec-1","allow":false,"status":403,"reasons":["credential_in_query"],"headers":{},"policy_revision":""}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := opadata.New(&recorder{dec: tc.dec}, opadata.Options{})
			resp, body := post(t, h, http.MethodPost, "/v1/data/tollgate/authz", tc.body)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("HTTP %d: %s", resp.StatusCode, body)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			var got dataResponse
			if err := json.Unmarshal(body, &got); err != nil {
				t.Fatalf("%v: %s", err, body)
			}
			if got.DecisionID != "dec-1" {
				t.Errorf("decision_id %q, want dec-1", got.DecisionID)
			}
			if string(got.Result) != tc.want {
				t.Errorf("result\n got %s\nwant %s", got.Result, tc.want)
			}
		})
	}
}

// TestRefusals: an input that cannot be read is a 400 with OPA's error
// body, never an allow, and never reaches the decider; the message quotes
// nothing of the input.
func TestRefusals(t *testing.T) {
	const secret = "eyJhbGciOiJSUzI1NiJ9.c2VjcmV0LXNlY3JldC1zZWNyZXQ.c2lnbmF0dXJlLXNpZ25hdHVyZQ"
	kong := func(http string) string { return `{"input": {"request": {"http": ` + http + `}}}` }
	apisix := func(in string) string { return `{"input": {"type": "http", ` + in + `}}` }
	for _, tc := range []struct {
		name, method, body string
		status             int
	}{
		{"GET", http.MethodGet, kongDocumented, 400},
		{"PUT", http.MethodPut, kongDocumented, 400},
		{"empty body", http.MethodPost, "", 400},
		{"no input", http.MethodPost, `{}`, 400},
		{"input null", http.MethodPost, `{"input": null}`, 400},
		{"input a string", http.MethodPost, `{"input": "` + secret + `"}`, 400},
		{"input a list", http.MethodPost, `{"input": [{"method": "GET", "path": "/"}]}`, 400},
		{"input of no known shape", http.MethodPost, `{"input": {"user": "admin", "token": "` + secret + `"}}`, 400},
		{"a claimed identity beside the request", http.MethodPost, `{"input": {"method": "GET", "path": "/customers/42", "identity": {"subject": "alice"}}}`, 400},
		{"not JSON", http.MethodPost, `{"input": {"method": "GET", "path": "` + secret, 400},
		{"two documents", http.MethodPost, kongDocumented + ` {}`, 400},
		{"duplicate input", http.MethodPost, `{"input": {"method": "GET", "path": "/a"}, "input": {"method": "GET", "path": "/b"}}`, 400},
		{"invalid UTF-8", http.MethodPost, "{\"input\": {\"method\": \"GET\", \"path\": \"/\xff" + secret + "\"}}", 400},
		{"Kong: no http", http.MethodPost, `{"input": {"request": {"method": "GET", "path": "/"}}}`, 400},
		{"Kong: no method", http.MethodPost, kong(`{"path": "/customers/42"}`), 400},
		{"Kong: no path", http.MethodPost, kong(`{"method": "GET"}`), 400},
		{"Kong: unknown member named by a secret", http.MethodPost, kong(`{"method": "GET", "path": "/", "` + secret + `": 1}`), 400},
		{"Kong: duplicate header name", http.MethodPost, kong(`{"method": "GET", "path": "/", "headers": {"authorization": "a", "authorization": "b"}}`), 400},
		{"Kong: header value a number", http.MethodPost, kong(`{"method": "GET", "path": "/", "headers": {"x-api-key": 1}}`), 400},
		{"Kong: query value an object", http.MethodPost, kong(`{"method": "GET", "path": "/", "querystring": {"access_token": {"v": "` + secret + `"}}}`), 400},
		{"Kong: query value false", http.MethodPost, kong(`{"method": "GET", "path": "/", "querystring": {"a": false}}`), 400},
		{"Kong: method a number", http.MethodPost, kong(`{"method": 1, "path": "/"}`), 400},
		{"Kong: port an object", http.MethodPost, kong(`{"method": "GET", "path": "/", "port": {}}`), 400},
		{"APISIX: stream", http.MethodPost, `{"input": {"type": "stream", "var": {"remote_addr": "1.2.3.4"}}}`, 400},
		{"APISIX: type not a string", http.MethodPost, `{"input": {"type": 1, "request": {"method": "GET", "path": "/"}}}`, 400},
		{"APISIX: no request", http.MethodPost, `{"input": {"type": "http"}}`, 400},
		{"APISIX: Kong's request", http.MethodPost, apisix(`"request": {"http": {"method": "GET", "path": "/"}}`), 400},
		{"APISIX: unknown var", http.MethodPost, apisix(`"request": {"method": "GET", "path": "/"}, "var": {"http_authorization": "Bearer ` + secret + `"}`), 400},
		{"Tollgate: no path", http.MethodPost, `{"input": {"method": "GET"}}`, 400},
		{"Tollgate: case-variant member", http.MethodPost, `{"input": {"method": "GET", "path": "/", "Headers": {}}}`, 400},
		{"over the body limit", http.MethodPost, `{"input": {"method": "GET", "path": "/", "host": "` + strings.Repeat("a", 2048) + `"}}`, 413},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{dec: allowAlice}
			h := opadata.New(rec, opadata.Options{MaxBodyBytes: 1024})
			resp, body := post(t, h, tc.method, "/v1/data/tollgate/authz", tc.body)
			if resp.StatusCode != tc.status {
				t.Fatalf("HTTP %d, want %d: %s", resp.StatusCode, tc.status, body)
			}
			var e types.ErrorV1
			if err := json.Unmarshal(body, &e); err != nil {
				t.Fatalf("error body is not OPA's: %v: %s", err, body)
			}
			if e.Code != types.CodeInvalidParameter || e.Message == "" {
				t.Errorf("error %+v, want code invalid_parameter and a message", e)
			}
			if strings.Contains(string(body), `"result"`) || strings.Contains(string(body), `"allow"`) {
				t.Errorf("a refusal carries a result: %s", body)
			}
			for _, leak := range []string{secret[:20], secret[len(secret)-20:], "admin", "alice"} {
				if strings.Contains(e.Message, leak) {
					t.Errorf("message quotes the input (%q): %s", leak, e.Message)
				}
			}
			if n := len(rec.calls()); n != 0 {
				t.Errorf("the decider was asked %d times", n)
			}
		})
	}
}

// TestIdentityIsNeverTakenFromTheInput: Kong's consumer and APISIX's
// consumer are claims about the caller; only the request is judged.
func TestIdentityIsNeverTakenFromTheInput(t *testing.T) {
	for _, body := range []string{kongDocumented, apisixDocumented} {
		_, raw, err := opadata.Parse([]byte(body))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(raw)
		if strings.Contains(string(b), "claimed-admin") {
			t.Errorf("the request judged carries the input's consumer: %s", b)
		}
	}
}

// TestOPARESTClient calls the handler with OPA's own REST client
// (v1/plugins/rest) and wire types (v1/server/types), as an OPA client
// library would.
func TestOPARESTClient(t *testing.T) {
	rec := &recorder{dec: allowAlice}
	srv := httptest.NewServer(opadata.New(rec, opadata.Options{}))
	t.Cleanup(srv.Close)
	client, err := rest.New([]byte(fmt.Sprintf(`{"url": %q}`, srv.URL)), nil)
	if err != nil {
		t.Fatal(err)
	}
	var input any = map[string]any{"method": "GET", "path": "/public/docs", "headers": map[string]any{"accept": "*/*"}}
	for _, path := range []string{"v1/data", "v1/data/tollgate/authz/decision"} {
		resp, err := client.WithJSON(types.DataRequestV1{Input: &input}).Do(context.Background(), http.MethodPost, path)
		if err != nil {
			t.Fatal(err)
		}
		var got types.DataResponseV1
		err = json.NewDecoder(resp.Body).Decode(&got)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: HTTP %d: %v", path, resp.StatusCode, err)
		}
		res, ok := (*got.Result).(map[string]any)
		if !ok || res["allow"] != true || got.DecisionID != "dec-1" || res["decision_id"] != "dec-1" {
			t.Errorf("%s: %+v", path, got)
		}
	}
	if calls := rec.calls(); len(calls) != 2 || calls[0].Target != "/public/docs" {
		t.Errorf("decider asked %+v", calls)
	}
}
