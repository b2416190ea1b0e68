// Package credential finds the one credential a request carries and records
// its type, placement and name. It does not verify anything: that is the
// authn stage's job. It removes the secret from the request it inspects, so
// nothing downstream (policy input, decision log) can see it.
package credential

import (
	"crypto/sha256"
	"log/slog"

	"github.com/tollgate/tollgate/pdp/request"
)

// Type is the kind of credential.
type Type string

// Credential types, as they appear in the policy input.
const (
	TypeBearer Type = "bearer"
	TypeAPIKey Type = "api_key"
	TypeNone   Type = "none"
)

// Placement is where in the request the credential was found.
type Placement string

// Placements, as they appear in the policy input.
const (
	PlacementHeader Placement = "header"
	PlacementCookie Placement = "cookie"
	PlacementQuery  Placement = "query"
	PlacementNone   Placement = "none"
)

// Secret is a raw credential value. Its String, GoString, LogValue and
// MarshalJSON methods never reveal it, so an accidental %v, log attribute
// or JSON encoding prints "[redacted]". Use Reveal to read it.
//
// A Secret computes its Digest once, when it is made: the fingerprint, the
// cache keys and the policy input all read it, and none of them hashes the
// secret again.
type Secret struct {
	v   string
	sum [sha256.Size]byte // Digest, computed by NewSecret
}

// NewSecret wraps a raw credential value.
func NewSecret(v string) Secret { return Secret{v: v, sum: digest(v)} }

// Reveal returns the raw value. Only verifiers should call it.
func (s Secret) Reveal() string { return s.v }

// Empty reports whether the secret holds no value.
func (s Secret) Empty() bool { return s.v == "" }

// String implements fmt.Stringer without revealing the value.
func (s Secret) String() string { return "[redacted]" }

// GoString implements fmt.GoStringer without revealing the value.
func (s Secret) GoString() string { return "[redacted]" }

// LogValue implements slog.LogValuer without revealing the value.
func (s Secret) LogValue() slog.Value { return slog.StringValue("[redacted]") }

// MarshalJSON implements json.Marshaler without revealing the value.
func (s Secret) MarshalJSON() ([]byte, error) { return []byte(`"[redacted]"`), nil }

// Error codes of a credential that could not be found cleanly.
const (
	ErrMultipleCredentials = "multiple_credentials"
)

// Credential is the one credential a request carries, unverified.
type Credential struct {
	Type      Type
	Placement Placement
	Name      string // header, cookie or query parameter name, lower case for headers
	Secret    Secret
	// Problem is non-empty when the request's credentials are unusable before
	// any verification, e.g. ErrMultipleCredentials.
	Problem string
	// Verified is what a trusted component in front of Tollgate says it
	// verified for this request (request.Raw.Verified), passed through for
	// the authenticators; nil when nothing was. It never replaces Secret:
	// an authenticator that uses it binds it to the token in Secret.
	Verified *request.Verified
}

// None returns the credential of a request that carries none.
func None() Credential { return Credential{Type: TypeNone, Placement: PlacementNone} }
