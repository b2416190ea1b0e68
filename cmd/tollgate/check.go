package main

import (
	"context"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/spf13/cobra"

	"github.com/tollgate/tollgate/bundles"
	"github.com/tollgate/tollgate/pdp/decisiontable"
	"github.com/tollgate/tollgate/pdp/policy"
)

type checkFlags struct {
	bundle  string
	format  string
	verbose bool
	run     string
	keys    []string

	capabilities string
}

func newCheckCommand() *cobra.Command {
	var fl checkFlags
	cmd := &cobra.Command{
		Use:   "check CASES...",
		Short: "Run decision tables through the whole decision pipeline",
		Long: `Run the decision tables in each CASES file (YAML) through the whole
pipeline, in-process: normalize the request, find its credential, verify it,
evaluate the policy of --bundle (default: the embedded default policy).

Each case names a request, a credential (a JWT with given claims, minted by a
test issuer this command runs itself; an API key by name; a raw header; none)
and its placement (header, the "session" cookie, a query parameter), and the
decision it must get: allow, status and optionally reasons and headers. See
docs/AUTHORING.md for the format.

A failing case shows the request (never a secret), what was expected and
what was decided.

Exit status: 0 every case passed; 2 a case failed; 1 the bundle or a case
file could not be loaded.`,
		Example: `  tollgate check test/cases/routes.yaml
  tollgate check --bundle ./policy cases/*.yaml
  tollgate check --bundle ./policy --key ops=admin:read,admin:write cases/ops.yaml
  tollgate check --bundle ./policy --format junit cases/routes.yaml > cases.xml`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runCheck(cmd.Context(), args, fl, cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.StringVarP(&fl.bundle, "bundle", "b", "", "policy bundle directory (default: the embedded default policy)")
	f.StringVarP(&fl.format, "format", "f", "text", "output format: text, json or junit")
	f.BoolVarP(&fl.verbose, "verbose", "v", false, "list every case, not only failures")
	f.StringVarP(&fl.run, "run", "r", "", "run only the cases whose name matches this regular expression")
	f.StringVar(&fl.capabilities, "capabilities", "", "policy.capabilities file extending the built-ins a policy may call (as 'serve' reads it)")
	f.StringArrayVar(&fl.keys, "key", nil, "an API key cases can name, NAME=SCOPE,SCOPE... (repeatable; replaces the defaults billing=products:read and noscope=)")
	return cmd
}

// loadBundleEngine loads a bundle directory ("" for the embedded default)
// and activates it on a new engine with the pinned capabilities.
func loadBundleEngine(ctx context.Context, dir string, caps *ast.Capabilities) (*policy.Engine, *bundle.Bundle, error) {
	source := "embedded"
	if dir != "" {
		source = "dir:" + dir
	}
	b, err := bundles.Load(ctx, source)
	if err != nil {
		return nil, nil, fmt.Errorf("load bundle: %w", err)
	}
	engine := policy.NewEngine(policy.Options{Capabilities: caps})
	if err := engine.Activate(ctx, b); err != nil {
		return nil, nil, fmt.Errorf("activate bundle: %w", err)
	}
	return engine, b, nil
}

// policyCapabilities are the built-ins a policy may call: the pinned ones,
// extended by file (a policy.capabilities document) when it is set.
func policyCapabilities(file string) (*ast.Capabilities, error) {
	if file == "" {
		return policy.PinnedCapabilities()
	}
	caps, err := policy.LoadCapabilitiesFile(file)
	if err != nil {
		return nil, fmt.Errorf("--capabilities: %w", err)
	}
	return caps, nil
}

func parseKeyFlags(flags []string) (map[string]decisiontable.Key, error) {
	if len(flags) == 0 {
		return nil, nil
	}
	keys := map[string]decisiontable.Key{}
	for _, f := range flags {
		name, scopes, ok := strings.Cut(f, "=")
		if !ok || name == "" {
			return nil, fmt.Errorf("--key %q: want NAME=SCOPE,SCOPE (scopes comma-separated, may be empty)", f)
		}
		k := decisiontable.Key{Owner: name}
		for s := range strings.SplitSeq(scopes, ",") {
			if s = strings.TrimSpace(s); s != "" {
				k.Scopes = append(k.Scopes, s)
			}
		}
		keys[name] = k
	}
	return keys, nil
}

func runCheck(ctx context.Context, files []string, fl checkFlags, out io.Writer) error {
	switch fl.format {
	case "text", "json", "junit":
	default:
		return exitErr(exitError, fmt.Errorf("--format %q: want text, json or junit", fl.format))
	}
	keys, err := parseKeyFlags(fl.keys)
	if err != nil {
		return exitErr(exitError, err)
	}
	run, err := regexp.Compile(fl.run)
	if err != nil {
		return exitErr(exitError, fmt.Errorf("--run: %w", err))
	}
	var cases []decisiontable.Case
	for _, f := range files {
		cs, err := decisiontable.Load(f)
		if err != nil {
			return exitErr(exitError, err)
		}
		for _, c := range cs {
			if run.MatchString(c.Name) {
				cases = append(cases, c)
			}
		}
	}
	if len(cases) == 0 {
		return exitErr(exitError, fmt.Errorf("no cases match %q", fl.run))
	}
	caps, err := policyCapabilities(fl.capabilities)
	if err != nil {
		return exitErr(exitError, err)
	}
	engine, _, err := loadBundleEngine(ctx, fl.bundle, caps)
	if err != nil {
		return exitErr(exitError, err)
	}
	runner, err := decisiontable.NewRunner(ctx, engine, decisiontable.Options{Keys: keys})
	if err != nil {
		return exitErr(exitError, err)
	}
	results := make([]decisiontable.Result, 0, len(cases))
	failed := 0
	for _, c := range cases {
		r := runner.Run(ctx, c)
		if !r.Pass() {
			failed++
		}
		results = append(results, r)
	}
	switch fl.format {
	case "json":
		err = writeCheckJSON(out, results, engine.Revision())
	case "junit":
		err = writeCheckJUnit(out, results)
	default:
		writeCheckText(out, results, fl.verbose, engine.Revision())
	}
	if err != nil {
		return exitErr(exitError, err)
	}
	if failed > 0 {
		return exitErr(exitFailed, fmt.Errorf("%d of %d cases failed", failed, len(results)))
	}
	return nil
}

func writeCheckText(out io.Writer, results []decisiontable.Result, verbose bool, revision string) {
	failed := 0
	for _, r := range results {
		if r.Pass() {
			if verbose {
				fmt.Fprintf(out, "%s:%d: %s: PASS\n", r.Case.File, r.Case.Line, r.Case.Name)
			}
			continue
		}
		failed++
		writeCaseFailure(out, r)
	}
	status := "PASS"
	if failed > 0 {
		status = "FAIL"
	}
	fmt.Fprintf(out, "%s: %d/%d cases passed (policy revision %s)\n", status, len(results)-failed, len(results), revision)
}

// writeCaseFailure shows a failed case: where it is written, its request
// (never a secret), what it expected and what was decided.
func writeCaseFailure(out io.Writer, r decisiontable.Result) {
	fmt.Fprintf(out, "%s:%d: %s: FAIL\n", r.Case.File, r.Case.Line, r.Case.Name)
	fmt.Fprintf(out, "  request:  %s\n", r.Case.Describe())
	if r.Err != nil {
		fmt.Fprintf(out, "  error:    %v\n\n", r.Err)
		return
	}
	fmt.Fprintf(out, "  expected: %s\n", describeWant(r.Case.Want))
	fmt.Fprintf(out, "  decided:  allow=%v status=%d reasons=%s headers=%s\n",
		r.Got.Allow, r.Got.Status, jsonLine(r.Got.Reasons), jsonLine(r.Got.Headers))
	for _, p := range r.Problems {
		fmt.Fprintf(out, "  - %s\n", p)
	}
	fmt.Fprintln(out)
}

func describeWant(w decisiontable.Want) string {
	s := fmt.Sprintf("allow=%v status=%d", w.Allow, w.Status)
	if w.Reasons != nil {
		s += " reasons=" + jsonLine(w.Reasons)
	}
	if w.ReasonsPrefix != nil {
		s += " reasons starting " + jsonLine(w.ReasonsPrefix)
	}
	if w.Headers != nil {
		s += " headers=" + jsonLine(w.Headers)
	}
	return s
}

func jsonLine(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

type checkJSONResult struct {
	Name     string             `json:"name"`
	File     string             `json:"file"`
	Line     int                `json:"line"`
	Pass     bool               `json:"pass"`
	Request  string             `json:"request"`
	Want     decisiontable.Want `json:"want"`
	Got      any                `json:"got,omitempty"`
	Problems []string           `json:"problems,omitempty"`
	Error    string             `json:"error,omitempty"`
	Duration time.Duration      `json:"duration_ns"`
}

func writeCheckJSON(out io.Writer, results []decisiontable.Result, revision string) error {
	doc := struct {
		Revision string            `json:"policy_revision"`
		Passed   int               `json:"passed"`
		Failed   int               `json:"failed"`
		Cases    []checkJSONResult `json:"cases"`
	}{Revision: revision, Cases: []checkJSONResult{}}
	for _, r := range results {
		jr := checkJSONResult{Name: r.Case.Name, File: r.Case.File, Line: r.Case.Line, Pass: r.Pass(),
			Request: r.Case.Describe(), Want: r.Case.Want, Problems: r.Problems, Duration: r.Duration}
		if r.Err != nil {
			jr.Error = r.Err.Error()
		} else {
			jr.Got = r.Got
		}
		if jr.Pass {
			doc.Passed++
		} else {
			doc.Failed++
		}
		doc.Cases = append(doc.Cases, jr)
	}
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	return enc.Encode(doc)
}

func writeCheckJUnit(out io.Writer, results []decisiontable.Result) error {
	suites := map[string]*junitSuite{}
	var doc junitSuites
	var order []string
	total := map[string]time.Duration{}
	for _, r := range results {
		s := suites[r.Case.File]
		if s == nil {
			s = &junitSuite{Name: r.Case.File}
			suites[r.Case.File] = s
			order = append(order, r.Case.File)
		}
		c := junitCase{Name: r.Case.Name, Classname: r.Case.File, File: r.Case.File, Line: r.Case.Line, Time: seconds(r.Duration)}
		switch {
		case r.Err != nil:
			c.Error = &junitMessage{Message: r.Err.Error()}
			s.Errors++
			doc.Errors++
		case !r.Pass():
			var detail strings.Builder
			writeCaseFailure(&detail, r)
			c.Failure = &junitMessage{Message: strings.Join(r.Problems, "; "), Text: detail.String()}
			s.Failures++
			doc.Failures++
		}
		s.Tests++
		doc.Tests++
		s.Cases = append(s.Cases, c)
		total[r.Case.File] += r.Duration
	}
	for _, name := range order {
		suites[name].Time = seconds(total[name])
		doc.Suites = append(doc.Suites, *suites[name])
	}
	if _, err := io.WriteString(out, xml.Header); err != nil {
		return err
	}
	enc := xml.NewEncoder(out)
	enc.Indent("", "  ")
	if err := enc.Encode(doc); err != nil {
		return err
	}
	_, err := io.WriteString(out, "\n")
	return err
}
