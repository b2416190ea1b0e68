package decisiontable

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"

	"github.com/tollgate/tollgate/pdp/decision"
	"github.com/tollgate/tollgate/pdp/policy"
)

// Queries an Evaluator asks besides the decision, to explain it. Each is
// optional: a policy that does not define it is explained without it.
var (
	// RouteQueries give the matched route when the input has no
	// input.route (a bundle whose table the matcher does not take).
	RouteQueries = []string{"data.tollgate.authz.route", "data.tollgate.authz.matched_route"}
	// CheckQueries give the checks the request breaks (the policy's
	// violations), the first that is defined.
	CheckQueries = []string{"data.tollgate.authz.violations", "data.tollgate.authz._violations"}
)

// Evaluator evaluates a policy bundle on policy input documents, offline:
// documents recorded in a decision log, or built from a request. It adds
// input.route as policy.Engine does (the route table of the bundle matched
// against input.request.method and input.request.segments), so a document
// recorded under one bundle can be decided by another.
type Evaluator struct {
	compiler *ast.Compiler
	store    storage.Store
	routes   *policy.Routes
	query    rego.PreparedEvalQuery
	revision string
}

// NewEvaluator compiles b (its test modules are compiled too, harmlessly)
// with caps (nil: the pinned capabilities) and prepares its decision query
// (policy.DefaultQuery).
func NewEvaluator(ctx context.Context, b *bundle.Bundle, caps *ast.Capabilities) (*Evaluator, error) {
	if caps == nil {
		var err error
		if caps, err = policy.PinnedCapabilities(); err != nil {
			return nil, err
		}
	}
	modules := make(map[string]*ast.Module, len(b.Modules))
	for _, m := range b.Modules {
		parsed := m.Parsed
		if parsed == nil {
			var err error
			if parsed, err = ast.ParseModuleWithOpts(m.Path, string(m.Raw), ast.ParserOptions{RegoVersion: ast.RegoV1}); err != nil {
				return nil, fmt.Errorf("parse %s: %w", m.Path, err)
			}
		}
		modules[m.Path] = parsed
	}
	c := ast.NewCompiler().WithCapabilities(caps)
	if c.Compile(modules); c.Failed() {
		return nil, fmt.Errorf("compile bundle: %w", c.Errors)
	}
	data := b.Data
	if data == nil {
		data = map[string]any{}
	}
	e := &Evaluator{compiler: c, store: inmem.NewFromObject(data), revision: b.Manifest.Revision}
	// A table the matcher does not take leaves the policy to match routes
	// itself, as under policy.Engine.
	e.routes, _ = policy.CompileRoutes(data)
	var err error
	e.query, err = rego.New(rego.Query(policy.DefaultQuery), rego.Compiler(c), rego.Store(e.store)).PrepareForEval(ctx)
	if err != nil {
		return nil, fmt.Errorf("prepare %s: %w", policy.DefaultQuery, err)
	}
	return e, nil
}

// Revision is the bundle's manifest revision.
func (e *Evaluator) Revision() string { return e.revision }

func stringList(v any) []string {
	list, _ := v.([]any)
	out := make([]string, 0, len(list))
	for _, x := range list {
		if s, ok := x.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

// Route is input.route for a request, as JSON: the route of the bundle's
// table that matches method and segments, or {"matched": false}; nil when
// the bundle has no table the matcher takes. claims are the caller's
// (input.identity.claims; nil for none).
func (e *Evaluator) Route(method string, segments []string, claims ast.Value) map[string]any {
	if e.routes == nil {
		return nil
	}
	r, _ := ast.JSON(e.routes.Route(method, segments, claims))
	m, _ := r.(map[string]any)
	return m
}

// Outcome is a decision and what explains it.
type Outcome struct {
	Decision decision.Decision
	// Route is the matched route (input.route, or what the policy computes
	// when there is none); nil when the policy says nothing about it.
	Route any
	// Checks are the checks the request breaks, as the policy gives them
	// (its violations); nil when the policy does not expose them.
	Checks []any
	// Input is the input document evaluated, with input.route.
	Input map[string]any
}

// ErrMalformedDecision is a decision document that is not the contract's.
var ErrMalformedDecision = errors.New("malformed decision document")

// Evaluate decides the policy input document in (JSON-shaped: maps, slices,
// strings, json.Number or float64, bools), replacing its input.route with
// this bundle's. With explain it also asks the route and check queries.
func (e *Evaluator) Evaluate(ctx context.Context, in map[string]any, explain bool) (Outcome, error) {
	doc := make(map[string]any, len(in)+1)
	for k, v := range in {
		if k != "route" {
			doc[k] = v
		}
	}
	val, err := ast.InterfaceToValue(doc)
	if err != nil {
		return Outcome{}, fmt.Errorf("input: %w", err)
	}
	if e.routes != nil {
		obj := val.(ast.Object)
		var claims ast.Value
		if c, err := obj.Find(ast.Ref{ast.StringTerm("identity"), ast.StringTerm("claims")}); err == nil {
			claims = c
		}
		req, _ := doc["request"].(map[string]any)
		method, _ := req["method"].(string)
		r := e.routes.Route(method, stringList(req["segments"]), claims)
		obj.Insert(ast.StringTerm("route"), ast.NewTerm(r))
		if doc["route"], err = ast.JSON(r); err != nil {
			return Outcome{}, fmt.Errorf("input.route: %w", err)
		}
	}
	out := Outcome{Input: doc}
	rs, err := e.query.Eval(ctx, rego.EvalParsedInput(val))
	if err != nil {
		return out, fmt.Errorf("evaluate: %w", err)
	}
	if len(rs) != 1 || len(rs[0].Expressions) != 1 {
		return out, fmt.Errorf("%w: %s is undefined", ErrMalformedDecision, policy.DefaultQuery)
	}
	if out.Decision, err = decode(rs[0].Expressions[0].Value); err != nil {
		return out, err
	}
	out.Decision.PolicyRevision = e.revision
	if !explain {
		return out, nil
	}
	if r, ok := doc["route"]; ok {
		out.Route = r
	} else if v, ok := e.first(ctx, val, RouteQueries); ok {
		out.Route = v
	}
	if v, ok := e.first(ctx, val, CheckQueries); ok {
		out.Checks, _ = v.([]any)
	}
	return out, nil
}

// first is the value of the first query of qs that is defined.
func (e *Evaluator) first(ctx context.Context, input ast.Value, qs []string) (any, bool) {
	for _, q := range qs {
		rs, err := rego.New(rego.Query(q), rego.Compiler(e.compiler), rego.Store(e.store), rego.ParsedInput(input)).Eval(ctx)
		if err == nil && len(rs) == 1 && len(rs[0].Expressions) == 1 {
			return rs[0].Expressions[0].Value, true
		}
	}
	return nil, false
}

func decode(v any) (decision.Decision, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return decision.Decision{}, fmt.Errorf("%w: %w", ErrMalformedDecision, err)
	}
	var d struct {
		Allow   *bool             `json:"allow"`
		Status  *int              `json:"status"`
		Reasons []string          `json:"reasons"`
		Headers map[string]string `json:"headers"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		return decision.Decision{}, fmt.Errorf("%w: %w", ErrMalformedDecision, err)
	}
	if d.Allow == nil || d.Status == nil || d.Reasons == nil {
		return decision.Decision{}, fmt.Errorf("%w: allow, status and reasons are required", ErrMalformedDecision)
	}
	if d.Headers == nil {
		d.Headers = map[string]string{}
	}
	return decision.Decision{Allow: *d.Allow, Status: *d.Status, Reasons: d.Reasons, Headers: d.Headers}, nil
}

// InputDocument is in as the policy sees it (without input.route), as a
// JSON-shaped document for Evaluate.
func InputDocument(in policy.Input) (map[string]any, error) {
	v, err := ast.JSON(in.Value())
	if err != nil {
		return nil, err
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, errors.New("policy input is not an object")
	}
	return m, nil
}
