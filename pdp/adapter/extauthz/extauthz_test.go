package extauthz_test

import (
	"context"
	"encoding/json"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/tollgate/tollgate/pdp/adapter/extauthz"
	"github.com/tollgate/tollgate/pdp/decision"
	"github.com/tollgate/tollgate/pdp/request"
)

// recorder answers with a fixed decision and records what it was asked.
type recorder struct {
	mu    sync.Mutex
	got   []request.Raw
	dec   decision.Decision
	ready bool
}

func (r *recorder) Decide(_ context.Context, raw request.Raw) decision.Decision {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, raw)
	d := r.dec
	d.ID = "dec-1"
	return d
}

func (r *recorder) Ready() bool { return r.ready }

func (r *recorder) last() request.Raw {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.got[len(r.got)-1]
}

// serve starts the service on a real loopback gRPC listener and returns a
// client built from Envoy's protos, as Envoy would call it.
func serve(t *testing.T, d extauthz.Decider) (authv3.AuthorizationClient, healthpb.HealthClient) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	extauthz.New(d, extauthz.Options{}).Register(g)
	go func() { _ = g.Serve(ln) }()
	t.Cleanup(g.Stop)
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return authv3.NewAuthorizationClient(conn), healthpb.NewHealthClient(conn)
}

func check(path string, headers map[string]string) *authv3.CheckRequest {
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: "203.0.113.7", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 50123}},
		}}},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Id: "envoy-request-id", Method: "GET", Path: path, Host: "api.example.com", Scheme: "https", Headers: headers,
		}},
	}}
}

func TestCheckMapsTheRequest(t *testing.T) {
	tests := []struct {
		name string
		req  *authv3.CheckRequest
		want request.Raw
	}{
		{
			name: "path with its query, lower-cased headers, pseudo-headers left out",
			req: check("/customers/42/orders?page=2", map[string]string{
				":authority": "api.example.com", ":path": "/admin", ":method": "DELETE",
				"authorization": "Bearer t", "x-request-id": "abc",
			}),
			want: request.Raw{Method: "GET", Target: "/customers/42/orders?page=2", Host: "api.example.com", Scheme: "https",
				Headers: map[string][]string{"authorization": {"Bearer t"}, "x-request-id": {"abc"}}, SourceIP: "203.0.113.7"},
		},
		{
			name: "a separate query is appended when the path has none",
			req: func() *authv3.CheckRequest {
				r := check("/products", nil)
				r.Attributes.Request.Http.Query = "api_key=k"
				return r
			}(),
			want: request.Raw{Method: "GET", Target: "/products?api_key=k", Host: "api.example.com", Scheme: "https",
				Headers: map[string][]string{}, SourceIP: "203.0.113.7"},
		},
		{
			name: "header_map wins over headers, repeated names kept, raw values read",
			req: func() *authv3.CheckRequest {
				r := check("/products", map[string]string{"authorization": "Bearer from-map"})
				r.Attributes.Request.Http.HeaderMap = &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
					{Key: ":path", Value: "/admin"},
					{Key: "authorization", RawValue: []byte("Bearer one")},
					{Key: "authorization", Value: "Bearer two"},
				}}
				return r
			}(),
			want: request.Raw{Method: "GET", Target: "/products", Host: "api.example.com", Scheme: "https",
				Headers: map[string][]string{"authorization": {"Bearer one", "Bearer two"}}, SourceIP: "203.0.113.7"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recorder{dec: decision.Decision{Allow: true, Status: 200}}
			client, _ := serve(t, rec)
			if _, err := client.Check(context.Background(), tt.req); err != nil {
				t.Fatal(err)
			}
			got := rec.last()
			if got.ID != "" {
				t.Errorf("decision id taken from the request: %q", got.ID)
			}
			if got.Method != tt.want.Method || got.Target != tt.want.Target || got.Host != tt.want.Host ||
				got.Scheme != tt.want.Scheme || got.SourceIP != tt.want.SourceIP || !sameHeaders(got.Headers, tt.want.Headers) {
				t.Errorf("judged\n %+v\nwant\n %+v", got, tt.want)
			}
		})
	}
}

func sameHeaders(a, b map[string][]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !slices.Equal(v, b[k]) {
			return false
		}
	}
	return true
}

func TestCheckAnswers(t *testing.T) {
	tests := []struct {
		name        string
		dec         decision.Decision
		wantCode    codes.Code
		wantStatus  int32
		wantHeaders map[string]string // on the upstream request (allow) or the denial
		wantRemoved []string
		wantBody    string
	}{
		{
			name:        "allow sets the identity headers and removes the others",
			dec:         decision.Decision{Allow: true, Status: 200, Headers: map[string]string{"x-user-id": "alice", "x-auth-kind": "user"}},
			wantCode:    codes.OK,
			wantHeaders: map[string]string{"x-user-id": "alice", "x-auth-kind": "user", "x-decision-id": "dec-1"},
			wantRemoved: []string{"x-auth-issuer", "x-api-key-id", "x-customer-number"},
		},
		{
			name:        "401 carries the challenge",
			dec:         decision.Deny(401, "credential_invalid", "expired"),
			wantCode:    codes.PermissionDenied,
			wantStatus:  401,
			wantHeaders: map[string]string{"www-authenticate": `Bearer realm="tollgate", error="invalid_token"`, "x-decision-id": "dec-1"},
			wantBody:    `{"decision_id":"dec-1","reasons":["credential_invalid","expired"]}`,
		},
		{
			name:        "403",
			dec:         decision.Deny(403, "api_key_not_allowed_for_sensitive_route"),
			wantCode:    codes.PermissionDenied,
			wantStatus:  403,
			wantHeaders: map[string]string{"x-decision-id": "dec-1", "content-type": "application/json"},
			wantBody:    `{"decision_id":"dec-1","reasons":["api_key_not_allowed_for_sensitive_route"]}`,
		},
		{
			name:       "a policy error is UNAVAILABLE, never OK",
			dec:        decision.Deny(500, decision.ReasonPolicyError),
			wantCode:   codes.Unavailable,
			wantStatus: 500,
		},
		{
			name:       "a status Envoy cannot carry becomes 403",
			dec:        decision.Deny(499, "odd"),
			wantCode:   codes.PermissionDenied,
			wantStatus: 403,
		},
		{
			name:       "a deny with a 2xx status is still a denial",
			dec:        decision.Decision{Allow: false, Status: 200, Reasons: []string{"odd"}},
			wantCode:   codes.Unavailable,
			wantStatus: 500,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client, _ := serve(t, &recorder{dec: tt.dec})
			resp, err := client.Check(context.Background(), check("/x", map[string]string{"x-auth-kind": "forged"}))
			if err != nil {
				t.Fatal(err)
			}
			if got := codes.Code(resp.GetStatus().GetCode()); got != tt.wantCode {
				t.Fatalf("status code %v, want %v", got, tt.wantCode)
			}
			var hdrs []*corev3.HeaderValueOption
			if tt.wantCode == codes.OK {
				ok := resp.GetOkResponse()
				if ok == nil || resp.GetDeniedResponse() != nil {
					t.Fatalf("allow without an OkHttpResponse: %v", resp)
				}
				hdrs = ok.GetHeaders()
				if !slices.Equal(sorted(ok.GetHeadersToRemove()), sorted(tt.wantRemoved)) {
					t.Errorf("headers_to_remove %v, want %v", ok.GetHeadersToRemove(), tt.wantRemoved)
				}
			} else {
				den := resp.GetDeniedResponse()
				if den == nil || resp.GetOkResponse() != nil {
					t.Fatalf("deny without a DeniedHttpResponse: %v", resp)
				}
				if got := int32(den.GetStatus().GetCode()); got != tt.wantStatus {
					t.Errorf("HTTP status %d, want %d", got, tt.wantStatus)
				}
				if tt.wantBody != "" && strings.TrimSpace(den.GetBody()) != tt.wantBody {
					t.Errorf("body %q, want %q", den.GetBody(), tt.wantBody)
				}
				if !json.Valid([]byte(den.GetBody())) {
					t.Errorf("body is not JSON: %q", den.GetBody())
				}
				hdrs = den.GetHeaders()
			}
			got := map[string]string{}
			for _, h := range hdrs {
				if h.GetAppendAction() != corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD {
					t.Errorf("header %s is appended, not overwritten", h.GetHeader().GetKey())
				}
				got[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
			}
			for k, v := range tt.wantHeaders {
				if got[k] != v {
					t.Errorf("header %s = %q, want %q (all: %v)", k, got[k], v, got)
				}
			}
		})
	}
}

func TestMalformedCheckIsDenied(t *testing.T) {
	for name, req := range map[string]*authv3.CheckRequest{
		"empty":          {},
		"no http":        {Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{}}},
		"no method":      {Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Path: "/public/x"}}}},
		"no path":        {Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Method: "GET"}}}},
		"absolute empty": check("", nil),
	} {
		t.Run(name, func(t *testing.T) {
			rec := &recorder{dec: decision.Decision{Allow: true, Status: 200}}
			client, _ := serve(t, rec)
			resp, err := client.Check(context.Background(), req)
			if err != nil {
				t.Fatal(err)
			}
			if codes.Code(resp.GetStatus().GetCode()) == codes.OK || resp.GetDeniedResponse().GetStatus().GetCode() != 400 {
				t.Errorf("malformed CheckRequest answered %v", resp)
			}
			if len(rec.got) != 0 {
				t.Errorf("the decider was asked about a malformed request")
			}
		})
	}
}

func TestHealth(t *testing.T) {
	for _, tt := range []struct {
		ready bool
		want  healthpb.HealthCheckResponse_ServingStatus
	}{{true, healthpb.HealthCheckResponse_SERVING}, {false, healthpb.HealthCheckResponse_NOT_SERVING}} {
		_, health := serve(t, &recorder{ready: tt.ready})
		for _, svc := range []string{"", "envoy.service.auth.v3.Authorization"} {
			resp, err := health.Check(context.Background(), &healthpb.HealthCheckRequest{Service: svc})
			if err != nil {
				t.Fatal(err)
			}
			if resp.GetStatus() != tt.want {
				t.Errorf("ready=%v service %q: %v, want %v", tt.ready, svc, resp.GetStatus(), tt.want)
			}
		}
	}
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}
