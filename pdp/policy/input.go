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
// becomes "none"; a nil Request gives a request of empty fields. The
// identity's kind, subject, issuer and key_id never hold a control
// character: such a value is given as "" (see headerSafe).
//
// input.route is not part of Value: the engine adds it from the active
// bundle's compiled route table (see Engine.Activate). No field of Input
// can set it.
//
// Claims are converted with ast.InterfaceToValue, which handles everything
// encoding/json produces, json.Number included, unless the identity carries
// them already converted (authn.Identity.ClaimsValue, an ast.Object: the
// JWT verifier converts them once per token). Should a claim ever be
// unrepresentable, Value reports the claims as an empty object; Evaluate
// never does that: it refuses such an input and fails closed.
func (in Input) Value() ast.Value {
	claims, err := in.claims()
	if err != nil {
		claims = ast.NewObject()
	}
	return in.build(claims, nil, nil)
}

// value is Value for the engine: it refuses an input the pipeline should
// never have built, and unrepresentable claims.
//
// When routes is not nil (the active bundle has a compiled route table),
// the document has input.route: the route that matches the request, or
// {"matched": false}. Nothing in Input can set it.
//
// When reads is not nil, the document has only the parts the policy can
// read (see analyzeReads): the others are left out, which the policy
// cannot tell, and which saves building them for every evaluation.
func (in Input) value(routes *routeTable, reads *reads) (ast.Value, error) {
	if err := in.validate(); err != nil {
		return nil, err
	}
	claims, err := in.claims()
	if err != nil {
		return nil, err
	}
	return in.build(claims, routes, reads), nil
}

// validate refuses an input the pipeline should never have built.
func (in Input) validate() error {
	switch in.Status {
	case StatusValid:
		if in.Identity == nil {
			return fmt.Errorf("%w: status %q without an identity", ErrInvalidInput, in.Status)
		}
	case StatusInvalid, StatusAbsent:
	default:
		return fmt.Errorf("%w: unknown credential status %q", ErrInvalidInput, in.Status)
	}
	if in.Request == nil {
		return fmt.Errorf("%w: no request", ErrInvalidInput)
	}
	return nil
}

// claims converts the visible identity's claims; no identity or no claims
// give an empty object. The verifier's precomputed conversion
// (authn.Identity.ClaimsValue, an ast.Object) is used as it is.
func (in Input) claims() (ast.Value, error) {
	id := in.identity()
	if id == nil || len(id.Claims) == 0 {
		return ast.NewObject(), nil
	}
	if v, ok := id.ClaimsValue.(ast.Object); ok {
		return v, nil
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

// build assembles the document around already converted claims, with
// input.route when routes is not nil, and only the parts in rd when rd is
// not nil.
func (in Input) build(claims ast.Value, routes *routeTable, rd *reads) ast.Object {
	r := in.Request
	if r == nil {
		r = &request.Request{}
	}
	if rd == nil {
		all := everyPart()
		rd = &all
	}
	id := in.identity()
	a := newArena(r, id, rd.query, rd.headers)

	items := make([][2]*ast.Term, 2, 4)
	items[0] = ast.Item(keyRequest, a.term(requestValue(a, r, rd)))
	items[1] = ast.Item(keyCredential, a.term(in.credentialValue(a, rd.fingerprint)))
	if id != nil && rd.identity {
		items = append(items, ast.Item(keyIdentity, a.term(identityValue(a, id, claims))))
	}
	if routes != nil && rd.route {
		items = append(items, ast.Item(keyRoute, routes.term(a, r.Method, r.Segments, claims)))
	}
	return ast.NewObject(items...)
}

// everyPart reads every part of the input.
func everyPart() reads {
	return reads{
		method: true, path: true, host: true, scheme: true, query: true, headers: true, sourceIP: true, requestID: true,
		credType: true, placement: true, name: true, status: true, credError: true, fingerprint: true,
		identity: true, route: true,
	}
}

// requestValue builds the parts of input.request in rd.
func requestValue(a *arena, r *request.Request, rd *reads) ast.Object {
	items := make([][2]*ast.Term, 0, 9)
	if rd.requestID {
		items = append(items, ast.Item(keyID, a.str(r.ID)))
	}
	if rd.method {
		items = append(items, ast.Item(keyMethod, a.str(r.Method)))
	}
	if rd.path {
		items = append(items, ast.Item(keyPath, a.str(r.Path)), ast.Item(keySegments, a.strList(r.Segments)))
	}
	if rd.host {
		items = append(items, ast.Item(keyHost, a.str(r.Host)))
	}
	if rd.scheme {
		items = append(items, ast.Item(keyScheme, a.str(r.Scheme)))
	}
	if rd.query {
		items = append(items, ast.Item(keyQuery, a.multimap(r.Query)))
	}
	if rd.headers {
		items = append(items, ast.Item(keyHeaders, a.multimap(r.Headers)))
	}
	if rd.sourceIP {
		items = append(items, ast.Item(keySourceIP, a.str(r.SourceIP)))
	}
	return ast.NewObject(items...)
}

// credentialValue builds input.credential; its fingerprint is "" unless
// fingerprint (formatting it is the only cost here).
func (in Input) credentialValue(a *arena, fingerprint bool) ast.Object {
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
	fp := ""
	if fingerprint {
		fp = c.Secret.Fingerprint()
	}
	return ast.NewObject(
		ast.Item(keyType, a.str(typ)),
		ast.Item(keyPlacement, a.str(placement)),
		ast.Item(keyName, a.str(c.Name)),
		ast.Item(keyStatus, a.str(in.Status)),
		ast.Item(keyError, a.str(problem)),
		ast.Item(keyFingerprint, a.str(fp)),
	)
}

// identityValue builds input.identity. Its kind, subject, issuer and
// key_id are header-safe (see headerSafe): the default policy copies them
// into identity headers without checking them again.
func identityValue(a *arena, id *authn.Identity, claims ast.Value) ast.Object {
	items := make([][2]*ast.Term, 0, 7)
	items = append(items,
		ast.Item(keyKind, a.str(headerSafe(string(id.Kind)))),
		ast.Item(keySubject, a.str(headerSafe(id.Subject))),
		ast.Item(keyIssuer, a.str(headerSafe(id.Issuer))),
	)
	if keyID := headerSafe(id.KeyID); keyID != "" {
		items = append(items, ast.Item(keyKeyID, a.str(keyID)))
	}
	items = append(items,
		ast.Item(keyClaims, a.term(claims)),
		ast.Item(keyScopes, a.strList(id.Scopes)),
		ast.Item(keyRoles, a.strList(id.Roles)),
	)
	return ast.NewObject(items...)
}

// headerSafe returns s when it has no control character (below 0x20, or
// 0x7F), and "" when it has one. Tollgate's identities never carry such
// values (API key owners are refused with them, issuers are configured
// URLs), but a verified token's subject is whatever its issuer signed: a
// subject with a CR or LF reaches the policy as "", so no policy can copy
// it into a header line, and the default policy, which sends no empty
// header, leaves the header out.
func headerSafe(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f {
			return ""
		}
	}
	return s
}

// arena hands out the terms of one input document from two blocks allocated
// up front, instead of one allocation per term. It falls back to ordinary
// allocation should its estimate be short.
type arena struct {
	terms []ast.Term
	ptrs  []*ast.Term // element slices of arrays
}

// newArena sizes an arena for the document of r and id, with its query
// and headers when asked.
func newArena(r *request.Request, id *authn.Identity, query, headers bool) *arena {
	// Fixed fields: 3 top-level, 9 request, 6 credential, 7 identity.
	nTerms, nPtrs := 25+len(r.Segments), len(r.Segments)
	count := func(m map[string][]string) {
		for _, vs := range m {
			nTerms += 2 + len(vs) // key, array, values
			nPtrs += len(vs)
		}
	}
	if query {
		count(r.Query)
	}
	if headers {
		count(r.Headers)
	}
	if id != nil {
		nTerms += len(id.Scopes) + len(id.Roles)
		nPtrs += len(id.Scopes) + len(id.Roles)
	}
	return &arena{terms: make([]ast.Term, nTerms), ptrs: make([]*ast.Term, nPtrs)}
}

// term returns a term holding v.
func (a *arena) term(v ast.Value) *ast.Term {
	if len(a.terms) == 0 {
		return ast.NewTerm(v)
	}
	t := &a.terms[0]
	a.terms = a.terms[1:]
	t.Value = v
	return t
}

// str returns a string term.
func (a *arena) str(s string) *ast.Term {
	if s == "" {
		return emptyString // no allocation for the many empty fields
	}
	return a.term(ast.String(s))
}

var emptyString = ast.StringTerm("")

// strList returns an array term of ss; nil gives an empty array.
func (a *arena) strList(ss []string) *ast.Term {
	var elems []*ast.Term
	if len(a.ptrs) >= len(ss) {
		elems, a.ptrs = a.ptrs[:len(ss):len(ss)], a.ptrs[len(ss):]
	} else {
		elems = make([]*ast.Term, len(ss))
	}
	for i, s := range ss {
		elems[i] = a.str(s)
	}
	return a.term(ast.NewArray(elems...))
}

// multimap returns an object term of string lists; nil gives an empty object.
func (a *arena) multimap(m map[string][]string) *ast.Term {
	items := make([][2]*ast.Term, 0, len(m))
	for k, vs := range m {
		items = append(items, ast.Item(a.str(k), a.strList(vs)))
	}
	return a.term(ast.NewObject(items...))
}
