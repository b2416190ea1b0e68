package e2e

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/tollgate/tollgate/pdp/authn/authntest"
)

// TestE2E runs the suite against one tollgate (and, for the trust tests, a
// second one configured differently), in order: the last two steps stop
// tollgate with SIGTERM and then look for leaked secrets in everything the
// run produced. NGINX has its own TestNGINX (nginx_test.go).
func TestE2E(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end tests build and start real servers; skipped with -short")
	}
	e := newEnv(t)

	t.Run("routes", func(t *testing.T) { e.runCases(t, e.tg, "../../cases/routes.yaml") })
	t.Run("paths", func(t *testing.T) { e.runCases(t, e.tg, "paths.yaml") })
	t.Run("bad_tokens", func(t *testing.T) { testBadTokens(t, e) })
	t.Run("malformed_bodies", func(t *testing.T) { testMalformedBodies(t, e) })
	t.Run("forward_auth", func(t *testing.T) { testForwardAuth(t, e) })
	t.Run("strict_instance", func(t *testing.T) { testStrictInstance(t, e) })
	t.Run("forward_auth_prefix_form", func(t *testing.T) { testForwardAuthPrefixForm(t, e) })
	t.Run("strict_parity", func(t *testing.T) { testStrictParity(t, e) })
	t.Run("refusal_leaks", func(t *testing.T) { testRefusalLeaks(t, e) })
	t.Run("untrusted_refusal_leaks", func(t *testing.T) { testUntrustedRefusalLeaks(t, e) })
	t.Run("graceful_shutdown", func(t *testing.T) { testGracefulShutdown(t, e) })
	t.Run("no_secret_leaks", func(t *testing.T) { testNoSecretLeaks(t, e, e.tg.process) })
}

// forwardAuth sends a forward-auth request to tg as a gateway would.
func (e *env) forwardAuth(t *testing.T, tg *tollgate, method string, headers map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, tg.url+"/v1/forward-auth", nil)
	if err != nil {
		t.Fatal(err)
	}
	for name, v := range headers {
		req.Header.Set(name, v)
	}
	return e.do(t, req)
}

// forwardAuthReasons decodes a forward-auth deny body.
func forwardAuthReasons(t *testing.T, body []byte) []string {
	t.Helper()
	var b struct {
		DecisionID string   `json:"decision_id"`
		Reasons    []string `json:"reasons"`
	}
	if err := json.Unmarshal(body, &b); err != nil {
		t.Fatalf("deny body is not JSON: %v: %q", err, body)
	}
	return b.Reasons
}

// testForwardAuth asks /v1/forward-auth directly, from a trusted address
// (loopback), in the shapes NGINX and Traefik use.
func testForwardAuth(t *testing.T, e *env) {
	token := e.mint("alice", map[string]any{"customer_number": "42", "scope": "customers:read"})

	t.Run("allow carries identity headers", func(t *testing.T) {
		resp, body := e.forwardAuth(t, e.tg, http.MethodGet, map[string]string{
			"X-Original-Method": "GET", "X-Original-URI": "/customers/42", "Authorization": "Bearer " + token,
		})
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("HTTP %d, want 200: %s", resp.StatusCode, body)
		}
		for name, want := range map[string]string{"X-User-Id": "alice", "X-Customer-Number": "42", "X-Auth-Kind": "user", "X-Auth-Issuer": e.issuer.URL()} {
			if got := resp.Header.Get(name); got != want {
				t.Errorf("%s %q, want %q", name, got, want)
			}
		}
		if resp.Header.Get("X-Decision-Id") == "" {
			t.Error("no X-Decision-Id")
		}
	})
	t.Run("Traefik-style X-Forwarded headers, any method", func(t *testing.T) {
		resp, body := e.forwardAuth(t, e.tg, http.MethodPost, map[string]string{
			"X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/customers/42", "X-Forwarded-Host": "api.example.com",
			"X-Forwarded-Proto": "https", "Authorization": "Bearer " + token,
		})
		if resp.StatusCode != http.StatusOK || resp.Header.Get("X-User-Id") != "alice" {
			t.Fatalf("HTTP %d X-User-Id %q, want 200 alice: %s", resp.StatusCode, resp.Header.Get("X-User-Id"), body)
		}
	})
	t.Run("no credential: 401 with Bearer challenge", func(t *testing.T) {
		resp, body := e.forwardAuth(t, e.tg, http.MethodGet, map[string]string{"X-Original-Method": "GET", "X-Original-URI": "/customers/42"})
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("HTTP %d, want 401: %s", resp.StatusCode, body)
		}
		if ch := resp.Header.Get("WWW-Authenticate"); !strings.HasPrefix(ch, "Bearer ") {
			t.Errorf("WWW-Authenticate %q, want a Bearer challenge", ch)
		}
		if r := forwardAuthReasons(t, body); !slices.Equal(r, []string{"credential_missing"}) {
			t.Errorf("reasons %q", r)
		}
		if resp.Header.Get("X-User-Id") != "" {
			t.Error("a deny carries X-User-Id")
		}
		if resp.Header.Get("X-Decision-Id") == "" {
			t.Error("no X-Decision-Id")
		}
	})
	t.Run("token in query: 403", func(t *testing.T) {
		resp, body := e.forwardAuth(t, e.tg, http.MethodGet, map[string]string{"X-Original-Method": "GET", "X-Original-URI": "/customers/42?access_token=" + token})
		if resp.StatusCode != http.StatusForbidden {
			t.Fatalf("HTTP %d, want 403: %s", resp.StatusCode, body)
		}
		if r := forwardAuthReasons(t, body); !slices.Equal(r, []string{"credential_in_query"}) {
			t.Errorf("reasons %q", r)
		}
	})
	t.Run("path trick is judged by the normalized path", func(t *testing.T) {
		resp, body := e.forwardAuth(t, e.tg, http.MethodGet, map[string]string{"X-Original-Method": "GET", "X-Original-URI": "/public/../admin/x"})
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("HTTP %d, want 401: %s", resp.StatusCode, body)
		}
	})
	t.Run("unnormalizable path is denied", func(t *testing.T) {
		resp, body := e.forwardAuth(t, e.tg, http.MethodGet, map[string]string{"X-Original-Method": "GET", "X-Original-URI": "/public/..%2Fadmin"})
		if resp.StatusCode < 400 {
			t.Fatalf("HTTP %d, want a deny: %s", resp.StatusCode, body)
		}
	})
	t.Run("no original request: 403", func(t *testing.T) {
		resp, body := e.forwardAuth(t, e.tg, http.MethodGet, map[string]string{"Authorization": "Bearer " + token})
		if resp.StatusCode != http.StatusForbidden {
			t.Fatalf("HTTP %d, want 403: %s", resp.StatusCode, body)
		}
		if r := forwardAuthReasons(t, body); !slices.Equal(r, []string{"missing_original_request"}) {
			t.Errorf("reasons %q", r)
		}
	})
}

// testStrictInstance starts a second tollgate that trusts no proxy on this
// machine and only RS256 tokens.
func testStrictInstance(t *testing.T, e *env) {
	var cfg tollgateConfig
	cfg.TrustedProxies = []string{"203.0.113.0/24"}
	cfg.Issuers = []issuerConfig{{Issuer: e.issuer.URL(), Audiences: []string{authntest.Audience}, Algorithms: []string{"RS256"}}}
	cfg.DecisionLog.Enabled = true
	strict := startTollgate(t, "tollgate-strict", cfg)
	t.Cleanup(func() { testNoSecretLeaks(t, e, strict.process) })

	claims := map[string]any{"customer_number": "42", "scope": "customers:read"}
	ask := func(t *testing.T, tg *tollgate, token string) decisionResponse {
		return e.decide(t, tg, decisionRequest{Method: "GET", Path: "/customers/42", Headers: map[string][]string{"authorization": {"Bearer " + token}}})
	}

	t.Run("forward-auth from an untrusted address: 403 untrusted_proxy", func(t *testing.T) {
		for _, h := range []map[string]string{
			{"X-Original-Method": "GET", "X-Original-URI": "/public/x"},
			{"X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/customers/42", "Authorization": "Bearer " + e.mint("alice", claims)},
		} {
			resp, body := e.forwardAuth(t, strict, http.MethodGet, h)
			if resp.StatusCode != http.StatusForbidden {
				t.Fatalf("HTTP %d, want 403: %s", resp.StatusCode, body)
			}
			if r := forwardAuthReasons(t, body); !slices.Equal(r, []string{"untrusted_proxy"}) {
				t.Errorf("reasons %q, want [untrusted_proxy]", r)
			}
			if resp.Header.Get("X-User-Id") != "" {
				t.Error("a deny carries X-User-Id")
			}
		}
	})
	t.Run("control: the same forward-auth request is allowed from a trusted address", func(t *testing.T) {
		resp, body := e.forwardAuth(t, e.tg, http.MethodGet, map[string]string{"X-Original-Method": "GET", "X-Original-URI": "/public/x"})
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("HTTP %d, want 200: %s", resp.StatusCode, body)
		}
	})
	t.Run("ES256 token outside the RS256-only allow-list: 401", func(t *testing.T) {
		es := e.mint("alice", claims, authntest.WithAlg("ES256"))
		if d := ask(t, e.tg, es); !d.Allow {
			t.Fatalf("control: the main instance (RS256, ES256) denies it: %d %q", d.Status, d.Reasons)
		}
		d := ask(t, strict, es)
		if d.Allow || d.Status != http.StatusUnauthorized || !slices.Equal(d.Reasons, []string{"credential_invalid", "algorithm_not_allowed"}) {
			t.Errorf("got allow=%v %d %q, want 401 [credential_invalid algorithm_not_allowed]", d.Allow, d.Status, d.Reasons)
		}
	})
	t.Run("control: RS256 token is allowed", func(t *testing.T) {
		if d := ask(t, strict, e.mint("alice", claims)); !d.Allow {
			t.Errorf("denied: %d %q", d.Status, d.Reasons)
		}
	})
}

// testGracefulShutdown sends SIGTERM: tollgate must exit 0.
func testGracefulShutdown(t *testing.T, e *env) {
	if err := e.tg.stop(syscall.SIGTERM); err != nil {
		t.Fatalf("after SIGTERM: %v\n%s", err, tail(e.tg.output.String(), tailLines))
	}
}

// testNoSecretLeaks looks for every raw token and API key of the run (and
// each JWT's signature, and each key's secret part) in every response body,
// the key file, nginx's error log and the output (logs and decision logs)
// of p.
func testNoSecretLeaks(t *testing.T, e *env, p *process) {
	out := p.output.String()
	if strings.Contains(out, "DATA RACE") {
		t.Errorf("%s reported a data race", p.name)
	}
	if !strings.Contains(out, `"decision"`) || !strings.Contains(out, "sha256:") {
		t.Errorf("%s wrote no decision log with credential fingerprints; the leak check would prove nothing", p.name)
	}

	e.mu.Lock()
	secrets := slices.Clone(e.secrets)
	haystacks := map[string][]byte{p.name + " output": []byte(out)}
	for what, b := range e.captured {
		haystacks[what] = b
	}
	files := slices.Clone(e.files)
	e.mu.Unlock()
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Errorf("leak check: %v", err)
			continue
		}
		haystacks[f] = b
	}
	if len(secrets) < 10 {
		t.Errorf("only %d secrets recorded; the leak check would prove little", len(secrets))
	}

	for _, s := range secrets {
		needles := []string{s}
		if parts := strings.Split(s, "."); len(parts) == 3 {
			needles = append(needles, parts[2]) // a JWT's signature
		}
		if strings.HasPrefix(s, "tgk_") && len(s) > 17 {
			needles = append(needles, s[17:]) // an API key's secret part
		}
		for _, n := range needles {
			if len(n) < 16 {
				continue // too short to be a secret ("not.a.jwt")
			}
			for where, b := range haystacks {
				if bytes.Contains(b, []byte(n)) {
					t.Errorf("a credential (%s…, %d bytes) appears in %s", n[:8], len(n), where)
				}
			}
		}
	}
}
