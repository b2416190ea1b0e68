package main

import (
	"bytes"
	"errors"
	"fmt"
	"image/color"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// report is one run's figures.
type report struct {
	opts         options
	targets      []*target
	results      map[key]*runResult
	rss          map[string]int64
	opaVersion   string
	nginxVersion string
	revision     string
	date         time.Time
	load         [2]string // /proc/loadavg's 1-minute figure before and after measuring
}

// row is one cell of the table, summarized.
type row struct {
	t              *target
	concurrency    int
	rate           float64 // median of the rounds' decisions/s
	p50, p99, p999 time.Duration
	cpuPer1k       float64 // CPU seconds per 1,000 decisions
	clientPer1k    float64 // the harness's CPU seconds per 1,000 decisions
	rss            int64
	wrong, failed  int
	firstErr       string
}

func (rep *report) row(t *target, n int) row {
	r := rep.results[key{t.name, n}]
	slices.Sort(r.latencies)
	rates := slices.Clone(r.rates)
	slices.Sort(rates)
	out := row{
		t: t, concurrency: n, rate: rates[len(rates)/2],
		p50: percentile(r.latencies, 0.50), p99: percentile(r.latencies, 0.99), p999: percentile(r.latencies, 0.999),
		rss: rep.rss[t.name], wrong: r.wrong, failed: r.failed, firstErr: r.firstErr,
	}
	if r.decisions > 0 {
		out.cpuPer1k = r.cpu / float64(r.decisions) * 1000
		out.clientPer1k = r.clientCPU / float64(r.decisions) * 1000
	}
	return out
}

// percentile of sorted durations, nearest rank.
func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted)) + 0.999999)
	return sorted[min(max(i, 1), len(sorted))-1]
}

func (rep *report) rows(group string) []row {
	var out []row
	for _, n := range rep.opts.concurrency {
		for _, t := range rep.targets {
			if t.group == group {
				out = append(out, rep.row(t, n))
			}
		}
	}
	return out
}

func find(rows []row, name string, n int) *row {
	for i := range rows {
		if rows[i].t.name == name && rows[i].concurrency == n {
			return &rows[i]
		}
	}
	return nil
}

// table writes the markdown tables.
func (rep *report) table(w io.Writer) {
	o := rep.opts
	fmt.Fprintf(w, "%s; %d CPUs, %s %s/%s; tollgate %s, OPA %s", rep.date.Format("2006-01-02 15:04 MST"),
		runtime.NumCPU(), runtime.Version(), runtime.GOOS, runtime.GOARCH, rep.revision, rep.opaVersion)
	if rep.nginxVersion != "" {
		fmt.Fprintf(w, ", NGINX %s", rep.nginxVersion)
	}
	fmt.Fprintf(w, ". %d users; mix %s (%s); own x-request-id per request: %t; "+
		"%d rounds of %s per server and concurrency, order rotated, after a %s warm-up. "+
		"decisions/s: median of the rounds; latencies: all rounds pooled, from the client; CPU: the server's processes, from /proc; "+
		"harness CPU: the clients' own process, from /proc, which shares the cores with the servers; "+
		"RSS: their peak (VmHWM) over the whole run, summed; through NGINX, the processes are NGINX's, the upstream's and, with auth_request, Tollgate's.\n\n",
		o.users, o.shares, strings.Join(kindNames(), "/"), o.requestIDs, o.rounds, o.duration, o.warmup)
	if o.decisionTimeout > 0 {
		fmt.Fprintf(w, "Tollgate's limits.decision_timeout: %s.\n\n", o.decisionTimeout)
	}
	if rep.load[0] != "" {
		fmt.Fprintf(w, "Load average (1 min) before measuring %s, after %s.\n\n", rep.load[0], rep.load[1])
	}

	pdp := rep.rows("pdp")
	fmt.Fprintln(w, "| server | clients | decisions/s | p50 | p99 | p99.9 | CPU s / 1k decisions | harness CPU s / 1k | peak RSS | decisions/s vs OPA | p99 vs OPA | decisions/s vs ceiling |")
	fmt.Fprintln(w, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
	for _, r := range pdp {
		opa, ceil := find(pdp, "opa", r.concurrency), find(pdp, "ceiling", r.concurrency)
		vsOPA, p99OPA, vsCeil := "", "", ""
		if opa != nil {
			vsOPA, p99OPA = ratio(r.rate, opa.rate), ratio(r.p99.Seconds(), opa.p99.Seconds())
		}
		if ceil != nil {
			vsCeil = ratio(r.rate, ceil.rate)
		}
		fmt.Fprintf(w, "| %s | %d | %s | %s | %s | %s | %.3f | %.3f | %s | %s | %s | %s |\n", r.t.name, r.concurrency, thousands(r.rate),
			ms(r.p50), ms(r.p99), ms(r.p999), r.cpuPer1k, r.clientPer1k, mib(r.rss), vsOPA, p99OPA, vsCeil)
	}
	rep.cacheShares(w, pdp)
	if ngx := rep.rows("nginx"); len(ngx) > 0 {
		fmt.Fprintln(w)
		fmt.Fprintln(w, "| through NGINX | clients | requests/s | p50 | p99 | p99.9 | CPU s / 1k requests | peak RSS | requests/s vs NGINX alone | p50 vs NGINX alone | p99 vs NGINX alone |")
		fmt.Fprintln(w, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
		for _, r := range ngx {
			alone := find(ngx, "nginx", r.concurrency)
			fmt.Fprintf(w, "| %s | %d | %s | %s | %s | %s | %.3f | %s | %s | %s | %s |\n", r.t.name, r.concurrency, thousands(r.rate),
				ms(r.p50), ms(r.p99), ms(r.p999), r.cpuPer1k, mib(r.rss),
				ratio(r.rate, alone.rate), ratio(r.p50.Seconds(), alone.p50.Seconds()), ratio(r.p99.Seconds(), alone.p99.Seconds()))
		}
	}
	fmt.Fprintln(w)
	for _, t := range rep.targets {
		fmt.Fprintf(w, "- `%s`: %s\n", t.name, t.what)
	}
	for _, g := range []string{"pdp", "nginx"} {
		for _, r := range rep.rows(g) {
			if r.wrong+r.failed > 0 {
				fmt.Fprintf(w, "\n**%s, %d clients: %d wrong answers, %d failed requests**; the first: %s\n", r.t.name, r.concurrency, r.wrong, r.failed, r.firstErr)
			}
		}
	}
}

// cacheShares says, for each server that reports its decision cache, how
// many of its decisions the cache answered and how many the policy
// evaluated over the measured rounds.
func (rep *report) cacheShares(w io.Writer, rows []row) {
	for _, r := range rows {
		res := rep.results[key{r.t.name, r.concurrency}]
		if !res.cacheCounted || res.cacheHits+res.cacheMisses == 0 {
			continue
		}
		total := res.cacheHits + res.cacheMisses
		fmt.Fprintf(w, "\n%s, %d clients: of %s decisions, the decision cache answered %s (%.1f%%) and the policy evaluated %s (%.1f%%) (`tollgate_cache_requests_total{cache=\"decision\"}` over the measured rounds).\n",
			r.t.name, r.concurrency, thousands(float64(res.decisions)), thousands(res.cacheHits), 100*res.cacheHits/total, thousands(res.cacheMisses), 100*res.cacheMisses/total)
	}
}

// failures is an error when any answer was wrong or any request failed.
func (rep *report) failures() error {
	var errs []error
	for k, r := range rep.results {
		if r.wrong+r.failed > 0 {
			errs = append(errs, fmt.Errorf("%s, %d clients: %d wrong answers, %d failed requests; the first: %s", k.target, k.concurrency, r.wrong, r.failed, r.firstErr))
		}
	}
	return errors.Join(errs...)
}

// loadAverage is the 1-minute load average, or "" when unknown: how busy
// the machine was, for reading the figures.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return ""
	}
	return f[0]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond)) }

func mib(n int64) string { return fmt.Sprintf("%.0f MiB", float64(n)/(1<<20)) }

func ratio(a, b float64) string {
	if b == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2f×", a/b)
}

func thousands(v float64) string {
	s := fmt.Sprintf("%.0f", v)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// writeMarkdown writes docs/BENCHMARKS.md: what was measured, how, the
// table and the chart, keeping the in-process section that follows them.
func (rep *report) writeMarkdown(path, chart string) error {
	var b bytes.Buffer
	b.WriteString(`# Benchmarks

Written by the load harness (` + "`test/load`" + `); do not edit by hand. Re-run with

` + "```sh\ngo -C test/load run .\n```" + `

on a quiet machine; the harness and every server share its CPUs, so read the
ratios, measured side by side in one run, rather than the absolute figures.

## What runs

- **The mix**: every user has their own RS256 token (issued by a real OpenID
  Connect issuer the harness serves over HTTP) and customer number. Shares:
  own orders with varying query strings (allow), own record (allow), someone
  else's record (403 ` + "`not_owner`" + `), products with the API key or a
  token with ` + "`products:read`" + ` (allow), anonymous public reads (allow).
  Every request has its own ` + "`x-request-id`" + `; every answer is checked
  (allow, status, the caller's ` + "`x-user-id`" + `), and a wrong answer
  fails the run.
- **Servers**, on loopback, HTTP/1.1, one keep-alive connection per client:
  Tollgate (` + "`tollgate serve`" + ` trusting the issuer, decision log
  off); OPA ` + "`run --server`" + ` built from ` + "`test/tools`" + ` (the
  OPA of ` + "`go.mod`" + `) with ` + "`test/load/opa/authz.rego`" + `,
  which verifies the JWT itself with ` + "`io.jwt.decode_verify`" + ` against
  the JWKS as data, its ` + "`io_jwt`" + ` cache on, and the route table of
  ` + "`policies/`" + ` as data; a do-nothing ` + "`net/http`" + ` handler
  with Tollgate's listener settings (the ceiling).
- **NGINX**: the same mix as real API requests through NGINX with
  ` + "`auth_request`" + ` to Tollgate's ` + "`/v1/forward-auth`" + ` in front
  of a small upstream (the do-nothing handler), against the same NGINX
  proxying to the upstream alone.

## Results

`)
	rep.table(&b)
	if chart != "" {
		rel, err := filepath.Rel(filepath.Dir(path), chart)
		if err != nil {
			rel = chart
		}
		fmt.Fprintf(&b, "\n![p50 and p99 latency against decisions/s, per server and number of clients](%s)\n", filepath.ToSlash(rel))
	}
	// The in-process figures (test/bench) are kept by hand after the
	// harness's part: carry them over from the file being replaced.
	if old, err := os.ReadFile(path); err == nil {
		if i := bytes.Index(old, []byte(inProcessHeading)); i >= 0 {
			b.WriteString("\n")
			b.Write(old[i+1:])
		}
	}
	return os.WriteFile(path, b.Bytes(), 0o644)
}

// inProcessHeading starts the part of docs/BENCHMARKS.md the harness does
// not write and keeps.
const inProcessHeading = "\n## In process"

// chart draws latency (p50 and p99) against throughput, one line per
// server through its concurrencies.
func (rep *report) chart(path string) error {
	p := plot.New()
	p.Title.Text = "Latency against throughput; points labelled with the number of clients"
	p.X.Label.Text = "decisions/s (requests/s through NGINX)"
	p.Y.Label.Text = "latency, ms"
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = plot.LogTicks{Prec: -1}
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	p.Add(plotter.NewGrid())
	p.Legend.Left = true
	p.Legend.Padding = vg.Points(4)
	palette := []color.RGBA{{0, 114, 178, 255}, {213, 94, 0, 255}, {0, 158, 115, 255}, {204, 121, 167, 255}, {86, 180, 233, 255}, {230, 159, 0, 255}}
	for i, t := range rep.targets {
		for _, q := range []struct {
			name string
			at   func(row) time.Duration
			dash []vg.Length
		}{
			{"p50", func(r row) time.Duration { return r.p50 }, nil},
			{"p99", func(r row) time.Duration { return r.p99 }, []vg.Length{vg.Points(4), vg.Points(3)}},
		} {
			var xys plotter.XYs
			var labels []string
			for _, n := range rep.opts.concurrency {
				r := rep.row(t, n)
				xys = append(xys, plotter.XY{X: max(r.rate, 1), Y: max(float64(q.at(r))/float64(time.Millisecond), 0.001)})
				labels = append(labels, strconv.Itoa(n))
			}
			if q.name == "p50" {
				l, err := plotter.NewLabels(plotter.XYLabels{XYs: xys, Labels: labels})
				if err != nil {
					return fmt.Errorf("chart: %w", err)
				}
				l.Offset = vg.Point{X: vg.Points(4), Y: vg.Points(-10)}
				p.Add(l)
			}
			line, points, err := plotter.NewLinePoints(xys)
			if err != nil {
				return fmt.Errorf("chart: %w", err)
			}
			c := palette[i%len(palette)]
			line.Color, line.Dashes, line.Width = c, q.dash, vg.Points(1.5)
			points.Color, points.Shape = c, draw.CircleGlyph{}
			p.Add(line, points)
			p.Legend.Add(t.name+" "+q.name, line, points)
		}
	}
	p.X.Max *= 1.3
	p.X.Min /= 1.3
	p.Y.Max *= 1.5
	p.Y.Min /= 1.5
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	if err := p.Save(9*vg.Inch, 5.5*vg.Inch, path); err != nil {
		return fmt.Errorf("chart: %w", err)
	}
	return nil
}
