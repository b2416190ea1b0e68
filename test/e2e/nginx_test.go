package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"text/template"
	"time"
)

// nginx is a running NGINX with testdata/nginx.conf.tmpl.
type nginx struct {
	*process
	addr   string // host:port
	url    string
	prefix string // its directory: nginx.conf, logs/
}

// nginxBinary finds nginx, or skips the test (fails it under TOLLGATE_E2E=1).
func nginxBinary(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("nginx")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/nginx"); serr == nil {
			return "/usr/sbin/nginx"
		}
		if os.Getenv("TOLLGATE_E2E") == "1" {
			t.Fatal("TOLLGATE_E2E=1 but nginx is not installed (./test/run installs it)")
		}
		t.Skip("nginx is not installed; ./test/run installs it (set TOLLGATE_E2E=1 to make this a failure)")
	}
	return bin
}

// startNginx renders the configuration for tollgate and the upstream and
// runs nginx in the foreground until the test ends.
func startNginx(t *testing.T, bin, tollgateAddr, upstreamAddr string) *nginx {
	t.Helper()
	n := &nginx{prefix: t.TempDir()}
	for _, dir := range []string{"logs", "tmp"} {
		if err := os.Mkdir(filepath.Join(n.prefix, dir), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	tmpl, err := template.ParseFiles(filepath.Join("testdata", "nginx.conf.tmpl"))
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(n.prefix, "nginx.conf")
	args := []string{"-p", n.prefix, "-c", file, "-e", filepath.Join(n.prefix, "logs", "error.log")}
	for attempt := 1; ; attempt++ {
		n.addr = freeAddr(t)
		n.url = "http://" + n.addr
		vars := struct{ User, Prefix, Listen, Tollgate, Upstream string }{
			Prefix: n.prefix, Listen: n.addr, Tollgate: tollgateAddr, Upstream: upstreamAddr,
		}
		if os.Geteuid() == 0 {
			// Workers would otherwise run as nobody, who cannot write to
			// the test's private temporary directory.
			vars.User = "root"
		}
		var conf bytes.Buffer
		if err := tmpl.Execute(&conf, vars); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(file, conf.Bytes(), 0o600); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(bin, append(args, "-t")...).CombinedOutput(); err != nil {
			t.Fatalf("nginx -t: %v\n%s\n%s", err, out, conf.String())
		}
		n.process = startProcess(t, "nginx", exec.Command(bin, append(args, "-g", "daemon off;")...))
		err := waitHTTP(n.process, n.url+"/public/ready")
		if err == nil {
			return n
		}
		if !errors.Is(err, errAddrInUse) || attempt == startAttempts {
			t.Fatal(err)
		}
	}
}

// nginxResult is one answer through nginx.
type nginxResult struct {
	status   int
	header   http.Header
	body     []byte
	upstream *echo // what the upstream received, nil when it was not reached
}

// viaNginx sends a request through nginx with a fresh X-Test-Id.
func (e *env) viaNginx(t *testing.T, n *nginx, method, target string, headers map[string]string) nginxResult {
	t.Helper()
	req, err := http.NewRequest(method, n.url+target, nil)
	if err != nil {
		t.Fatal(err)
	}
	id := newTestID()
	req.Header.Set("X-Test-Id", id)
	for name, v := range headers {
		req.Header.Set(name, v)
	}
	resp, body := e.do(t, req)
	return e.nginxResult(id, resp, body)
}

// rawViaNginx writes the request line itself, so that the target reaches
// nginx exactly as given (Go's client would clean it).
func (e *env) rawViaNginx(t *testing.T, n *nginx, method, target string) nginxResult {
	t.Helper()
	conn, err := net.DialTimeout("tcp", n.addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	id := newTestID()
	fmt.Fprintf(conn, "%s %s HTTP/1.1\r\nHost: api.example.com\r\nX-Test-Id: %s\r\nConnection: close\r\n\r\n", method, target, id)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	e.recordResponse("raw "+method+" "+target, resp, body)
	return e.nginxResult(id, resp, body)
}

func (e *env) nginxResult(id string, resp *http.Response, body []byte) nginxResult {
	r := nginxResult{status: resp.StatusCode, header: resp.Header, body: body}
	if ec, ok := e.upstream.reached(id); ok {
		r.upstream = &ec
	}
	return r
}

// testNginx runs the forward-auth tests through a real nginx.
func testNginx(t *testing.T, e *env) {
	bin := nginxBinary(t)
	n := startNginx(t, bin, e.tg.addr, e.upstream.srv.Listener.Addr().String())
	// The leak check reads nginx's error log; not its access log, which
	// records query strings and so the query tokens sent on purpose below.
	t.Cleanup(func() {
		if b, err := os.ReadFile(filepath.Join(n.prefix, "logs", "error.log")); err == nil {
			e.record("nginx error.log", b)
		} else {
			t.Errorf("nginx error log: %v", err)
		}
	})
	customer := func() string {
		return e.mint("alice", map[string]any{"customer_number": "42", "scope": "customers:read"})
	}

	// allowed checks that the request reached the upstream with exactly the
	// identity headers want (names lower case; absent ones must be absent).
	allowed := func(t *testing.T, r nginxResult, want map[string]string) {
		t.Helper()
		if r.status != http.StatusOK || r.upstream == nil {
			t.Fatalf("HTTP %d, upstream reached: %v; want 200 from the upstream: %s", r.status, r.upstream != nil, r.body)
		}
		for _, name := range []string{"x-user-id", "x-auth-kind", "x-auth-issuer", "x-api-key-id", "x-customer-number"} {
			if got := r.upstream.Headers[name]; got != want[name] {
				t.Errorf("upstream got %s %q, want %q", name, got, want[name])
			}
		}
		var ec echo
		if err := json.Unmarshal(r.body, &ec); err != nil {
			t.Errorf("the answer is not the upstream's echo: %s", r.body)
		}
		if r.header.Get("X-Decision-Id") == "" {
			t.Error("no X-Decision-Id on the answer")
		}
	}
	denied := func(t *testing.T, r nginxResult, status int) {
		t.Helper()
		if r.status != status {
			t.Errorf("HTTP %d, want %d: %s", r.status, status, r.body)
		}
		if r.upstream != nil {
			t.Errorf("the upstream was reached: %+v", *r.upstream)
		}
		if r.header.Get("X-Decision-Id") == "" {
			t.Error("no X-Decision-Id on the answer")
		}
	}

	t.Run("public route without credential reaches the upstream without identity", func(t *testing.T) {
		r := e.viaNginx(t, n, "GET", "/public/docs", map[string]string{"X-User-Id": "mallory", "X-Auth-Kind": "user"})
		allowed(t, r, nil)
	})
	t.Run("customer token: upstream gets tollgate's identity, not the client's", func(t *testing.T) {
		r := e.viaNginx(t, n, "GET", "/customers/42/orders", map[string]string{
			"Authorization":     "Bearer " + customer(),
			"X-User-Id":         "mallory",
			"X-Customer-Number": "43",
			"X-Auth-Issuer":     "https://evil.example/",
		})
		allowed(t, r, map[string]string{
			"x-user-id": "alice", "x-auth-kind": "user", "x-auth-issuer": e.issuer.URL(), "x-customer-number": "42",
		})
		if r.upstream != nil && r.upstream.Path != "/customers/42/orders" {
			t.Errorf("upstream path %q", r.upstream.Path)
		}
	})
	t.Run("session cookie", func(t *testing.T) {
		r := e.viaNginx(t, n, "GET", "/customers/42", map[string]string{"Cookie": "session=" + customer()})
		allowed(t, r, map[string]string{
			"x-user-id": "alice", "x-auth-kind": "user", "x-auth-issuer": e.issuer.URL(), "x-customer-number": "42",
		})
	})
	t.Run("API key on an internal route", func(t *testing.T) {
		k := e.keys["billing"]
		r := e.viaNginx(t, n, "GET", "/products/7", map[string]string{"X-API-Key": k.Raw, "X-User-Id": "mallory"})
		allowed(t, r, map[string]string{"x-user-id": "billing", "x-auth-kind": "service", "x-api-key-id": k.ID})
	})
	t.Run("no credential: 401 with a Bearer challenge", func(t *testing.T) {
		r := e.viaNginx(t, n, "GET", "/customers/42", nil)
		denied(t, r, http.StatusUnauthorized)
		if ch := r.header.Get("WWW-Authenticate"); !strings.HasPrefix(ch, "Bearer ") || !strings.Contains(ch, `realm="`) {
			t.Errorf("WWW-Authenticate %q, want a Bearer challenge with a realm", ch)
		}
	})
	t.Run("invalid token: 401 with error=invalid_token", func(t *testing.T) {
		r := e.viaNginx(t, n, "GET", "/customers/42", map[string]string{"Authorization": "Bearer " + e.secret(e.issuer.ForgeNone(e.issuer.Claims("alice")))})
		denied(t, r, http.StatusUnauthorized)
		if ch := r.header.Get("WWW-Authenticate"); !strings.HasPrefix(ch, "Bearer ") || !strings.Contains(ch, `error="invalid_token"`) {
			t.Errorf("WWW-Authenticate %q, want a Bearer challenge with error=\"invalid_token\"", ch)
		}
	})
	t.Run("other customer: 403", func(t *testing.T) {
		denied(t, e.viaNginx(t, n, "GET", "/customers/43", map[string]string{"Authorization": "Bearer " + customer()}), http.StatusForbidden)
	})
	t.Run("API key on a sensitive route: 403", func(t *testing.T) {
		denied(t, e.viaNginx(t, n, "GET", "/customers/42", map[string]string{"X-API-Key": e.keys["billing"].Raw}), http.StatusForbidden)
	})
	t.Run("token in the query: 403", func(t *testing.T) {
		denied(t, e.viaNginx(t, n, "GET", "/customers/42?access_token="+url.QueryEscape(customer()), nil), http.StatusForbidden)
	})
	t.Run("unknown route: 403", func(t *testing.T) {
		denied(t, e.viaNginx(t, n, "GET", "/orders", map[string]string{"Authorization": "Bearer " + customer()}), http.StatusForbidden)
	})
	t.Run("client-sent forwarding headers cannot change the judged request", func(t *testing.T) {
		r := e.viaNginx(t, n, "GET", "/admin/users", map[string]string{
			"X-Original-URI":     "/public/x",
			"X-Original-Method":  "GET",
			"X-Forwarded-Uri":    "/public/x",
			"X-Forwarded-Method": "GET",
			"X-Original-URL":     "http://api.example.com/public/x",
		})
		denied(t, r, http.StatusUnauthorized)
	})

	// Raw request targets: nginx routes on its own normalized path, tollgate
	// judges $request_uri, the target as sent. None may reach the upstream.
	for _, target := range []string{
		"/public/../admin/x",
		"/public/%2e%2e/admin/x",
		"/public/./../customers/42",
		"//admin//x",
		"/public/..%2Fadmin",
		"/public%2F..%2Fadmin",
		`/public\..\admin`,
		"/public/..;/admin/x",
		"/public/%2e%2e%2fadmin",
	} {
		t.Run("path trick "+target, func(t *testing.T) {
			r := e.rawViaNginx(t, n, "GET", target)
			t.Logf("HTTP %d", r.status)
			if r.status < 400 || r.upstream != nil {
				t.Errorf("HTTP %d, upstream reached: %v; want a 4xx or 5xx that never reaches the upstream", r.status, r.upstream != nil)
			}
		})
	}

}
