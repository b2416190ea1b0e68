package oidcjwt_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/pdp/authn"
	"github.com/tollgate/tollgate/pdp/authn/authntest"
	"github.com/tollgate/tollgate/pdp/authn/oidcjwt"
	"github.com/tollgate/tollgate/pdp/credential"
	"github.com/tollgate/tollgate/pdp/request"
)

func TestEnvoyTrustConfig(t *testing.T) {
	for _, tc := range []struct {
		name, key, requireType, want string
	}{
		{"with require_type", "jwt_payload", "at+jwt", "issuers[0].envoy_jwt_authn.payload_in_metadata: cannot be used with require_type"},
		{"surrounding spaces", " jwt_payload", "", "issuers[0].envoy_jwt_authn.payload_in_metadata: has surrounding spaces"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := oidcjwt.New(context.Background(), oidcjwt.Config{Issuers: []oidcjwt.IssuerConfig{{
				Issuer: "https://idp.example.com/", Audiences: []string{"a"}, RequireType: tc.requireType, TrustEnvoyPayloadInMetadata: tc.key,
			}}})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New: %v, want an error with %q", err, tc.want)
			}
		})
	}
	if err := oidcjwt.CheckEnvoyPayloadInMetadata("", "at+jwt"); err != nil {
		t.Errorf("trust off with require_type: %v", err)
	}
}

// envoyPayload is tok's payload as the ext_authz adapter hands it on: JSON
// decoded with numbers as float64, as Envoy's Struct holds them.
func envoyPayload(t *testing.T, tok string) map[string]any {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[1])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func vouched(tok, key string, payload map[string]any) credential.Credential {
	return credential.Credential{Type: credential.TypeBearer, Placement: credential.PlacementHeader, Name: "authorization",
		Secret: credential.NewSecret(tok), Verified: &request.Verified{JWTPayloads: map[string]map[string]any{key: payload}}}
}

func TestEnvoyJWTAuthn(t *testing.T) {
	ctx := context.Background()
	trusted, plain := authntest.NewIssuer(t), authntest.NewIssuer(t)
	a, err := oidcjwt.New(ctx, oidcjwt.Config{Issuers: []oidcjwt.IssuerConfig{
		{Issuer: trusted.URL(), Audiences: []string{authntest.Audience}, TrustEnvoyPayloadInMetadata: "p"},
		{Issuer: plain.URL(), Audiences: []string{authntest.Audience}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	envoy := a.EnvoyJWTAuthn()

	claims := trusted.Claims("alice")
	claims["scope"] = "a  b\tc"
	claims["roles"] = []any{"admin"}
	valid := trusted.Mint(claims)
	// The same claims, numbers spelt otherwise (1.7e9, 1700000000.0) and
	// members in another order: Envoy's Struct keeps neither.
	respelt := trusted.MintRaw(fmt.Appendf(nil, `{"roles":["admin"],"scope":"a  b\tc","sub":"alice","aud":%q,"exp":%de0,"iat":%d.0,"nbf":%d,"iss":%q}`,
		authntest.Audience, claims["exp"], claims["iat"], claims["nbf"], trusted.URL()))

	// Envoy's word identifies the caller exactly as Tollgate's own check.
	own, err := a.Authenticate(ctx, credential.Credential{Type: credential.TypeBearer, Secret: credential.NewSecret(valid)})
	if err != nil || own.Result != authn.Authenticated {
		t.Fatalf("Authenticate: %+v, %v", own, err)
	}
	got, err := envoy.Authenticate(ctx, vouched(valid, "p", envoyPayload(t, valid)))
	if err != nil || got.Result != authn.Authenticated {
		t.Fatalf("EnvoyJWTAuthn: %+v, %v", got, err)
	}
	if g, w := got.Identity, own.Identity; g.Subject != w.Subject || g.Issuer != w.Issuer || g.Kind != w.Kind ||
		!reflect.DeepEqual(g.Scopes, w.Scopes) || !reflect.DeepEqual(g.Roles, w.Roles) || !g.ExpiresAt.Equal(w.ExpiresAt) || g.ContentKey != w.ContentKey {
		t.Errorf("identity from Envoy's payload\n %+v\nfrom Tollgate's check\n %+v", g, w)
	}
	if got := envoyOutcome(t, envoy, vouched(respelt, "p", envoyPayload(t, valid))); got.Result != authn.Authenticated {
		t.Errorf("numbers spelt otherwise: %+v", got)
	}

	na := authn.Outcome{Result: authn.NotApplicable}
	for _, tc := range []struct {
		name string
		cred credential.Credential
		want authn.Outcome
	}{
		{"no metadata", credential.Credential{Type: credential.TypeBearer, Secret: credential.NewSecret(valid)}, na},
		{"empty metadata", credential.Credential{Type: credential.TypeBearer, Secret: credential.NewSecret(valid), Verified: &request.Verified{}}, na},
		{"an API key", func() credential.Credential {
			c := vouched(valid, "p", envoyPayload(t, valid))
			c.Type = credential.TypeAPIKey
			return c
		}(), na},
		{"another name", vouched(valid, "q", envoyPayload(t, valid)), na},
		{"issuer without trust", vouched(plain.Mint(plain.Claims("alice")), "p", envoyPayload(t, plain.Mint(plain.Claims("alice")))), na},
		{"malformed token", vouched("a.b", "p", envoyPayload(t, valid)), na},
		{"a payload for another token", vouched(valid, "p", envoyPayload(t, trusted.Mint(trusted.Claims("bob")))), authn.Reject(oidcjwt.ReasonEnvoyPayloadMismatch)},
		{"an empty payload", vouched(valid, "p", map[string]any{}), authn.Reject(oidcjwt.ReasonEnvoyPayloadMismatch)},
		{"a nil payload", vouched(valid, "p", nil), authn.Reject(oidcjwt.ReasonEnvoyPayloadMismatch)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := envoyOutcome(t, envoy, tc.cred); got.Result != tc.want.Result || got.Reason != tc.want.Reason {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func envoyOutcome(t *testing.T, a authn.Authenticator, cred credential.Credential) authn.Outcome {
	t.Helper()
	out, err := a.Authenticate(context.Background(), cred)
	if err != nil {
		t.Fatalf("Authenticate: %v", err)
	}
	return out
}
