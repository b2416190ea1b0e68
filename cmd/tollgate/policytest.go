package main

import (
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/cover"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/tester"
	"github.com/open-policy-agent/opa/v1/topdown"
)

// Exit codes of the policy commands (test, check, fmt, lint, replay), as
// OPA's: 0 all passed, 1 the command could not run (bad flags, a file that
// does not load or compile), 2 it ran and something failed (a test, the
// coverage threshold, a decision-table case, a finding).
const (
	exitError  = 1
	exitFailed = 2
)

type policyTestFlags struct {
	run       string
	coverage  bool
	threshold float64
	format    string
	verbose   bool
	bundle    bool
	timeout   time.Duration
}

func newTestCommand() *cobra.Command {
	var fl policyTestFlags
	cmd := &cobra.Command{
		Use:   "test [PATH...]",
		Short: "Run the Rego unit tests of policies (OPA's tester)",
		Long: `Run the Rego unit tests (rules named test_*) found in the .rego files under
each PATH (default "."), with OPA's own tester: what passes 'opa test' passes
here, and the reverse. Data files (data.json, data.yaml) are loaded as 'opa
test' loads them; with --bundle each PATH is read as a bundle directory.

A failing test shows the expression that failed and the values of its
variables (what OPA prints with --var-values), so you see what was compared.

--coverage reports the share of Rego lines the tests evaluate; --threshold N
fails the run (exit 2) below N percent and lists the lines not covered.

Exit status: 0 every test passed; 2 a test failed or coverage is below the
threshold; 1 the policies could not be loaded or compiled.`,
		Example: `  tollgate test ./policies
  tollgate test --bundle ./policies --coverage --threshold 95
  tollgate test ./policies --run 'test_admin.*' -v
  tollgate test ./policies --format junit > rego-tests.xml`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				args = []string{"."}
			}
			return runPolicyTests(cmd.Context(), args, fl, cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.StringVarP(&fl.run, "run", "r", "", "run only the tests whose package-qualified name matches this regular expression")
	f.BoolVarP(&fl.coverage, "coverage", "c", false, "report line coverage")
	f.Float64Var(&fl.threshold, "threshold", 0, "with coverage: fail below this percentage (0-100); implies --coverage")
	f.StringVarP(&fl.format, "format", "f", "text", "output format: text, json or junit")
	f.BoolVarP(&fl.verbose, "verbose", "v", false, "list every test, not only failures")
	f.BoolVarP(&fl.bundle, "bundle", "b", false, "read each PATH as a bundle directory")
	f.DurationVar(&fl.timeout, "timeout", 5*time.Second, "time limit of each test")
	return cmd
}

// testRun is the outcome of one run of the Rego tests.
type testRun struct {
	results  []*tester.Result
	modules  map[string]*ast.Module
	coverage *cover.Report // nil without --coverage
}

func runPolicyTests(ctx context.Context, paths []string, fl policyTestFlags, out io.Writer) error {
	switch fl.format {
	case "text", "json", "junit":
	default:
		return exitErr(exitError, fmt.Errorf("--format %q: want text, json or junit", fl.format))
	}
	if fl.threshold < 0 || fl.threshold > 100 {
		return exitErr(exitError, fmt.Errorf("--threshold %v: want a percentage between 0 and 100", fl.threshold))
	}
	if fl.threshold > 0 {
		fl.coverage = true
	}
	if fl.run != "" {
		if _, err := regexp.Compile(fl.run); err != nil {
			return exitErr(exitError, fmt.Errorf("--run: %w", err))
		}
	}
	run, err := regoTests(ctx, paths, fl)
	if err != nil {
		return exitErr(exitError, err)
	}
	if len(run.results) == 0 {
		return exitErr(exitError, fmt.Errorf("no tests found in %s", strings.Join(paths, ", ")))
	}

	switch fl.format {
	case "json":
		err = writeTestJSON(out, run)
	case "junit":
		err = writeJUnit(out, run)
	default:
		err = writeTestText(out, run, fl)
	}
	if err != nil {
		return exitErr(exitError, err)
	}

	failed := 0
	for _, r := range run.results {
		if !r.Pass() && !r.Skip {
			failed++
		}
	}
	switch {
	case failed > 0:
		return exitErr(exitFailed, fmt.Errorf("%d of %d tests failed", failed, len(run.results)))
	case run.coverage != nil && run.coverage.Coverage < fl.threshold:
		return exitErr(exitFailed, fmt.Errorf("coverage %.2f%% is below the threshold %.2f%%", run.coverage.Coverage, fl.threshold))
	}
	return nil
}

// regoTests loads the policies and runs their tests with OPA's tester,
// configured as 'opa test --var-values' is.
func regoTests(ctx context.Context, paths []string, fl policyTestFlags) (*testRun, error) {
	popts := ast.ParserOptions{RegoVersion: ast.RegoV1, ProcessAnnotation: true}
	var (
		modules map[string]*ast.Module
		bundles map[string]*bundle.Bundle
		store   storage.Store
		err     error
	)
	if fl.bundle {
		bundles, store, err = tester.LoadBundlesWithParserOptions(paths, noFilter, popts)
		if err == nil {
			modules = make(map[string]*ast.Module)
			for name, b := range bundles {
				maps.Copy(modules, b.ParsedModules(name))
			}
		}
	} else {
		modules, store, err = tester.LoadWithParserOptions(paths, noFilter, popts)
	}
	if err != nil {
		return nil, fmt.Errorf("load policies: %w", err)
	}

	txn, err := store.NewTransaction(ctx, storage.WriteParams)
	if err != nil {
		return nil, err
	}
	defer store.Abort(ctx, txn)

	compiler := ast.NewCompiler().
		WithPathConflictsCheck(storage.NonEmpty(ctx, store, txn)).
		WithEnablePrintStatements(true).
		WithCapabilities(ast.CapabilitiesForThisVersion()).
		WithUseTypeCheckAnnotations(true).
		WithRewriteTestRules(true)

	var cov *cover.Cover
	runner := tester.NewRunner().
		SetCompiler(compiler).
		SetStore(store).
		CapturePrintOutput(true).
		EnableTracing(true).
		StackTraces(true).
		SetModules(modules).
		SetBundles(bundles).
		SetTimeout(fl.timeout).
		Filter(fl.run)
	if fl.coverage {
		cov = cover.New()
		runner = runner.SetCoverageQueryTracer(cov)
	}
	ch, err := runner.RunTests(ctx, txn)
	if err != nil {
		return nil, fmt.Errorf("compile policies: %w", err)
	}
	run := &testRun{modules: modules}
	for r := range ch {
		// Keep only what a reader needs: the variable values of the failing
		// expression are in the trace's last events.
		r.Trace = failureTrace(r)
		run.results = append(run.results, r)
	}
	if cov != nil {
		// The report names each module by its own file (ParsedModules
		// prefixes the bundle's name, which would name no real file).
		byFile := make(map[string]*ast.Module, len(modules))
		for _, m := range modules {
			if m.Package != nil && m.Package.Location != nil {
				byFile[m.Package.Location.File] = m
			}
		}
		rep := cov.Report(byFile)
		run.coverage = &rep
	}
	return run, nil
}

func noFilter(string, os.FileInfo, int) bool { return false }

// failureTrace keeps the trace of a failed test only, and only its Fail and
// Note events, as 'opa test' does without --explain.
func failureTrace(r *tester.Result) []*topdown.Event {
	if r.Pass() {
		return nil
	}
	var out []*topdown.Event
	for _, e := range r.Trace {
		if e.Op == topdown.FailOp || e.Op == topdown.NoteOp {
			out = append(out, e)
		}
	}
	return out
}

func feed(results []*tester.Result) chan *tester.Result {
	ch := make(chan *tester.Result, len(results))
	for _, r := range results {
		ch <- r
	}
	close(ch)
	return ch
}

func writeTestText(out io.Writer, run *testRun, fl policyTestFlags) error {
	rep := tester.PrettyReporter{Output: out, Verbose: fl.verbose, FailureLine: true, LocalVars: true}
	if err := rep.Report(feed(run.results)); err != nil {
		return err
	}
	if run.coverage == nil {
		return nil
	}
	c := run.coverage
	fmt.Fprintf(out, "coverage: %.2f%% (%d of %d lines)", c.Coverage, c.CoveredLines, c.CoveredLines+c.NotCoveredLines)
	if fl.threshold > 0 {
		fmt.Fprintf(out, ", threshold %.2f%%", fl.threshold)
	}
	fmt.Fprintln(out)
	if c.Coverage < fl.threshold || fl.verbose {
		for _, file := range slices.Sorted(maps.Keys(c.Files)) {
			f := c.Files[file]
			if len(f.NotCovered) == 0 {
				continue
			}
			var ranges []string
			for _, r := range f.NotCovered {
				if r.Start.Row == r.End.Row {
					ranges = append(ranges, fmt.Sprint(r.Start.Row))
				} else {
					ranges = append(ranges, fmt.Sprintf("%d-%d", r.Start.Row, r.End.Row))
				}
			}
			ranges = slices.Compact(ranges)
			fmt.Fprintf(out, "  not covered: %s:%s\n", file, strings.Join(ranges, ","))
		}
	}
	return nil
}

// writeTestJSON writes OPA's JSON: the test results, or with coverage the
// coverage report (what 'opa test --coverage --format json' writes).
func writeTestJSON(out io.Writer, run *testRun) error {
	if run.coverage == nil {
		return tester.JSONReporter{Output: out}.Report(feed(run.results))
	}
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	return enc.Encode(run.coverage)
}

// JUnit XML, as CI systems (GitHub Actions reporters, GitLab, Jenkins) read it.
type junitSuites struct {
	XMLName  xml.Name     `xml:"testsuites"`
	Tests    int          `xml:"tests,attr"`
	Failures int          `xml:"failures,attr"`
	Errors   int          `xml:"errors,attr"`
	Suites   []junitSuite `xml:"testsuite"`
}

type junitSuite struct {
	Name     string      `xml:"name,attr"`
	Tests    int         `xml:"tests,attr"`
	Failures int         `xml:"failures,attr"`
	Errors   int         `xml:"errors,attr"`
	Skipped  int         `xml:"skipped,attr"`
	Time     string      `xml:"time,attr"`
	Cases    []junitCase `xml:"testcase"`
}

type junitCase struct {
	Name      string        `xml:"name,attr"`
	Classname string        `xml:"classname,attr"`
	File      string        `xml:"file,attr,omitempty"`
	Line      int           `xml:"line,attr,omitempty"`
	Time      string        `xml:"time,attr"`
	Failure   *junitMessage `xml:"failure,omitempty"`
	Error     *junitMessage `xml:"error,omitempty"`
	Skipped   *struct{}     `xml:"skipped,omitempty"`
}

type junitMessage struct {
	Message string `xml:"message,attr"`
	Text    string `xml:",chardata"`
}

func writeJUnit(out io.Writer, run *testRun) error {
	suites := map[string]*junitSuite{}
	var doc junitSuites
	for _, r := range run.results {
		s := suites[r.Package]
		if s == nil {
			s = &junitSuite{Name: r.Package}
			suites[r.Package] = s
		}
		c := junitCase{Name: r.Name, Classname: r.Package, Time: seconds(r.Duration)}
		if r.Location != nil {
			c.File, c.Line = r.Location.File, r.Location.Row
		}
		switch {
		case r.Skip:
			c.Skipped = &struct{}{}
			s.Skipped++
		case r.Error != nil:
			c.Error = &junitMessage{Message: r.Error.Error()}
			s.Errors++
			doc.Errors++
		case r.Fail:
			var detail strings.Builder
			_ = tester.PrettyReporter{Output: &detail, FailureLine: true, LocalVars: true}.Report(feed([]*tester.Result{r}))
			c.Failure = &junitMessage{Message: "test failed", Text: detail.String()}
			s.Failures++
			doc.Failures++
		}
		s.Tests++
		doc.Tests++
		s.Cases = append(s.Cases, c)
	}
	for _, name := range slices.Sorted(maps.Keys(suites)) {
		s := suites[name]
		var total time.Duration
		for _, r := range run.results {
			if r.Package == name {
				total += r.Duration
			}
		}
		s.Time = seconds(total)
		doc.Suites = append(doc.Suites, *s)
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

func seconds(d time.Duration) string { return fmt.Sprintf("%.3f", d.Seconds()) }

// exitCodeError carries a command's exit status to main.
type exitCodeError struct {
	code int
	err  error
}

func (e *exitCodeError) Error() string { return e.err.Error() }
func (e *exitCodeError) Unwrap() error { return e.err }

func exitErr(code int, err error) error { return &exitCodeError{code: code, err: err} }

// exitCode is the process exit status for a command's error.
func exitCode(err error) int {
	if ec, ok := errors.AsType[*exitCodeError](err); ok {
		return ec.code
	}
	return 1
}
