package decisionlog_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/plugins/logs"

	"github.com/tollgate/tollgate/pdp/adapter/extauthz"
	"github.com/tollgate/tollgate/pdp/decisionlog"
	"github.com/tollgate/tollgate/pdp/request"
	"github.com/tollgate/tollgate/pdp/server"
)

func newUpload(t testing.TB, c *collector, u decisionlog.Upload) *decisionlog.Upload {
	t.Helper()
	client, err := decisionlog.NewRESTClient("collector", []byte(`{"url": "`+c.url()+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	u.Client = client
	if u.MinDelay == 0 {
		u.MinDelay, u.MaxDelay = 5*time.Millisecond, 10*time.Millisecond
	}
	return &u
}

// asked is one decision a test asked for: its id, the revision that
// should have decided it, and what its event must say.
type asked struct {
	name      string
	id        string
	revision  string
	credType  string
	placement string
	refused   string // the refusal reason, "" for a policy decision
	route     string
}

// TestOneEventPerDecisionAcrossTransports (issue 10): a collector on
// loopback receives exactly one OPA event per decision, from every
// transport (decision API, forward auth in both forms, ext_authz),
// for JWTs in headers, cookies and the query, API keys in headers and the
// query, invalid and missing credentials, and requests refused before the
// policy; each names the revision that decided, even across an
// activation; and no raw credential or other secret appears in any event,
// log line or metric.
func TestOneEventPerDecisionAcrossTransports(t *testing.T) {
	c := newCollector(t)
	f := newFixture(t, fixtureOptions{upload: newUpload(t, c, decisionlog.Upload{})})
	trusted := httptest.NewServer(server.Handler(f.decider, server.Options{
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")},
	}))
	defer trusted.Close()
	untrusted := httptest.NewServer(server.Handler(f.decider, server.Options{}))
	defer untrusted.Close()
	envoy := extauthz.New(f.decider, extauthz.Options{})

	jwt := f.token("alice")
	cookieJWT := f.token("bob")
	queryJWT := f.token("carol")
	fwdJWT := f.token("dave")
	envoyJWT := f.token("erin")
	tampered := jwt[:len(jwt)-4] + "AAAA"
	key := f.key
	custom := "s3cr3t-custom-header-value-42"
	proxyAuth := "Basic dXNlcjpzdXBlcnNlY3JldA=="
	secrets := []string{jwt, cookieJWT, queryJWT, fwdJWT, envoyJWT, tampered, key, custom, proxyAuth,
		jwt[strings.LastIndexByte(jwt, '.')+1:], key[len(key)-20:], "dXNlcjpzdXBlcnNlY3JldA"}

	revision := "rev-1"
	var all []asked
	native := func(name, body string, want asked) {
		t.Helper()
		resp, err := http.Post(trusted.URL+"/v1/decision", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out struct {
			ID       string `json:"decision_id"`
			Revision string `json:"policy_revision"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&out)
		if out.ID == "" {
			out.ID = resp.Header.Get("X-Decision-Id")
		}
		if out.ID == "" {
			t.Fatalf("%s: no decision id (status %d)", name, resp.StatusCode)
		}
		if out.Revision != "" && out.Revision != revision {
			t.Fatalf("%s: decided by %q, want %q", name, out.Revision, revision)
		}
		want.name, want.id, want.revision = name, out.ID, revision
		all = append(all, want)
	}
	forward := func(name, base, target string, hdr map[string]string, want asked) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, base+target, nil)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		id := resp.Header.Get("X-Decision-Id")
		if id == "" {
			t.Fatalf("%s: no X-Decision-Id", name)
		}
		want.name, want.id, want.revision = name, id, revision
		all = append(all, want)
	}
	check := func(name string, req *authv3.CheckRequest, want asked) {
		t.Helper()
		resp, err := envoy.Check(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		id := ""
		for _, h := range append(resp.GetOkResponse().GetHeaders(), resp.GetDeniedResponse().GetHeaders()...) {
			if h.GetHeader().GetKey() == "x-decision-id" {
				id = h.GetHeader().GetValue()
			}
		}
		want.name, want.id, want.revision = name, id, revision
		all = append(all, want)
	}
	hdrBody := func(path string, headers map[string]string) string {
		b, _ := json.Marshal(map[string]any{"method": "GET", "path": path, "headers": headers})
		return string(b)
	}

	native("jwt header", hdrBody("/orders/1", map[string]string{"Authorization": "Bearer " + jwt}),
		asked{credType: "bearer", placement: "header", route: "/orders/{id}"})
	native("jwt cookie", hdrBody("/orders/1", map[string]string{"Cookie": "theme=dark; session=" + cookieJWT}),
		asked{credType: "bearer", placement: "cookie", route: "/orders/{id}"})
	native("api key header", hdrBody("/orders/1", map[string]string{"X-API-Key": key}),
		asked{credType: "api_key", placement: "header", route: "/orders/{id}"})
	native("jwt in query", hdrBody("/orders/1?access_token="+queryJWT, nil),
		asked{credType: "bearer", placement: "query", route: "/orders/{id}"})
	native("api key in query", hdrBody("/orders/1?page=2&api_key="+key, nil),
		asked{credType: "api_key", placement: "query", route: "/orders/{id}"})
	native("tampered jwt", hdrBody("/orders/1", map[string]string{"Authorization": "Bearer " + tampered}),
		asked{credType: "bearer", placement: "header", route: "/orders/{id}"})
	native("secrets in other headers", hdrBody("/public/x", map[string]string{"Proxy-Authorization": proxyAuth, "X-Custom-Token": custom, "X-Forwarded-Authorization": "Bearer " + jwt}),
		asked{credType: "none", placement: "none", route: "/public/**"})

	// A new revision takes over: the decisions after it name it.
	if err := f.act.Activate(context.Background(), newBundle(t, "rev-2", map[string]string{"authz.rego": routedPolicy})); err != nil {
		t.Fatal(err)
	}
	revision = "rev-2"

	native("unnormalizable path", hdrBody("/orders/..%2f..%2fadmin", map[string]string{"Authorization": "Bearer " + jwt}),
		asked{credType: "none", placement: "none", refused: "invalid_request"})
	native("malformed body", `{"method": "GET", "path": "/orders/1", "headers": {"Authorization": "Bearer `+jwt+`"}, "nope": 1}`,
		asked{credType: "none", placement: "none", refused: "invalid_request"})
	forward("forward-auth header form", trusted.URL, "/v1/forward-auth", map[string]string{
		"X-Original-Method": "GET", "X-Original-URI": "/orders/7", "Authorization": "Bearer " + fwdJWT},
		asked{credType: "bearer", placement: "header", route: "/orders/{id}"})
	forward("forward-auth prefix form, query token", trusted.URL, "/v1/forward-auth/orders/7?access_token="+queryJWT, nil,
		asked{credType: "bearer", placement: "query", route: "/orders/{id}"})
	forward("forward-auth without original request", trusted.URL, "/v1/forward-auth", map[string]string{"Authorization": "Bearer " + fwdJWT},
		asked{credType: "none", placement: "none", refused: "missing_original_request"})
	forward("forward-auth from an untrusted peer", untrusted.URL, "/v1/forward-auth", map[string]string{
		"X-Original-Method": "GET", "X-Original-URI": "/orders/7?api_key=" + key, "Authorization": "Bearer " + fwdJWT},
		asked{credType: "none", placement: "none", refused: "untrusted_proxy"})
	check("ext_authz jwt", checkRequest("/orders/9", map[string]string{"authorization": "Bearer " + envoyJWT}),
		asked{credType: "bearer", placement: "header", route: "/orders/{id}"})
	check("ext_authz malformed", &authv3.CheckRequest{},
		asked{credType: "none", placement: "none", refused: extauthz.ReasonMalformedCheck})

	waitFor(t, "every event at the collector", func() bool {
		events, _, _ := c.snapshot()
		return len(events) >= len(all)
	})
	time.Sleep(30 * time.Millisecond) // a duplicate would arrive in the next upload
	events, raws, bad := c.snapshot()
	if len(bad) > 0 {
		t.Fatalf("collector refused uploads: %q", bad)
	}
	if len(events) != len(all) {
		t.Fatalf("collector got %d events for %d decisions", len(events), len(all))
	}
	seen := map[string]int{}
	for _, e := range events {
		seen[e.DecisionID]++
	}
	for _, a := range all {
		t.Run(a.name, func(t *testing.T) {
			if seen[a.id] != 1 {
				t.Fatalf("decision %s has %d events, want 1", a.id, seen[a.id])
			}
			e, _ := findEvent(events, a.id)
			if got := e.Bundles["tollgate"].Revision; got != a.revision {
				t.Errorf("bundles.tollgate.revision = %q, want %q", got, a.revision)
			}
			if e.Labels["id"] != "test-instance" || e.Path != "tollgate/authz/decision" || e.Timestamp.IsZero() || e.Result == nil {
				t.Errorf("OPA fields: labels=%v path=%q timestamp=%v result=%v", e.Labels, e.Path, e.Timestamp, e.Result)
			}
			var tg struct {
				Tollgate decisionlog.Tollgate `json:"tollgate"`
			}
			if err := json.Unmarshal(raws[indexOf(events, a.id)], &tg); err != nil {
				t.Fatal(err)
			}
			cr := tg.Tollgate.Credential
			if cr.Type != a.credType || cr.Placement != a.placement {
				t.Errorf("tollgate.credential = %+v, want type %q placement %q", cr, a.credType, a.placement)
			}
			if a.credType != "none" && !strings.HasPrefix(cr.Fingerprint, "sha256:") {
				t.Errorf("no fingerprint: %+v", cr)
			}
			if got := refusedReason(tg.Tollgate); got != a.refused {
				t.Errorf("tollgate.refused = %q, want %q", got, a.refused)
			}
			if a.refused == "" && (tg.Tollgate.Stages.EvalNS <= 0 || e.Input == nil) {
				t.Errorf("policy decision without eval stage or input: %+v", tg.Tollgate.Stages)
			}
			if tg.Tollgate.Route != a.route {
				t.Errorf("tollgate.route = %q, want %q", tg.Tollgate.Route, a.route)
			}
		})
	}

	// No secret anywhere: events, operational logs, metrics.
	var everything strings.Builder
	for _, r := range raws {
		everything.Write(r)
	}
	places := map[string]string{"events": everything.String(), "logs": f.logs.String(), "metrics": exposition(t, f.reg)}
	for where, text := range places {
		for _, s := range secrets {
			if strings.Contains(text, s) {
				t.Errorf("a secret (%d bytes, starting %.6q) appears in the %s", len(s), s, where)
			}
		}
	}
	// The built-in masks said what they did.
	e, _ := findEvent(events, byName(all, "secrets in other headers").id)
	for _, p := range []string{"/input/request/headers/proxy-authorization", "/input/request/headers/x-custom-token", "/input/request/headers/x-forwarded-authorization"} {
		if !contains(e.Erased, p) {
			t.Errorf("erased = %q, want %q in it", e.Erased, p)
		}
	}
	// A request that cannot be normalized says why, without quoting it.
	var refused struct {
		Tollgate decisionlog.Tollgate `json:"tollgate"`
	}
	if err := json.Unmarshal(raws[indexOf(events, byName(all, "unnormalizable path").id)], &refused); err != nil {
		t.Fatal(err)
	}
	if r := refused.Tollgate.Refuse; r == nil || r.Error == "" || strings.Contains(r.Error, "admin") {
		t.Errorf("refused = %+v: want the normalizer's error, without the input", r)
	}
	if got := counter(t, f.reg, "tollgate_decision_log_events_total", map[string]string{"result": "delivered"}); got != float64(len(all)) {
		t.Errorf("delivered = %v, want %d", got, len(all))
	}
}

func refusedReason(tg decisionlog.Tollgate) string {
	if tg.Refuse == nil {
		return ""
	}
	return tg.Refuse.Reason
}

func indexOf(events []logs.EventV1, id string) int {
	for i, e := range events {
		if e.DecisionID == id {
			return i
		}
	}
	return -1
}

// checkRequest is an Envoy CheckRequest for GET path with headers.
func checkRequest(path string, headers map[string]string) *authv3.CheckRequest {
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: "203.0.113.7", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 50123}},
		}}},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: "GET", Path: path, Host: "api.example.com", Scheme: "https", Headers: headers,
		}},
	}}
}

func byName(all []asked, name string) asked {
	for _, a := range all {
		if a.name == name {
			return a
		}
	}
	return asked{}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestCollectorDownBoundedAndCounted (issue 10): with the collector
// stopped mid-run, decisions go on, the buffer never holds more than its
// bound (in events or bytes), every event that is not delivered is counted
// as dropped (dropped = decisions - distinct events received), and when
// the collector comes back delivery resumes.
func TestCollectorDownBoundedAndCounted(t *testing.T) {
	tests := []struct {
		name   string
		upload decisionlog.Upload
	}{
		{"event buffer", decisionlog.Upload{BufferType: decisionlog.BufferEvent, BufferSizeLimitEvents: 20}},
		{"size buffer", decisionlog.Upload{BufferType: decisionlog.BufferSize, BufferSizeLimitBytes: 16 << 10}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := newCollector(t)
			f := newFixture(t, fixtureOptions{upload: newUpload(t, c, tc.upload)})
			token := f.token("alice")
			total := 0
			decide := func(n int) {
				for range n {
					hdr := map[string][]string{"Authorization": {"Bearer " + token}}
					f.decider.Decide(context.Background(), rawRequest("/orders/1", hdr))
					total++
					n, b := counter(t, f.reg, "tollgate_decision_log_buffer_events", nil), counter(t, f.reg, "tollgate_decision_log_buffer_bytes", nil)
					if (tc.upload.BufferSizeLimitEvents > 0 && n > float64(tc.upload.BufferSizeLimitEvents)) ||
						(tc.upload.BufferSizeLimitBytes > 0 && b > float64(tc.upload.BufferSizeLimitBytes)) {
						t.Fatalf("buffer holds %v events, %v bytes: over its bound", n, b)
					}
				}
			}
			accounted := func() bool {
				d := counter(t, f.reg, "tollgate_decision_log_events_total", map[string]string{"result": "delivered"})
				x := counter(t, f.reg, "tollgate_decision_log_events_total", map[string]string{"result": "dropped"})
				n := counter(t, f.reg, "tollgate_decision_log_buffer_events", nil)
				return int(d+x) == total && n == 0
			}

			decide(10)
			waitFor(t, "the first events delivered", accounted)

			c.stop()
			decide(300)
			waitFor(t, "an upload to fail", func() bool {
				return counter(t, f.reg, "tollgate_decision_log_events_total", map[string]string{"result": "failed"}) > 0
			})
			if dropped := counter(t, f.reg, "tollgate_decision_log_events_total", map[string]string{"result": "dropped"}); dropped == 0 {
				t.Fatal("300 events into a bounded buffer with the collector down, none dropped")
			}

			c.restart()
			waitFor(t, "the buffer delivered after the restart", accounted)
			decide(10)
			waitFor(t, "events after the restart delivered", accounted)

			events, _, bad := c.snapshot()
			if len(bad) > 0 {
				t.Fatalf("collector refused uploads: %q", bad)
			}
			ids := map[string]bool{}
			for _, e := range events {
				if ids[e.DecisionID] {
					t.Fatalf("decision %s delivered twice", e.DecisionID)
				}
				ids[e.DecisionID] = true
			}
			dropped := counter(t, f.reg, "tollgate_decision_log_events_total", map[string]string{"result": "dropped"})
			if lost := total - len(ids); float64(lost) != dropped {
				t.Fatalf("%d decisions, %d events received: %d lost, but dropped counter is %v", total, len(ids), lost, dropped)
			}
			delivered := counter(t, f.reg, "tollgate_decision_log_events_total", map[string]string{"result": "delivered"})
			if int(delivered) != len(ids) {
				t.Fatalf("delivered counter %v, collector received %d", delivered, len(ids))
			}
		})
	}
}

func rawRequest(target string, headers map[string][]string) request.Raw {
	return request.Raw{Method: "GET", Target: target, Host: "api.example.com", Scheme: "https", Headers: headers, SourceIP: "203.0.113.7"}
}
