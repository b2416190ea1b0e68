// Package request holds the gateway-agnostic description of one API request
// and turns what a gateway sent (Raw) into the normalized form the rest of the
// pipeline and the policy see (Request).
//
// It depends on the standard library and golang.org/x/net/http/httpguts (the
// token rules net/http itself uses) only.
package request

// Raw is a request as a gateway adapter received it, before normalization.
// Target is the request target in origin form: a path, optionally followed by
// "?" and a query string, still percent-encoded as it arrived.
type Raw struct {
	ID       string
	Method   string
	Target   string
	Host     string
	Scheme   string
	Headers  map[string][]string // any case; Normalize lower-cases names
	SourceIP string
	// Verified is what a component in front of Tollgate reports it has
	// already verified, or nil. Only an adapter whose channel a client
	// cannot write sets it (the gRPC ext_authz service, from the
	// CheckRequest's metadata_context); the HTTP endpoints never do. It is
	// a claim, not a credential: it is used only for an issuer configured
	// to trust it, and only for the token the request itself carries.
	Verified *Verified `json:"-"`
}

// Verified holds results of verification done before Tollgate was asked.
type Verified struct {
	// JWTPayloads are the payloads of JWTs Envoy's jwt_authn filter
	// verified, by the name under which the filter stored each in its
	// dynamic metadata (a provider's payload_in_metadata). Values are what
	// encoding/json produces for the payload (numbers as float64), as
	// Envoy converts the JSON payload to a protobuf Struct.
	JWTPayloads map[string]map[string]any
}

// Request is the normalized request. Every field is safe to hand to a policy
// once the credential stage has removed the secret it carried. Normalize
// builds it; see there for the exact rules. Segments, Query and Headers are
// never nil.
type Request struct {
	ID       string
	Method   string              // upper case
	Path     string              // normalized, always starts with "/"; no trailing "/" except for the root
	Segments []string            // Path split on "/", without empty segments, each fully percent-decoded
	Host     string              // lower case, as given
	Scheme   string              // lower case; "http" when unknown
	Query    map[string][]string // decoded query parameters
	Headers  map[string][]string // lower-case names
	SourceIP string
}
