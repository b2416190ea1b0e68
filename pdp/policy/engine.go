package policy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/maypok86/otter/v2/stats"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/metrics"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/topdown"

	"github.com/tollgate/tollgate/pdp/decision"
)

// DefaultQuery is the decision query of the public contract.
const DefaultQuery = "data.tollgate.authz.decision"

// DefaultCheckQuery is the bundle check Activate runs when Options.CheckQuery
// is empty: the default policy's list of problems with its route table.
const DefaultCheckQuery = "data.tollgate.authz.bundle_errors"

// Errors Evaluate wraps, so a caller can tell why a policy failed with
// errors.Is. Each comes with a deny (status 500, decision.ReasonPolicyError).
var (
	// ErrNoPolicy: no bundle has been activated yet.
	ErrNoPolicy = errors.New("no policy is active")
	// ErrInvalidInput: the pipeline built an input the contract does not
	// allow (unknown status, valid without identity, no request, claims that
	// are not JSON).
	ErrInvalidInput = errors.New("invalid policy input")
	// ErrEvaluation: the policy failed at run time (a conflict between rule
	// values, a cancelled context, ...). The wrapped error is OPA's; when the
	// context ended, its error is wrapped too.
	ErrEvaluation = errors.New("policy evaluation failed")
	// ErrUndefined: the decision query is undefined for this input.
	ErrUndefined = errors.New("policy decision is undefined")
	// ErrMalformedDecision: the query yielded more than one result or a
	// decision document that breaks the contract.
	ErrMalformedDecision = errors.New("policy decision is malformed")
)

// Errors Activate wraps, beside OPA's own compile errors (ast.Errors).
var (
	// ErrInvalidQuery: Options.Query or Options.CheckQuery does not parse or
	// is not one expression.
	ErrInvalidQuery = errors.New("invalid query")
	// ErrNoDecisionRule: the bundle defines nothing at the decision query's
	// path, so every decision would fail; usually a mistyped package.
	ErrNoDecisionRule = errors.New("bundle defines no decision")
	// ErrBundleCheck: the bundle's check query (Options.CheckQuery) reported
	// problems, or could not be evaluated, or yielded something other than a
	// set or array of strings.
	ErrBundleCheck = errors.New("bundle check failed")
)

// bundleName names the one bundle an engine holds, inside OPA's store.
const bundleName = "tollgate"

// Options configure an Engine. The zero value is all defaults.
type Options struct {
	// Query is the decision query; DefaultQuery when empty. It must be one
	// expression whose value is the decision document.
	Query string
	// CheckQuery is evaluated once by Activate, on the new bundle, before it
	// is made active; DefaultCheckQuery when empty. It must be one
	// expression. When it is undefined (the bundle does not define it) the
	// bundle is accepted; when it yields a non-empty set or array of strings,
	// they are the bundle's problems and the bundle is refused; any other
	// value, or an evaluation error, refuses the bundle too. This is where a
	// policy validates its data (e.g. a route table) so that it need not do
	// so on every decision.
	CheckQuery string
	// Logger receives a log of each activation (a failed one is only
	// returned as an error). Nil discards them.
	Logger *slog.Logger
	// Capabilities are the built-in functions (and language features) a
	// bundle is compiled with; a bundle that calls any other built-in is
	// refused by Activate (ErrBuiltinNotAllowed). Nil means
	// PinnedCapabilities; ExtendCapabilities adds to them. The engine only
	// reads the value.
	Capabilities *ast.Capabilities
	// DecisionCacheEntries and DecisionCacheBytes bound the decision cache
	// of each revision (see decisioncache.go); 0 means
	// DefaultDecisionCacheEntries / DefaultDecisionCacheBytes, and a
	// negative DecisionCacheEntries turns the cache off.
	DecisionCacheEntries int
	DecisionCacheBytes   int64
}

// Validate checks the options without building anything.
func (o Options) Validate() error {
	if _, err := o.parseQuery(); err != nil {
		return fmt.Errorf("policy: %w", err)
	}
	if _, err := o.parseCheckQuery(); err != nil {
		return fmt.Errorf("policy: %w", err)
	}
	return nil
}

func (o Options) query() string {
	if o.Query == "" {
		return DefaultQuery
	}
	return o.Query
}

func (o Options) parseQuery() (ast.Body, error) {
	return parseOneExpression(o.query(), "decision query")
}

func (o Options) checkQuery() string {
	if o.CheckQuery == "" {
		return DefaultCheckQuery
	}
	return o.CheckQuery
}

func (o Options) parseCheckQuery() (ast.Body, error) {
	return parseOneExpression(o.checkQuery(), "check query")
}

func parseOneExpression(q, what string) (ast.Body, error) {
	body, err := ast.ParseBodyWithOpts(q, ast.ParserOptions{RegoVersion: ast.RegoV1})
	if err != nil {
		return nil, fmt.Errorf("%w: %s %q: %w", ErrInvalidQuery, what, q, err)
	}
	if len(body) != 1 {
		return nil, fmt.Errorf("%w: %s %q: want one expression, got %d", ErrInvalidQuery, what, q, len(body))
	}
	return body, nil
}

// program is one activated bundle: its prepared query and revision. It is
// never modified once built.
type program struct {
	query    rego.PreparedEvalQuery
	revision string
	// routes is the bundle's compiled route table, nil when it has none
	// (or one the matcher does not take): then input.route is absent.
	routes *routeTable
	// cache holds this revision's decisions; nil when the policy cannot be
	// cached (see analyzeReads) or the cache is off.
	cache *decisionCache
	// reads are the input parts the policy can read, nil when the analysis
	// cannot tell: Evaluate builds only those parts.
	reads *reads
}

// Engine holds the active policy program and evaluates decisions with it.
//
// Evaluate, Revision and Ready are safe for concurrent use with each other
// and with Activate. Activate calls are serialized, so activations take
// effect in the order they are made.
type Engine struct {
	opts Options
	log  *slog.Logger
	// cacheStats counts the decision caches' hits and misses, across
	// revisions (otter's striped counter).
	cacheStats *stats.Counter

	activating sync.Mutex // serializes Activate
	active     atomic.Pointer[program]
}

// NewEngine returns an engine with no active policy: until Activate
// succeeds, Ready is false and every decision is a deny. It has no side
// effects; an invalid Options.Query is reported by Activate (or earlier by
// Options.Validate).
func NewEngine(opts Options) *Engine {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Engine{opts: opts, log: log, cacheStats: stats.NewCounter()}
}

// Activate compiles b's modules and data, prepares the decision query once,
// and makes the result the active program in one atomic swap. Evaluations
// already running finish on the program they started with.
//
// Before the swap it evaluates the bundle's check query (Options.CheckQuery)
// once: a bundle whose check reports problems is refused with an error
// (wrapping ErrBundleCheck) that lists them.
//
// When the bundle's data has a route table (data.tollgate.routes, see
// RoutesPath), Activate compiles it into a matcher (package route), and
// every evaluation on this bundle has input.route: the route that matches
// the request ({"matched": true, "index", "template", "params", and the
// route's id, methods, sensitivity, scopes, roles and owner as the bundle
// gives them}) or {"matched": false}. A table the matcher does not take is
// logged and left to the policy: its evaluations have no input.route.
//
// When the bundle does not parse or compile (including a call to a built-in
// function that Options.Capabilities do not allow: ErrBuiltinNotAllowed),
// defines nothing at the query's path, the query cannot be prepared against
// it, or its check fails,
// Activate returns an error (wrapping OPA's ast.Errors where there are some)
// and the previous program stays active. b is not modified. The revision is
// b.Manifest.Revision.
func (e *Engine) Activate(ctx context.Context, b *bundle.Bundle) error {
	if b == nil {
		return errors.New("policy: activate: no bundle")
	}
	rev := b.Manifest.Revision

	e.activating.Lock()
	defer e.activating.Unlock()
	p, err := e.compile(ctx, b)
	if err == nil {
		err = ctx.Err()
	}
	if err != nil {
		return fmt.Errorf("policy: activate revision %q: %w", rev, err)
	}
	prev := e.active.Swap(p)
	if rev == "" {
		e.log.LogAttrs(ctx, slog.LevelWarn, "policy bundle has no revision; decisions will not name the policy that made them")
	}
	attrs := []slog.Attr{slog.String("revision", rev), slog.Int("modules", len(b.Modules))}
	if p.routes != nil {
		attrs = append(attrs, slog.Int("routes", p.routes.table.Len()))
	}
	attrs = append(attrs, p.cacheAttrs()...)
	if prev != nil {
		attrs = append(attrs, slog.String("previous_revision", prev.revision))
	}
	e.log.LogAttrs(ctx, slog.LevelInfo, "policy activated", attrs...)
	return nil
}

// cacheAttrs say how the decision cache is keyed: "off", by the whole
// policy's reads, or by route (with how many routes key their path
// parameters, and how many key input.route.caller_is_owner).
func (p *program) cacheAttrs() []slog.Attr {
	switch {
	case p.cache == nil:
		return []slog.Attr{slog.String("decision_cache_key", "off")}
	case p.cache.byRoute == nil:
		return []slog.Attr{slog.String("decision_cache_key", "policy")}
	}
	params, owner := 0, 0
	for _, rr := range p.cache.byRoute {
		if rr.params {
			params++
		}
		if rr.owner {
			owner++
		}
	}
	return []slog.Attr{slog.String("decision_cache_key", "route"),
		slog.Int("routes_keyed_by_params", params), slog.Int("routes_keyed_by_owner", owner)}
}

// compile builds the program for b without touching the active one, and
// runs the bundle's check query on it.
func (e *Engine) compile(ctx context.Context, b *bundle.Bundle) (*program, error) {
	query, err := e.opts.parseQuery()
	if err != nil {
		return nil, err
	}
	check, err := e.opts.parseCheckQuery()
	if err != nil {
		return nil, err
	}
	cp, err := prepareBundle(b)
	if err != nil {
		return nil, err
	}
	caps, err := e.opts.capabilities()
	if err != nil {
		return nil, err
	}

	// The store is the engine's, not one rego makes for itself, so that the
	// check query can be evaluated on the same compiled policy and data.
	// Keep data as AST values in the store, so an evaluation does not
	// convert the bundle's data (route tables) on every read.
	store := inmem.NewWithOpts(inmem.OptReturnASTValuesOnRead(true))
	txn, err := store.NewTransaction(ctx, storage.WriteParams)
	if err != nil {
		return nil, err
	}
	var compiler *ast.Compiler
	r := rego.New(
		rego.ParsedQuery(query.Copy()), // preparing rewrites the query in place
		rego.ParsedBundle(bundleName, cp),
		rego.SetRegoVersion(ast.RegoV1),
		rego.Capabilities(caps),
		rego.Store(store),
		rego.Transaction(txn),
		// Hand results back as AST values; decode reads them directly.
		rego.GenerateJSON(astResult),
		rego.CompilerHook(func(c *ast.Compiler) { compiler = c }),
	)
	pq, err := r.PrepareForEval(ctx)
	if err != nil {
		store.Abort(ctx, txn)
		return nil, notAllowed(cp, caps, err)
	}
	if err := store.Commit(ctx, txn); err != nil {
		return nil, err
	}
	if err := checkDecisionDefined(query, compiler, cp); err != nil {
		return nil, err
	}
	if err := runCheck(ctx, check, compiler, store); err != nil {
		return nil, err
	}
	// Compile the route table last, on a bundle that passed its check.
	routes, err := compileRoutes(b.Data)
	if err != nil {
		e.log.LogAttrs(ctx, slog.LevelWarn, "route table not compiled; the policy matches routes itself",
			slog.String("revision", b.Manifest.Revision), slog.Any("error", err))
		routes = nil
	}
	p := &program{query: pq, revision: b.Manifest.Revision, routes: routes}
	reads, known, cacheable, why := analyzeReads(compiler, query)
	if known {
		p.reads = &reads
	}
	if e.opts.DecisionCacheEntries >= 0 {
		if !cacheable {
			e.log.LogAttrs(ctx, slog.LevelInfo, "decision cache off for this revision",
				slog.String("revision", b.Manifest.Revision), slog.String("why", why))
		} else if p.cache, err = newDecisionCache(reads, e.opts.DecisionCacheEntries, e.opts.DecisionCacheBytes, e.cacheStats); err != nil {
			return nil, err
		} else if routes != nil && reads.route {
			var why string
			p.cache.byRoute, p.cache.unmatched, why = refineByRoute(compiler, query, routes)
			p.cache.routes = routes
			if why != "" {
				e.log.LogAttrs(ctx, slog.LevelInfo, "decision cache keyed by the whole policy, not by route, for this revision",
					slog.String("revision", b.Manifest.Revision), slog.String("why", "the route analysis does not model "+why))
			}
		}
	}
	return p, nil
}

// astResult hands a result term's value back as is, an ast.Value.
func astResult(t *ast.Term, _ *rego.EvalContext) (any, error) { return t.Value, nil }

// maxCheckProblems is the most problems a refused bundle's error lists.
const maxCheckProblems = 20

// runCheck evaluates the bundle's check query once, on the compiled policy
// and the store holding the bundle's data. Undefined is a pass; a non-empty
// set or array of strings is the list of the bundle's problems; anything
// else is an error too. Either way the error wraps ErrBundleCheck.
func runCheck(ctx context.Context, check ast.Body, c *ast.Compiler, store storage.Store) error {
	rs, err := rego.New(
		rego.ParsedQuery(check.Copy()),
		rego.Compiler(c),
		rego.Store(store),
		rego.SetRegoVersion(ast.RegoV1),
		rego.GenerateJSON(astResult),
		rego.StrictBuiltinErrors(true),
	).Eval(ctx)
	switch {
	case err != nil:
		return fmt.Errorf("%w: %v: %w", ErrBundleCheck, check, err)
	case len(rs) == 0:
		return nil // the bundle does not define the check
	case len(rs) > 1 || len(rs[0].Expressions) != 1:
		return fmt.Errorf("%w: %v: want one result", ErrBundleCheck, check)
	}
	var problems []string
	bad := false
	collect := func(t *ast.Term) {
		if s, ok := t.Value.(ast.String); ok {
			problems = append(problems, string(s))
		} else {
			bad = true
		}
	}
	switch v := rs[0].Expressions[0].Value.(type) {
	case ast.Set:
		v.Foreach(collect)
	case *ast.Array:
		v.Foreach(collect)
	default:
		bad = true
	}
	if bad {
		return fmt.Errorf("%w: %v: want a set or array of strings, got %v", ErrBundleCheck, check, rs[0].Expressions[0].Value)
	}
	if len(problems) == 0 {
		return nil
	}
	slices.Sort(problems) // a set's order is its own; make the message stable
	n := len(problems)
	if n > maxCheckProblems {
		problems = append(problems[:maxCheckProblems], fmt.Sprintf("... and %d more", n-maxCheckProblems))
	}
	return fmt.Errorf("%w: %v: %d problem(s): %s", ErrBundleCheck, check, n, strings.Join(problems, "; "))
}

// prepareBundle returns a shallow copy of b that OPA can activate without
// touching b: its manifest has roots (OPA requires them) and every module is
// parsed.
func prepareBundle(b *bundle.Bundle) (*bundle.Bundle, error) {
	cp := *b
	cp.Manifest = b.Manifest.Copy() // Copy sets default roots when there are none
	cp.Modules = make([]bundle.ModuleFile, len(b.Modules))
	copy(cp.Modules, b.Modules)
	for i := range cp.Modules {
		mf := &cp.Modules[i]
		if mf.Parsed != nil {
			continue
		}
		v, err := cp.RegoVersionForFile(mf.Path, ast.RegoV1)
		if err != nil {
			return nil, err
		}
		mf.Parsed, err = ast.ParseModuleWithOpts(mf.Path, string(mf.Raw), ast.ParserOptions{RegoVersion: v, ProcessAnnotation: true})
		if err != nil {
			return nil, err
		}
	}
	return &cp, nil
}

// checkDecisionDefined refuses a bundle in which the decision query is a
// plain reference into data that neither a rule nor the bundle's data
// defines: such a bundle could only ever answer policy_error. Other queries
// are not checked.
func checkDecisionDefined(query ast.Body, c *ast.Compiler, b *bundle.Bundle) error {
	t, ok := query[0].Terms.(*ast.Term)
	if !ok {
		return nil
	}
	ref, ok := t.Value.(ast.Ref)
	if !ok || !ref.HasPrefix(ast.DefaultRootRef) || !ref.IsGround() {
		return nil
	}
	if c != nil && len(c.GetRules(ref)) > 0 {
		return nil
	}
	if len(b.Raw) > 0 || dataHas(b.Data, ref[1:]) {
		return nil // lazily loaded data cannot be checked here
	}
	return fmt.Errorf("%w at %v", ErrNoDecisionRule, ref)
}

// dataHas reports whether data holds a value at path (string keys only).
func dataHas(data map[string]any, path ast.Ref) bool {
	var cur any = data
	for _, t := range path {
		k, ok := t.Value.(ast.String)
		m, isMap := cur.(map[string]any)
		if !ok || !isMap {
			return false
		}
		if cur, ok = m[string(k)]; !ok {
			return false
		}
	}
	return true
}

// Revision returns the revision of the active policy, "" when none is active.
func (e *Engine) Revision() string {
	if p := e.active.Load(); p != nil {
		return p.revision
	}
	return ""
}

// Ready reports whether a policy is active.
func (e *Engine) Ready() bool { return e.active.Load() != nil }

// DecisionCacheStats reports the decisions answered from the decision
// cache (hits) and those evaluated to be cached (misses), over every
// revision since the engine was made, and the entries the active
// revision's cache holds.
func (e *Engine) DecisionCacheStats() (hits, misses uint64, entries int) {
	s := e.cacheStats.Snapshot()
	if p := e.active.Load(); p != nil && p.cache != nil {
		entries = p.cache.cache.EstimatedSize()
	}
	return s.Hits, s.Misses, entries
}

// evalMetrics is shared by every evaluation: nothing reads OPA's per-query
// metrics, so there is no point allocating them.
var evalMetrics = metrics.NoOp()

// Evaluate asks the active policy for a decision on in.
//
// It reads the active program once, so the whole evaluation sees one policy
// revision. It fails closed: with no active policy, an invalid input, an
// evaluation error, an undefined decision, more than one result or a
// malformed decision document (see ErrMalformedDecision), it returns a deny
// with status 500 and reason decision.ReasonPolicyError together with an
// error saying why. Either way the decision names the policy revision (""
// when none is active) and has non-nil Reasons and Headers. The decision's ID
// is left to the caller.
func (e *Engine) Evaluate(ctx context.Context, in Input) (decision.Decision, error) {
	p := e.active.Load()
	if p == nil {
		return failClosed("", fmt.Errorf("policy: %w", ErrNoPolicy))
	}
	var key string
	if p.cache != nil && in.validate() == nil { // an invalid input fails closed below
		var d decision.Decision
		var hit bool
		if d, hit, key = p.cache.lookup(in); hit {
			return d, nil
		}
	}
	input, err := in.value(p.routes, p.reads)
	if err != nil {
		return failClosed(p.revision, fmt.Errorf("policy: revision %q: %w", p.revision, err))
	}
	v, err := p.eval(ctx, input)
	if err != nil {
		return failClosed(p.revision, fmt.Errorf("policy: revision %q: %w", p.revision, err))
	}
	d, err := decode(v)
	if err != nil {
		return failClosed(p.revision, fmt.Errorf("policy: revision %q: %w", p.revision, err))
	}
	d.PolicyRevision = p.revision
	if p.cache != nil {
		p.cache.store(key, d)
	}
	return d, nil
}

// Cached returns the decision the active revision's decision cache holds
// for in, without evaluating anything: it never blocks, so a caller can ask
// it before setting up a deadline for Evaluate. It is what Evaluate would
// answer.
func (e *Engine) Cached(in Input) (decision.Decision, bool) {
	p := e.active.Load()
	if p == nil || p.cache == nil || in.validate() != nil {
		return decision.Decision{}, false
	}
	d, hit, _ := p.cache.lookup(in)
	return d, hit
}

// eval runs the prepared query and returns the value of its one result.
func (p *program) eval(ctx context.Context, input ast.Value) (ast.Value, error) {
	// Cancel the evaluation when ctx ends, without the goroutine OPA would
	// otherwise start for every evaluation to watch ctx.
	cancel := topdown.NewCancel()
	stop := context.AfterFunc(ctx, cancel.Cancel)
	defer stop()

	rs, err := p.query.Eval(ctx,
		rego.EvalParsedInput(input),
		rego.EvalMetrics(evalMetrics),
		rego.EvalExternalCancel(cancel),
	)
	switch {
	case err != nil:
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, fmt.Errorf("%w: %w: %w", ErrEvaluation, ctxErr, err)
		}
		return nil, fmt.Errorf("%w: %w", ErrEvaluation, err)
	case len(rs) == 0:
		return nil, ErrUndefined
	case len(rs) > 1:
		return nil, fmt.Errorf("%w: the query has %d results, want one", ErrMalformedDecision, len(rs))
	case len(rs[0].Expressions) != 1:
		return nil, fmt.Errorf("%w: the query has %d expressions, want one", ErrMalformedDecision, len(rs[0].Expressions))
	}
	v, ok := rs[0].Expressions[0].Value.(ast.Value)
	if !ok { // cannot happen: GenerateJSON hands back AST values
		return nil, fmt.Errorf("%w: result is %T, not an AST value", ErrMalformedDecision, rs[0].Expressions[0].Value)
	}
	return v, nil
}

// failClosed is the deny every policy failure answers, with its cause.
func failClosed(revision string, err error) (decision.Decision, error) {
	d := decision.Deny(500, decision.ReasonPolicyError)
	d.PolicyRevision = revision
	return d, err
}
