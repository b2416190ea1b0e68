// Package authn defines what the authentication stage produces: an Outcome
// that either carries a verified Identity, names why a credential was
// rejected, or says the authenticator is not responsible for it.
//
// A bad credential is a value (OutcomeRejected with a reason), never an error.
// An error means something broke (a JWKS endpoint is down, a key file cannot
// be read); the pipeline turns it into a deny as well, but logs it apart.
//
// This package is light on purpose: the verifiers live in sub-packages
// (oidcjwt, apikey) and depend on it, never the reverse.
package authn

import (
	"context"
	"time"

	"github.com/tollgate/tollgate/pdp/credential"
)

// Kind is the kind of caller an identity describes.
type Kind string

// Identity kinds, as they appear in the policy input.
const (
	KindUser    Kind = "user"    // an OIDC JWT subject
	KindService Kind = "service" // an API key's owner
)

// Identity is a verified caller. Every field comes from a verified credential.
type Identity struct {
	Kind    Kind
	Subject string
	Issuer  string // JWTs only
	KeyID   string // API keys only: the key's public id
	// Claims are the verified token's claims (JWT) or nil (API key). Values
	// are what encoding/json produces: string, float64/json.Number, bool,
	// []any, map[string]any, nil.
	Claims map[string]any
	// ClaimsValue, when not nil, is Claims already converted for the policy
	// engine: an OPA AST object (ast.Object), built once by the verifier so
	// that no evaluation converts the claims again. It must describe Claims
	// exactly and is never modified once the identity is built (identities
	// are shared by caches and concurrent decisions). The policy package
	// uses it when it is an ast.Object and converts Claims otherwise; it is
	// typed any so that this package does not import OPA.
	ClaimsValue any
	Scopes      []string
	Roles       []string
	// ContentKey, when not empty, identifies the identity's content: two
	// identities with equal ContentKeys are equal in every field. Verifiers
	// set it when they can compute it cheaply (a JWT: a digest of its issuer
	// and verified payload), so caches of decisions need not compare claims.
	ContentKey string
	// ExpiresAt is when the credential stops being valid (a JWT's exp, an
	// API key's expiry); zero when it does not expire. Caches of verified
	// credentials never keep an identity past it.
	ExpiresAt time.Time
}

// Result says what an authenticator concluded.
type Result int

// Results of Authenticate.
const (
	// NotApplicable: this authenticator does not handle this credential type.
	NotApplicable Result = iota
	// Authenticated: the credential is valid; Outcome.Identity is set.
	Authenticated
	// Rejected: the credential is invalid; Outcome.Reason says why.
	Rejected
)

// Stable rejection reasons, reported as credential.error in the policy input.
const (
	ReasonMalformed      = "malformed"     // not a well-formed credential
	ReasonTooLarge       = "too_large"     // over the size limit
	ReasonBadSignature   = "bad_signature" // signature does not verify
	ReasonUnknownKey     = "unknown_key"   // no key with this id
	ReasonAlgorithm      = "algorithm_not_allowed"
	ReasonExpired        = "expired"              // exp in the past (or key expired)
	ReasonNotYetValid    = "not_yet_valid"        // nbf or iat in the future
	ReasonMissingExpiry  = "missing_exp"          // JWT without exp
	ReasonUnknownIssuer  = "unknown_issuer"       // iss not configured
	ReasonAudience       = "audience_mismatch"    // none of the configured audiences
	ReasonDuplicateClaim = "duplicate_claim"      // duplicate or case-variant registered claim
	ReasonTokenType      = "token_type"           // typ header not as required
	ReasonRevoked        = "revoked"              // API key revoked
	ReasonUnavailable    = "verifier_unavailable" // a technical failure; see logs
	ReasonInvalid        = "invalid"              // any other verification failure
)

// Outcome is the result of one authentication.
type Outcome struct {
	Result   Result
	Identity *Identity // set when Result is Authenticated
	Reason   string    // set when Result is Rejected
}

// Authenticator verifies one kind of credential.
//
// Authenticate returns NotApplicable for credential types it does not handle,
// Rejected with a reason for a bad credential, and an error only when it
// cannot decide because something broke. It must be safe for concurrent use.
type Authenticator interface {
	Authenticate(ctx context.Context, cred credential.Credential) (Outcome, error)
}

// Peeker is implemented by an authenticator that can answer some
// credentials at once, without blocking or I/O: a cache of verified tokens,
// an in-memory key store. The pipeline asks Peek first, and calls
// Authenticate, under the decision's deadline, only when Peek has no
// answer. known is false when only Authenticate can tell; a Peek that
// answers must answer exactly what Authenticate would (NotApplicable
// included).
type Peeker interface {
	Peek(cred credential.Credential) (out Outcome, known bool)
}

// Reject is a convenience constructor for a rejected outcome.
func Reject(reason string) Outcome { return Outcome{Result: Rejected, Reason: reason} }

// Accept is a convenience constructor for an authenticated outcome.
func Accept(id *Identity) Outcome { return Outcome{Result: Authenticated, Identity: id} }
