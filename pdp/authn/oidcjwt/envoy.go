package oidcjwt

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"strings"

	"github.com/tollgate/tollgate/pdp/authn"
	"github.com/tollgate/tollgate/pdp/credential"
)

// ReasonEnvoyPayloadMismatch: the payload Envoy's jwt_authn filter says it
// verified is not the payload of the token the request carries.
const ReasonEnvoyPayloadMismatch = "jwt_authn_payload_mismatch"

// CheckEnvoyPayloadInMetadata reports whether name is an acceptable
// IssuerConfig.TrustEnvoyPayloadInMetadata for an issuer with the given
// RequireType. Empty is (trust is off).
func CheckEnvoyPayloadInMetadata(name, requireType string) error {
	switch {
	case name == "":
		return nil
	case strings.TrimSpace(name) != name:
		return errors.New("has surrounding spaces")
	case requireType != "":
		return errors.New("cannot be used with require_type: Envoy's payload metadata does not carry the typ header")
	}
	return nil
}

// EnvoyJWTAuthn returns the authenticator for bearer tokens that Envoy's
// jwt_authn filter has already verified. Put it in the chain before a (and
// before any cache of a): it answers NotApplicable unless all of these
// hold, so the token goes on to a's own verification:
//
//   - the credential is a bearer token that passes the cheap checks
//     (compact form, size, no duplicate claims);
//   - its iss is a configured issuer with TrustEnvoyPayloadInMetadata;
//   - the credential carries a payload (credential.Credential.Verified,
//     set only by the gRPC ext_authz adapter) under that issuer's name.
//
// Then the payload segment of the token in the request must equal the
// payload Envoy verified (as a JSON value: Envoy's protobuf Struct keeps
// neither member order nor number spelling), else the token is Rejected
// with ReasonEnvoyPayloadMismatch; the header's alg must be on the
// issuer's allow-list; and every claim check of Authenticate runs on it
// (iss exact, exp required, exp, nbf and iat with the clock skew, the
// audiences, sub), building the identity Authenticate would. Only the
// signature check is Envoy's.
//
// Outcomes are never cached by a tokencache placed after it, so a token
// accepted this way is verified again where no Envoy vouches for it.
func (a *Authenticator) EnvoyJWTAuthn() authn.Authenticator { return envoyAuthn{a} }

type envoyAuthn struct{ a *Authenticator }

var _ authn.Authenticator = envoyAuthn{}

func (e envoyAuthn) Authenticate(ctx context.Context, cred credential.Credential) (authn.Outcome, error) {
	na := authn.Outcome{Result: authn.NotApplicable}
	if cred.Type != credential.TypeBearer || cred.Verified == nil || len(cred.Verified.JWTPayloads) == 0 {
		return na, nil
	}
	a := e.a
	raw := cred.Secret.Reveal()
	tok, reason := precheck(raw, a.maxBytes)
	if reason != "" {
		return na, nil // Authenticate rejects it for the same reason
	}
	iss, ok := a.issuers[tok.iss]
	if !tok.hasIss || !ok || iss.envoyPayload == "" {
		return na, nil
	}
	vouched, ok := cred.Verified.JWTPayloads[iss.envoyPayload]
	if !ok {
		return na, nil // Envoy verified nothing for this issuer: verify here
	}
	if !iss.allows(tok.alg) {
		return a.reject(ctx, cred, iss.name, authn.ReasonAlgorithm), nil
	}
	_, rest, _ := strings.Cut(raw, ".")
	seg, _, _ := strings.Cut(rest, ".")
	payload, err := strictB64.DecodeString(seg) // precheck decoded it already
	if err != nil {
		return a.reject(ctx, cred, iss.name, authn.ReasonMalformed), nil
	}
	var own map[string]any
	if err := json.Unmarshal(payload, &own); err != nil || !reflect.DeepEqual(own, vouched) {
		return a.reject(ctx, cred, iss.name, ReasonEnvoyPayloadMismatch), nil
	}
	id, reason := a.check(iss, tok, payload)
	if reason != "" {
		return a.reject(ctx, cred, iss.name, reason), nil
	}
	return authn.Accept(id), nil
}
