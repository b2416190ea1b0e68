package decisionlog

import (
	"context"
	"fmt"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"

	"github.com/tollgate/tollgate/pdp/policy"
	"github.com/tollgate/tollgate/pdp/route"
)

// Default data paths of OPA's mask and drop decisions.
const (
	DefaultMaskDecision = "/system/log/mask"
	DefaultDropDecision = "/system/log/drop"
)

// logPolicy is what the logger takes from the active bundle: its revision,
// the prepared mask and drop queries (nil when the bundle defines no rule
// under them) and its route table (nil when it has none). Never modified
// once built.
type logPolicy struct {
	revision   string
	mask, drop *rego.PreparedEvalQuery
	routes     *route.Table
	templates  [][]string // per route, per path: the template
}

// dataRef turns an OPA decision path ("/system/log/mask" or
// "system/log/mask") into a reference into data.
func dataRef(path string) (ast.Ref, error) {
	path = strings.Trim(path, "/")
	if path == "" {
		return nil, fmt.Errorf("empty decision path")
	}
	ref := ast.Ref{ast.DefaultRootDocument}
	for _, p := range strings.Split(path, "/") {
		if p == "" {
			return nil, fmt.Errorf("decision path %q has an empty segment", path)
		}
		ref = append(ref, ast.StringTerm(p))
	}
	return ref, nil
}

// compileLogPolicy prepares the mask and drop queries against b, when b
// has a module whose package is at or under either path, and compiles
// its route table. b is not modified.
func compileLogPolicy(ctx context.Context, b *bundle.Bundle, mask, drop ast.Ref) (*logPolicy, error) {
	lp := &logPolicy{revision: b.Manifest.Revision}
	lp.routes, lp.templates = compileRouteTable(b.Data)
	if !definesUnder(b, mask) && !definesUnder(b, drop) {
		return lp, nil
	}
	opts := []func(*rego.Rego){
		rego.SetRegoVersion(ast.RegoV1),
		// The engine has already refused a bundle that calls a built-in
		// it does not allow, so the default capabilities are no wider.
		rego.Store(inmem.NewFromObject(b.Data)),
	}
	for _, mf := range b.Modules {
		if mf.Parsed != nil {
			opts = append(opts, rego.ParsedModule(mf.Parsed))
		} else {
			opts = append(opts, rego.Module(mf.Path, string(mf.Raw)))
		}
	}
	prep := func(ref ast.Ref) (*rego.PreparedEvalQuery, error) {
		if !definesUnder(b, ref) {
			return nil, nil
		}
		pq, err := rego.New(append(opts, rego.ParsedQuery(ast.NewBody(ast.NewExpr(ast.NewTerm(ref)))))...).PrepareForEval(ctx)
		if err != nil {
			return nil, fmt.Errorf("decision log: prepare %v: %w", ref, err)
		}
		return &pq, nil
	}
	var err error
	if lp.mask, err = prep(mask); err != nil {
		return nil, err
	}
	if lp.drop, err = prep(drop); err != nil {
		return nil, err
	}
	return lp, nil
}

// definesUnder reports whether a module of b has a package that is ref,
// a prefix of ref or under ref, i.e. may define something at ref.
func definesUnder(b *bundle.Bundle, ref ast.Ref) bool {
	for _, mf := range b.Modules {
		var pkg ast.Ref
		if mf.Parsed != nil {
			pkg = mf.Parsed.Package.Path
		} else {
			m, err := ast.ParseModuleWithOpts(mf.Path, string(mf.Raw), ast.ParserOptions{RegoVersion: ast.RegoV1})
			if err != nil {
				continue
			}
			pkg = m.Package.Path
		}
		if pkg.HasPrefix(ref) || ref.HasPrefix(pkg) {
			return true
		}
	}
	return false
}

// compileRouteTable compiles data.tollgate.routes (policy.RouteTable) for
// tollgate.route; nil when there is none or it does not compile.
func compileRouteTable(data map[string]any) (*route.Table, [][]string) {
	_, routes, err := policy.RouteTable(data)
	if routes == nil || err != nil {
		return nil, nil
	}
	templates := make([][]string, len(routes))
	for i, r := range routes {
		templates[i] = r.Paths
	}
	t, err := route.Compile(routes)
	if err != nil {
		return nil, nil
	}
	return t, templates
}

// routeOf returns the template of the route that matches.
func (lp *logPolicy) routeOf(method string, segments []string) string {
	if lp == nil || lp.routes == nil {
		return ""
	}
	m, ok := lp.routes.Match(method, segments)
	if !ok || m.Route >= len(lp.templates) || m.Path >= len(lp.templates[m.Route]) {
		return ""
	}
	return lp.templates[m.Route][m.Path]
}

// evalDrop reports whether the drop query is true for the event document.
func (lp *logPolicy) evalDrop(ctx context.Context, doc ast.Value) (bool, error) {
	if lp == nil || lp.drop == nil {
		return false, nil
	}
	rs, err := lp.drop.Eval(ctx, rego.EvalParsedInput(doc))
	if err != nil {
		return false, err
	}
	return rs.Allowed(), nil
}

// evalMask returns the mask rules for the event document.
func (lp *logPolicy) evalMask(ctx context.Context, doc ast.Value) ([]maskRule, error) {
	if lp == nil || lp.mask == nil {
		return nil, nil
	}
	rs, err := lp.mask.Eval(ctx, rego.EvalParsedInput(doc))
	if err != nil || len(rs) == 0 || len(rs[0].Expressions) == 0 {
		return nil, err
	}
	v := rs[0].Expressions[0].Value
	if set, ok := v.([]any); ok {
		return parseMaskRules(set)
	}
	return parseMaskRules(v)
}
