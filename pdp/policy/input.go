package policy

import (
	"fmt"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/tollgate/tollgate/pdp/authn"
	"github.com/tollgate/tollgate/pdp/credential"
	"github.com/tollgate/tollgate/pdp/request"
)

// Credential statuses, as they appear in the policy input
// (input.credential.status).
const (
	StatusValid   = "valid"
	StatusInvalid = "invalid"
	StatusAbsent  = "absent"
)

// Input is everything a policy decides on. Input.Value turns it into the
// policy's `input` document.
type Input struct {
	Request    *request.Request
	Credential credential.Credential
	// Status is StatusValid, StatusInvalid or StatusAbsent.
	Status string
	// Error is the rejection reason or problem; "" when none. When it is
	// empty, Credential.Problem is reported instead.
	Error string
	// Identity is the verified caller. It reaches the policy only when
	// Status is StatusValid.
	Identity *authn.Identity
}

// Keys of the input document, built once and shared by every input value
// (AST terms are never modified once built).
var (
	keyRequest    = ast.StringTerm("request")
	keyCredential = ast.StringTerm("credential")
	keyIdentity   = ast.StringTerm("identity")

	keyID       = ast.StringTerm("id")
	keyMethod   = ast.StringTerm("method")
	keyPath     = ast.StringTerm("path")
	keySegments = ast.StringTerm("segments")
	keyHost     = ast.StringTerm("host")
	keyScheme   = ast.StringTerm("scheme")
	keyQuery    = ast.StringTerm("query")
	keyHeaders  = ast.StringTerm("headers")
	keySourceIP = ast.StringTerm("source_ip")

	keyType        = ast.StringTerm("type")
	keyPlacement   = ast.StringTerm("placement")
	keyName        = ast.StringTerm("name")
	keyStatus      = ast.StringTerm("status")
	keyError       = ast.StringTerm("error")
	keyFingerprint = ast.StringTerm("fingerprint")

	keyKind    = ast.StringTerm("kind")
	keySubject = ast.StringTerm("subject")
	keyIssuer  = ast.StringTerm("issuer")
	keyKeyID   = ast.StringTerm("key_id")
	keyClaims  = ast.StringTerm("claims")
	keyScopes  = ast.StringTerm("scopes")
	keyRoles   = ast.StringTerm("roles")
)

// Value returns the policy input document (DESIGN.md, "Policy input") as an
// AST object, built directly without a JSON round trip:
//
//	request    {id, method, path, segments, host, scheme, query, headers, source_ip}
//	credential {type, placement, name, status, error, fingerprint}
//	identity   {kind, subject, issuer, key_id, claims, scopes, roles}
//
// The credential appears only as its fingerprint, never the secret. identity
// is present only when Status is StatusValid and Identity is set; key_id only
// when the identity has one (API keys). Nil lists and maps become empty
// arrays and objects, never null; an empty credential type or placement
// becomes "none".
//
// Claims are converted with ast.InterfaceToValue, which handles everything
// encoding/json produces, json.Number included. Should a claim ever be
// unrepresentable, Value reports the claims as an empty object; Evaluate
// never does that: it refuses such an input and fails closed.
func (in Input) Value() ast.Value {
	claims, err := in.claims()
	if err != nil {
		claims = ast.NewObject()
	}
	return in.build(claims)
}

// value is Value for the engine: it refuses an input the pipeline should
// never have built, and unrepresentable claims.
func (in Input) value() (ast.Value, error) {
	switch in.Status {
	case StatusValid:
		if in.Identity == nil {
			return nil, fmt.Errorf("%w: status %q without an identity", ErrInvalidInput, in.Status)
		}
	case StatusInvalid, StatusAbsent:
	default:
		return nil, fmt.Errorf("%w: unknown credential status %q", ErrInvalidInput, in.Status)
	}
	if in.Request == nil {
		return nil, fmt.Errorf("%w: no request", ErrInvalidInput)
	}
	claims, err := in.claims()
	if err != nil {
		return nil, err
	}
	return in.build(claims), nil
}

// claims converts the visible identity's claims; no identity or no claims
// give an empty object.
func (in Input) claims() (ast.Value, error) {
	id := in.identity()
	if id == nil || len(id.Claims) == 0 {
		return ast.NewObject(), nil
	}
	v, err := ast.InterfaceToValue(id.Claims)
	if err != nil {
		return nil, fmt.Errorf("%w: claims: %w", ErrInvalidInput, err)
	}
	return v, nil
}

// identity returns the identity the policy may see, or nil.
func (in Input) identity() *authn.Identity {
	if in.Status != StatusValid {
		return nil
	}
	return in.Identity
}

// build assembles the document around already converted claims.
func (in Input) build(claims ast.Value) ast.Object {
	items := make([][2]*ast.Term, 2, 3)
	items[0] = ast.Item(keyRequest, ast.NewTerm(requestValue(in.Request)))
	items[1] = ast.Item(keyCredential, ast.NewTerm(in.credentialValue()))
	if id := in.identity(); id != nil {
		items = append(items, ast.Item(keyIdentity, ast.NewTerm(identityValue(id, claims))))
	}
	return ast.NewObject(items...)
}

func requestValue(r *request.Request) ast.Object {
	if r == nil {
		r = &request.Request{}
	}
	return ast.NewObject(
		ast.Item(keyID, str(r.ID)),
		ast.Item(keyMethod, str(r.Method)),
		ast.Item(keyPath, str(r.Path)),
		ast.Item(keySegments, strList(r.Segments)),
		ast.Item(keyHost, str(r.Host)),
		ast.Item(keyScheme, str(r.Scheme)),
		ast.Item(keyQuery, multimap(r.Query)),
		ast.Item(keyHeaders, multimap(r.Headers)),
		ast.Item(keySourceIP, str(r.SourceIP)),
	)
}

func (in Input) credentialValue() ast.Object {
	c := in.Credential
	typ, placement := string(c.Type), string(c.Placement)
	if typ == "" {
		typ = string(credential.TypeNone)
	}
	if placement == "" {
		placement = string(credential.PlacementNone)
	}
	problem := in.Error
	if problem == "" {
		problem = c.Problem
	}
	return ast.NewObject(
		ast.Item(keyType, str(typ)),
		ast.Item(keyPlacement, str(placement)),
		ast.Item(keyName, str(c.Name)),
		ast.Item(keyStatus, str(in.Status)),
		ast.Item(keyError, str(problem)),
		ast.Item(keyFingerprint, str(c.Secret.Fingerprint())),
	)
}

func identityValue(id *authn.Identity, claims ast.Value) ast.Object {
	items := make([][2]*ast.Term, 0, 7)
	items = append(items,
		ast.Item(keyKind, str(string(id.Kind))),
		ast.Item(keySubject, str(id.Subject)),
		ast.Item(keyIssuer, str(id.Issuer)),
	)
	if id.KeyID != "" {
		items = append(items, ast.Item(keyKeyID, str(id.KeyID)))
	}
	items = append(items,
		ast.Item(keyClaims, ast.NewTerm(claims)),
		ast.Item(keyScopes, strList(id.Scopes)),
		ast.Item(keyRoles, strList(id.Roles)),
	)
	return ast.NewObject(items...)
}

// str returns a string term, shared when OPA interns the string.
func str(s string) *ast.Term { return ast.InternedTerm(s) }

// strList returns an array term of ss; nil gives an empty array. The terms
// are allocated in one block.
func strList(ss []string) *ast.Term {
	block := make([]ast.Term, len(ss))
	terms := make([]*ast.Term, len(ss))
	for i, s := range ss {
		block[i].Value = ast.String(s)
		terms[i] = &block[i]
	}
	return ast.NewTerm(ast.NewArray(terms...))
}

// multimap returns an object term of string lists; nil gives an empty object.
func multimap(m map[string][]string) *ast.Term {
	items := make([][2]*ast.Term, 0, len(m))
	for k, vs := range m {
		items = append(items, ast.Item(str(k), strList(vs)))
	}
	return ast.NewTerm(ast.NewObject(items...))
}
