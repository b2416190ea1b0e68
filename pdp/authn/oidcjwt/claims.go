package oidcjwt

import (
	"crypto/sha256"
	"encoding/json"
	"math"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/tollgate/tollgate/pdp/authn"
)

// maxNumericDate bounds exp, nbf and iat (about the year 36812): beyond it a
// value is nonsense, and converting it to time.Time would overflow.
const maxNumericDate = 1 << 40

// check runs the claim checks on a verified token and builds the identity.
// The header values in tok are verified too: the signature covers the
// header exactly as precheck decoded it. The claims are tok.claims when
// precheck decoded them, else payload is decoded here (a payload verified
// elsewhere).
func (a *Authenticator) check(iss *issuer, tok unverified, payload []byte) (*authn.Identity, string) {
	claims := tok.claims
	if claims == nil {
		var ok bool
		if claims, ok = decodeClaims(payload); !ok {
			return nil, authn.ReasonInvalid
		}
	}
	// What go-oidc refused when it decoded the payload into its ID token,
	// refused first, as it was.
	if got, _ := claims["iss"].(string); got != iss.name || !oidcShape(claims) {
		return nil, authn.ReasonInvalid
	}
	now := a.now()

	exp, present, ok := numericDate(claims, "exp")
	switch {
	case !present:
		return nil, authn.ReasonMissingExpiry
	case !ok:
		return nil, authn.ReasonInvalid
	case now.After(exp.Add(a.skew)):
		return nil, authn.ReasonExpired
	}
	for _, name := range [...]string{"nbf", "iat"} {
		t, present, ok := numericDate(claims, name)
		switch {
		case !present:
		case !ok:
			return nil, authn.ReasonInvalid
		case t.After(now.Add(a.skew)):
			return nil, authn.ReasonNotYetValid
		}
	}

	auds, ok := stringOrList(claims["aud"])
	if !ok {
		return nil, authn.ReasonInvalid
	}
	if !containsAny(auds, iss.audiences) {
		return nil, authn.ReasonAudience
	}

	if iss.requireType != "" && (!tok.hasTyp || !typeMatches(tok.typ, iss.requireType)) {
		return nil, authn.ReasonTokenType
	}

	sub, _ := claims["sub"].(string)
	if sub == "" {
		return nil, authn.ReasonInvalid
	}

	return &authn.Identity{
		Kind:      authn.KindUser,
		Subject:   sub,
		Issuer:    iss.name,
		Claims:    claims,
		Scopes:    scopes(claims),
		Roles:     roles(claims),
		ExpiresAt: exp,
		// Claims converted once for the policy engine, here rather than on
		// every evaluation (and once per token with a token cache).
		ClaimsValue: claimsValue(claims),
		// Everything above derives from the issuer and the payload.
		ContentKey: contentKey(iss.name, payload),
	}, ""
}

// claimsValue converts the claims to an OPA AST object for
// authn.Identity.ClaimsValue, or returns nil when a claim cannot be
// represented (the policy package then converts Claims itself and fails
// closed, as it always did).
func claimsValue(claims map[string]any) any {
	v, err := ast.InterfaceToValue(claims)
	if err != nil {
		return nil
	}
	return v
}

// oidcShape keeps the checks go-oidc's IDTokenVerifier made when it
// decoded the payload into its ID token struct (a token failing them was
// invalid before any other claim check): sub, nonce and at_hash are
// strings when present; aud a string or a list of strings; exp, iat and
// nbf numbers; _claim_names maps names to non-empty source names that
// _claim_sources holds, and each source's endpoint and access_token are
// strings. (This is stricter than go-oidc in one place: a date given as a
// string holding a number was accepted by go-oidc, and refused by check.)
func oidcShape(claims map[string]any) bool {
	for _, name := range [...]string{"sub", "nonce", "at_hash"} {
		switch claims[name].(type) {
		case nil, string:
		default:
			return false
		}
	}
	if _, ok := stringOrList(claims["aud"]); !ok {
		return false
	}
	for _, name := range [...]string{"exp", "iat", "nbf"} {
		if v, present := claims[name]; present {
			if _, ok := v.(json.Number); !ok {
				return false
			}
		}
	}
	sources, ok := claims["_claim_sources"].(map[string]any)
	if !ok && claims["_claim_sources"] != nil {
		return false
	}
	for _, src := range sources {
		s, ok := src.(map[string]any)
		if !ok && src != nil {
			return false
		}
		for _, f := range [...]string{"endpoint", "access_token"} {
			switch s[f].(type) {
			case nil, string:
			default:
				return false
			}
		}
	}
	names, ok := claims["_claim_names"].(map[string]any)
	if !ok && claims["_claim_names"] != nil {
		return false
	}
	for _, src := range names {
		s, ok := src.(string)
		if !ok || s == "" {
			return false
		}
		if _, ok := sources[s]; !ok {
			return false
		}
	}
	return true
}

// numericDate reads a NumericDate claim: seconds since the epoch, possibly
// fractional. present is false when the claim is absent; ok is false when
// it is not a number in range.
func numericDate(claims map[string]any, name string) (t time.Time, present, ok bool) {
	v, present := claims[name]
	if !present {
		return time.Time{}, false, false
	}
	n, isNum := v.(json.Number)
	if !isNum {
		return time.Time{}, true, false
	}
	f, err := n.Float64()
	if err != nil || math.IsNaN(f) || f > maxNumericDate || f < -maxNumericDate {
		return time.Time{}, true, false
	}
	if i, err := n.Int64(); err == nil {
		return time.Unix(i, 0), true, true
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)), true, true
}

// stringOrList reads a claim that is a string or a list of strings. An
// absent claim is an empty list.
func stringOrList(v any) ([]string, bool) {
	switch v := v.(type) {
	case nil:
		return nil, true
	case string:
		return []string{v}, true
	case []any:
		out := make([]string, 0, len(v))
		for _, e := range v {
			s, ok := e.(string)
			if !ok {
				return nil, false
			}
			out = append(out, s)
		}
		return out, true
	}
	return nil, false
}

func containsAny(have, want []string) bool {
	for _, h := range have {
		for _, w := range want {
			if h == w {
				return true
			}
		}
	}
	return false
}

// scopes reads "scope" (space separated) and "scp" (a list, or a space
// separated string as some providers send it), without duplicates.
//
// Scope tokens are separated by the space character (0x20) alone (RFC 6749
// section 3.3): a tab, a newline or a Unicode space (U+00A0, U+2003,
// U+3000, ...) is part of a token, so "openid\u00a0customers:read" is one
// scope that no route asks for, never customers:read. Empty tokens (from
// leading, trailing or repeated spaces) are dropped. Members of an scp list
// are taken whole, never split.
func scopes(claims map[string]any) []string {
	var out []string
	add := func(s string) {
		if s == "" {
			return
		}
		for _, have := range out {
			if have == s {
				return
			}
		}
		out = append(out, s)
	}
	if s, ok := claims["scope"].(string); ok {
		for f := range strings.SplitSeq(s, " ") {
			add(f)
		}
	}
	switch v := claims["scp"].(type) {
	case string:
		for f := range strings.SplitSeq(v, " ") {
			add(f)
		}
	case []any:
		for _, e := range v {
			if s, ok := e.(string); ok {
				add(s)
			}
		}
	}
	return out
}

// roles reads "roles": a list of strings, or one string (one role).
func roles(claims map[string]any) []string {
	switch v := claims["roles"].(type) {
	case string:
		if v != "" {
			return []string{v}
		}
	case []any:
		var out []string
		for _, e := range v {
			if s, ok := e.(string); ok && s != "" {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

// contentKey is the identity's authn.Identity.ContentKey: the SHA-256 of the
// issuer and the verified payload, from which every field of the identity
// is derived.
func contentKey(issuer string, payload []byte) string {
	h := sha256.New()
	h.Write([]byte(issuer))
	h.Write([]byte{0})
	h.Write(payload)
	return "jwt:" + string(h.Sum(nil))
}
