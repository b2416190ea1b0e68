package e2e

import (
	"bufio"
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
	"slices"
	"strings"
	"testing"
	"time"
)

// exampleConf is the NGINX configuration the project ships and the README
// quotes. The tests run that very file; they change only what a deployment
// changes, the three addresses below, each of which must appear exactly once
// (a test fails rather than run a file it did not adapt).
const exampleConf = "../../examples/nginx/nginx.conf"

// The directives of exampleConf whose addresses the tests replace.
const (
	confListen   = "listen 127.0.0.1:8080;" // where NGINX listens
	confTollgate = "server 127.0.0.1:8181;" // upstream tollgate
	confAPI      = "server 127.0.0.1:9000;" // upstream api
)

// nginx is a running NGINX with exampleConf.
type nginx struct {
	*process
	addr   string // host:port
	url    string
	prefix string // its -p directory: nginx.conf, logs, pid, temporary files
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

// nginxArgs are the command-line arguments that run conf with prefix as its
// -p directory, plus the global directives in globals. As root, workers
// would run as nobody, who cannot enter the test's private temporary
// directory: they run as root instead (a -g directive, not a change to the
// file).
func nginxArgs(prefix, conf string, globals ...string) []string {
	if os.Geteuid() == 0 {
		globals = append(globals, "user root;")
	}
	args := []string{"-p", prefix, "-c", conf, "-e", filepath.Join(prefix, "error.log")}
	if len(globals) > 0 {
		args = append(args, "-g", strings.Join(globals, " "))
	}
	return args
}

// adaptConf is exampleConf with the addresses replaced.
func adaptConf(t *testing.T, listen, tollgateAddr, upstreamAddr string) []byte {
	t.Helper()
	b, err := os.ReadFile(exampleConf)
	if err != nil {
		t.Fatal(err)
	}
	conf := string(b)
	for _, r := range []struct{ directive, addr string }{
		{confListen, listen}, {confTollgate, tollgateAddr}, {confAPI, upstreamAddr},
	} {
		if n := strings.Count(conf, r.directive); n != 1 {
			t.Fatalf("%s: %q appears %d times, want exactly once (the tests replace its address)", exampleConf, r.directive, n)
		}
		fields := strings.Fields(r.directive) // "listen", "127.0.0.1:8080;"
		conf = strings.Replace(conf, r.directive, fields[0]+" "+r.addr+";", 1)
	}
	return []byte(conf)
}

// startNginx runs exampleConf, adapted to tollgate and the upstream, in the
// foreground until the test ends.
func startNginx(t *testing.T, bin, tollgateAddr, upstreamAddr string) *nginx {
	t.Helper()
	n := &nginx{prefix: t.TempDir()}
	file := filepath.Join(n.prefix, "nginx.conf")
	for attempt := 1; ; attempt++ {
		n.addr = freeAddr(t)
		n.url = "http://" + n.addr
		conf := adaptConf(t, n.addr, tollgateAddr, upstreamAddr)
		if err := os.WriteFile(file, conf, 0o600); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(bin, append(nginxArgs(n.prefix, file), "-t")...).CombinedOutput(); err != nil {
			t.Fatalf("nginx -t: %v\n%s\n%s", err, out, conf)
		}
		n.process = startProcess(t, "nginx", exec.Command(bin, nginxArgs(n.prefix, file, "daemon off;")...))
		err := waitHTTP(n.process, n.url+"/public/ready")
		if err == nil {
			return n
		}
		if !errors.Is(err, errAddrInUse) || attempt == startAttempts {
			t.Fatal(err)
		}
	}
}

// TestNGINXExampleAsShipped: examples/nginx/nginx.conf passes `nginx -t`
// exactly as shipped, run the way its header says.
func TestNGINXExampleAsShipped(t *testing.T) {
	bin := nginxBinary(t)
	conf, err := filepath.Abs(exampleConf)
	if err != nil {
		t.Fatal(err)
	}
	prefix := t.TempDir()
	if out, err := exec.Command(bin, append(nginxArgs(prefix, conf), "-t")...).CombinedOutput(); err != nil {
		t.Fatalf("nginx -t: %v\n%s", err, out)
	}
}

// TestNGINX runs the forward-auth tests through a real NGINX running
// examples/nginx/nginx.conf in front of the echoing upstream, then stops
// tollgate and looks for leaked secrets in everything the run produced,
// NGINX's logs included.
func TestNGINX(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end tests build and start real servers; skipped with -short")
	}
	e := newEnv(t)
	t.Run("nginx", func(t *testing.T) { testNginx(t, e) })
	t.Run("graceful_shutdown", func(t *testing.T) { testGracefulShutdown(t, e) })
	t.Run("no_secret_leaks", func(t *testing.T) { testNoSecretLeaks(t, e, e.tg.process) })
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

// viaNginxHeaders is viaNginx with headers sent in order, under the names
// exactly as given (any case, repeated, with underscores).
func (e *env) viaNginxHeaders(t *testing.T, n *nginx, method, target string, headers [][2]string) nginxResult {
	t.Helper()
	req, err := http.NewRequest(method, n.url+target, nil)
	if err != nil {
		t.Fatal(err)
	}
	id := newTestID()
	req.Header.Set("X-Test-Id", id)
	for _, kv := range headers {
		req.Header[kv[0]] = append(req.Header[kv[0]], kv[1])
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

// identityHeaders are the headers Tollgate's default policy may set on an
// allow (policies/authz.rego, _identity_headers), lower case.
func identityHeaders() []string {
	return []string{"x-user-id", "x-auth-kind", "x-auth-issuer", "x-api-key-id", "x-customer-number"}
}

// testNginx runs the forward-auth tests through a real nginx.
func testNginx(t *testing.T, e *env) {
	bin := nginxBinary(t)
	n := startNginx(t, bin, e.tg.addr, e.upstream.srv.Listener.Addr().String())
	// The leak check reads both of nginx's logs: the example's access log
	// leaves query strings out, so the query tokens sent on purpose below
	// must not be in it either.
	t.Cleanup(func() {
		for _, log := range []string{"error.log", "access.log"} {
			if b, err := os.ReadFile(filepath.Join(n.prefix, log)); err == nil {
				e.record("nginx "+log, b)
			} else {
				t.Errorf("nginx %s: %v", log, err)
			}
		}
	})
	customer := func() string {
		return e.mint("alice", map[string]any{"customer_number": "42", "scope": "customers:read"})
	}

	// allowed checks that the request reached the upstream with exactly the
	// identity headers want (names lower case; absent ones must be absent),
	// under no other spelling either ("x_user_id").
	allowed := func(t *testing.T, r nginxResult, want map[string]string) {
		t.Helper()
		if r.status != http.StatusOK || r.upstream == nil {
			t.Fatalf("HTTP %d, upstream reached: %v; want 200 from the upstream: %s", r.status, r.upstream != nil, r.body)
		}
		for _, name := range identityHeaders() {
			if got := r.upstream.Headers[name]; got != want[name] {
				t.Errorf("upstream got %s %q, want %q", name, got, want[name])
			}
		}
		for name, v := range r.upstream.Headers {
			folded := strings.ReplaceAll(strings.ToLower(name), "_", "-")
			if folded != name && slices.Contains(identityHeaders(), folded) {
				t.Errorf("upstream got %s %q, a spelling of %s", name, v, folded)
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
	// A client's own forwarding headers, in every spelling: NGINX replaces
	// X-Original-* and X-Forwarded-Method/-Uri/-Host/-Proto/-For with its
	// own, drops names with underscores, and Tollgate reads none of the
	// others in the header form; DELETE /admin/users is judged as itself.
	for name, forged := range map[string][][2]string{
		"both families":  {{"X-Original-URI", "/public/x"}, {"X-Original-Method", "GET"}, {"X-Forwarded-Uri", "/public/x"}, {"X-Forwarded-Method", "GET"}},
		"lower case":     {{"x-original-uri", "/public/x"}, {"x-original-method", "GET"}, {"x-forwarded-uri", "/public/x"}},
		"repeated":       {{"X-Original-URI", "/public/x"}, {"X-Original-URI", "/public/y"}, {"X-Forwarded-Method", "GET"}, {"X-Forwarded-Method", "GET"}},
		"underscores":    {{"X_Original_URI", "/public/x"}, {"X_Forwarded_Uri", "/public/x"}, {"X_Original_Method", "GET"}},
		"unread names":   {{"X-Original-URL", "http://api.example.com/public/x"}, {"X-Forwarded-Prefix", "/public"}, {"Forwarded", "host=api.example.com;proto=https"}},
		"host and proto": {{"X-Forwarded-Host", "public.example"}, {"X-Forwarded-Proto", "https"}, {"X-Forwarded-Proto", "http"}},
	} {
		t.Run("client-sent forwarding headers cannot change the judged request: "+name, func(t *testing.T) {
			r := e.viaNginxHeaders(t, n, "DELETE", "/admin/users", forged)
			denied(t, r, http.StatusUnauthorized)
		})
	}

	// A client's own identity headers, in every spelling, on the three
	// kinds of allowed request: the upstream gets Tollgate's identity or
	// none, never the client's.
	forgeries := map[string][][2]string{
		"canonical":  {{"X-User-Id", "mallory"}, {"X-Auth-Kind", "admin"}, {"X-Auth-Issuer", "https://evil.example/"}, {"X-Api-Key-Id", "forged"}, {"X-Customer-Number", "43"}},
		"lower case": {{"x-user-id", "mallory"}, {"x-auth-kind", "admin"}, {"x-auth-issuer", "https://evil.example/"}, {"x-api-key-id", "forged"}, {"x-customer-number", "43"}},
		"upper case": {{"X-USER-ID", "mallory"}, {"X-AUTH-KIND", "admin"}, {"X-AUTH-ISSUER", "https://evil.example/"}, {"X-API-KEY-ID", "forged"}, {"X-CUSTOMER-NUMBER", "43"}},
		"repeated": {{"X-User-Id", "mallory"}, {"X-User-Id", "eve"}, {"X-Auth-Kind", "admin"}, {"X-Auth-Kind", "user"}, {"X-Auth-Issuer", "https://evil.example/"},
			{"X-Auth-Issuer", "https://evil2.example/"}, {"X-Api-Key-Id", "forged"}, {"X-Api-Key-Id", "forged2"}, {"X-Customer-Number", "43"}, {"X-Customer-Number", "44"}},
		"underscores": {{"X_User_Id", "mallory"}, {"X_Auth_Kind", "admin"}, {"X_Auth_Issuer", "https://evil.example/"}, {"X_Api_Key_Id", "forged"}, {"X_Customer_Number", "43"}},
	}
	for name, forged := range forgeries {
		t.Run("forged identity headers never reach the upstream: public request, "+name, func(t *testing.T) {
			allowed(t, e.viaNginxHeaders(t, n, "GET", "/public/docs", forged), nil)
		})
		t.Run("forged identity headers never reach the upstream: JWT request, "+name, func(t *testing.T) {
			r := e.viaNginxHeaders(t, n, "GET", "/customers/42/orders", append([][2]string{{"Authorization", "Bearer " + customer()}}, forged...))
			allowed(t, r, map[string]string{
				"x-user-id": "alice", "x-auth-kind": "user", "x-auth-issuer": e.issuer.URL(), "x-customer-number": "42",
			})
		})
		t.Run("forged identity headers never reach the upstream: API-key request, "+name, func(t *testing.T) {
			k := e.keys["billing"]
			r := e.viaNginxHeaders(t, n, "GET", "/products/7", append([][2]string{{"X-API-Key", k.Raw}}, forged...))
			allowed(t, r, map[string]string{"x-user-id": "billing", "x-auth-kind": "service", "x-api-key-id": k.ID})
		})
	}

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

// TestNGINXRecipeQuotesTheExample: the README's NGINX recipe quotes
// examples/nginx/nginx.conf verbatim, in order; a line "# …" stands for
// lines left out.
func TestNGINXRecipeQuotesTheExample(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "\n### NGINX")
	if !ok {
		t.Fatal("README.md has no NGINX recipe (### NGINX)")
	}
	section, _, _ = strings.Cut(section, "\n### ")
	if !strings.Contains(section, "examples/nginx/nginx.conf") {
		t.Error("the NGINX recipe does not name examples/nginx/nginx.conf")
	}
	_, quote, ok := strings.Cut(section, "```nginx\n")
	if !ok {
		t.Fatal("the NGINX recipe has no ```nginx block")
	}
	quote, _, _ = strings.Cut(quote, "```")
	conf, err := os.ReadFile(exampleConf)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(conf), "\n")
	quoted := 0
	for _, q := range strings.Split(strings.TrimRight(quote, "\n"), "\n") {
		if strings.TrimSpace(q) == "" || strings.TrimSpace(q) == "# …" {
			continue
		}
		i := slices.Index(lines, q)
		if i < 0 {
			t.Fatalf("the README quotes %q, which is not a line of %s (after the lines quoted before it)", q, exampleConf)
		}
		lines = lines[i+1:]
		quoted++
	}
	if quoted < 20 {
		t.Errorf("the README quotes only %d lines of %s", quoted, exampleConf)
	}
}
