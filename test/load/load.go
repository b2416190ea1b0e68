package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	json "github.com/go-json-experiment/json"
)

// target is one server under load: how to send it a call of the mix and
// check its answer, and which processes do the work.
type target struct {
	name  string
	what  string // for the report
	group string // "pdp" (compared with OPA and the ceiling) or "nginx"
	// do sends c and checks the answer. A wrong answer is a *wrongAnswer;
	// any other error is a failed request.
	do   func(ctx context.Context, client *http.Client, c *call, buf *bytes.Buffer) error
	pids func() []int
	// cacheCounts, when set, reads the server's decision-cache hits and
	// misses so far (Tollgate's metrics), to report how many decisions of
	// a run the policy evaluated.
	cacheCounts func(ctx context.Context, client *http.Client) (hits, misses float64, err error)
}

// wrongAnswer is an answer other than the mix expects.
type wrongAnswer struct{ msg string }

func (w *wrongAnswer) Error() string { return w.msg }

func wrong(format string, args ...any) error { return &wrongAnswer{fmt.Sprintf(format, args...)} }

// decisionAnswer is the part of a decision the checks read, in Tollgate's
// answer and OPA's result alike.
// It is decoded with json v2 into fields for just these (every other
// member is skipped), so that checking an answer takes as little of the
// machine the servers share with the harness as it can.
type decisionAnswer struct {
	Allow   bool   `json:"allow"`
	Status  int    `json:"status"`
	Headers idHead `json:"headers"`
}

// idHead is the identity header the checks read.
type idHead struct {
	UserID string `json:"x-user-id"`
}

func (d *decisionAnswer) check(c *call) error {
	if d.Allow != c.allow || d.Status != c.status || d.Headers.UserID != c.subject {
		return wrong("%s %s: got allow=%t status=%d x-user-id=%q, want allow=%t status=%d x-user-id=%q",
			c.kind, c.method, d.Allow, d.Status, d.Headers.UserID, c.allow, c.status, c.subject)
	}
	return nil
}

// post sends body to url and returns the answer's body (at most 64 KiB).
func post(ctx context.Context, client *http.Client, url string, c *call, body []byte, buf *bytes.Buffer) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if id := requestID(c); id != "" {
		req.Header.Set("X-Request-Id", id)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	buf.Reset()
	if _, err := buf.ReadFrom(io.LimitReader(resp.Body, 64<<10)); err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return buf.Bytes(), nil
}

func requestID(c *call) string {
	for i := 0; i < len(c.headers); i += 2 {
		if c.headers[i] == "x-request-id" {
			return c.headers[i+1]
		}
	}
	return ""
}

// tollgateTarget: POST /v1/decision with the call as a gateway describes it.
func tollgateTarget(url string, pid int) *target {
	return &target{
		name: "tollgate", group: "pdp",
		what: "Tollgate `serve`, `POST /v1/decision`: verifies the RS256 JWT (or API key), runs the default policy",
		do: func(ctx context.Context, client *http.Client, c *call, buf *bytes.Buffer) error {
			body, err := post(ctx, client, url+"/v1/decision", c, c.decisionJSON(nil), buf)
			if err != nil {
				return err
			}
			var d decisionAnswer
			if err := json.Unmarshal(body, &d); err != nil {
				return wrong("undecodable decision: %v", err)
			}
			return d.check(c)
		},
		pids: func() []int { return []int{pid} },
		cacheCounts: func(ctx context.Context, client *http.Client) (float64, float64, error) {
			return decisionCacheCounts(ctx, client, url)
		},
	}
}

// opaTarget: POST /v1/data/loadtest/authz/decision with the same document
// as the input.
func opaTarget(url string, pid int) *target {
	return &target{
		name: "opa", group: "pdp",
		what: "OPA `run --server`, `POST /v1/data`: `io.jwt.decode_verify` against the JWKS as data (io_jwt cache on), the same route table as data",
		do: func(ctx context.Context, client *http.Client, c *call, buf *bytes.Buffer) error {
			in := append([]byte(`{"input":`), c.decisionJSON(nil)...)
			body, err := post(ctx, client, url+"/v1/data/loadtest/authz/decision", c, append(in, '}'), buf)
			if err != nil {
				return err
			}
			var r struct {
				Result *decisionAnswer `json:"result"`
			}
			if err := json.Unmarshal(body, &r); err != nil {
				return wrong("undecodable OPA answer: %v", err)
			}
			if r.Result == nil {
				return wrong("OPA's decision is undefined")
			}
			return r.Result.check(c)
		},
		pids: func() []int { return []int{pid} },
	}
}

// ceilingTarget: the same POST to a handler that reads it and answers 200.
func ceilingTarget(url string, pid int) *target {
	return &target{
		name: "ceiling", group: "pdp",
		what: "do-nothing Go handler (`net/http`, the same listener settings): reads the body, answers a constant",
		do: func(ctx context.Context, client *http.Client, c *call, buf *bytes.Buffer) error {
			_, err := post(ctx, client, url+"/v1/decision", c, c.decisionJSON(nil), buf)
			return err
		},
		pids: func() []int { return []int{pid} },
	}
}

// nginxTarget: the call itself, through NGINX. With auth, a deny is NGINX's
// 401/403 and an allow reaches the upstream with the caller's identity;
// alone, every call reaches the upstream with none.
func nginxTarget(name, what, url string, auth bool, pids []int) *target {
	return &target{
		name: name, group: "nginx", what: what,
		do: func(ctx context.Context, client *http.Client, c *call, buf *bytes.Buffer) error {
			req, err := http.NewRequestWithContext(ctx, c.method, url+c.target, nil)
			if err != nil {
				return err
			}
			for i := 0; i < len(c.headers); i += 2 {
				req.Header.Set(c.headers[i], c.headers[i+1])
			}
			resp, err := client.Do(req)
			if err != nil {
				return err
			}
			buf.Reset()
			_, err = buf.ReadFrom(io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
			if err != nil {
				return err
			}
			status, subject := http.StatusOK, ""
			if auth {
				status, subject = c.status, c.subject
			}
			if resp.StatusCode != status {
				return wrong("%s: got HTTP %d, want %d", c.kind, resp.StatusCode, status)
			}
			if got := resp.Header.Get("X-Seen-User"); status == http.StatusOK && got != subject {
				return wrong("%s: the upstream saw X-User-Id %q, want %q", c.kind, got, subject)
			}
			return nil
		},
		pids: func() []int { return pids },
	}
}

// ---------------------------------------------------------------------------
// Runs

// runResult is one run of a target at one concurrency (or the sum of several).
type runResult struct {
	decisions int
	elapsed   time.Duration
	latencies []time.Duration
	cpu       float64 // seconds, the target's processes
	clientCPU float64 // seconds, the harness's own process (the clients), on the same cores
	// cacheHits and cacheMisses are the decisions the server's decision
	// cache answered and the policy evaluated (cacheCounted: the target
	// reports them).
	cacheHits, cacheMisses float64
	cacheCounted           bool
	wrong                  int
	failed                 int
	firstErr               string
	rates                  []float64 // decisions/s of each round
}

func (r *runResult) add(o *runResult) {
	r.decisions += o.decisions
	r.elapsed += o.elapsed
	r.latencies = append(r.latencies, o.latencies...)
	r.cpu += o.cpu
	r.clientCPU += o.clientCPU
	r.cacheHits += o.cacheHits
	r.cacheMisses += o.cacheMisses
	r.cacheCounted = r.cacheCounted || o.cacheCounted
	r.wrong += o.wrong
	r.failed += o.failed
	if r.firstErr == "" {
		r.firstErr = o.firstErr
	}
	r.rates = append(r.rates, float64(o.decisions)/o.elapsed.Seconds())
}

// mixer makes the generators of a run.
type mixer struct {
	users      []user
	apiKey     string
	keyOwner   string
	shares     shares
	requestIDs bool
	seed       uint64
	runs       uint64 // runs so far, for distinct request ids and streams
}

func (m *mixer) generator(worker int) *generator {
	return &generator{
		users: m.users, apiKey: m.apiKey, keyOwner: m.keyOwner, shares: m.shares, requestIDs: m.requestIDs,
		prefix: "load-" + strconv.FormatUint(m.runs, 36) + "-" + strconv.Itoa(worker) + "-",
		rnd:    rand.New(rand.NewPCG(m.seed, m.runs<<16|uint64(worker))),
	}
}

// newClient is a keep-alive client for n workers: one connection each.
func newClient(n int) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.Proxy = nil
	t.MaxIdleConns = n
	t.MaxIdleConnsPerHost = n
	t.MaxConnsPerHost = n
	t.DisableCompression = true
	t.ForceAttemptHTTP2 = false
	return &http.Client{Transport: t, Timeout: 30 * time.Second}
}

// runTarget runs t with n workers for d. Workers count wrong answers and
// failed requests and go on; the caller fails the whole run on any.
func runTarget(ctx context.Context, m *mixer, t *target, n int, d time.Duration) (*runResult, error) {
	m.runs++
	client := newClient(n)
	defer client.CloseIdleConnections()
	// The server's decision-cache counts are read outside the CPU
	// measurement: rendering its metrics is not a decision.
	var hits0, misses0 float64
	if t.cacheCounts != nil {
		var err error
		if hits0, misses0, err = t.cacheCounts(ctx, client); err != nil {
			return nil, err
		}
	}
	cpu0, err := sumCPU(t.pids())
	if err != nil {
		return nil, err
	}
	client0, err := cpuSeconds(os.Getpid())
	if err != nil {
		return nil, err
	}
	workers := make([]runResult, n)
	var wg sync.WaitGroup
	begin := time.Now()
	deadline := begin.Add(d)
	for i := range workers {
		g := m.generator(i)
		w := &workers[i]
		w.latencies = make([]time.Duration, 0, 4096)
		wg.Go(func() {
			var buf bytes.Buffer
			for ctx.Err() == nil && time.Now().Before(deadline) {
				c := g.next()
				start := time.Now()
				err := t.do(ctx, client, &c, &buf)
				elapsed := time.Since(start)
				var wa *wrongAnswer
				switch {
				case err == nil:
					w.decisions++
					w.latencies = append(w.latencies, elapsed)
				case ctx.Err() != nil:
					return
				case errors.As(err, &wa):
					w.wrong++
					w.note(err)
				default:
					w.failed++
					w.note(err)
				}
			}
		})
	}
	wg.Wait()
	total := &runResult{elapsed: time.Since(begin)}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	cpu1, err := sumCPU(t.pids())
	if err != nil {
		return nil, err
	}
	client1, err := cpuSeconds(os.Getpid())
	if err != nil {
		return nil, err
	}
	total.cpu, total.clientCPU = cpu1-cpu0, client1-client0
	if t.cacheCounts != nil {
		hits1, misses1, err := t.cacheCounts(ctx, client)
		if err != nil {
			return nil, err
		}
		total.cacheHits, total.cacheMisses, total.cacheCounted = hits1-hits0, misses1-misses0, true
	}
	for i := range workers {
		w := &workers[i]
		total.decisions += w.decisions
		total.latencies = append(total.latencies, w.latencies...)
		total.wrong += w.wrong
		total.failed += w.failed
		if total.firstErr == "" {
			total.firstErr = w.firstErr
		}
	}
	return total, nil
}

func (r *runResult) note(err error) {
	if r.firstErr == "" {
		r.firstErr = err.Error()
	}
}

// key identifies a cell of the table.
type key struct {
	target      string
	concurrency int
}

// measure warms every target up, calls measured, then runs the rounds: in
// each round, for each concurrency, every target once, the order rotated
// from round to round so that no server always runs first or last.
func measure(ctx context.Context, m *mixer, targets []*target, o options, alive func() error, measured func()) (map[key]*runResult, error) {
	if o.warmup > 0 {
		for _, n := range o.concurrency {
			for _, t := range targets {
				fmt.Fprintf(os.Stderr, "warm-up      c=%-3d %-16s\n", n, t.name)
				r, err := runTarget(ctx, m, t, n, o.warmup)
				if err != nil {
					return nil, err
				}
				if r.wrong+r.failed > 0 {
					return nil, fmt.Errorf("%s, warm-up: %d wrong answers, %d failed requests; the first: %s", t.name, r.wrong, r.failed, r.firstErr)
				}
			}
		}
	}
	measured()
	results := map[key]*runResult{}
	for round := range o.rounds {
		for _, n := range o.concurrency {
			order := slices.Clone(targets)
			k := round % len(order)
			order = append(order[k:], order[:k]...)
			for _, t := range order {
				r, err := runTarget(ctx, m, t, n, o.duration)
				if err != nil {
					return nil, err
				}
				if err := alive(); err != nil {
					return nil, err
				}
				fmt.Fprintf(os.Stderr, "round %d/%d  c=%-3d %-16s %8.0f decisions/s  %d wrong  %d failed\n",
					round+1, o.rounds, n, t.name, float64(r.decisions)/r.elapsed.Seconds(), r.wrong, r.failed)
				kk := key{t.name, n}
				if results[kk] == nil {
					results[kk] = &runResult{}
				}
				results[kk].add(r)
			}
		}
	}
	return results, nil
}
