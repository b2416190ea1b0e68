// Package extauthz serves Envoy's external authorization API over gRPC
// (envoy.service.auth.v3.Authorization/Check), as Envoy, Istio and other
// Envoy-based meshes call it, and the standard gRPC health service.
//
// A CheckRequest is mapped faithfully to the request Tollgate judges:
// attributes.request.http.path is the raw target with its query (Envoy
// leaves query empty; when it is not, it is appended), headers come from
// header_map when Envoy sends it (encode_raw_headers) and from headers
// otherwise, HTTP/2 pseudo-headers (":authority", ":path", …) are not
// headers of the request, the host, scheme and method are Envoy's, and the
// source is attributes.source.address. The decision id is always Tollgate's
// own, never Envoy's x-request-id.
//
// JWT payloads Envoy's jwt_authn filter verified reach Tollgate in
// attributes.metadata_context.filter_metadata["envoy.filters.http.jwt_authn"]
// when the ext_authz filter lists that namespace in
// metadata_context_namespaces. The entries named in
// Options.JWTAuthnPayloads (the providers' payload_in_metadata) are handed
// on as request.Raw.Verified; whether they are used is the authenticators'
// call (an issuer must be configured to trust them, and the token must be
// in the request too). Nothing else in the metadata is read.
//
// Allow: status OK and an OkHttpResponse that sets the decision's headers on
// the upstream request (overwriting) and removes every identity header the
// client sent that the decision does not set, so a client can never forge
// one. Deny: PERMISSION_DENIED (UNAVAILABLE when Tollgate itself failed, a
// 5xx decision) and a DeniedHttpResponse with the decision's status,
// WWW-Authenticate on 401, x-decision-id and a small JSON body with the
// reasons. A Check never answers OK without an allow.
package extauthz

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/proto"

	"github.com/tollgate/tollgate/pdp/decision"
	"github.com/tollgate/tollgate/pdp/request"
)

// Decider is what the service needs from the PDP.
type Decider interface {
	Decide(ctx context.Context, raw request.Raw) decision.Decision
	Ready() bool
}

// refuser is implemented by a Decider that records requests refused
// before the pipeline runs (pdp.Decider.Refused), so that every refusal
// has its decision-log event and is counted.
type refuser interface {
	Refused(ctx context.Context, dec decision.Decision, transport, peer string)
}

// ReasonMalformedCheck: the CheckRequest has no HTTP request attributes.
const ReasonMalformedCheck = "malformed_check_request"

// Options configure the service. The zero value is safe.
type Options struct {
	// Realm is the realm of the WWW-Authenticate challenge; default "tollgate".
	Realm string
	// IdentityHeaders are removed from the upstream request unless the
	// decision sets them; default decision.IdentityHeaders().
	IdentityHeaders []string
	// JWTAuthnPayloads names the entries of the jwt_authn filter's
	// metadata (its providers' payload_in_metadata) to hand on to the
	// pipeline as verified JWT payloads; none by default, and the metadata
	// is not read at all.
	JWTAuthnPayloads []string
	Logger           *slog.Logger
}

// JWTAuthnNamespace is the dynamic metadata namespace of Envoy's jwt_authn
// filter.
const JWTAuthnNamespace = "envoy.filters.http.jwt_authn"

// MaxJWTAuthnPayloadBytes bounds one payload read from the metadata (its
// protobuf size); a larger one is left out, so the token is verified by
// Tollgate itself. Tokens are far smaller (oidcjwt.DefaultMaxTokenBytes).
const MaxJWTAuthnPayloadBytes = 64 << 10

// Server implements envoy.service.auth.v3.Authorization.
type Server struct {
	authv3.UnimplementedAuthorizationServer
	decider  Decider
	realm    string
	identity []string
	health   *health.Server
	log      *slog.Logger
	payloads []string // Options.JWTAuthnPayloads
}

var _ authv3.AuthorizationServer = (*Server)(nil)

// New returns the service; Register puts it on a gRPC server.
func New(d Decider, opts Options) *Server {
	if opts.Realm == "" {
		opts.Realm = "tollgate"
	}
	if opts.IdentityHeaders == nil {
		opts.IdentityHeaders = decision.IdentityHeaders()
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	ids := make([]string, len(opts.IdentityHeaders))
	for i, h := range opts.IdentityHeaders {
		ids[i] = strings.ToLower(h)
	}
	return &Server{decider: d, realm: opts.Realm, identity: ids, health: health.NewServer(), log: opts.Logger,
		payloads: slices.Clone(opts.JWTAuthnPayloads)}
}

// Register registers the authorization service and the gRPC health service
// (grpc.health.v1.Health) on g.
func (s *Server) Register(g *grpc.Server) {
	authv3.RegisterAuthorizationServer(g, s)
	healthpb.RegisterHealthServer(g, s.health)
	s.setHealth()
}

// WatchReadiness keeps the health service's status in step with the
// decider's readiness (SERVING only with an active policy), checking every
// interval until ctx ends.
func (s *Server) WatchReadiness(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		s.setHealth()
		select {
		case <-ctx.Done():
			s.health.Shutdown()
			return
		case <-t.C:
		}
	}
}

func (s *Server) setHealth() {
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if s.decider.Ready() {
		st = healthpb.HealthCheckResponse_SERVING
	}
	s.health.SetServingStatus("", st)
	s.health.SetServingStatus(authv3.Authorization_ServiceDesc.ServiceName, st)
}

// Check implements the Authorization service.
func (s *Server) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	httpReq := req.GetAttributes().GetRequest().GetHttp()
	if httpReq == nil || httpReq.GetMethod() == "" || httpReq.GetPath() == "" {
		dec := decision.Deny(http.StatusBadRequest, ReasonMalformedCheck)
		dec.ID = decision.NewID()
		if rf, ok := s.decider.(refuser); ok {
			rf.Refused(ctx, dec, "ext_authz", req.GetAttributes().GetSource().GetAddress().GetSocketAddress().GetAddress())
		}
		return s.denied(dec), nil
	}
	raw := original(req, httpReq)
	raw.Verified = s.verified(req)
	return s.respond(s.decider.Decide(ctx, raw)), nil
}

// verified reads the configured jwt_authn payloads from the metadata
// context; nil when there are none.
func (s *Server) verified(req *authv3.CheckRequest) *request.Verified {
	if len(s.payloads) == 0 {
		return nil
	}
	ns := req.GetAttributes().GetMetadataContext().GetFilterMetadata()[JWTAuthnNamespace]
	if ns == nil {
		return nil
	}
	var out map[string]map[string]any
	for _, name := range s.payloads {
		p := ns.GetFields()[name].GetStructValue()
		if p == nil || proto.Size(p) > MaxJWTAuthnPayloadBytes {
			continue
		}
		if out == nil {
			out = make(map[string]map[string]any, len(s.payloads))
		}
		out[name] = p.AsMap()
	}
	if out == nil {
		return nil
	}
	return &request.Verified{JWTPayloads: out}
}

// original is the request Envoy asks about.
func original(req *authv3.CheckRequest, h *authv3.AttributeContext_HttpRequest) request.Raw {
	target := h.GetPath()
	if q := h.GetQuery(); q != "" && !strings.Contains(target, "?") {
		target += "?" + q
	}
	return request.Raw{
		Method:   h.GetMethod(),
		Target:   target,
		Host:     h.GetHost(),
		Scheme:   h.GetScheme(),
		Headers:  headers(h),
		SourceIP: req.GetAttributes().GetSource().GetAddress().GetSocketAddress().GetAddress(),
	}
}

// headers collects the request's headers, from header_map when Envoy sends
// it, else from the headers map; pseudo-headers are left out.
func headers(h *authv3.AttributeContext_HttpRequest) map[string][]string {
	if hm := h.GetHeaderMap(); hm != nil {
		out := make(map[string][]string, len(hm.GetHeaders()))
		for _, hv := range hm.GetHeaders() {
			name := hv.GetKey()
			if strings.HasPrefix(name, ":") {
				continue
			}
			v := hv.GetValue()
			if raw := hv.GetRawValue(); len(raw) > 0 {
				v = string(raw)
			}
			out[name] = append(out[name], v)
		}
		return out
	}
	out := make(map[string][]string, len(h.GetHeaders()))
	for name, v := range h.GetHeaders() {
		if strings.HasPrefix(name, ":") {
			continue
		}
		out[name] = append(out[name], v)
	}
	return out
}

// respond puts the decision into Envoy's answer.
func (s *Server) respond(dec decision.Decision) *authv3.CheckResponse {
	if !dec.Allow {
		return s.denied(dec)
	}
	set := make([]*corev3.HeaderValueOption, 0, len(dec.Headers)+1)
	for name, v := range dec.Headers {
		set = append(set, overwrite(name, v))
	}
	set = append(set, overwrite("x-decision-id", dec.ID))
	var remove []string
	for _, name := range s.identity {
		if _, ok := dec.Headers[name]; !ok {
			remove = append(remove, name)
		}
	}
	return &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(codes.OK)},
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
			Headers:         set,
			HeadersToRemove: remove,
		}},
	}
}

func (s *Server) denied(dec decision.Decision) *authv3.CheckResponse {
	status, code := httpStatus(dec.Status), codes.PermissionDenied
	if status >= 500 {
		code = codes.Unavailable
	}
	hdrs := []*corev3.HeaderValueOption{
		overwrite("x-decision-id", dec.ID),
		overwrite("content-type", "application/json"),
		overwrite("cache-control", "no-store"),
	}
	if status == http.StatusUnauthorized {
		hdrs = append(hdrs, overwrite("www-authenticate", decision.Challenge(s.realm, dec.Reasons)))
	}
	body, _ := json.Marshal(struct {
		ID      string   `json:"decision_id"`
		Reasons []string `json:"reasons"`
	}{dec.ID, dec.Reasons})
	return &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(code), Message: http.StatusText(status)},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status:  &typev3.HttpStatus{Code: typev3.StatusCode(status)},
			Headers: hdrs,
			Body:    string(body) + "\n",
		}},
	}
}

// httpStatus is the decision's status if Envoy's HttpStatus can carry it
// (a defined, non-2xx code), else 403 for a client error and 500 otherwise.
func httpStatus(s int) int {
	if _, ok := typev3.StatusCode_name[int32(s)]; ok && s >= 400 {
		return s
	}
	if s >= 400 && s < 500 {
		return http.StatusForbidden
	}
	return http.StatusInternalServerError
}

func overwrite(name, value string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{
		Header:       &corev3.HeaderValue{Key: name, Value: value},
		AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
	}
}
