// Command load is a load harness: it measures the tollgate server over HTTP
// against OPA's own server evaluating the same default policy, in the same
// run, and reports the figures as ratios, because the machines it runs on
// are shared and noisy.
//
//	go run ./test/load [-duration 10s] [-concurrency 16] [-rounds 2] [-opa test/.bin/opa]
//
// It builds tollgate into a temporary directory, mints a development token
// and an API key with it, starts `tollgate serve --dev` and `opa run
// --server --bundle policies/` on free loopback ports, then runs each
// scenario for -duration with -concurrency workers, interleaving tollgate
// and OPA runs over -rounds rounds to spread the noise. It prints a markdown
// table on stdout (progress goes to stderr) and stops both servers and
// removes its temporary files on the way out, interrupted or not.
//
// It is a harness, not a test: it checks that answers are right (the first
// response of each worker and every 1000th one), never how fast they come.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// options are the command-line flags.
type options struct {
	duration    time.Duration
	warmup      time.Duration
	concurrency int
	rounds      int
	opa         string
	decisionLog bool
}

func main() {
	opts := parseFlags()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop() // a second interrupt kills the harness at once
	}()
	err := run(ctx, opts)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "load:", err)
		os.Exit(1)
	}
}

func parseFlags() options {
	var o options
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "how long each scenario runs in each round")
	flag.DurationVar(&o.warmup, "warmup", time.Second, "unmeasured run of each scenario before the first round (0 for none)")
	flag.IntVar(&o.concurrency, "concurrency", 16, "concurrent workers (and keep-alive connections) per scenario")
	flag.IntVar(&o.rounds, "rounds", 2, "rounds; each runs every tollgate scenario, each followed (or, in odd rounds, preceded) by opa_data")
	flag.StringVar(&o.opa, "opa", "test/.bin/opa", "opa binary; a relative path is taken from the module root and, when it is the default and missing, built from test/tools")
	flag.BoolVar(&o.decisionLog, "decision-log", false, "run tollgate exactly as 'serve --dev' does, decision log on (to a file);\nby default a config file sets the log level to warn, which turns the decision log off, as OPA's is")
	flag.Usage = func() {
		out := flag.CommandLine.Output()
		fmt.Fprint(out, `Usage: go run ./test/load [flags]

Measures tollgate against OPA's own server on the same machine in the same
run, over HTTP on loopback with keep-alive, and prints a markdown table:

  tollgate_jwt           POST /v1/decision, GET /customers/42/orders with an ES256 JWT
  tollgate_apikey        POST /v1/decision, GET /products/7 with an API key
  tollgate_forward_auth  GET /v1/forward-auth, same request as tollgate_jwt
  opa_data               POST OPA's /v1/data/tollgate/authz/decision with the input
                         tollgate builds for tollgate_jwt: policy evaluation only

Read the ratios to opa_data, not the absolute figures: the machine is shared.
Run it from the module root (or anywhere inside the module).

Flags:
`)
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() > 0 || o.duration <= 0 || o.warmup < 0 || o.concurrency < 1 || o.rounds < 1 {
		flag.Usage()
		os.Exit(2)
	}
	return o
}

// run sets everything up, measures, reports and cleans up.
func run(ctx context.Context, o options) (err error) {
	root, err := moduleRoot(ctx)
	if err != nil {
		return err
	}
	opaBin, err := ensureOPA(ctx, root, o.opa)
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "tollgate-load-")
	if err != nil {
		return fmt.Errorf("temp dir: %w", err)
	}
	defer os.RemoveAll(tmp)

	fix, err := prepare(ctx, root, tmp)
	if err != nil {
		return err
	}
	tg, err := startTollgate(ctx, root, tmp, fix, o.decisionLog)
	if err != nil {
		return err
	}
	defer tg.stop()
	opa, err := startOPA(ctx, root, tmp, opaBin)
	if err != nil {
		return err
	}
	defer opa.stop()

	client := newClient(o.concurrency)
	defer client.CloseIdleConnections()
	env := &environment{tollgate: tg.url, opa: opa.url, fix: fix}
	if err := env.preflight(ctx, client); err != nil {
		return err
	}
	scenarios := env.scenarios()
	if err := warmUp(ctx, client, scenarios, o); err != nil {
		return err
	}
	results, err := measure(ctx, client, scenarios, o)
	if err != nil {
		return err
	}
	report(os.Stdout, reportInfo{opts: o, opaVersion: opaVersion(ctx, opaBin), revision: env.revision}, scenarios, results)
	if n := totalErrors(results); n > 0 {
		return fmt.Errorf("%d requests failed (see the errors column)", n)
	}
	return nil
}

// ---------------------------------------------------------------------------
// Setup: module root, binaries, token, API key

// moduleRoot is the directory of the main module's go.mod.
func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside a Go module: run from the tollgate module root")
	}
	return filepath.Dir(gomod), nil
}

// ensureOPA resolves the opa binary, building the default one from the
// tools module when it is missing.
func ensureOPA(ctx context.Context, root, path string) (string, error) {
	const def = "test/.bin/opa"
	if !filepath.IsAbs(path) {
		path = filepath.Join(root, path)
	}
	if _, err := os.Stat(path); err == nil {
		return path, nil
	} else if !errors.Is(err, os.ErrNotExist) || path != filepath.Join(root, def) {
		return "", fmt.Errorf("opa binary: %w", err)
	}
	fmt.Fprintln(os.Stderr, "building opa from test/tools into", def)
	cmd := exec.CommandContext(ctx, "go", "build", "-o", path, "github.com/open-policy-agent/opa")
	cmd.Dir = filepath.Join(root, "test", "tools")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build opa: %w\n%s", err, out)
	}
	return path, nil
}

func opaVersion(ctx context.Context, bin string) string {
	out, err := exec.CommandContext(ctx, bin, "version").Output()
	if err != nil {
		return "unknown"
	}
	first, _, _ := strings.Cut(string(out), "\n")
	return strings.TrimSpace(strings.TrimPrefix(first, "Version:"))
}

// fixture is what the scenarios need from the setup.
type fixture struct {
	bin      string // the tollgate binary
	devKey   string // $TOLLGATE_DEV_KEY
	keysFile string
	token    string
	apiKey   string
}

// prepare builds tollgate, mints a token and creates an API key.
func prepare(ctx context.Context, root, tmp string) (*fixture, error) {
	f := &fixture{
		bin:      filepath.Join(tmp, "tollgate"),
		devKey:   filepath.Join(tmp, "dev-issuer-key.pem"),
		keysFile: filepath.Join(tmp, "keys.yaml"),
	}
	fmt.Fprintln(os.Stderr, "building tollgate")
	build := exec.CommandContext(ctx, "go", "build", "-o", f.bin, "./cmd/tollgate")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build tollgate: %w\n%s", err, out)
	}
	var err error
	f.token, err = f.lastLine(ctx, "token", "--sub", "alice", "--claim", "customer_number=42", "--scope", "customers:read")
	if err != nil {
		return nil, err
	}
	f.apiKey, err = f.lastLine(ctx, "apikey", "new", "--owner", "billing", "--scopes", "products:read", "--file", f.keysFile)
	if err != nil {
		return nil, err
	}
	return f, nil
}

// command is a tollgate command with the development key of this run.
func (f *fixture) command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, f.bin, args...)
	cmd.Env = append(os.Environ(), "TOLLGATE_DEV_KEY="+f.devKey)
	return cmd
}

// lastLine runs a tollgate command and returns the last line of its stdout.
func (f *fixture) lastLine(ctx context.Context, args ...string) (string, error) {
	cmd := f.command(ctx, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("tollgate %s: %w\n%s", args[0], err, stderr.Bytes())
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	last := strings.TrimSpace(lines[len(lines)-1])
	if last == "" {
		return "", fmt.Errorf("tollgate %s printed nothing", args[0])
	}
	return last, nil
}

// ---------------------------------------------------------------------------
// Servers

// server is a started server process.
type server struct {
	name string
	url  string
	log  string // its stderr (and stdout)
	cmd  *exec.Cmd
	done chan struct{}
	err  error // Wait's result, once done is closed
}

// start starts cmd, logging to logPath, and waits until GET url+readyPath
// answers 200.
func start(ctx context.Context, name, url, readyPath, logPath string, cmd *exec.Cmd) (*server, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("%s log: %w", name, err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	s := &server{name: name, url: url, log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		s.err = cmd.Wait()
		logf.Close()
		close(s.done)
	}()
	if err := s.waitReady(ctx, url+readyPath); err != nil {
		s.stop()
		return nil, fmt.Errorf("%w\n%s log:\n%s", err, name, tail(logPath, 20))
	}
	fmt.Fprintf(os.Stderr, "%s ready on %s\n", name, url)
	return s, nil
}

func (s *server) waitReady(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-s.done:
			return fmt.Errorf("%s exited before it was ready: %v", s.name, s.err)
		case <-ctx.Done():
			return fmt.Errorf("%s not ready: %w", s.name, ctx.Err())
		case <-tick.C:
		}
	}
}

// stop sends SIGTERM and waits; after 15 s it kills.
func (s *server) stop() {
	select {
	case <-s.done:
		return
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(15 * time.Second):
		fmt.Fprintf(os.Stderr, "%s did not stop after SIGTERM; killing it\n", s.name)
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}

// startTollgate runs `tollgate serve --dev`. Unless decisionLog, a config
// file keeps everything --dev does (the development issuer, loopback as a
// trusted proxy) but sets the log level to warn, which turns the decision
// log, written at info, off.
func startTollgate(ctx context.Context, root, tmp string, f *fixture, decisionLog bool) (*server, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	args := []string{"serve", "--dev", "--api-keys", f.keysFile, "--listen", addr}
	if !decisionLog {
		cfg := filepath.Join(tmp, "config.yaml")
		yaml := "trusted_proxies: [\"127.0.0.1/32\", \"::1/128\"]\nlog: {level: warn, format: text}\n"
		if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
			return nil, fmt.Errorf("tollgate config: %w", err)
		}
		args = append(args, "--config", cfg)
	}
	cmd := f.command(context.WithoutCancel(ctx), args...) // stopped by SIGTERM, not killed by ctx
	cmd.Dir = root
	return start(ctx, "tollgate", "http://"+addr, "/health/ready", filepath.Join(tmp, "tollgate.log"), cmd)
}

// startOPA runs OPA's server on the policies/ directory, the same bundle
// tollgate embeds.
func startOPA(ctx context.Context, root, tmp, bin string) (*server, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "run", "--server", "--addr", addr, "--log-level", "error", "--bundle", "policies/")
	cmd.Dir = root
	return start(ctx, "opa", "http://"+addr, "/health", filepath.Join(tmp, "opa.log"), cmd)
}

// freeAddr returns a loopback address with a port free a moment ago.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}

// ---------------------------------------------------------------------------
// Scenarios

// scenario is one kind of request, repeated.
type scenario struct {
	name string
	what string // for the report
	peer bool   // the baseline the others are compared to
	// request builds one request.
	request func(ctx context.Context) (*http.Request, error)
	// check verifies a sampled response; every response must be 200 anyway.
	check func(resp *http.Response, body []byte) error
}

// environment is the running setup the scenarios talk to.
type environment struct {
	tollgate, opa string
	fix           *fixture
	revision      string // tollgate's policy revision, from the preflight
}

const jwtPath = "/customers/42/orders"

func (e *environment) scenarios() []*scenario {
	jwtBody := mustJSON(map[string]any{"method": "GET", "path": jwtPath,
		"headers": map[string]string{"Authorization": "Bearer " + e.fix.token}})
	keyBody := mustJSON(map[string]any{"method": "GET", "path": "/products/7",
		"headers": map[string]string{"X-API-Key": e.fix.apiKey}})
	opaBody := mustJSON(map[string]any{"input": jwtInput(e.fix.token)})
	return []*scenario{
		{
			name: "tollgate_jwt", what: "POST /v1/decision, ES256 JWT verified, then the policy",
			request: post(e.tollgate+"/v1/decision", jwtBody),
			check:   decisionAllows("alice"),
		},
		{
			name: "tollgate_apikey", what: "POST /v1/decision, API key (SHA-256 lookup), then the policy",
			request: post(e.tollgate+"/v1/decision", keyBody),
			check:   decisionAllows("billing"),
		},
		{
			name: "tollgate_forward_auth", what: "GET /v1/forward-auth, the JWT request as a gateway sends it",
			request: forwardAuth(e.tollgate+"/v1/forward-auth", e.fix.token),
			check:   forwardAuthAllows("alice"),
		},
		{
			name: "opa_data", what: "OPA's POST /v1/data/tollgate/authz/decision, same policy, input pre-verified",
			peer:    true,
			request: post(e.opa+"/v1/data/tollgate/authz/decision", opaBody),
			check:   opaAllows("alice"),
		},
	}
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only maps of strings and already decoded JSON
	}
	return b
}

func post(url string, body []byte) func(context.Context) (*http.Request, error) {
	return func(ctx context.Context) (*http.Request, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		req.Header.Set("Content-Type", "application/json")
		return req, nil
	}
}

func forwardAuth(url, token string) func(context.Context) (*http.Request, error) {
	return func(ctx context.Context) (*http.Request, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return nil, err
		}
		req.Header.Set("X-Original-Method", "GET")
		req.Header.Set("X-Original-URI", jwtPath)
		req.Header.Set("Authorization", "Bearer "+token)
		return req, nil
	}
}

// decision is the part of a policy decision the checks look at, in
// tollgate's answer and in OPA's result alike.
type decision struct {
	Allow          bool              `json:"allow"`
	Status         int               `json:"status"`
	Reasons        []string          `json:"reasons"`
	Headers        map[string]string `json:"headers"`
	PolicyRevision string            `json:"policy_revision"`
}

func (d decision) allows(user string) error {
	if !d.Allow || d.Status != http.StatusOK || d.Headers["x-user-id"] != user {
		return fmt.Errorf("want allow, status 200, x-user-id %q; got allow=%t status=%d reasons=%v headers=%v",
			user, d.Allow, d.Status, d.Reasons, d.Headers)
	}
	return nil
}

func decisionAllows(user string) func(*http.Response, []byte) error {
	return func(_ *http.Response, body []byte) error {
		var d decision
		if err := json.Unmarshal(body, &d); err != nil {
			return fmt.Errorf("decode decision: %w: %.200s", err, body)
		}
		return d.allows(user)
	}
}

func opaAllows(user string) func(*http.Response, []byte) error {
	return func(_ *http.Response, body []byte) error {
		var r struct {
			Result *decision `json:"result"`
		}
		if err := json.Unmarshal(body, &r); err != nil {
			return fmt.Errorf("decode OPA result: %w: %.200s", err, body)
		}
		if r.Result == nil {
			return fmt.Errorf("OPA result undefined: %.200s", body)
		}
		return r.Result.allows(user)
	}
}

func forwardAuthAllows(user string) func(*http.Response, []byte) error {
	return func(resp *http.Response, _ []byte) error {
		if got := resp.Header.Get("X-User-Id"); got != user {
			return fmt.Errorf("want X-User-Id %q, got %q", user, got)
		}
		return nil
	}
}

// jwtInput is the policy input tollgate builds for the tollgate_jwt request
// once the token is verified (DESIGN.md, "Policy input"): the request as
// normalized (no host, scheme http, the Authorization header stripped), the
// credential as its fingerprint, and the identity with every claim of the
// token. The preflight checks that OPA decides on it as tollgate does.
func jwtInput(token string) map[string]any {
	claims := tokenClaims(token)
	scope, _ := claims["scope"].(string)
	sum := sha256.Sum256([]byte(token))
	return map[string]any{
		"request": map[string]any{
			"id": newID(), "method": "GET", "path": jwtPath, "segments": strings.Split(jwtPath[1:], "/"),
			"host": "", "scheme": "http", "query": map[string]any{}, "headers": map[string]any{}, "source_ip": "",
		},
		"credential": map[string]any{
			"type": "bearer", "placement": "header", "name": "authorization", "status": "valid", "error": "",
			"fingerprint": "sha256:" + hex.EncodeToString(sum[:6]),
		},
		"identity": map[string]any{
			"kind": "user", "subject": claims["sub"], "issuer": claims["iss"], "claims": claims,
			"scopes": strings.Fields(scope), "roles": []string{},
		},
	}
}

// tokenClaims decodes a JWT's payload without verifying it (tollgate has
// minted it a moment ago), numbers kept as written.
func tokenClaims(token string) map[string]any {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		panic("tollgate token printed a non-JWT")
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		panic(fmt.Sprintf("token payload: %v", err))
	}
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	var claims map[string]any
	if err := dec.Decode(&claims); err != nil {
		panic(fmt.Sprintf("token payload: %v", err))
	}
	return claims
}

func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// preflight checks once, before any load, that tollgate allows the JWT
// request and that OPA, given jwtInput, reaches the very same decision:
// otherwise opa_data would not measure the same policy work.
func (e *environment) preflight(ctx context.Context, client *http.Client) error {
	var tg decision
	if err := fetchJSON(ctx, client, e.tollgate+"/v1/decision", mustJSON(map[string]any{"method": "GET", "path": jwtPath,
		"headers": map[string]string{"Authorization": "Bearer " + e.fix.token}}), &tg); err != nil {
		return fmt.Errorf("preflight tollgate: %w", err)
	}
	if err := tg.allows("alice"); err != nil {
		return fmt.Errorf("preflight tollgate: %w", err)
	}
	var opa struct {
		Result decision `json:"result"`
	}
	if err := fetchJSON(ctx, client, e.opa+"/v1/data/tollgate/authz/decision",
		mustJSON(map[string]any{"input": jwtInput(e.fix.token)}), &opa); err != nil {
		return fmt.Errorf("preflight opa: %w", err)
	}
	o := opa.Result
	if o.Allow != tg.Allow || o.Status != tg.Status || !slices.Equal(o.Reasons, tg.Reasons) || !mapsEqual(o.Headers, tg.Headers) {
		return fmt.Errorf("preflight: OPA on the reconstructed input decides %+v, tollgate %+v: the input no longer matches what tollgate builds", o, tg)
	}
	e.revision = tg.PolicyRevision
	return nil
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func fetchJSON(ctx context.Context, client *http.Client, url string, body []byte, v any) error {
	req, err := post(url, body)(ctx)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d: %.300s", resp.StatusCode, b)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("decode: %w: %.300s", err, b)
	}
	return nil
}

// ---------------------------------------------------------------------------
// Load

// newClient is the one client every worker shares: keep-alive, one idle
// connection per worker and host.
func newClient(concurrency int) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = 4 * concurrency
	t.MaxIdleConnsPerHost = concurrency
	t.DisableCompression = true
	t.Proxy = nil
	return &http.Client{Transport: t, Timeout: 30 * time.Second}
}

// sample says which responses are fully checked: each worker's first and
// every 1000th.
const sampleEvery = 1000

// runResult is one scenario run (or the sum of several).
type runResult struct {
	elapsed   time.Duration
	latencies []time.Duration // successful requests only
	errors    int
	firstErr  string
}

// runScenario runs s for d with n workers. A sampled response that is
// wrong ends the run with an error; a failed request is counted.
func runScenario(ctx context.Context, client *http.Client, s *scenario, d time.Duration, n int) (runResult, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	workers := make([]runResult, n)
	for i := range workers {
		workers[i].latencies = make([]time.Duration, 0, 1<<15)
	}
	var wg sync.WaitGroup
	begin := time.Now()
	deadline := begin.Add(d)
	for i := range workers {
		wg.Go(func() {
			if err := work(ctx, client, s, deadline, &workers[i]); err != nil {
				cancel(err)
			}
		})
	}
	wg.Wait()
	total := runResult{elapsed: time.Since(begin)}
	if err := context.Cause(ctx); err != nil {
		return total, err
	}
	for _, w := range workers {
		total.add(w)
	}
	return total, nil
}

// work is one worker's loop until the deadline.
func work(ctx context.Context, client *http.Client, s *scenario, deadline time.Time, res *runResult) error {
	for i := 0; ctx.Err() == nil && time.Now().Before(deadline); i++ {
		req, err := s.request(ctx)
		if err != nil {
			return fmt.Errorf("%s: build request: %w", s.name, err)
		}
		sampled := i%sampleEvery == 0
		begin := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			res.fail(err.Error())
			continue
		}
		var body []byte
		if sampled {
			body, err = io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		} else {
			_, err = io.Copy(io.Discard, resp.Body)
		}
		resp.Body.Close()
		elapsed := time.Since(begin)
		switch {
		case err != nil:
			res.fail("read body: " + err.Error())
		case resp.StatusCode != http.StatusOK:
			if sampled {
				return fmt.Errorf("%s: sampled response: status %d: %.300s", s.name, resp.StatusCode, body)
			}
			res.fail(fmt.Sprintf("status %d", resp.StatusCode))
		default:
			if sampled {
				if err := s.check(resp, body); err != nil {
					return fmt.Errorf("%s: sampled response: %w", s.name, err)
				}
			}
			res.latencies = append(res.latencies, elapsed)
		}
	}
	return nil
}

func (r *runResult) fail(msg string) {
	r.errors++
	if r.firstErr == "" {
		r.firstErr = msg
	}
}

func (r *runResult) add(o runResult) {
	r.latencies = append(r.latencies, o.latencies...)
	r.errors += o.errors
	if r.firstErr == "" {
		r.firstErr = o.firstErr
	}
}

// warmUp runs every scenario once, unmeasured.
func warmUp(ctx context.Context, client *http.Client, scenarios []*scenario, o options) error {
	if o.warmup == 0 {
		return nil
	}
	fmt.Fprintf(os.Stderr, "warming up (%s per scenario)\n", o.warmup)
	for _, s := range scenarios {
		if _, err := runScenario(ctx, client, s, o.warmup, o.concurrency); err != nil {
			return err
		}
	}
	return nil
}

// schedule is one round's order: each tollgate scenario followed by the
// peer; reversed in odd rounds, so that neither side always runs first.
func schedule(scenarios []*scenario, round int) []*scenario {
	var peer *scenario
	var order []*scenario
	for _, s := range scenarios {
		if s.peer {
			peer = s
		}
	}
	for _, s := range scenarios {
		if !s.peer {
			order = append(order, s, peer)
		}
	}
	if round%2 == 1 {
		slices.Reverse(order)
	}
	return order
}

// measure runs the rounds and sums each scenario's runs.
func measure(ctx context.Context, client *http.Client, scenarios []*scenario, o options) (map[*scenario]*runResult, error) {
	results := make(map[*scenario]*runResult, len(scenarios))
	for _, s := range scenarios {
		results[s] = &runResult{}
	}
	for round := range o.rounds {
		for _, s := range schedule(scenarios, round) {
			fmt.Fprintf(os.Stderr, "round %d/%d: %-22s ", round+1, o.rounds, s.name)
			r, err := runScenario(ctx, client, s, o.duration, o.concurrency)
			if err != nil {
				fmt.Fprintln(os.Stderr)
				return nil, err
			}
			fmt.Fprintf(os.Stderr, "%8.0f req/s\n", float64(len(r.latencies))/r.elapsed.Seconds())
			results[s].add(r)
			results[s].elapsed += r.elapsed
		}
	}
	return results, nil
}

func totalErrors(results map[*scenario]*runResult) int {
	n := 0
	for _, r := range results {
		n += r.errors
	}
	return n
}

// ---------------------------------------------------------------------------
// Report

// summary is a scenario's figures.
type summary struct {
	requests      int
	rps           float64
	p50, p90, p99 time.Duration
	errors        int
	firstErr      string
}

func summarize(r *runResult) summary {
	slices.Sort(r.latencies)
	s := summary{requests: len(r.latencies), errors: r.errors, firstErr: r.firstErr}
	if r.elapsed > 0 {
		s.rps = float64(s.requests) / r.elapsed.Seconds()
	}
	s.p50, s.p90, s.p99 = percentile(r.latencies, 0.50), percentile(r.latencies, 0.90), percentile(r.latencies, 0.99)
	return s
}

// percentile of sorted durations, nearest rank.
func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted)) + 0.999999)
	return sorted[max(i, 1)-1]
}

type reportInfo struct {
	opts       options
	opaVersion string
	revision   string
}

// report prints the markdown table and the ratios.
func report(w io.Writer, info reportInfo, scenarios []*scenario, results map[*scenario]*runResult) {
	sums := make(map[*scenario]summary, len(scenarios))
	var peer summary
	for _, s := range scenarios {
		sums[s] = summarize(results[s])
		if s.peer {
			peer = sums[s]
		}
	}
	o := info.opts
	declog := "off (log level warn)"
	if o.decisionLog {
		declog = "on (as `serve --dev`, to a file)"
	}
	fmt.Fprintf(w, "Load over loopback HTTP/1.1 keep-alive, %d workers, %d rounds of %s per scenario, interleaved; "+
		"%s %s/%s, %d CPUs; OPA %s; policy %s; tollgate decision log %s. "+
		"The harness shares the CPUs with both servers.\n\n",
		o.concurrency, o.rounds, o.duration, runtime.Version(), runtime.GOOS, runtime.GOARCH, runtime.NumCPU(),
		info.opaVersion, info.revision, declog)
	fmt.Fprintln(w, "| scenario | what | requests | req/s | p50 | p90 | p99 | errors | req/s vs OPA | p50 vs OPA |")
	fmt.Fprintln(w, "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|")
	for _, s := range scenarios {
		m := sums[s]
		fmt.Fprintf(w, "| `%s` | %s | %d | %.0f | %s | %s | %s | %d | %s | %s |\n",
			s.name, s.what, m.requests, m.rps, ms(m.p50), ms(m.p90), ms(m.p99), m.errors,
			ratio(m.rps, peer.rps), ratio(m.p50.Seconds(), peer.p50.Seconds()))
	}
	fmt.Fprintln(w)
	for _, s := range scenarios {
		if s.peer {
			continue
		}
		m := sums[s]
		fmt.Fprintf(w, "- `%s` does %s OPA's req/s at %s its median latency, while also %s.\n",
			s.name, ratio(m.rps, peer.rps), ratio(m.p50.Seconds(), peer.p50.Seconds()), extraWork(s.name))
	}
	for _, s := range scenarios {
		if m := sums[s]; m.errors > 0 {
			fmt.Fprintf(w, "\n%s: %d failed requests, the first: %s\n", s.name, m.errors, m.firstErr)
		}
	}
}

func extraWork(name string) string {
	switch name {
	case "tollgate_jwt":
		return "normalizing the request and verifying the ES256 JWT"
	case "tollgate_apikey":
		return "normalizing the request and verifying the API key"
	case "tollgate_forward_auth":
		return "reading the forwarded request from headers and verifying the ES256 JWT"
	}
	return "doing its own work"
}

func ms(d time.Duration) string {
	return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
}

func ratio(a, b float64) string {
	if b == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2fx", a/b)
}
