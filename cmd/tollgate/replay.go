package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/tollgate/tollgate/bundles"
	"github.com/tollgate/tollgate/pdp/decision"
	"github.com/tollgate/tollgate/pdp/decisiontable"
)

// Bounds of what replay reads.
const (
	maxReplayLineBytes = 4 << 20
	maxReplayEvents    = 1_000_000
	replayExamples     = 3
	maxExpectBytes     = 1 << 20
)

type replayFlags struct {
	bundle string
	expect string
	format string

	capabilities string
}

func newReplayCommand() *cobra.Command {
	var fl replayFlags
	cmd := &cobra.Command{
		Use:   "replay --bundle CANDIDATE DECISIONS.jsonl...",
		Short: "Replay recorded decisions against a candidate policy and report what would flip",
		Long: `Replay decision-log events (JSON lines, OPA's event shape as Tollgate's
decision log writes it: "input" is the policy input, "result" the decision)
against the CANDIDATE bundle, and report every decision that would change:
allow→deny, deny→allow, a different status, different reasons. Flips are
grouped by change, route and reasons, with examples (decision id, method and
path; nothing else of the request).

Each event's input.route is recomputed from the candidate's route table, so a
change of the table is replayed too. Events without an input (requests refused
before the policy ran) are skipped.

--expect FILE lists the flips the change intends (YAML):

  - change: allow_to_deny       # allow_to_deny | deny_to_allow | status | reasons
    route: customers-read       # the route's id or template (optional)
    reasons: [not_owner]        # the candidate's reasons (optional)
    why: customers may only read their own record

A flip is expected when an entry matches it in every field the entry gives.
Any other flip fails the run: it is the pre-merge check of a policy change.

Exit status: 0 no unexpected flip; 2 an unexpected flip; 1 the bundle, the
events or the expectations could not be read.`,
		Example: `  tollgate replay --bundle ./policy decisions.jsonl
  tollgate replay --bundle ./policy --expect expected-flips.yaml decisions/*.jsonl`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runReplay(cmd.Context(), args, fl, cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.StringVarP(&fl.bundle, "bundle", "b", "", "candidate policy bundle directory (required)")
	f.StringVar(&fl.expect, "expect", "", "YAML file listing the intended flips")
	f.StringVarP(&fl.format, "format", "f", "text", "output format: text or json")
	f.StringVar(&fl.capabilities, "capabilities", "", "policy.capabilities file extending the built-ins a policy may call (as 'serve' reads it)")
	_ = cmd.MarkFlagRequired("bundle")
	return cmd
}

// replayEvent is what replay reads of a decision-log event.
type replayEvent struct {
	DecisionID string                     `json:"decision_id"`
	Bundles    map[string]json.RawMessage `json:"bundles"`
	Input      map[string]any             `json:"input"`
	Result     json.RawMessage            `json:"result"`
}

// expectedFlip is one entry of --expect.
type expectedFlip struct {
	Change  string   `yaml:"change" json:"change,omitempty"`
	Route   string   `yaml:"route" json:"route,omitempty"`
	Reasons []string `yaml:"reasons" json:"reasons,omitempty"`
	Why     string   `yaml:"why" json:"why,omitempty"`
	matched int
}

// The kinds of change.
const (
	changeAllowToDeny = "allow_to_deny"
	changeDenyToAllow = "deny_to_allow"
	changeStatus      = "status"
	changeReasons     = "reasons"
)

// flipGroup is the flips of one change, route and pair of reasons.
type flipGroup struct {
	Change     string   `json:"change"`
	Route      string   `json:"route"`
	RouteID    string   `json:"route_id,omitempty"`
	From       string   `json:"from"`
	To         string   `json:"to"`
	Count      int      `json:"count"`
	Examples   []string `json:"examples"`
	Expected   bool     `json:"expected"`
	ExpectedBy string   `json:"expected_by,omitempty"`
}

type replayReport struct {
	Revision   string         `json:"policy_revision"`
	Events     int            `json:"events"`
	Replayed   int            `json:"replayed"`
	Skipped    int            `json:"skipped"`
	Flips      int            `json:"flips"`
	Unexpected int            `json:"unexpected"`
	Groups     []*flipGroup   `json:"groups"`
	Unused     []expectedFlip `json:"expected_but_not_seen,omitempty"`
}

func readExpectations(file string) ([]*expectedFlip, error) {
	if file == "" {
		return nil, nil
	}
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxExpectBytes+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxExpectBytes {
		return nil, fmt.Errorf("%s: larger than %d bytes", file, maxExpectBytes)
	}
	var list []*expectedFlip
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&list); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	for i, e := range list {
		switch e.Change {
		case "", changeAllowToDeny, changeDenyToAllow, changeStatus, changeReasons:
		default:
			return nil, fmt.Errorf("%s: entry %d: change %q: want %s, %s, %s or %s", file, i, e.Change, changeAllowToDeny, changeDenyToAllow, changeStatus, changeReasons)
		}
	}
	return list, nil
}

func runReplay(ctx context.Context, files []string, fl replayFlags, out io.Writer) error {
	if fl.format != "text" && fl.format != "json" {
		return exitErr(exitError, fmt.Errorf("--format %q: want text or json", fl.format))
	}
	expect, err := readExpectations(fl.expect)
	if err != nil {
		return exitErr(exitError, fmt.Errorf("--expect: %w", err))
	}
	b, err := bundles.Load(ctx, "dir:"+fl.bundle)
	if err != nil {
		return exitErr(exitError, fmt.Errorf("load bundle: %w", err))
	}
	caps, err := policyCapabilities(fl.capabilities)
	if err != nil {
		return exitErr(exitError, err)
	}
	ev, err := decisiontable.NewEvaluator(ctx, b, caps)
	if err != nil {
		return exitErr(exitError, err)
	}
	rep := &replayReport{Revision: ev.Revision(), Groups: []*flipGroup{}}
	groups := map[string]*flipGroup{}
	for _, file := range files {
		if err := replayFile(ctx, file, ev, rep, groups, expect); err != nil {
			return exitErr(exitError, err)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(groups)) {
		rep.Groups = append(rep.Groups, groups[k])
	}
	for _, e := range expect {
		if e.matched == 0 {
			rep.Unused = append(rep.Unused, *e)
		}
	}
	if fl.format == "json" {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return exitErr(exitError, err)
		}
	} else {
		writeReplayText(out, rep)
	}
	if rep.Unexpected > 0 {
		return exitErr(exitFailed, fmt.Errorf("%d unexpected flip(s)", rep.Unexpected))
	}
	return nil
}

func replayFile(ctx context.Context, file string, ev *decisiontable.Evaluator, rep *replayReport, groups map[string]*flipGroup, expect []*expectedFlip) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), maxReplayLineBytes)
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" {
			continue
		}
		if rep.Events++; rep.Events > maxReplayEvents {
			return fmt.Errorf("%s: more than %d events", file, maxReplayEvents)
		}
		var e replayEvent
		if err := json.Unmarshal([]byte(text), &e); err != nil {
			return fmt.Errorf("%s:%d: not a decision-log event: %w", file, line, err)
		}
		if e.Input == nil || len(e.Result) == 0 {
			rep.Skipped++
			continue
		}
		var old decision.Decision
		if err := json.Unmarshal(e.Result, &old); err != nil {
			return fmt.Errorf("%s:%d: result is not a decision: %w", file, line, err)
		}
		o, err := ev.Evaluate(ctx, e.Input, true)
		if err != nil {
			// A candidate that cannot decide fails closed when served.
			o.Decision = decision.Deny(500, decision.ReasonPolicyError)
		}
		rep.Replayed++
		change := flipKind(old, o.Decision)
		if change == "" {
			continue
		}
		rep.Flips++
		tmpl, id := routeOf(o.Route)
		from, to := describeDecision(old), describeDecision(o.Decision)
		key := strings.Join([]string{change, tmpl, from, to}, "\x00")
		g := groups[key]
		if g == nil {
			g = &flipGroup{Change: change, Route: tmpl, RouteID: id, From: from, To: to, Examples: []string{}}
			for _, x := range expect {
				if x.matches(change, tmpl, id, o.Decision.Reasons) {
					g.Expected, g.ExpectedBy = true, x.Why
					x.matched++
					break
				}
			}
			groups[key] = g
		}
		g.Count++
		if !g.Expected {
			rep.Unexpected++
		}
		if len(g.Examples) < replayExamples {
			g.Examples = append(g.Examples, example(e))
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	return nil
}

func (x *expectedFlip) matches(change, tmpl, id string, reasons []string) bool {
	return (x.Change == "" || x.Change == change) &&
		(x.Route == "" || x.Route == tmpl || (id != "" && x.Route == id)) &&
		(x.Reasons == nil || slices.Equal(x.Reasons, reasons))
}

func flipKind(old, now decision.Decision) string {
	switch {
	case old.Allow && !now.Allow:
		return changeAllowToDeny
	case !old.Allow && now.Allow:
		return changeDenyToAllow
	case old.Status != now.Status:
		return changeStatus
	case !slices.Equal(nonNil(old.Reasons), nonNil(now.Reasons)):
		return changeReasons
	}
	return ""
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func describeDecision(d decision.Decision) string {
	verdict := "deny"
	if d.Allow {
		verdict = "allow"
	}
	return fmt.Sprintf("%s %d %s", verdict, d.Status, jsonLine(nonNil(d.Reasons)))
}

// routeOf names a route for grouping: its template and id.
func routeOf(r any) (tmpl, id string) {
	m, ok := r.(map[string]any)
	if !ok || m["matched"] == false {
		return "(no route)", ""
	}
	tmpl, _ = m["template"].(string)
	id, _ = m["id"].(string)
	if tmpl == "" {
		tmpl = id
	}
	return tmpl, id
}

// example names an event by its decision id, method and path: never its
// headers, query or identity.
func example(e replayEvent) string {
	req, _ := e.Input["request"].(map[string]any)
	return fmt.Sprintf("%s %v %v", e.DecisionID, req["method"], req["path"])
}

func writeReplayText(out io.Writer, rep *replayReport) {
	fmt.Fprintf(out, "replayed %d of %d decisions against policy revision %s (%d skipped: no policy input)\n",
		rep.Replayed, rep.Events, rep.Revision, rep.Skipped)
	for _, g := range rep.Groups {
		mark := "UNEXPECTED"
		if g.Expected {
			mark = "expected"
			if g.ExpectedBy != "" {
				mark += ": " + g.ExpectedBy
			}
		}
		route := g.Route
		if g.RouteID != "" && g.RouteID != g.Route {
			route = fmt.Sprintf("%s (%s)", g.RouteID, g.Route)
		}
		fmt.Fprintf(out, "\n%s on %s: %d decision(s) [%s]\n", strings.ReplaceAll(g.Change, "_", " "), route, g.Count, mark)
		fmt.Fprintf(out, "  was: %s\n  now: %s\n", g.From, g.To)
		for _, ex := range g.Examples {
			fmt.Fprintf(out, "  e.g. %s\n", ex)
		}
	}
	for _, u := range rep.Unused {
		fmt.Fprintf(out, "\nnote: expected flip not seen: change %q route %q reasons %s\n", u.Change, u.Route, jsonLine(u.Reasons))
	}
	status := "PASS"
	if rep.Unexpected > 0 {
		status = "FAIL"
	}
	fmt.Fprintf(out, "\n%s: %d flip(s), %d unexpected\n", status, rep.Flips, rep.Unexpected)
}
