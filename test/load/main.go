// Command load measures Tollgate under a realistic mix of requests against
// the alternative an operator weighs, OPA's own server with a policy that
// verifies the JWT itself, and against a do-nothing Go handler (the
// ceiling), side by side in one run on loopback; and NGINX with
// auth_request to Tollgate against the same NGINX without it.
//
//	go -C test/load run .                       # the full run; writes docs/BENCHMARKS.md and docs/benchmarks.png
//	go -C test/load run . -duration 300ms -users 50 -rounds 1 -warmup 0 -out ''   # a smoke run
//	go -C test/load run . -servers tollgate -out '' -cpuprofile /tmp/tollgate.pprof   # profile Tollgate under the mix
//
// It is its own module (test/load/go.mod), so that its plotting library
// never enters the product's go.mod; it uses Tollgate only as a binary
// (`tollgate serve`, `tollgate apikey new`) and over HTTP, so it keeps
// working while the core changes.
//
// Every answer is checked against what the mix expects (allow or deny,
// status, the caller's x-user-id); a wrong answer or a failed request is
// counted and fails the run. Progress goes to stderr, the table to stdout.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// options are the command-line flags.
type options struct {
	duration    time.Duration
	warmup      time.Duration
	rounds      int
	concurrency []int
	users       int
	shares      shares
	requestIDs  bool
	nginx       string // "auto", "on", "off"
	opa         string
	tollgate    string // a prebuilt binary; "" to build cmd/tollgate
	// decisionTimeout, when positive, is Tollgate's limits.decision_timeout.
	decisionTimeout time.Duration
	out             string // markdown report, relative to the repository root; "" for none
	chart           string // chart next to it
	seed            uint64
	// servers, when not empty, limits the run to these targets (by name).
	servers []string
	// cpuProfile, when set, is where Tollgate's CPU profile of the whole
	// measured run is written (taken from its admin listener's pprof).
	cpuProfile string
	// memProfile, when set, is where Tollgate's allocation profile (since
	// it started) is written after the measured rounds.
	memProfile string
}

// ceilingEnv, when set to an address, makes the program (or its test
// binary) the do-nothing server on that address instead of the harness:
// the harness starts the ceiling as a process of its own, so that its CPU
// and memory are measured as the other servers' are.
const ceilingEnv = "TOLLGATE_LOAD_SERVE_CEILING"

func main() {
	if addr := os.Getenv(ceilingEnv); addr != "" {
		if err := serveCeiling(addr); err != nil {
			fmt.Fprintln(os.Stderr, "ceiling:", err)
			os.Exit(1)
		}
		return
	}
	o, err := parseFlags(os.Args[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "load:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop() // a second interrupt kills the harness at once
	}()
	err = run(ctx, o, os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "load:", err)
		os.Exit(1)
	}
}

// serverNames are the targets' names, for -servers.
func serverNames() []string {
	return []string{"ceiling", "opa", "tollgate", "nginx+tollgate", "nginx"}
}

func parseFlags(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	fs.DurationVar(&o.duration, "duration", 4*time.Second, "how long each server runs in each round, per concurrency")
	fs.DurationVar(&o.warmup, "warmup", 2*time.Second, "unmeasured run of each server per concurrency before the first round (0 for none)")
	fs.IntVar(&o.rounds, "rounds", 3, "rounds; each runs every server once per concurrency, in a rotated order")
	conc := fs.String("concurrency", "16,64", "comma-separated numbers of keep-alive clients")
	fs.IntVar(&o.users, "users", 2000, "users, each with their own RS256 token and customer number")
	share := fs.String("mix", defaultShares.String(), "shares of the mix, in percent: "+strings.Join(kindNames(), ","))
	fs.BoolVar(&o.requestIDs, "request-ids", true, "give every request its own x-request-id")
	fs.StringVar(&o.nginx, "nginx", "auto", "the NGINX scenario: on, off, or auto (on when nginx is installed)")
	fs.StringVar(&o.opa, "opa", "test/.bin/opa", "opa binary; relative to the repository root; built from test/tools when it is this default and missing")
	fs.StringVar(&o.tollgate, "tollgate", "", "a tollgate binary to run instead of building ./cmd/tollgate (relative to the repository root)")
	fs.DurationVar(&o.decisionTimeout, "decision-timeout", 0, "Tollgate's limits.decision_timeout (0: Tollgate's default); a decision that takes longer\nfails closed (500), which the harness counts as a wrong answer")
	fs.StringVar(&o.out, "out", "docs/BENCHMARKS.md", "markdown report to write, relative to the repository root (\"\" for none)")
	fs.StringVar(&o.chart, "chart", "docs/benchmarks.png", "chart to write (.png or .svg), relative to the repository root (\"\" for none)")
	fs.Uint64Var(&o.seed, "seed", 1, "seed of the mix")
	servers := fs.String("servers", "", "comma-separated servers to run (ceiling, opa, tollgate, nginx+tollgate, nginx); empty for all")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write Tollgate's CPU profile of the measured rounds to this file (go tool pprof reads it)")
	fs.StringVar(&o.memProfile, "memprofile", "", "write Tollgate's allocation profile (warm-up and rounds) to this file")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: go -C test/load run . [flags]

Runs Tollgate, OPA (run --server, a policy that verifies the JWT itself, the
same route table), a do-nothing Go handler, and NGINX with and without
auth_request to Tollgate, side by side on loopback, under one mix of
requests; prints one table and writes it with a chart.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	for s := range strings.SplitSeq(*conc, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 || n > 4096 {
			return o, fmt.Errorf("-concurrency: %q is not a number of clients in 1..4096", s)
		}
		o.concurrency = append(o.concurrency, n)
	}
	for s := range strings.SplitSeq(*servers, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if !slices.Contains(serverNames(), s) {
			return o, fmt.Errorf("-servers: %q is not one of %s", s, strings.Join(serverNames(), ", "))
		}
		o.servers = append(o.servers, s)
	}
	if len(o.servers) > 0 && o.out == "docs/BENCHMARKS.md" {
		return o, errors.New("-servers measures some of the servers: give -out '' (or a report file of its own) so that docs/BENCHMARKS.md keeps the whole comparison")
	}
	var err error
	if o.shares, err = parseShares(*share); err != nil {
		return o, fmt.Errorf("-mix: %w", err)
	}
	switch {
	case o.duration <= 0 || o.warmup < 0 || o.rounds < 1 || o.decisionTimeout < 0:
		return o, errors.New("-duration and -rounds must be positive, -warmup and -decision-timeout not negative")
	case o.users < 2 || o.users > 1_000_000:
		return o, errors.New("-users must be in 2..1000000 (someone else's record needs a second user)")
	case o.nginx != "auto" && o.nginx != "on" && o.nginx != "off":
		return o, errors.New("-nginx is on, off or auto")
	}
	return o, nil
}
