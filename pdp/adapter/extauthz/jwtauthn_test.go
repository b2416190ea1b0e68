package extauthz_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/tollgate/tollgate/bundles"
	"github.com/tollgate/tollgate/pdp"
	"github.com/tollgate/tollgate/pdp/adapter/extauthz"
	"github.com/tollgate/tollgate/pdp/authn"
	"github.com/tollgate/tollgate/pdp/authn/authntest"
	"github.com/tollgate/tollgate/pdp/authn/oidcjwt"
	"github.com/tollgate/tollgate/pdp/authn/tokencache"
	"github.com/tollgate/tollgate/pdp/decision"
	"github.com/tollgate/tollgate/pdp/policy"
	"github.com/tollgate/tollgate/pdp/request"
	"github.com/tollgate/tollgate/pdp/server"
)

const payloadKey = "jwt_payload"

// jwtAuthnRig is the real pipeline behind the real gRPC service: the
// embedded policy, the JWT verifier with three issuers and the token
// cache, as serve wires them.
type jwtAuthnRig struct {
	trusted *authntest.Issuer // trusts jwt_authn payloads under payloadKey, RS256 only
	down    *authntest.Issuer // trusts them too; its JWKS answers 500
	plain   *authntest.Issuer // does not trust them
	client  authv3.AuthorizationClient
	decider *pdp.Decider
}

func newJWTAuthnRig(t *testing.T) *jwtAuthnRig {
	t.Helper()
	ctx := context.Background()
	r := &jwtAuthnRig{trusted: authntest.NewIssuer(t), down: authntest.NewIssuer(t), plain: authntest.NewIssuer(t)}
	r.down.SetJWKSResponse(http.StatusInternalServerError, []byte("down"))
	jwts, err := oidcjwt.New(ctx, oidcjwt.Config{Issuers: []oidcjwt.IssuerConfig{
		{Issuer: r.trusted.URL(), Audiences: []string{authntest.Audience}, Algorithms: []string{"RS256"}, TrustEnvoyPayloadInMetadata: payloadKey},
		{Issuer: r.down.URL(), Audiences: []string{authntest.Audience}, TrustEnvoyPayloadInMetadata: payloadKey},
		{Issuer: r.plain.URL(), Audiences: []string{authntest.Audience}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(jwts.Close)
	cache, err := tokencache.New(jwts, tokencache.Config{ClockSkew: oidcjwt.DefaultClockSkew})
	if err != nil {
		t.Fatal(err)
	}
	b, err := bundles.Load(ctx, "embedded")
	if err != nil {
		t.Fatal(err)
	}
	engine := policy.NewEngine(policy.Options{})
	if err := engine.Activate(ctx, b); err != nil {
		t.Fatal(err)
	}
	r.decider, err = pdp.New(pdp.Config{
		Engine:          engine,
		Authenticators:  []authn.Authenticator{jwts.EnvoyJWTAuthn(), cache},
		DecisionTimeout: 5 * time.Second, // the down issuer's refusals are not timing-bound
	})
	if err != nil {
		t.Fatal(err)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	extauthz.New(r.decider, extauthz.Options{JWTAuthnPayloads: []string{payloadKey}}).Register(g)
	go func() { _ = g.Serve(ln) }()
	t.Cleanup(g.Stop)
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	r.client = authv3.NewAuthorizationClient(conn)
	return r
}

// customer is claims that open GET /customers/42/** on the embedded policy.
func customer(is *authntest.Issuer) map[string]any {
	c := is.Claims("alice")
	c["scope"] = "customers:read"
	c["customer_number"] = "42"
	return c
}

func with(c map[string]any, kv ...any) map[string]any {
	out := make(map[string]any, len(c))
	for k, v := range c {
		out[k] = v
	}
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == nil {
			delete(out, kv[i].(string))
			continue
		}
		out[kv[i].(string)] = kv[i+1]
	}
	return out
}

// payloadOf is the token's payload as Envoy's jwt_authn filter stores it
// with payload_in_metadata: the JSON payload converted to a Struct.
func payloadOf(t *testing.T, tok string) *structpb.Struct {
	t.Helper()
	seg := strings.Split(tok, ".")[1]
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	s, err := structpb.NewStruct(m)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// garble keeps tok's header and payload and puts the signature of other
// (same key and algorithm, so the same length) on them: a token whose
// signature does not verify.
func garble(tok, other string) string {
	i, j := strings.LastIndexByte(tok, '.'), strings.LastIndexByte(other, '.')
	return tok[:i] + other[j:]
}

// jwtAuthnCheck is the CheckRequest Envoy sends after jwt_authn, with the
// ext_authz filter's metadata_context_namespaces naming jwt_authn's
// namespace. A nil entry leaves the metadata out.
func jwtAuthnCheck(target string, hdrs map[string]string, entries map[string]*structpb.Struct) *authv3.CheckRequest {
	req := check(target, hdrs)
	if entries != nil {
		fields := map[string]*structpb.Value{}
		for k, v := range entries {
			fields[k] = structpb.NewStructValue(v)
		}
		req.Attributes.MetadataContext = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
			extauthz.JWTAuthnNamespace: {Fields: fields},
		}}
	}
	return req
}

func bearer(tok string) map[string]string { return map[string]string{"authorization": "Bearer " + tok} }

// verdict is what Envoy makes of a CheckResponse.
type verdict struct {
	allow   bool
	status  int32
	reasons []string
	user    string
}

func ask(t *testing.T, c authv3.AuthorizationClient, req *authv3.CheckRequest) verdict {
	t.Helper()
	resp, err := c.Check(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if codes.Code(resp.GetStatus().GetCode()) == codes.OK {
		v := verdict{allow: true, status: 200}
		for _, h := range resp.GetOkResponse().GetHeaders() {
			if h.GetHeader().GetKey() == "x-user-id" {
				v.user = h.GetHeader().GetValue()
			}
		}
		return v
	}
	var body struct {
		Reasons []string `json:"reasons"`
	}
	if err := json.Unmarshal([]byte(resp.GetDeniedResponse().GetBody()), &body); err != nil {
		t.Fatalf("denial body: %v", err)
	}
	return verdict{status: int32(resp.GetDeniedResponse().GetStatus().GetCode()), reasons: body.Reasons}
}

func TestJWTAuthnMetadata(t *testing.T) {
	r := newJWTAuthnRig(t)
	const path = "/customers/42/orders"
	tr, dn, pl := r.trusted, r.down, r.plain
	now := time.Now().Unix()

	valid := tr.Mint(customer(tr))
	forged := garble(tr.Mint(customer(tr)), tr.Mint(with(customer(tr), "sub", "mallory"))) // signature of another token
	downTok := dn.Mint(customer(dn))
	plainForged := garble(pl.Mint(customer(pl)), pl.Mint(with(customer(pl), "sub", "mallory")))
	sameSig := tr.Mint(customer(tr))

	// Tokens whose claims are wrong, each sent with a garbled signature and
	// a matching payload: only the claim checks can refuse them.
	bad := func(kv ...any) string {
		return garble(tr.Mint(with(customer(tr), kv...)), sameSig)
	}
	meta := func(tok string) map[string]*structpb.Struct {
		return map[string]*structpb.Struct{payloadKey: payloadOf(t, tok)}
	}
	allow := verdict{allow: true, status: 200, user: "alice"}
	deny := func(status int32, reasons ...string) verdict { return verdict{status: status, reasons: reasons} }
	invalid := func(reason string) verdict { return deny(401, "credential_invalid", reason) }

	tests := []struct {
		name string
		req  *authv3.CheckRequest
		want verdict
	}{
		// Trusted: Envoy's signature check stands in for Tollgate's.
		{"trusted, valid token", jwtAuthnCheck(path, bearer(valid), meta(valid)), allow},
		{"trusted, signature garbled, payload matches", jwtAuthnCheck(path, bearer(forged), meta(forged)), allow},
		{"trusted, issuer's JWKS unreachable", jwtAuthnCheck(path, bearer(downTok), meta(downTok)), allow},
		{"trusted, in a header_map", func() *authv3.CheckRequest {
			req := jwtAuthnCheck(path, nil, meta(forged))
			req.Attributes.Request.Http.HeaderMap = &corev3.HeaderMap{Headers: []*corev3.HeaderValue{{Key: "authorization", Value: "Bearer " + forged}}}
			return req
		}(), allow},

		// Without metadata, or metadata Tollgate does not trust: Tollgate verifies.
		{"no metadata, signature garbled", jwtAuthnCheck(path, bearer(forged), nil), invalid(authn.ReasonBadSignature)},
		// (The policy picks the status of an unavailable verifier: 401 or 503.)
		{"no metadata, JWKS unreachable", jwtAuthnCheck(path, bearer(downTok), nil), verdict{reasons: []string{"credential_invalid", authn.ReasonUnavailable}}},
		{"issuer not configured to trust it", jwtAuthnCheck(path, bearer(plainForged), meta(plainForged)), invalid(authn.ReasonBadSignature)},
		{"payload under a name no issuer trusts", jwtAuthnCheck(path, bearer(forged), map[string]*structpb.Struct{"other_payload": payloadOf(t, forged)}), invalid(authn.ReasonBadSignature)},
		{"payload in another namespace", func() *authv3.CheckRequest {
			req := jwtAuthnCheck(path, bearer(forged), meta(forged))
			md := req.Attributes.MetadataContext.FilterMetadata
			md["envoy.filters.http.lua"] = md[extauthz.JWTAuthnNamespace]
			delete(md, extauthz.JWTAuthnNamespace)
			return req
		}(), invalid(authn.ReasonBadSignature)},
		{"payload is not a struct", func() *authv3.CheckRequest {
			req := jwtAuthnCheck(path, bearer(forged), map[string]*structpb.Struct{})
			req.Attributes.MetadataContext.FilterMetadata[extauthz.JWTAuthnNamespace].Fields[payloadKey] = structpb.NewStringValue(forged)
			return req
		}(), invalid(authn.ReasonBadSignature)},

		// The claims are still checked, with the usual reasons.
		{"expired", jwtAuthnCheck(path, bearer(bad("exp", now-3600)), meta(bad("exp", now-3600))), invalid(authn.ReasonExpired)},
		{"no exp", jwtAuthnCheck(path, bearer(bad("exp", nil)), meta(bad("exp", nil))), invalid(authn.ReasonMissingExpiry)},
		{"nbf in the future", jwtAuthnCheck(path, bearer(bad("nbf", now+3600)), meta(bad("nbf", now+3600))), invalid(authn.ReasonNotYetValid)},
		{"iat in the future", jwtAuthnCheck(path, bearer(bad("iat", now+3600)), meta(bad("iat", now+3600))), invalid(authn.ReasonNotYetValid)},
		{"wrong audience", jwtAuthnCheck(path, bearer(bad("aud", "other-api")), meta(bad("aud", "other-api"))), invalid(authn.ReasonAudience)},
		{"audience list without ours", jwtAuthnCheck(path, bearer(bad("aud", []any{"a", "b"})), meta(bad("aud", []any{"a", "b"}))), invalid(authn.ReasonAudience)},
		{"unknown issuer", jwtAuthnCheck(path, bearer(bad("iss", "https://evil.example")), meta(bad("iss", "https://evil.example"))), invalid(authn.ReasonUnknownIssuer)},
		{"issuer with a trailing slash", jwtAuthnCheck(path, bearer(bad("iss", tr.URL()+"/")), meta(bad("iss", tr.URL()+"/"))), invalid(authn.ReasonUnknownIssuer)},
		{"no sub", jwtAuthnCheck(path, bearer(bad("sub", nil)), meta(bad("sub", nil))), invalid(authn.ReasonInvalid)},
		{"algorithm not on the issuer's list", func() *authv3.CheckRequest {
			tok := tr.Mint(customer(tr), authntest.WithAlg("ES256"))
			return jwtAuthnCheck(path, bearer(tok), meta(tok))
		}(), invalid(authn.ReasonAlgorithm)},
		{"scope split on spaces only", func() *authv3.CheckRequest {
			tok := bad("scope", "openid\u00a0customers:read")
			return jwtAuthnCheck(path, bearer(tok), meta(tok))
		}(), deny(403, "insufficient_scope")},

		// The token must be in the request, and be the one Envoy verified.
		{"metadata without a token", jwtAuthnCheck(path, nil, meta(valid)), deny(401, "credential_missing")},
		{"metadata with an API key", jwtAuthnCheck(path, map[string]string{"x-api-key": "tg_x"}, meta(valid)), deny(403, "api_key_not_allowed_for_sensitive_route")},
		{"another subject's payload", jwtAuthnCheck(path, bearer(forged), meta(tr.Mint(with(customer(tr), "sub", "bob")))), invalid(oidcjwt.ReasonEnvoyPayloadMismatch)},
		{"payload with an extra role", jwtAuthnCheck(path, bearer(forged), meta(tr.Mint(with(customer(tr), "roles", []any{"admin"})))), invalid(oidcjwt.ReasonEnvoyPayloadMismatch)},
		{"payload with a claim left out", jwtAuthnCheck(path, bearer(forged), meta(tr.Mint(with(customer(tr), "customer_number", nil)))), invalid(oidcjwt.ReasonEnvoyPayloadMismatch)},
		{"exp as a string", func() *authv3.CheckRequest {
			m := payloadOf(t, forged)
			m.Fields["exp"] = structpb.NewStringValue(m.Fields["exp"].String())
			return jwtAuthnCheck(path, bearer(forged), map[string]*structpb.Struct{payloadKey: m})
		}(), invalid(oidcjwt.ReasonEnvoyPayloadMismatch)},
		{"scope normalized to a list (normalize_payload_in_metadata)", func() *authv3.CheckRequest {
			m := payloadOf(t, forged)
			m.Fields["scope"] = structpb.NewListValue(&structpb.ListValue{Values: []*structpb.Value{structpb.NewStringValue("customers:read")}})
			return jwtAuthnCheck(path, bearer(forged), map[string]*structpb.Struct{payloadKey: m})
		}(), invalid(oidcjwt.ReasonEnvoyPayloadMismatch)},
		{"garbled token, valid token's payload for another customer", jwtAuthnCheck("/customers/7/orders", bearer(forged),
			meta(tr.Mint(with(customer(tr), "customer_number", "7")))), invalid(oidcjwt.ReasonEnvoyPayloadMismatch)},

		// Where the token sits is the request's, not the metadata's.
		{"token in the query on a sensitive route", jwtAuthnCheck(path+"?access_token="+valid, nil, meta(valid)), deny(403, "credential_in_query")},
		{"token in the session cookie", jwtAuthnCheck(path, map[string]string{"cookie": "session=" + forged}, meta(forged)), allow},
		{"two tokens, one in the query", jwtAuthnCheck(path+"?access_token="+valid, bearer(valid), meta(valid)), deny(403, "credential_in_query")},
		{"two tokens", jwtAuthnCheck(path, map[string]string{"authorization": "Bearer " + valid, "cookie": "session=" + valid}, meta(valid)), invalid("multiple_credentials")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ask(t, r.client, tt.req)
			sameStatus := got.status == tt.want.status || (tt.want.status == 0 && !got.allow && got.status >= 400)
			if got.allow != tt.want.allow || !sameStatus || !slices.Equal(got.reasons, tt.want.reasons) || got.user != tt.want.user {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

// TestJWTAuthnNotCached: a token accepted on Envoy's word is not remembered
// as verified: without the metadata it is verified again, and refused.
func TestJWTAuthnNotCached(t *testing.T) {
	r := newJWTAuthnRig(t)
	tr := r.trusted
	forged := garble(tr.Mint(customer(tr)), tr.Mint(with(customer(tr), "sub", "mallory")))
	meta := map[string]*structpb.Struct{payloadKey: payloadOf(t, forged)}
	for range 3 {
		if got := ask(t, r.client, jwtAuthnCheck("/customers/42", bearer(forged), meta)); !got.allow {
			t.Fatalf("with the metadata: %+v", got)
		}
	}
	got := ask(t, r.client, jwtAuthnCheck("/customers/42", bearer(forged), nil))
	if got.allow || !slices.Equal(got.reasons, []string{"credential_invalid", authn.ReasonBadSignature}) {
		t.Errorf("without the metadata after three allows: %+v", got)
	}
}

// TestJWTAuthnMetadataNotOverHTTP: the HTTP endpoints have no way to carry
// a verified payload, whatever the body says; the same garbled token the
// gRPC service accepts with Envoy's metadata is refused there.
func TestJWTAuthnMetadataNotOverHTTP(t *testing.T) {
	r := newJWTAuthnRig(t)
	tr := r.trusted
	forged := garble(tr.Mint(customer(tr)), tr.Mint(with(customer(tr), "sub", "mallory")))
	payload := payloadOf(t, forged).AsMap()
	srv := httptest.NewServer(server.Handler(r.decider, server.Options{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}}))
	t.Cleanup(srv.Close)

	smuggled := map[string]any{
		"verified":         map[string]any{"jwt_payloads": map[string]any{payloadKey: payload}},
		"Verified":         map[string]any{"JWTPayloads": map[string]any{payloadKey: payload}},
		"metadata_context": map[string]any{"filter_metadata": map[string]any{extauthz.JWTAuthnNamespace: map[string]any{payloadKey: payload}}},
	}
	body := func(shape string) []byte {
		in := map[string]any{"method": "GET", "path": "/customers/42", "headers": map[string]any{"authorization": "Bearer " + forged}}
		for k, v := range smuggled {
			in[k] = v
		}
		var v any = in
		if shape == "data" {
			v = map[string]any{"input": in}
		}
		b, _ := json.Marshal(v)
		return b
	}
	for _, tt := range []struct{ name, url string }{
		{"/v1/decision", srv.URL + "/v1/decision"},
		{"/v1/data", srv.URL + "/v1/data/tollgate/authz/decision"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			shape := "decision"
			if strings.Contains(tt.url, "/v1/data") {
				shape = "data"
			}
			resp, err := http.Post(tt.url, "application/json", bytes.NewReader(body(shape)))
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK && (bytes.Contains(b, []byte(`"allow":true`)) || !bytes.Contains(b, []byte(authn.ReasonBadSignature))) {
				t.Errorf("%s answered %d %s", tt.url, resp.StatusCode, b)
			}
			if resp.StatusCode != http.StatusOK && resp.StatusCode < 400 {
				t.Errorf("%s answered %d %s", tt.url, resp.StatusCode, b)
			}
		})
	}
	// Forward auth: every header a client could send is the request's.
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/v1/forward-auth/customers/42", nil)
	req.Header.Set("Authorization", "Bearer "+forged)
	b, _ := json.Marshal(payload)
	for _, h := range []string{"X-Envoy-Jwt-Authn", "X-Jwt-Payload", "X-Verified"} {
		req.Header.Set(h, string(b))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("forward-auth with smuggled headers answered %d, want 401", resp.StatusCode)
	}
	// And the same token over gRPC with Envoy's metadata is allowed, so the
	// refusals above are the transport's doing.
	if got := ask(t, r.client, jwtAuthnCheck("/customers/42", bearer(forged), map[string]*structpb.Struct{payloadKey: payloadOf(t, forged)})); !got.allow {
		t.Errorf("over gRPC with the metadata: %+v", got)
	}
}

// TestJWTAuthnPayloadsHandedOn: which metadata entries reach the pipeline.
func TestJWTAuthnPayloadsHandedOn(t *testing.T) {
	p := &structpb.Struct{Fields: map[string]*structpb.Value{"iss": structpb.NewStringValue("https://idp"), "exp": structpb.NewNumberValue(1501281058)}}
	big := &structpb.Struct{Fields: map[string]*structpb.Value{"x": structpb.NewStringValue(strings.Repeat("a", extauthz.MaxJWTAuthnPayloadBytes))}}
	tests := []struct {
		name    string
		names   []string
		entries map[string]*structpb.Value
		want    map[string]map[string]any // nil: no Verified
	}{
		{"not configured: metadata ignored", nil, map[string]*structpb.Value{payloadKey: structpb.NewStructValue(p)}, nil},
		{"configured name", []string{payloadKey}, map[string]*structpb.Value{payloadKey: structpb.NewStructValue(p), "other": structpb.NewStructValue(p)},
			map[string]map[string]any{payloadKey: {"iss": "https://idp", "exp": float64(1501281058)}}},
		{"configured name absent", []string{payloadKey}, map[string]*structpb.Value{"other": structpb.NewStructValue(p)}, nil},
		{"not a struct", []string{payloadKey}, map[string]*structpb.Value{payloadKey: structpb.NewStringValue("eyJ...")}, nil},
		{"too large", []string{payloadKey}, map[string]*structpb.Value{payloadKey: structpb.NewStructValue(big)}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recorder{dec: decision.Decision{Allow: true, Status: 200}}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			g := grpc.NewServer()
			extauthz.New(rec, extauthz.Options{JWTAuthnPayloads: tt.names}).Register(g)
			go func() { _ = g.Serve(ln) }()
			t.Cleanup(g.Stop)
			conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = conn.Close() })
			req := check("/x", nil)
			req.Attributes.MetadataContext = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
				extauthz.JWTAuthnNamespace: {Fields: tt.entries},
			}}
			if _, err := authv3.NewAuthorizationClient(conn).Check(context.Background(), req); err != nil {
				t.Fatal(err)
			}
			got := rec.last().Verified
			switch {
			case tt.want == nil && got != nil:
				t.Errorf("handed on %+v, want nothing", got)
			case tt.want != nil && (got == nil || !equalJSON(got.JWTPayloads, tt.want)):
				t.Errorf("handed on %+v, want %+v", got, tt.want)
			}
		})
	}
	var raw request.Raw
	if err := json.Unmarshal([]byte(`{"Verified":{"JWTPayloads":{"jwt_payload":{"sub":"x"}}}}`), &raw); err != nil || raw.Verified != nil {
		t.Errorf("request.Raw decodes a Verified from JSON: %+v, %v", raw.Verified, err)
	}
}

func equalJSON(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}
