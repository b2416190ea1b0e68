package main

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/tollgate/tollgate/pdp/policy"
)

func newLintCommand() *cobra.Command {
	var capsFile string
	cmd := &cobra.Command{
		Use:   "lint [DIR]",
		Short: "Check a policy bundle for mistakes that matter for access policies",
		Long: `Check the policy bundle in DIR (default "."), without running it:

  strict        OPA's strict compilation (unused variables and imports,
                deprecated built-ins, shadowed names...), tests included
  capabilities  only the built-in functions Tollgate serves with (the pinned
                capabilities of pdp/policy, extended by --capabilities FILE
                as policy.capabilities extends them; 'serve' refuses others)
  default-deny  the decision rule (data.tollgate.authz.decision) has a
                'default' that denies, so an unforeseen input is refused
  decision-shape every decision the rule can give, as written, has allow,
                status and reasons
  unreachable-route  no route of data.tollgate.routes is shadowed by earlier
                ones (same or wider methods, a path template matching a
                superset): the first match decides, so it could never apply
  route-requirements  every internal or sensitive route requires scopes or
                roles

Regal's rules are not run: Regal is not available as a Go module here.

Findings print as file:line: rule: message.
Exit status: 0 no finding; 2 findings; 1 the bundle could not be read.`,
		Example: `  tollgate lint ./policies
  tollgate lint`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir := "."
			if len(args) == 1 {
				dir = args[0]
			}
			return runLint(dir, capsFile, cmd.OutOrStdout())
		},
	}
	cmd.Flags().StringVar(&capsFile, "capabilities", "", "policy.capabilities file extending the built-ins a policy may call (as 'serve' reads it)")
	return cmd
}

// finding is one lint result.
type finding struct {
	file string
	line int
	rule string
	msg  string
}

func (f finding) String() string { return fmt.Sprintf("%s:%d: %s: %s", f.file, f.line, f.rule, f.msg) }

func runLint(dir, capsFile string, out io.Writer) error {
	if st, err := os.Stat(dir); err != nil {
		return exitErr(exitError, err)
	} else if !st.IsDir() {
		return exitErr(exitError, fmt.Errorf("%s is not a directory", dir))
	}
	files, err := regoFiles([]string{dir})
	if err != nil {
		return exitErr(exitError, err)
	}
	if len(files) == 0 {
		return exitErr(exitError, fmt.Errorf("no .rego files in %s", dir))
	}
	modules := map[string]*ast.Module{}
	var findings []finding
	for _, file := range files {
		src, err := os.ReadFile(file)
		if err != nil {
			return exitErr(exitError, err)
		}
		m, err := ast.ParseModuleWithOpts(file, string(src), ast.ParserOptions{RegoVersion: ast.RegoV1, ProcessAnnotation: true})
		if err != nil {
			findings = append(findings, astFindings("parse", err)...)
			continue
		}
		modules[file] = m
	}
	if len(findings) == 0 {
		caps, err := policyCapabilities(capsFile)
		if err != nil {
			return exitErr(exitError, err)
		}
		findings = append(findings, compileFindings(modules, caps)...)
	}
	findings = append(findings, decisionFindings(modules)...)
	rf, err := routeFindings(dir)
	if err != nil {
		return exitErr(exitError, err)
	}
	findings = append(findings, rf...)

	slices.SortStableFunc(findings, func(a, b finding) int {
		if c := strings.Compare(a.file, b.file); c != 0 {
			return c
		}
		return a.line - b.line
	})
	for _, f := range findings {
		fmt.Fprintln(out, f)
	}
	if len(findings) > 0 {
		return exitErr(exitFailed, fmt.Errorf("%d finding(s)", len(findings)))
	}
	fmt.Fprintf(out, "no findings in %s (%d Rego files)\n", dir, len(files))
	return nil
}

// astFindings turns OPA's errors into findings.
func astFindings(rule string, err error) []finding {
	errs, ok := err.(ast.Errors)
	if !ok {
		return []finding{{file: "?", rule: rule, msg: err.Error()}}
	}
	out := make([]finding, 0, len(errs))
	for _, e := range errs {
		f := finding{file: "?", rule: rule, msg: e.Message}
		if e.Location != nil {
			f.file, f.line = e.Location.File, e.Location.Row
		}
		out = append(out, f)
	}
	return out
}

// compileFindings compiles strictly with the pinned capabilities. A call to
// a built-in the capabilities lack is a "capabilities" finding; everything
// else a "strict" one.
func compileFindings(modules map[string]*ast.Module, caps *ast.Capabilities) []finding {
	c := ast.NewCompiler().WithStrict(true).WithCapabilities(caps).WithEnablePrintStatements(true)
	if c.Compile(modules); !c.Failed() {
		return nil
	}
	// Which names exist at all (in this OPA) tells a capabilities problem
	// from a misspelt function.
	known := map[string]bool{}
	for _, b := range ast.CapabilitiesForThisVersion().Builtins {
		known[b.Name] = true
	}
	allowed := map[string]bool{}
	for _, b := range caps.Builtins {
		allowed[b.Name] = true
	}
	var out []finding
	for _, f := range astFindings("strict", c.Errors) {
		if name, ok := strings.CutPrefix(f.msg, "undefined function "); ok && known[name] && !allowed[name] {
			f.rule = "capabilities"
			f.msg = fmt.Sprintf("built-in %s is not allowed by Tollgate's capabilities (pdp/policy/capabilities.json)", name)
		}
		out = append(out, f)
	}
	return out
}

// decisionRef is the decision rule's package and name.
func decisionRef() (pkg ast.Ref, name string) {
	ref := ast.MustParseRef(policy.DefaultQuery)
	return ref[:len(ref)-1], string(ref[len(ref)-1].Value.(ast.String))
}

// decisionFindings checks the decision rule: a default that denies, and
// every value written for it an object with allow, status and reasons.
func decisionFindings(modules map[string]*ast.Module) []finding {
	pkg, name := decisionRef()
	var rules []*ast.Rule
	var pkgFile string
	for _, file := range slices.Sorted(mapKeys(modules)) {
		m := modules[file]
		if !m.Package.Path.Equal(pkg) {
			continue
		}
		if pkgFile == "" {
			pkgFile = file
		}
		for _, r := range m.Rules {
			if r.Head.Ref().String() == name {
				rules = append(rules, r)
			}
		}
	}
	if pkgFile == "" {
		return []finding{{file: "?", line: 0, rule: "default-deny", msg: fmt.Sprintf("no module defines package %s, which has the decision rule %s", strings.TrimPrefix(pkg.String(), "data."), name)}}
	}
	var out []finding
	var def *ast.Rule
	for _, r := range rules {
		if r.Default {
			def = r
		}
	}
	switch {
	case len(rules) == 0:
		out = append(out, finding{file: pkgFile, line: 1, rule: "default-deny", msg: fmt.Sprintf("package %s has no rule %s", strings.TrimPrefix(pkg.String(), "data."), name)})
	case def == nil:
		out = append(out, finding{file: rules[0].Location.File, line: rules[0].Location.Row, rule: "default-deny",
			msg: fmt.Sprintf("%s has no default: add 'default %s := {\"allow\": false, ...}' so that an unforeseen input is denied", name, name)})
	default:
		if obj, ok := def.Head.Value.Value.(ast.Object); !ok || !ast.BooleanTerm(false).Equal(obj.Get(ast.StringTerm("allow"))) {
			out = append(out, finding{file: def.Location.File, line: def.Location.Row, rule: "default-deny",
				msg: fmt.Sprintf("the default of %s must deny (\"allow\": false)", name)})
		}
	}
	for _, r := range rules {
		for br := r; br != nil; br = br.Else {
			if br.Head.Value == nil {
				continue
			}
			obj, ok := br.Head.Value.Value.(ast.Object)
			if !ok {
				continue // a computed value: checked when decided (policy.Engine fails closed)
			}
			var missing []string
			for _, k := range []string{"allow", "status", "reasons"} {
				if obj.Get(ast.StringTerm(k)) == nil {
					missing = append(missing, k)
				}
			}
			if len(missing) > 0 {
				loc := br.Location
				if br.Head.Value.Location != nil {
					loc = br.Head.Value.Location
				}
				out = append(out, finding{file: loc.File, line: loc.Row, rule: "decision-shape",
					msg: fmt.Sprintf("this %s lacks %s: every decision needs allow, status and reasons", name, strings.Join(missing, ", "))})
			}
		}
	}
	return out
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// lintRoute is a route of the table with where it is written.
type lintRoute struct {
	ID          string   `yaml:"id"`
	Methods     []string `yaml:"methods"`
	Paths       []string `yaml:"paths"`
	Sensitivity string   `yaml:"sensitivity"`
	Scopes      []string `yaml:"scopes"`
	Roles       []string `yaml:"roles"`
	line        int
}

func (r lintRoute) name(i int) string {
	if r.ID != "" {
		return fmt.Sprintf("route %d (%s)", i, r.ID)
	}
	return fmt.Sprintf("route %d", i)
}

// routeFindings checks the route table in DIR/tollgate/routes/data.json
// (or data.yaml), if there is one.
func routeFindings(dir string) ([]finding, error) {
	var file string
	var src []byte
	for _, name := range []string{"data.json", "data.yaml", "data.yml"} {
		p := filepath.Join(append([]string{dir}, append(slices.Clone(policy.RoutesPath), name)...)...)
		b, err := os.ReadFile(p)
		if err == nil {
			file, src = p, b
			break
		}
		if !os.IsNotExist(err) && !isNotDir(err) {
			return nil, err
		}
	}
	if file == "" {
		return nil, nil
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(src, &doc); err != nil {
		return []finding{{file: file, line: 1, rule: "route-table", msg: err.Error()}}, nil
	}
	if len(doc.Content) != 1 || doc.Content[0].Kind != yaml.SequenceNode {
		return []finding{{file: file, line: 1, rule: "route-table", msg: "the route table must be an array"}}, nil
	}
	var routes []lintRoute
	for _, n := range doc.Content[0].Content {
		var r lintRoute
		if err := n.Decode(&r); err != nil {
			return []finding{{file: file, line: n.Line, rule: "route-table", msg: err.Error()}}, nil
		}
		r.line = n.Line
		routes = append(routes, r)
	}
	var out []finding
	for j, r := range routes {
		if (r.Sensitivity == "internal" || r.Sensitivity == "sensitive") && len(r.Scopes) == 0 && len(r.Roles) == 0 {
			out = append(out, finding{file: file, line: r.line, rule: "route-requirements",
				msg: fmt.Sprintf("%s is %s but requires no scope and no role: any valid credential would do", r.name(j), r.Sensitivity)})
		}
		if by := shadowedBy(routes[:j], r); by != nil {
			names := make([]string, len(by))
			for k, i := range by {
				names[k] = routes[i].name(i)
			}
			out = append(out, finding{file: file, line: r.line, rule: "unreachable-route",
				msg: fmt.Sprintf("%s can never match: %s match every request it matches, and the first match decides", r.name(j), strings.Join(names, ", "))})
		}
	}
	return out, nil
}

func isNotDir(err error) bool {
	pe, ok := err.(*fs.PathError)
	return ok && strings.Contains(pe.Err.Error(), "not a directory")
}

// shadowedBy returns the earlier routes that together match every method
// and path r matches (nil when some request would reach r).
func shadowedBy(earlier []lintRoute, r lintRoute) []int {
	if len(r.Paths) == 0 || len(r.Methods) == 0 {
		return nil
	}
	var by []int
	for _, m := range r.Methods {
		for _, p := range r.Paths {
			found := -1
			for i, e := range earlier {
				if coversMethod(e.Methods, m) && slices.ContainsFunc(e.Paths, func(t string) bool { return coversTemplate(t, p) }) {
					found = i
					break
				}
			}
			if found < 0 {
				return nil
			}
			if !slices.Contains(by, found) {
				by = append(by, found)
			}
		}
	}
	slices.Sort(by)
	return by
}

func coversMethod(methods []string, m string) bool {
	for _, x := range methods {
		if x == "*" || (m != "*" && strings.EqualFold(x, m)) {
			return true
		}
	}
	return false
}

func templateSegments(t string) []string {
	var out []string
	for s := range strings.SplitSeq(t, "/") {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}

// coversTemplate reports whether template a matches every path that
// template b matches ({name} one non-empty segment, a trailing ** any
// number of segments).
func coversTemplate(a, b string) bool {
	as, bs := templateSegments(a), templateSegments(b)
	aRest := len(as) > 0 && as[len(as)-1] == "**"
	bRest := len(bs) > 0 && bs[len(bs)-1] == "**"
	if aRest {
		as = as[:len(as)-1]
	}
	if bRest {
		bs = bs[:len(bs)-1]
	}
	switch {
	case bRest && !aRest:
		return false // b matches paths of any length, a does not
	case aRest && len(bs) < len(as):
		return false // b matches shorter paths than a needs
	case !aRest && len(as) != len(bs):
		return false
	}
	for i, s := range as {
		isParam := strings.HasPrefix(s, "{") && strings.HasSuffix(s, "}")
		if !isParam && s != bs[i] {
			return false
		}
	}
	return true
}
