package e2e

import (
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// caddyExample is the Caddy configuration the project ships and the README
// quotes. The tests run that very file; they change only the three
// addresses below, each of which must appear exactly once.
const caddyExample = "../../examples/caddy/Caddyfile"

// The parts of caddyExample whose addresses the tests replace.
const (
	caddyListen   = ":8080 {"                       // where Caddy listens (bound to 127.0.0.1)
	caddyTollgate = "forward_auth 127.0.0.1:8181 {" // tollgate
	caddyAPI      = "reverse_proxy 127.0.0.1:9000"  // the upstream API
)

// caddy is a running Caddy with caddyExample.
type caddy struct {
	*process
	addr, url string
}

// caddyBinary finds the caddy that ./test/run builds from test/tools/caddy
// into test/.bin (and puts on PATH), or skips the test (fails it under
// TOLLGATE_E2E=1). It returns "" after a skip was requested by a parent
// that continues without Caddy.
func caddyBinary(t *testing.T) string {
	t.Helper()
	if bin, err := exec.LookPath("caddy"); err == nil {
		return bin
	}
	if root, err := repoRoot(); err == nil {
		bin := filepath.Join(root, "test", ".bin", "caddy")
		if _, err := os.Stat(bin); err == nil {
			return bin
		}
	}
	if os.Getenv("TOLLGATE_E2E") == "1" {
		t.Fatal("TOLLGATE_E2E=1 but caddy is not built (./test/run builds it into test/.bin from test/tools/caddy)")
	}
	t.Log("caddy is not built (./test/run builds it); the Caddy transport is left out")
	return ""
}

// adaptCaddyfile is caddyExample with the addresses replaced.
func adaptCaddyfile(t *testing.T, port int, tollgateAddr, upstreamAddr string) []byte {
	t.Helper()
	b, err := os.ReadFile(caddyExample)
	if err != nil {
		t.Fatal(err)
	}
	conf := string(b)
	for _, r := range []struct{ from, to string }{
		{caddyListen, ":" + strconv.Itoa(port) + " {"},
		{caddyTollgate, "forward_auth " + tollgateAddr + " {"},
		{caddyAPI, "reverse_proxy " + upstreamAddr},
	} {
		if n := strings.Count(conf, r.from); n != 1 {
			t.Fatalf("%s: %q appears %d times, want exactly once (the tests replace its address)", caddyExample, r.from, n)
		}
		conf = strings.Replace(conf, r.from, r.to, 1)
	}
	return []byte(conf)
}

// startCaddy runs caddyExample, adapted, until the test ends. Caddy's
// data and configuration directories are the test's own.
func startCaddy(t *testing.T, bin, tollgateAddr, upstreamAddr string) *caddy {
	t.Helper()
	dir := t.TempDir()
	file := filepath.Join(dir, "Caddyfile")
	for attempt := 1; ; attempt++ {
		addr := freeAddr(t)
		c := &caddy{addr: addr, url: "http://" + addr}
		if err := os.WriteFile(file, adaptCaddyfile(t, portOf(t, addr), tollgateAddr, upstreamAddr), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "run", "--adapter", "caddyfile", "--config", file)
		cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
		c.process = startProcess(t, "caddy", cmd)
		err := waitHTTP(c.process, c.url+"/public/ready")
		if err == nil {
			return c
		}
		if !errors.Is(err, errAddrInUse) || attempt == startAttempts {
			t.Fatal(err)
		}
	}
}

// TestCaddyExampleAsShipped: examples/caddy/Caddyfile passes `caddy
// validate` exactly as shipped.
func TestCaddyExampleAsShipped(t *testing.T) {
	if testing.Short() {
		t.Skip("needs the caddy binary; skipped with -short")
	}
	bin := caddyBinary(t)
	if bin == "" {
		t.Skip("caddy is not built")
	}
	dir := t.TempDir()
	cmd := exec.Command(bin, "validate", "--adapter", "caddyfile", "--config", caddyExample)
	cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("caddy validate: %v\n%s", err, out)
	}
}

// viaCaddy sends the case's request through Caddy, with forged identity
// headers, and reads the outcome: an allow must reach the upstream with
// exactly Tollgate's identity headers, a deny must not reach it.
func (tr *transports) viaCaddy(t *testing.T, dr decisionRequest) (outcome, bool) {
	req, err := http.NewRequest(dr.Method, tr.caddy.url+dr.Path, nil)
	if err != nil {
		return outcome{}, false // a method or target Go's client cannot send
	}
	for name, vals := range dr.Headers {
		for _, v := range vals {
			req.Header.Add(name, v)
		}
	}
	for name, v := range forged {
		req.Header.Set(name, v)
	}
	id := newTestID()
	req.Header.Set("X-Test-Id", id)
	resp, body := tr.e.do(t, req)
	ec, reached := tr.e.upstream.reached(id)
	if resp.StatusCode == http.StatusOK {
		if !reached {
			t.Fatalf("200 without reaching the upstream: %s", body)
		}
		ids := identityOnly(func(n string) string { return ec.Headers[n] })
		for name, v := range forged {
			if ids[name] == v {
				t.Errorf("the client's forged %s %q reached the upstream", name, v)
			}
		}
		if ec.Headers["x-decision-id"] == "" {
			t.Error("the upstream got no x-decision-id")
		}
		return outcome{allow: true, status: http.StatusOK, reasons: []string{}, headers: ids}, true
	}
	if reached {
		t.Errorf("HTTP %d, yet the request reached the upstream", resp.StatusCode)
	}
	return httpOutcome(t, resp.StatusCode, resp.Header, body, nil), true
}
