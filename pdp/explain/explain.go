// Package explain serves POST /v1/explain on the admin listener: the
// decision for a /v1/decision body, and a person-readable account of it:
// the credential found and where, the verification result, the matched
// route, and each policy check that passed or failed, read from OPA's
// trace of the policy's own violation rules. Never a secret: the account
// is built from the policy input (credentials already stripped, only a
// fingerprint left) and the decision.
package explain

import (
	"bytes"
	"context"
	stdjson "encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/topdown"

	"github.com/tollgate/tollgate/pdp/adapter/native"
	"github.com/tollgate/tollgate/pdp/decision"
	"github.com/tollgate/tollgate/pdp/decisionlog"
	"github.com/tollgate/tollgate/pdp/policy"
	"github.com/tollgate/tollgate/pdp/request"
)

// Decider is what the explainer asks.
type Decider interface {
	Decide(ctx context.Context, raw request.Raw) decision.Decision
}

// DefaultChecks are the names of the rules whose bodies are the policy's
// checks: the default policy's _violations, and the conventional
// violations.
var DefaultChecks = []string{"_violations", "violations"}

// Options configure an Explainer. The zero value is all defaults.
type Options struct {
	// Query is the decision query; policy.DefaultQuery when empty. The
	// route is read from the rule "route" of the same package, the checks
	// from the rules named in Checks.
	Query string
	// Checks names the rules of the decision's package that are checks
	// (a set of violations); DefaultChecks when nil.
	Checks []string
	// MaxBodyBytes bounds the request body; native.DefaultMaxBodyBytes
	// when 0.
	MaxBodyBytes int64
	Logger       *slog.Logger
}

// Explainer explains decisions. It is a pdp.Recorder (it sees the policy
// input of the decisions it asked for) and follows the active bundle
// through SetPolicy. Safe for concurrent use.
type Explainer struct {
	opts    Options
	pkg     ast.Ref // the decision query's package
	query   ast.Body
	log     *slog.Logger
	policy  atomic.Pointer[compiled]
	waiting atomic.Int32
	mu      sync.Mutex
	waiters map[string]chan decisionlog.Record
}

// compiled is the active bundle, prepared for explanations.
type compiled struct {
	revision string
	decision rego.PreparedEvalQuery
	route    *rego.PreparedEvalQuery // nil when the package has no route rule
	checks   []check
}

// check is one rule body of the policy's checks.
type check struct {
	rule     *ast.Rule
	name     string // the rule's name
	head     string // the rule's key or value, as written
	location string // file:line
}

// New builds an Explainer; it has no policy until SetPolicy.
func New(opts Options) (*Explainer, error) {
	q := opts.Query
	if q == "" {
		q = policy.DefaultQuery
	}
	body, err := ast.ParseBodyWithOpts(q, ast.ParserOptions{RegoVersion: ast.RegoV1})
	if err != nil || len(body) != 1 {
		return nil, fmt.Errorf("explain: decision query %q is not one expression", q)
	}
	t, ok := body[0].Terms.(*ast.Term)
	ref, isRef := t.Value.(ast.Ref)
	if !ok || !isRef || len(ref) < 3 || !ref.IsGround() {
		return nil, fmt.Errorf("explain: decision query %q is not a reference into data", q)
	}
	if opts.Checks == nil {
		opts.Checks = DefaultChecks
	}
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = native.DefaultMaxBodyBytes
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Explainer{opts: opts, pkg: ref[:len(ref)-1].Copy(), query: body, log: log, waiters: map[string]chan decisionlog.Record{}}, nil
}

// SetPolicy prepares b for explanations: call it after each activation
// (decisionlog.Logger.Following shows the pattern).
func (e *Explainer) SetPolicy(ctx context.Context, b *bundle.Bundle) error {
	opts := []func(*rego.Rego){
		rego.SetRegoVersion(ast.RegoV1),
		rego.Store(inmem.NewFromObject(b.Data)),
	}
	var modules []*ast.Module
	for _, mf := range b.Modules {
		m := mf.Parsed
		if m == nil {
			var err error
			if m, err = ast.ParseModuleWithOpts(mf.Path, string(mf.Raw), ast.ParserOptions{RegoVersion: ast.RegoV1}); err != nil {
				return fmt.Errorf("explain: %w", err)
			}
		}
		modules = append(modules, m)
		opts = append(opts, rego.ParsedModule(m))
	}
	c := &compiled{revision: b.Manifest.Revision}
	var err error
	c.decision, err = rego.New(append(opts, rego.ParsedQuery(e.query.Copy()))...).PrepareForEval(ctx)
	if err != nil {
		return fmt.Errorf("explain: prepare the decision query: %w", err)
	}
	routeRef := append(e.pkg.Copy(), ast.StringTerm("route"))
	for _, m := range modules {
		if !m.Package.Path.Equal(e.pkg) {
			continue
		}
		for _, r := range m.Rules {
			name := ruleName(r)
			switch {
			case name == "route":
				if c.route == nil {
					pq, err := rego.New(append(opts, rego.ParsedQuery(ast.NewBody(ast.NewExpr(ast.NewTerm(routeRef)))))...).PrepareForEval(ctx)
					if err == nil {
						c.route = &pq
					}
				}
			case slices.Contains(e.opts.Checks, name):
				head := r.Head.Key
				if head == nil {
					head = r.Head.Value
				}
				hs := ""
				if head != nil {
					hs = head.String()
				}
				loc := ""
				if r.Location != nil {
					loc = fmt.Sprintf("%s:%d", r.Location.File, r.Location.Row)
				}
				c.checks = append(c.checks, check{rule: r, name: name, head: hs, location: loc})
			}
		}
	}
	e.policy.Store(c)
	return nil
}

func ruleName(r *ast.Rule) string {
	ref := r.Head.Ref()
	if len(ref) == 0 {
		return string(r.Head.Name)
	}
	if s, ok := ref[len(ref)-1].Value.(ast.String); ok && len(ref) > 1 {
		return string(s)
	}
	if v, ok := ref[0].Value.(ast.Var); ok && len(ref) == 1 {
		return string(v)
	}
	return ref.String()
}

// Record implements pdp.Recorder: it keeps the records of the decisions
// an explanation is waiting for, and ignores every other at the cost of
// one atomic load.
func (e *Explainer) Record(rec decisionlog.Record) {
	if e.waiting.Load() == 0 {
		return
	}
	e.mu.Lock()
	ch, ok := e.waiters[rec.Decision.ID]
	e.mu.Unlock()
	if ok {
		select {
		case ch <- rec:
		default:
		}
	}
}

func (e *Explainer) wait(id string) chan decisionlog.Record {
	ch := make(chan decisionlog.Record, 1)
	e.mu.Lock()
	e.waiters[id] = ch
	e.mu.Unlock()
	e.waiting.Add(1)
	return ch
}

func (e *Explainer) done(id string) {
	e.mu.Lock()
	delete(e.waiters, id)
	e.mu.Unlock()
	e.waiting.Add(-1)
}

// Explanation is the answer of POST /v1/explain.
type Explanation struct {
	Decision decision.Decision `json:"decision"`
	// Text is the account in sentences, in pipeline order.
	Text         []string        `json:"text"`
	Request      *RequestInfo    `json:"request,omitempty"`
	Credential   *CredentialInfo `json:"credential,omitempty"`
	Verification string          `json:"verification"`
	Identity     map[string]any  `json:"identity,omitempty"`
	Route        any             `json:"route,omitempty"`
	Checks       []Check         `json:"checks"`
	// Refused names the stage that refused the request before the
	// policy ran.
	Refused string `json:"refused,omitempty"`
}

// RequestInfo is what was judged (the normalized request).
type RequestInfo struct {
	Method string `json:"method"`
	Path   string `json:"path"`
	Host   string `json:"host,omitempty"`
}

// CredentialInfo describes the credential found, never its value.
type CredentialInfo struct {
	Type        string `json:"type"`
	Placement   string `json:"placement"`
	Name        string `json:"name,omitempty"`
	Status      string `json:"status"`
	Error       string `json:"error,omitempty"`
	Fingerprint string `json:"fingerprint,omitempty"`
}

// Check is one of the policy's checks, and whether the request broke it.
type Check struct {
	Rule     string `json:"rule"`
	Check    string `json:"check"`
	Location string `json:"location,omitempty"`
	// Result is "passed" (the request does not break it) or "failed".
	Result string `json:"result"`
}

// Explain asks d for the decision on raw and explains it.
func (e *Explainer) Explain(ctx context.Context, d Decider, raw request.Raw) Explanation {
	raw.ID = decision.NewID()
	ch := e.wait(raw.ID)
	defer e.done(raw.ID)
	dec := d.Decide(ctx, raw)
	var rec *decisionlog.Record
	select {
	case r := <-ch:
		rec = &r
	default:
	}
	return e.explain(ctx, dec, rec)
}

func (e *Explainer) explain(ctx context.Context, dec decision.Decision, rec *decisionlog.Record) Explanation {
	x := Explanation{Decision: dec, Checks: []Check{}}
	verdict := "denied"
	if dec.Allow {
		verdict = "allowed"
	}
	x.Text = append(x.Text, fmt.Sprintf("The request was %s with status %d%s, by policy revision %q.", verdict, dec.Status, reasonText(dec.Reasons), dec.PolicyRevision))
	if rec == nil || rec.Input == nil {
		x.Refused = "normalize"
		x.Verification = "not reached"
		x.Text = append(x.Text, "The request was refused before any credential was looked for: its method, target, host or headers cannot be normalized safely, so no policy ran.")
		return x
	}
	in := rec.Input
	if r := in.Request; r != nil {
		x.Request = &RequestInfo{Method: r.Method, Path: scrub(r.Path), Host: r.Host}
		x.Text = append(x.Text, fmt.Sprintf("Judged as %s %s (normalized).", r.Method, scrub(r.Path)))
	}
	c := in.Credential
	errCode := in.Error
	if errCode == "" {
		errCode = c.Problem
	}
	x.Credential = &CredentialInfo{Type: orNone(string(c.Type)), Placement: orNone(string(c.Placement)), Name: c.Name,
		Status: in.Status, Error: errCode, Fingerprint: c.Secret.Fingerprint()}
	x.Text = append(x.Text, credentialText(x.Credential))
	x.Verification = verificationText(x.Credential)
	x.Text = append(x.Text, x.Verification)
	if id := in.Identity; id != nil && in.Status == policy.StatusValid {
		x.Identity = map[string]any{"kind": string(id.Kind), "subject": id.Subject, "issuer": id.Issuer, "scopes": id.Scopes, "roles": id.Roles}
		if id.KeyID != "" {
			x.Identity["key_id"] = id.KeyID
		}
		from := ""
		if id.Issuer != "" {
			from = fmt.Sprintf(" from %q", id.Issuer)
		}
		x.Text = append(x.Text, fmt.Sprintf("Caller: %s %q%s, scopes %q, roles %q.", id.Kind, id.Subject, from, id.Scopes, id.Roles))
	}

	c2 := e.policy.Load()
	switch {
	case c2 == nil:
		x.Text = append(x.Text, "No policy is loaded for explanations, so the checks cannot be shown.")
		return x
	case c2.revision != dec.PolicyRevision:
		x.Text = append(x.Text, fmt.Sprintf("The explanation uses revision %q; the decision was made by %q.", c2.revision, dec.PolicyRevision))
	}
	input := in.Value()
	if c2.route != nil {
		rs, err := c2.route.Eval(ctx, rego.EvalParsedInput(input))
		switch {
		case err != nil:
			e.log.LogAttrs(ctx, slog.LevelWarn, "explain: route evaluation failed", slog.String("decision_id", dec.ID), slog.Any("error", err))
		case len(rs) == 0 || len(rs[0].Expressions) == 0:
			x.Route = map[string]any{"matched": false}
			x.Text = append(x.Text, "No route matches the method and path.")
		default:
			x.Route = rs[0].Expressions[0].Value
			if m, ok := x.Route.(map[string]any); ok {
				name := m["template"]
				if name == nil {
					name = orDash(m["path"])
				}
				x.Text = append(x.Text, fmt.Sprintf("Route %v matched (sensitivity %v).", name, orDash(m["sensitivity"])))
			}
		}
	}
	tracer := topdown.NewBufferTracer()
	if _, err := c2.decision.Eval(ctx, rego.EvalParsedInput(input), rego.EvalQueryTracer(tracer)); err != nil {
		e.log.LogAttrs(ctx, slog.LevelWarn, "explain: traced evaluation failed", slog.String("decision_id", dec.ID), slog.Any("error", err))
		x.Text = append(x.Text, "The policy failed to evaluate, so the decision fails closed.")
		return x
	}
	fired := map[*ast.Rule]bool{}
	for _, ev := range *tracer {
		if ev.Op != topdown.ExitOp {
			continue
		}
		if r, ok := ev.Node.(*ast.Rule); ok {
			fired[r] = true
		}
	}
	for _, ck := range c2.checks {
		res := "passed"
		if fired[ck.rule] || firedAt(*tracer, ck.rule) {
			res = "failed"
		}
		x.Checks = append(x.Checks, Check{Rule: ck.name, Check: ck.head, Location: ck.location, Result: res})
		if res == "failed" {
			x.Text = append(x.Text, fmt.Sprintf("Check %s %s (%s) failed.", ck.name, ck.head, ck.location))
		}
	}
	if len(c2.checks) > 0 && len(x.Checks) > 0 {
		passed := 0
		for _, ck := range x.Checks {
			if ck.Result == "passed" {
				passed++
			}
		}
		x.Text = append(x.Text, fmt.Sprintf("%d of %d checks passed.", passed, len(x.Checks)))
	}
	return x
}

// firedAt matches a rule by location: the compiler may hand the tracer
// a copy of the rule.
func firedAt(events []*topdown.Event, r *ast.Rule) bool {
	if r.Location == nil {
		return false
	}
	for _, ev := range events {
		if ev.Op != topdown.ExitOp || ev.Location == nil {
			continue
		}
		if rr, ok := ev.Node.(*ast.Rule); ok && rr.Location != nil &&
			rr.Location.File == r.Location.File && rr.Location.Row == r.Location.Row {
			return true
		}
	}
	return false
}

func reasonText(reasons []string) string {
	if len(reasons) == 0 {
		return ""
	}
	return " (" + strings.Join(reasons, ", ") + ")"
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func orDash(v any) any {
	if v == nil {
		return "-"
	}
	return v
}

// scrub hides a path that carries something shaped like a credential.
func scrub(s string) string { return decisionlog.Scrub(s) }

func credentialText(c *CredentialInfo) string {
	what := map[string]string{"bearer": "a bearer token", "api_key": "an API key"}[c.Type]
	switch c.Placement {
	case "header":
		return fmt.Sprintf("Credential: %s in the %s header (fingerprint %s).", what, c.Name, c.Fingerprint)
	case "cookie":
		return fmt.Sprintf("Credential: %s in the %s cookie (fingerprint %s).", what, c.Name, c.Fingerprint)
	case "query":
		return fmt.Sprintf("Credential: %s in the query parameter %s (fingerprint %s): credentials in URLs are logged at every hop and never reach sensitive routes.", what, c.Name, c.Fingerprint)
	}
	return "Credential: none found."
}

func verificationText(c *CredentialInfo) string {
	switch c.Status {
	case policy.StatusValid:
		return "Verification: valid."
	case policy.StatusInvalid:
		return fmt.Sprintf("Verification: invalid (%s).", orNone(c.Error))
	}
	return "Verification: nothing to verify."
}

// Handler serves POST /v1/explain for d: the /v1/decision body in, the
// Explanation out. Mount it on the admin listener only.
func (e *Explainer) Handler(d Decider) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"error": "POST a /v1/decision body"})
			return
		}
		raw, err := decodeBody(http.MaxBytesReader(w, r.Body, e.opts.MaxBodyBytes))
		if err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, e.Explain(r.Context(), d, raw))
	})
}

var errBody = errors.New(`want the /v1/decision body: {"method", "path", "host", "scheme", "headers", "source_ip"}`)

// decodeBody reads a /v1/decision body strictly; its errors quote no input.
func decodeBody(rd io.Reader) (request.Raw, error) {
	b, err := io.ReadAll(rd)
	if err != nil {
		return request.Raw{}, errors.New("request body could not be read or is too large")
	}
	var body native.Body
	dec := jsontext.NewDecoder(bytes.NewReader(b), jsontext.AllowDuplicateNames(false), jsontext.AllowInvalidUTF8(false))
	if err := json.UnmarshalDecode(dec, &body, json.RejectUnknownMembers(true), json.MatchCaseInsensitiveNames(false)); err != nil {
		return request.Raw{}, errBody
	}
	if body.Method == "" || body.Path == "" {
		return request.Raw{}, errBody
	}
	return request.Raw{Method: body.Method, Target: body.Path, Host: body.Host, Scheme: body.Scheme, Headers: body.Headers, SourceIP: body.SourceIP}, nil
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = stdjson.NewEncoder(w).Encode(v) // numbers from the policy (json.Number) stay numbers
}
