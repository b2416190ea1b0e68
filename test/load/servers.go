package main

import (
	"bufio"
	"bytes"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/template"
	"time"
)

// ---------------------------------------------------------------------------
// Processes

// process is a started server process.
type process struct {
	name string
	url  string
	log  string // its stdout and stderr
	cmd  *exec.Cmd
	done chan struct{}
	err  error // Wait's result, once done is closed
}

// start starts cmd, logging to logPath, and waits until GET url+readyPath
// answers 200.
func start(ctx context.Context, name, url, readyPath, logPath string, cmd *exec.Cmd) (*process, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("%s log: %w", name, err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	// Should the harness die without stopping it, the server goes too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &process{name: name, url: url, log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	if err := p.waitReady(ctx, url+readyPath); err != nil {
		p.stop()
		return nil, fmt.Errorf("%w\n%s log:\n%s", err, name, tail(logPath, 20))
	}
	fmt.Fprintf(os.Stderr, "%s ready on %s\n", name, url)
	return p, nil
}

func (p *process) pid() int { return p.cmd.Process.Pid }

func (p *process) waitReady(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	last := "no answer"
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			last = err.Error()
		} else {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("HTTP %d: %s", resp.StatusCode, body)
		}
		select {
		case <-p.done:
			return fmt.Errorf("%s exited before it was ready: %v", p.name, p.err)
		case <-ctx.Done():
			return fmt.Errorf("%s not ready (the last answer: %s): %w", p.name, last, ctx.Err())
		case <-tick.C:
		}
	}
}

// stop sends SIGTERM and waits; after 15 s it kills.
func (p *process) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		fmt.Fprintf(os.Stderr, "%s did not stop after SIGTERM; killing it\n", p.name)
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// alive fails when the process has exited.
func (p *process) alive() error {
	select {
	case <-p.done:
		return fmt.Errorf("%s exited: %v\n%s", p.name, p.err, tail(p.log, 20))
	default:
		return nil
	}
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
// /proc: CPU time and peak resident memory of a server's processes

// clockTicks is USER_HZ, the unit of /proc/PID/stat's times: 100 on every
// Linux architecture Go supports.
const clockTicks = 100

// cpuSeconds is the user and system CPU time pid has used.
func cpuSeconds(pid int) (float64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name, in parentheses, may hold spaces: fields count from
	// after its closing parenthesis, where field 3 (state) starts.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("malformed /proc stat")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, errors.New("malformed /proc stat")
	}
	utime, err1 := strconv.ParseUint(f[11], 10, 64) // field 14
	stime, err2 := strconv.ParseUint(f[12], 10, 64) // field 15
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("malformed /proc stat: %w", err)
	}
	return float64(utime+stime) / clockTicks, nil
}

// peakRSS is pid's peak resident set size (VmHWM), in bytes.
func peakRSS(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("VmHWM: %w", err)
			}
			return kb << 10, nil
		}
	}
	return 0, errors.New("no VmHWM")
}

// children are the processes whose parent is pid (NGINX's workers).
func children(pid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(b, ')')
		if f := strings.Fields(string(b[i+1:])); i > 0 && len(f) > 1 && f[1] == strconv.Itoa(pid) {
			out = append(out, child)
		}
	}
	return out
}

// sumCPU is the CPU seconds of pids, together.
func sumCPU(pids []int) (float64, error) {
	var sum float64
	for _, pid := range pids {
		s, err := cpuSeconds(pid)
		if err != nil {
			return 0, fmt.Errorf("cpu of %d: %w", pid, err)
		}
		sum += s
	}
	return sum, nil
}

// sumPeakRSS is the VmHWM of pids, added up.
func sumPeakRSS(pids []int) int64 {
	var sum int64
	for _, pid := range pids {
		if n, err := peakRSS(pid); err == nil {
			sum += n
		}
	}
	return sum
}

// ---------------------------------------------------------------------------
// The ceiling: a do-nothing Go handler, the listener settings Tollgate uses

// serveCeiling serves the do-nothing handler on addr until SIGTERM. It also
// is the upstream behind NGINX, where it echoes the identity NGINX passed
// on (X-User-Id) as X-Seen-User, so that the harness can check it.
func serveCeiling(addr string) error {
	body := []byte(`{"allow":true,"status":200}`)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, 1<<20))
		if u := r.Header.Get("X-User-Id"); u != "" {
			w.Header().Set("X-Seen-User", u)
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health/ready", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	mux.Handle("/", h)
	srv := &http.Server{
		Addr: addr, Handler: mux, MaxHeaderBytes: 32 << 10,
		ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second, IdleTimeout: 60 * time.Second,
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func startCeiling(ctx context.Context, tmp string) (*process, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("own executable: %w", err)
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), ceilingEnv+"="+addr)
	return start(ctx, "ceiling", "http://"+addr, "/health/ready", filepath.Join(tmp, "ceiling.log"), cmd)
}

// ---------------------------------------------------------------------------
// Tollgate

// tollgateSetup is the built binary and its API key.
type tollgateSetup struct {
	bin      string
	keysFile string
	apiKey   string
	keyOwner string
	// adminKeysFile and adminKey are the admin listener's, made only for
	// -cpuprofile.
	adminKeysFile string
	adminKey      string
}

// buildTollgate builds cmd/tollgate and creates an API key with
// `tollgate apikey new`.
// With prebuilt set, it runs that binary instead.
func buildTollgate(ctx context.Context, root, tmp, prebuilt string) (*tollgateSetup, error) {
	s := &tollgateSetup{bin: prebuilt, keysFile: filepath.Join(tmp, "keys.yaml"), keyOwner: "catalog"}
	if prebuilt == "" {
		s.bin = filepath.Join(tmp, "tollgate")
		fmt.Fprintln(os.Stderr, "building tollgate")
		build := exec.CommandContext(ctx, "go", "build", "-o", s.bin, "./cmd/tollgate")
		build.Dir = root
		if out, err := build.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("build tollgate: %w\n%s", err, out)
		}
	}
	var err error
	if s.apiKey, err = newAPIKey(ctx, s.bin, s.keyOwner, "products:read", s.keysFile); err != nil {
		return nil, err
	}
	return s, checkJSONSafe("the API key", s.apiKey)
}

// newAPIKey makes a key with `tollgate apikey new` and returns it.
func newAPIKey(ctx context.Context, bin, owner, scopes, file string) (string, error) {
	cmd := exec.CommandContext(ctx, bin, "apikey", "new", "--owner", owner, "--scopes", scopes, "--file", file)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("tollgate apikey new: %w\n%s", err, stderr.Bytes())
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	key := strings.TrimSpace(lines[len(lines)-1])
	if !strings.HasPrefix(key, "tgk_") {
		return "", errors.New("tollgate apikey new: the last line is not a key")
	}
	return key, nil
}

// profile takes one of Tollgate's profiles from its admin listener
// (pprof's name: "profile?seconds=N", "allocs") and writes it to path; d
// is how long the profile takes.
func profile(ctx context.Context, adminURL, adminKey, name string, d time.Duration, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, adminURL+"/debug/pprof/"+name, nil)
	if err != nil {
		return err
	}
	req.Header.Set("X-API-Key", adminKey)
	client := &http.Client{Timeout: d + time.Minute}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("profile %s: %w", name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("profile %s: HTTP %d", name, resp.StatusCode)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return fmt.Errorf("profile %s: %w", name, err)
	}
	return f.Close()
}

// startTollgate runs `tollgate serve` trusting the harness's issuer, with
// the API key file, loopback as a trusted proxy (for NGINX), the decision
// log off and logs at warn.
// A positive decisionTimeout sets limits.decision_timeout; zero keeps
// Tollgate's default.
// With adminAddr set, it also serves the admin listener there (for
// -cpuprofile), with the admin key file of s.
func startTollgate(ctx context.Context, root, tmp string, s *tollgateSetup, is *issuer, decisionTimeout time.Duration, adminAddr string) (*process, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	cfg := filepath.Join(tmp, "tollgate.yaml")
	yaml := fmt.Sprintf(`listen: %q
trusted_proxies: ["127.0.0.1/32"]
issuers:
  - issuer: %q
    audiences: [%q]
    algorithms: ["RS256"]
api_keys:
  file: %q
decision_log: {enabled: false}
log: {level: warn, format: text}
`, addr, is.url, audience, s.keysFile)
	if decisionTimeout > 0 {
		yaml += fmt.Sprintf("limits: {decision_timeout: %s}\n", decisionTimeout)
	}
	if adminAddr != "" {
		yaml += fmt.Sprintf("admin: {listen: %q, api_keys_file: %q}\n", adminAddr, s.adminKeysFile)
	}
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		return nil, fmt.Errorf("tollgate config: %w", err)
	}
	cmd := exec.Command(s.bin, "serve", "--config", cfg)
	cmd.Dir = root
	return start(ctx, "tollgate", "http://"+addr, "/health/ready", filepath.Join(tmp, "tollgate.log"), cmd)
}

// ---------------------------------------------------------------------------
// OPA

//go:embed opa/authz.rego
var opaPolicy []byte

// ensureOPA resolves the opa binary, building the default one from the
// tools module (which pins the OPA of the product's go.mod) when it is
// missing.
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

// opaConfig turns OPA's cache of verified tokens on (it is off by default)
// and its decision logs off.
const opaConfig = `caching:
  inter_query_builtin_value_cache:
    named:
      io_jwt:
        max_num_entries: 100000
decision_logs:
  console: false
`

// routeTable is data.tollgate.routes of the bundle in policies/, as OPA
// itself reads it (so the file layout of the bundle may change).
func routeTable(ctx context.Context, root, bin string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, bin, "eval", "--bundle", "policies/", "--format", "raw", "data.tollgate.routes")
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("the route table (opa eval data.tollgate.routes on policies/): %w\n%s", err, stderr.Bytes())
	}
	if !bytes.HasPrefix(bytes.TrimSpace(out), []byte("[")) {
		return nil, fmt.Errorf("the route table: data.tollgate.routes of policies/ is not an array: %.200s", out)
	}
	return out, nil
}

// writeOPABundle writes the peer's bundle into dir: opa/authz.rego as
// loadtest/, data (data.loadtest) and the route table (data.tollgate.routes).
func writeOPABundle(dir string, routes, data []byte) error {
	for name, b := range map[string][]byte{
		"loadtest/authz.rego":       opaPolicy,
		"loadtest/data.json":        data,
		"tollgate/routes/data.json": routes,
	} {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return err
		}
		if err := os.WriteFile(p, b, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// startOPA runs `opa run --server` on the peer's bundle: opa/authz.rego,
// the route table of policies/, the issuer's JWKS and the API key's hash as
// data.
func startOPA(ctx context.Context, root, tmp, bin string, is *issuer, s *tollgateSetup) (*process, error) {
	routes, err := routeTable(ctx, root, bin)
	if err != nil {
		return nil, err
	}
	data, err := opaData(is, s)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(tmp, "opa-bundle")
	if err := writeOPABundle(dir, routes, data); err != nil {
		return nil, fmt.Errorf("opa bundle: %w", err)
	}
	cfg := filepath.Join(tmp, "opa.yaml")
	if err := os.WriteFile(cfg, []byte(opaConfig), 0o600); err != nil {
		return nil, fmt.Errorf("opa config: %w", err)
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "run", "--server", "--addr", addr, "--log-level", "error", "--config-file", cfg, "--bundle", dir)
	return start(ctx, "opa", "http://"+addr, "/health", filepath.Join(tmp, "opa.log"), cmd)
}

// ---------------------------------------------------------------------------
// NGINX

//go:embed nginx.conf.tmpl
var nginxTemplate string

// nginxSetup is a running NGINX with two servers: one asks Tollgate about
// every request (auth_request to /v1/forward-auth), the other only proxies;
// both to the same upstream, with the same settings otherwise.
type nginxSetup struct {
	*process
	withAuth, alone string // base URLs
	pids            []int  // master and workers
	errorLog        string
}

func nginxBinary() (string, error) {
	if bin, err := exec.LookPath("nginx"); err == nil {
		return bin, nil
	}
	if _, err := os.Stat("/usr/sbin/nginx"); err == nil {
		return "/usr/sbin/nginx", nil
	}
	return "", errors.New("nginx is not installed (./test/run installs it)")
}

func startNginx(ctx context.Context, bin, tmp, tollgateAddr, upstreamAddr string) (*nginxSetup, error) {
	prefix := filepath.Join(tmp, "nginx")
	for _, d := range []string{"logs", "tmp"} {
		if err := os.MkdirAll(filepath.Join(prefix, d), 0o700); err != nil {
			return nil, err
		}
	}
	withAuth, err := freeAddr()
	if err != nil {
		return nil, err
	}
	alone, err := freeAddr()
	if err != nil {
		return nil, err
	}
	vars := struct{ User, Prefix, WithAuth, Alone, Tollgate, Upstream string }{
		Prefix: prefix, WithAuth: withAuth, Alone: alone, Tollgate: tollgateAddr, Upstream: upstreamAddr,
	}
	if os.Geteuid() == 0 {
		vars.User = "root" // workers would otherwise run as nobody, who cannot write the prefix
	}
	tmpl, err := template.New("nginx").Parse(nginxTemplate)
	if err != nil {
		return nil, err
	}
	var conf bytes.Buffer
	if err := tmpl.Execute(&conf, vars); err != nil {
		return nil, err
	}
	file := filepath.Join(prefix, "nginx.conf")
	if err := os.WriteFile(file, conf.Bytes(), 0o600); err != nil {
		return nil, err
	}
	args := []string{"-p", prefix, "-c", file, "-e", filepath.Join(prefix, "logs", "error.log")}
	if out, err := exec.CommandContext(ctx, bin, append(args, "-t")...).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("nginx -t: %w\n%s", err, out)
	}
	p, err := start(ctx, "nginx", "http://"+withAuth, "/public/ready", filepath.Join(tmp, "nginx.log"),
		exec.Command(bin, append(args, "-g", "daemon off;")...))
	if err != nil {
		return nil, fmt.Errorf("%w\nerror.log:\n%s", err, tail(filepath.Join(prefix, "logs", "error.log"), 20))
	}
	n := &nginxSetup{process: p, withAuth: "http://" + withAuth, alone: "http://" + alone, errorLog: filepath.Join(prefix, "logs", "error.log")}
	n.pids = append([]int{p.pid()}, children(p.pid())...)
	return n, nil
}
