package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/plugins/rest"
	"github.com/open-policy-agent/opa/v1/server/types"
	"go.yaml.in/yaml/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tollgate/tollgate/pdp/authn/authntest"
	"github.com/tollgate/tollgate/pdp/decision"
)

// TestTransports drives one decision table through every way a gateway can
// ask Tollgate, against the real binary with its gRPC listener on: each
// case of test/cases/routes.yaml goes through POST /v1/decision,
// /v1/forward-auth, Envoy's ext_authz gRPC (headers and header_map), OPA's
// data API in Kong's, APISIX's and Tollgate's input shapes (with OPA's own
// REST client), and a real Caddy running examples/caddy/Caddyfile; every
// transport must give the case's outcome (allow, status, reasons, identity
// headers). The path tricks of testdata/paths.yaml go through
// /v1/decision, both gRPC forms and Kong's shape. Then tollgate is stopped
// with SIGTERM (HTTP and gRPC stop gracefully) and everything the run
// produced is searched for leaked secrets.
func TestTransports(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end tests build and start real servers; skipped with -short")
	}
	e := newEnv(t)
	tg := startTollgateGRPC(t, e)
	tr := newTransports(t, e, tg)
	if bin := caddyBinary(t); bin != "" {
		c := startCaddy(t, bin, tg.addr, e.upstream.srv.Listener.Addr().String())
		tr.caddy = c
		t.Cleanup(func() { e.record("caddy output", []byte(c.output.String())) })
	}

	t.Run("routes", func(t *testing.T) { tr.run(t, routeCases, tr.all()) })
	t.Run("paths", func(t *testing.T) { tr.run(t, "paths.yaml", tr.pathTransports()) })
	t.Run("grpc_health", func(t *testing.T) { testGRPCHealth(t, tr) })
	t.Run("data_api_refusals", func(t *testing.T) { testDataRefusals(t, tr) })
	t.Run("counts", func(t *testing.T) { tr.report(t) })
	t.Run("graceful_shutdown", func(t *testing.T) {
		if err := tg.stop(syscall.SIGTERM); err != nil {
			t.Fatalf("after SIGTERM: %v\n%s", err, tail(tg.output.String(), tailLines))
		}
		if !strings.Contains(tg.output.String(), "tollgate gRPC listening") {
			t.Error("tollgate never logged its gRPC listener")
		}
	})
	t.Run("no_secret_leaks", func(t *testing.T) { testNoSecretLeaks(t, e, tg.process) })
}

// ---------------------------------------------------------------------------
// tollgate with its gRPC listener

// routeCases is the route table's case file (test/cases/routes.yaml),
// relative to testdata as loadCases reads it.
const routeCases = "../../cases/routes.yaml"

// grpcTollgateConfig is tollgateConfig with the grpc section.
type grpcTollgateConfig struct {
	tollgateConfig `yaml:",inline"`
	GRPC           struct {
		Listen string `yaml:"listen"`
	} `yaml:"grpc"`
}

// grpcTollgate is a running tollgate with its gRPC listener.
type grpcTollgate struct {
	*tollgate
	grpcAddr string
}

// startTollgateGRPC starts a tollgate configured like the suite's main one
// (same issuer, keys, trusted proxies, decision log at debug level) with
// grpc.listen set, and returns once /health/ready answers 200.
func startTollgateGRPC(t *testing.T, e *env) *grpcTollgate {
	t.Helper()
	var cfg grpcTollgateConfig
	cfg.TrustedProxies = []string{"127.0.0.1/32"}
	cfg.Issuers = []issuerConfig{{Issuer: e.issuer.URL(), Audiences: []string{authntest.Audience}, Algorithms: []string{"RS256", "ES256"}}}
	cfg.APIKeys.File = e.keysFile
	cfg.DecisionLog.Enabled = true
	cfg.Log.Level = "debug"
	dir := t.TempDir()
	for attempt := 1; ; attempt++ {
		cfg.Listen, cfg.GRPC.Listen = freeAddr(t), freeAddr(t)
		b, err := yaml.Marshal(cfg)
		if err != nil {
			t.Fatal(err)
		}
		file := filepath.Join(dir, "tollgate-grpc.yaml")
		if err := os.WriteFile(file, b, 0o600); err != nil {
			t.Fatal(err)
		}
		tg := &grpcTollgate{
			tollgate: &tollgate{
				process: startProcess(t, "tollgate-grpc", exec.Command(tollgateBin, "serve", "--config", file)),
				addr:    cfg.Listen,
				url:     "http://" + cfg.Listen,
			},
			grpcAddr: cfg.GRPC.Listen,
		}
		err = waitHTTP(tg.process, tg.url+"/health/ready")
		if err == nil {
			return tg
		}
		if !errors.Is(err, errAddrInUse) || attempt == startAttempts {
			t.Fatal(err)
		}
	}
}

// ---------------------------------------------------------------------------
// transports

// outcome is what a transport answered, in the decision's terms.
type outcome struct {
	allow   bool
	status  int
	reasons []string
	headers map[string]string // identity headers only, lower case
}

// transport asks about one request.
type transport struct {
	name string
	ask  func(t *testing.T, dr decisionRequest) (outcome, bool) // false: this transport cannot carry the request
}

// transports holds what every transport needs, and counts the cases each ran.
type transports struct {
	e     *env
	tg    *grpcTollgate
	authz authv3.AuthorizationClient
	conn  *grpc.ClientConn
	opa   rest.Client
	caddy *caddy

	mu     sync.Mutex
	counts map[string]int
}

func newTransports(t *testing.T, e *env, tg *grpcTollgate) *transports {
	t.Helper()
	conn, err := grpc.NewClient(tg.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	opa, err := rest.New([]byte(fmt.Sprintf(`{"url": %q}`, tg.url)), nil)
	if err != nil {
		t.Fatal(err)
	}
	return &transports{e: e, tg: tg, authz: authv3.NewAuthorizationClient(conn), conn: conn, opa: opa, counts: map[string]int{}}
}

func (tr *transports) all() []transport {
	ts := []transport{
		{"decision", tr.decision},
		{"forward_auth", tr.forwardAuth},
		{"grpc_headers", func(t *testing.T, dr decisionRequest) (outcome, bool) { return tr.grpc(t, dr, false) }},
		{"grpc_header_map", func(t *testing.T, dr decisionRequest) (outcome, bool) { return tr.grpc(t, dr, true) }},
		{"data_kong", tr.kong},
		{"data_apisix", tr.apisix},
		{"data_tollgate", tr.dataTollgate},
	}
	if tr.caddy != nil {
		ts = append(ts, transport{"caddy", tr.viaCaddy})
	}
	return ts
}

// pathTransports carry a path exactly as the client sent it; APISIX's
// plugin sends nginx's decoded $uri and gateways normalize paths before
// they ask, so the raw path tricks go through the others.
func (tr *transports) pathTransports() []transport {
	return []transport{
		{"decision", tr.decision},
		{"grpc_headers", func(t *testing.T, dr decisionRequest) (outcome, bool) { return tr.grpc(t, dr, false) }},
		{"grpc_header_map", func(t *testing.T, dr decisionRequest) (outcome, bool) { return tr.grpc(t, dr, true) }},
		{"data_kong", tr.kong},
	}
}

// run sends every case of file through each transport, with one
// credential per case, and checks each outcome against the case.
func (tr *transports) run(t *testing.T, file string, ts []transport) {
	for _, c := range loadCases(t, file) {
		t.Run(c.Name, func(t *testing.T) {
			dr := tr.e.request(t, c)
			for _, x := range ts {
				t.Run(x.name, func(t *testing.T) {
					o, ok := x.ask(t, dr)
					if !ok {
						t.Skipf("%s cannot carry this request", x.name)
					}
					tr.count(file + " " + x.name)
					tr.e.check(t, c, decisionResponse{Allow: o.allow, Status: o.status, Reasons: o.reasons, Headers: o.headers})
				})
			}
		})
	}
}

func (tr *transports) count(key string) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.counts[key]++
}

// report logs how many cases each transport ran, and fails when a
// transport ran none.
func (tr *transports) report(t *testing.T) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	keys := slices.Sorted(maps.Keys(tr.counts))
	for _, k := range keys {
		t.Logf("%-32s %d cases", k, tr.counts[k])
	}
	for _, x := range tr.all() {
		if tr.counts[routeCases+" "+x.name] == 0 {
			t.Errorf("transport %s ran no case", x.name)
		}
	}
}

// identityOnly keeps the identity headers of h (any case), lower case.
func identityOnly(get func(string) string) map[string]string {
	out := map[string]string{}
	for _, name := range decision.IdentityHeaders() {
		if v := get(name); v != "" {
			out[name] = v
		}
	}
	return out
}

// forged are identity headers a client sends to pass as someone else.
var forged = map[string]string{
	"x-user-id": "mallory", "x-auth-kind": "admin", "x-auth-issuer": "https://evil.example/",
	"x-api-key-id": "forged", "x-customer-number": "1",
}

func (tr *transports) decision(t *testing.T, dr decisionRequest) (outcome, bool) {
	d := tr.e.decide(t, tr.tg.tollgate, dr)
	return outcome{allow: d.Allow, status: d.Status, reasons: d.Reasons, headers: d.Headers}, true
}

// forwardAuth asks /v1/forward-auth as NGINX does: the original request's
// headers, its method and raw URI in X-Original-*.
func (tr *transports) forwardAuth(t *testing.T, dr decisionRequest) (outcome, bool) {
	req, err := http.NewRequest(http.MethodGet, tr.tg.url+"/v1/forward-auth", nil)
	if err != nil {
		t.Fatal(err)
	}
	for name, vals := range dr.Headers {
		for _, v := range vals {
			req.Header.Add(name, v)
		}
	}
	req.Header.Set("X-Original-Method", dr.Method)
	req.Header.Set("X-Original-URI", dr.Path)
	req.Header.Set("X-Forwarded-Host", dr.Host)
	req.Header.Set("X-Forwarded-Proto", dr.Scheme)
	resp, body := tr.e.do(t, req)
	return httpOutcome(t, resp.StatusCode, resp.Header, body, identityOnly(resp.Header.Get)), true
}

// httpOutcome reads a forward-auth style answer: 200 is an allow with the
// given identity headers; any other status a deny whose JSON body holds
// the reasons, a 401 with a Bearer challenge.
func httpOutcome(t *testing.T, status int, h http.Header, body []byte, ids map[string]string) outcome {
	t.Helper()
	if status == http.StatusOK {
		return outcome{allow: true, status: status, reasons: []string{}, headers: ids}
	}
	if status == http.StatusUnauthorized && !strings.HasPrefix(h.Get("WWW-Authenticate"), "Bearer ") {
		t.Errorf("401 without a Bearer challenge: %q", h.Get("WWW-Authenticate"))
	}
	if h.Get("X-Decision-Id") == "" {
		t.Error("deny without X-Decision-Id")
	}
	var b struct {
		Reasons []string `json:"reasons"`
	}
	if err := json.Unmarshal(body, &b); err != nil {
		t.Errorf("deny body is not JSON: %v: %q", err, body)
	}
	return outcome{status: status, reasons: b.Reasons, headers: map[string]string{}}
}

// grpc asks as Envoy's ext_authz filter does: the raw target (with its
// query) in path and in ":path", lower-cased headers joined with "," in
// headers, or each value apart in header_map (encode_raw_headers), the
// pseudo-headers among them, and forged identity headers that the answer
// must remove.
func (tr *transports) grpc(t *testing.T, dr decisionRequest, headerMap bool) (outcome, bool) {
	all := map[string][]string{
		":authority": {dr.Host}, ":path": {dr.Path}, ":method": {dr.Method}, ":scheme": {dr.Scheme},
		"x-request-id": {"envoy-" + newTestID()}, "x-forwarded-proto": {dr.Scheme},
	}
	for name, vals := range dr.Headers {
		all[strings.ToLower(name)] = append(all[strings.ToLower(name)], vals...)
	}
	for name, v := range forged {
		all[name] = append(all[name], v)
	}
	h := &authv3.AttributeContext_HttpRequest{
		Id: "envoy-" + newTestID(), Method: dr.Method, Path: dr.Path, Host: dr.Host, Scheme: dr.Scheme, Protocol: "HTTP/1.1",
	}
	if headerMap {
		h.HeaderMap = &corev3.HeaderMap{}
		for _, name := range slices.Sorted(maps.Keys(all)) {
			for _, v := range all[name] {
				h.HeaderMap.Headers = append(h.HeaderMap.Headers, &corev3.HeaderValue{Key: name, RawValue: []byte(v)})
			}
		}
	} else {
		h.Headers = map[string]string{}
		for name, vals := range all {
			h.Headers[name] = strings.Join(vals, ",")
		}
	}
	req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source:      &authv3.AttributeContext_Peer{Address: sockAddr(dr.SourceIP, 51234)},
		Destination: &authv3.AttributeContext_Peer{Address: sockAddr("127.0.0.1", 8080)},
		Request:     &authv3.AttributeContext_Request{Time: timestamppb.Now(), Http: h},
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := tr.authz.Check(ctx, req)
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	b, _ := json.Marshal(resp)
	tr.e.record("gRPC Check "+dr.Method+" "+dr.Path, b)
	code := codes.Code(resp.GetStatus().GetCode())
	if ok := resp.GetOkResponse(); ok != nil {
		if code != codes.OK {
			t.Errorf("OkHttpResponse with status %v", code)
		}
		set := map[string]string{}
		for _, hv := range ok.GetHeaders() {
			set[strings.ToLower(hv.GetHeader().GetKey())] = hv.GetHeader().GetValue()
			if hv.GetAppendAction() != corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD {
				t.Errorf("header %s is not overwritten: %v", hv.GetHeader().GetKey(), hv.GetAppendAction())
			}
		}
		// Every forged identity header is overwritten or removed.
		for name := range forged {
			if _, isSet := set[name]; !isSet && !slices.Contains(ok.GetHeadersToRemove(), name) {
				t.Errorf("a client's %s reaches the upstream: neither set nor in headers_to_remove %q", name, ok.GetHeadersToRemove())
			}
		}
		if set["x-decision-id"] == "" {
			t.Error("allow without x-decision-id")
		}
		return outcome{allow: true, status: http.StatusOK, reasons: []string{}, headers: identityOnly(func(n string) string { return set[n] })}, true
	}
	denied := resp.GetDeniedResponse()
	if denied == nil {
		t.Fatalf("neither OkHttpResponse nor DeniedHttpResponse: %v", resp)
	}
	if code != codes.PermissionDenied && code != codes.Unavailable {
		t.Errorf("deny with gRPC status %v", code)
	}
	hdr := http.Header{}
	for _, hv := range denied.GetHeaders() {
		hdr.Add(hv.GetHeader().GetKey(), hv.GetHeader().GetValue())
	}
	o := httpOutcome(t, int(denied.GetStatus().GetCode()), hdr, []byte(denied.GetBody()), nil)
	return o, true
}

func sockAddr(ip string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}

// dataAPI posts body to /v1/data/path with OPA's own REST client and
// returns the result, checking OPA's response shape.
func (tr *transports) dataAPI(t *testing.T, path string, body map[string]any) json.RawMessage {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := tr.opa.WithJSON(body).Do(ctx, http.MethodPost, path)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	tr.e.recordResponse("POST "+path, resp, b)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST %s: HTTP %d: %s", path, resp.StatusCode, b)
	}
	var got struct {
		DecisionID string          `json:"decision_id"`
		Result     json.RawMessage `json:"result"`
	}
	if err := json.Unmarshal(b, &got); err != nil || got.DecisionID == "" || len(got.Result) == 0 {
		t.Fatalf("POST %s: not OPA's answer (%v): %s", path, err, b)
	}
	return got.Result
}

// splitTarget splits a target into its path and decoded query arguments
// in the form nginx's get_uri_args gives them (a string, or a list for a
// repeated name); ok is false when the query does not decode.
func splitTarget(target string) (path string, query map[string]any, ok bool) {
	if strings.Contains(target, "#") {
		return "", nil, false // a fragment never reaches a gateway
	}
	path, raw, _ := strings.Cut(target, "?")
	vals, err := url.ParseQuery(raw)
	if err != nil {
		return "", nil, false
	}
	query = map[string]any{}
	for name, vs := range vals {
		if len(vs) == 1 {
			query[name] = vs[0]
		} else {
			query[name] = vs
		}
	}
	return path, query, true
}

// ngxHeaders are the headers as nginx's get_headers gives them: lower-case
// names, a string, or a list for a repeated header; the Host header among
// them.
func ngxHeaders(dr decisionRequest) map[string]any {
	out := map[string]any{"host": dr.Host}
	for name, vals := range dr.Headers {
		name = strings.ToLower(name)
		if prev, ok := out[name]; ok {
			switch p := prev.(type) {
			case string:
				vals = append([]string{p}, vals...)
			case []string:
				vals = append(slices.Clone(p), vals...)
			}
		}
		if len(vals) == 1 {
			out[name] = vals[0]
		} else {
			out[name] = vals
		}
	}
	for name, v := range forged {
		out[name] = v
	}
	return out
}

// kongOutcome reads the object result of Kong's OPA plugin.
func kongOutcome(t *testing.T, res json.RawMessage, statusField, bodyField string) outcome {
	t.Helper()
	var r map[string]json.RawMessage
	if err := json.Unmarshal(res, &r); err != nil {
		t.Fatalf("result is not an object: %s", res)
	}
	var allow bool
	var status int
	var headers map[string]string
	if json.Unmarshal(r["allow"], &allow) != nil || json.Unmarshal(r[statusField], &status) != nil || json.Unmarshal(r["headers"], &headers) != nil {
		t.Fatalf("result lacks allow, %s or headers: %s", statusField, res)
	}
	h := http.Header{}
	for k, v := range headers {
		h.Set(k, v)
	}
	if allow {
		if h.Get("X-Decision-Id") == "" {
			t.Error("allow without x-decision-id for the upstream")
		}
		return outcome{allow: true, status: status, reasons: []string{}, headers: identityOnly(h.Get)}
	}
	return httpOutcome(t, status, h, r[bodyField], nil)
}

// kong posts the body Kong's OPA plugin posts (its handler's
// build_opa_input): the path without the query, the query decoded into
// querystring, nginx's headers, client_ip, and the consumer a Kong
// authentication plugin may have claimed.
func (tr *transports) kong(t *testing.T, dr decisionRequest) (outcome, bool) {
	path, query, ok := splitTarget(dr.Path)
	if !ok {
		return outcome{}, false
	}
	input := map[string]any{
		"request": map[string]any{"http": map[string]any{
			"host": dr.Host, "port": 8000, "tls": map[string]any{}, "method": dr.Method, "scheme": dr.Scheme,
			"path": path, "querystring": query, "headers": ngxHeaders(dr),
		}},
		"client_ip": dr.SourceIP,
		"consumer":  map[string]any{"id": "c0ffee", "username": "admin"},
	}
	res := tr.dataAPI(t, "v1/data/tollgate/kong", map[string]any{"input": input})
	return kongOutcome(t, res, "status", "message"), true
}

// apisix posts the body APISIX's opa plugin posts (its helper's
// build_opa_input): type, the request with nginx's decoded $uri as path
// and the decoded query, and var.
func (tr *transports) apisix(t *testing.T, dr decisionRequest) (outcome, bool) {
	rawPath, query, ok := splitTarget(dr.Path)
	if !ok {
		return outcome{}, false
	}
	path, err := url.PathUnescape(rawPath)
	if err != nil {
		return outcome{}, false
	}
	input := map[string]any{
		"type": "http",
		"request": map[string]any{
			"scheme": dr.Scheme, "method": dr.Method, "host": dr.Host, "port": 9080,
			"path": path, "headers": ngxHeaders(dr), "query": query,
		},
		"var": map[string]any{
			"server_addr": "127.0.0.1", "server_port": "9080", "remote_addr": dr.SourceIP,
			"remote_port": "51234", "timestamp": time.Now().Unix(),
		},
	}
	res := tr.dataAPI(t, "v1/data/tollgate/apisix", map[string]any{"input": input})
	return kongOutcome(t, res, "status_code", "reason"), true
}

// dataTollgate posts a /v1/decision body as the data API's input; the
// result is the decision.
func (tr *transports) dataTollgate(t *testing.T, dr decisionRequest) (outcome, bool) {
	var in map[string]any
	b, _ := json.Marshal(dr)
	if err := json.Unmarshal(b, &in); err != nil {
		t.Fatal(err)
	}
	res := tr.dataAPI(t, "v1/data/tollgate/authz/decision", map[string]any{"input": in})
	var d decisionResponse
	if err := json.Unmarshal(res, &d); err != nil {
		t.Fatalf("result is not a decision: %s", res)
	}
	return outcome{allow: d.Allow, status: d.Status, reasons: d.Reasons, headers: d.Headers}, true
}

// ---------------------------------------------------------------------------
// the gRPC health service and the data API's refusals

func testGRPCHealth(t *testing.T, tr *transports) {
	h := healthpb.NewHealthClient(tr.conn)
	for _, svc := range []string{"", "envoy.service.auth.v3.Authorization"} {
		resp, err := h.Check(context.Background(), &healthpb.HealthCheckRequest{Service: svc})
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health %q: %v %v, want SERVING", svc, resp.GetStatus(), err)
		}
	}
}

// testDataRefusals: an input the data API cannot read is a 400 with OPA's
// error body, never an allow, and quotes nothing it was sent.
func testDataRefusals(t *testing.T, tr *transports) {
	token := tr.e.mint("alice", map[string]any{"customer_number": "42", "scope": "customers:read"})
	for _, tc := range []struct {
		name, method, body string
	}{
		{"GET", http.MethodGet, ""},
		{"missing input", http.MethodPost, `{}`},
		{"a claimed identity instead of a request", http.MethodPost, `{"input": {"user": "alice", "token": "` + token + `"}}`},
		{"Kong shape without a path", http.MethodPost, `{"input": {"request": {"http": {"method": "GET", "headers": {"authorization": "Bearer ` + token + `"}}}}}`},
		{"APISIX stream", http.MethodPost, `{"input": {"type": "stream", "request": {"method": "GET", "path": "/customers/42"}}}`},
		{"an unknown member named by the token", http.MethodPost, `{"input": {"method": "GET", "path": "/customers/42", "` + token + `": 1}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, tr.tg.url+"/v1/data/tollgate/kong", strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			resp, body := tr.e.do(t, req)
			if resp.StatusCode != http.StatusBadRequest {
				t.Fatalf("HTTP %d, want 400: %s", resp.StatusCode, body)
			}
			var e types.ErrorV1
			if err := json.Unmarshal(body, &e); err != nil || e.Code != types.CodeInvalidParameter || e.Message == "" {
				t.Errorf("not OPA's error body (%v): %s", err, body)
			}
			if strings.Contains(string(body), "result") {
				t.Errorf("a refusal carries a result: %s", body)
			}
		})
	}
}

// ---------------------------------------------------------------------------
// helpers

// portOf is the port of a host:port address.
func portOf(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
