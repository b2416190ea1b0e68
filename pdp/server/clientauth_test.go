package server_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"

	"github.com/tollgate/tollgate/pdp"
	"github.com/tollgate/tollgate/pdp/authn/apikey"
	"github.com/tollgate/tollgate/pdp/policy"
	"github.com/tollgate/tollgate/pdp/server"
	"github.com/tollgate/tollgate/pdp/telemetry/telemetrytest"
)

// echoHeaderNames allows every request and reports the names of the
// headers the policy saw, so a test can check what reached the input.
const echoHeaderNames = `package tollgate.authz

decision := {"allow": true, "status": 200, "reasons": [], "headers": {"x-seen": concat(",", sort(object.keys(input.request.headers)))}}
`

// echoDecider returns a Decider running echoHeaderNames whose decision log
// and server log go to logs.
func echoDecider(t *testing.T, logs io.Writer) *pdp.Decider {
	t.Helper()
	e := policy.NewEngine(policy.Options{})
	mod, err := ast.ParseModuleWithOpts("p.rego", echoHeaderNames, ast.ParserOptions{RegoVersion: ast.RegoV1})
	if err != nil {
		t.Fatal(err)
	}
	b := &bundle.Bundle{Manifest: bundle.Manifest{Revision: "r1"}, Modules: []bundle.ModuleFile{{Path: "p.rego", URL: "p.rego", Raw: []byte(echoHeaderNames), Parsed: mod}}, Data: map[string]any{}}
	if err := e.Activate(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	d, err := pdp.New(pdp.Config{Engine: e, Logger: log, DecisionLog: log})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// serve runs a server with opts on a loopback listener until the test ends
// and returns its base URL.
func serve(t *testing.T, d *pdp.Decider, opts server.Options) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- server.New(d, opts).Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	scheme := "http"
	if opts.TLSConfig != nil {
		scheme = "https"
	}
	return scheme + "://" + ln.Addr().String()
}

// testCA is a certificate authority made for one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// serialNumber returns a random certificate serial number.
func serialNumber(t *testing.T) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func newCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serialNumber(t),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key}
}

// issue signs a leaf certificate for a server (with the loopback address)
// or a client.
func (ca *testCA) issue(t *testing.T, name string, usage x509.ExtKeyUsage) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serialNumber(t),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
	}
	if usage == x509.ExtKeyUsageServerAuth {
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func leaf(c tls.Certificate) *tls.Certificate { return &c }

func (ca *testCA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// client returns an HTTPS client trusting serverCA that presents cert, if
// any, whichever CAs the server asks for (Go's client would otherwise keep
// a certificate from an unlisted CA to itself).
func client(serverCA *testCA, cert *tls.Certificate) *http.Client {
	cfg := &tls.Config{RootCAs: serverCA.pool(), MinVersion: tls.VersionTLS12}
	if cert != nil {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	}
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
}

var loopback = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}

const decisionBody = `{"method":"GET","path":"/public/x","host":"api.example.com","scheme":"https","headers":{"x-user-header":"1"}}`

// TestClientCertificates runs the server with TLS and required client
// certificates on loopback: a decision needs a certificate from the client
// CA; the health checks answer without one.
func TestClientCertificates(t *testing.T) {
	serverCA := newCA(t, "server CA")
	clientCA := newCA(t, "gateway CA")
	otherCA := newCA(t, "some other CA")
	logs := &telemetrytest.LogBuffer{}
	url := serve(t, echoDecider(t, logs), server.Options{
		TLSConfig: &tls.Config{
			Certificates: []tls.Certificate{serverCA.issue(t, "tollgate", x509.ExtKeyUsageServerAuth)},
			ClientCAs:    clientCA.pool(),
			ClientAuth:   tls.VerifyClientCertIfGiven,
			MinVersion:   tls.VersionTLS12,
		},
		RequireClientCert: true,
		Logger:            slog.New(slog.NewJSONHandler(logs, nil)),
	})

	tests := []struct {
		name      string
		cert      *tls.Certificate
		path      string
		wantCode  int // 0: the TLS handshake must fail
		wantAllow bool
	}{
		{name: "no certificate, decision", path: "/v1/decision", wantCode: 401},
		{name: "no certificate, forward-auth", path: "/v1/forward-auth/public/x", wantCode: 401},
		{name: "no certificate, metrics", path: "/metrics", wantCode: 401},
		{name: "no certificate, forward-auth health-like suffix", path: "/v1/forward-auth/health/live", wantCode: 401},
		{name: "no certificate, unknown path", path: "/nope", wantCode: 401},
		{name: "no certificate, live", path: "/health/live", wantCode: 200},
		{name: "no certificate, ready", path: "/health/ready", wantCode: 200},
		{name: "no certificate, encoded health path", path: "/health/%6cive", wantCode: 401},
		{name: "certificate from another CA", cert: leaf(otherCA.issue(t, "intruder", x509.ExtKeyUsageClientAuth)), path: "/v1/decision"},
		{name: "server certificate used as client", cert: leaf(serverCA.issue(t, "tollgate-2", x509.ExtKeyUsageServerAuth)), path: "/v1/decision"},
		{name: "client CA but server usage", cert: leaf(clientCA.issue(t, "gw", x509.ExtKeyUsageServerAuth)), path: "/v1/decision"},
		{name: "right certificate, decision", cert: leaf(clientCA.issue(t, "nginx-gw", x509.ExtKeyUsageClientAuth)), path: "/v1/decision", wantCode: 200, wantAllow: true},
		{name: "right certificate, metrics", cert: leaf(clientCA.issue(t, "prometheus", x509.ExtKeyUsageClientAuth)), path: "/metrics", wantCode: 200},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := client(serverCA, tc.cert)
			method, body := http.MethodGet, io.Reader(nil)
			if tc.path == "/v1/decision" {
				method, body = http.MethodPost, strings.NewReader(decisionBody)
			}
			req, err := http.NewRequest(method, url+tc.path, body)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := c.Do(req)
			if tc.wantCode == 0 {
				if err == nil {
					resp.Body.Close()
					t.Fatalf("handshake succeeded with status %d; want it refused", resp.StatusCode)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.wantCode {
				t.Fatalf("status %d (%s), want %d", resp.StatusCode, b, tc.wantCode)
			}
			if tc.wantCode == 401 && strings.TrimSpace(string(b)) != `{"status":"unauthorized"}` {
				t.Errorf("401 body %q says more than unauthorized", b)
			}
			if tc.wantAllow {
				var dec struct{ Allow bool }
				if err := json.Unmarshal(b, &dec); err != nil || !dec.Allow {
					t.Errorf("decision %s: %v", b, err)
				}
			}
		})
	}

	t.Run("plain HTTP is refused", func(t *testing.T) {
		resp, err := http.Get("http://" + strings.TrimPrefix(url, "https://") + "/health/live")
		if err == nil {
			defer resp.Body.Close()
			if resp.StatusCode == 200 {
				t.Fatal("plain HTTP answered 200 on a TLS listener")
			}
		}
	})
}

// TestClientTokens checks gateway client tokens through both decision
// endpoints: missing, malformed, unknown, wrong, revoked, expired and
// repeated tokens answer 401; a valid token gets a decision, and the token
// header never reaches the policy input or the logs.
func TestClientTokens(t *testing.T) {
	gen := func() apikey.Generated {
		g, err := apikey.Generate(nil)
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	good, revoked, expired, unlisted := gen(), gen(), gen(), gen()
	now := time.Now().UTC().Truncate(time.Second)
	store, err := apikey.NewStore([]apikey.Record{
		{ID: good.ID, Hash: good.Hash, Owner: "nginx-gw", Created: now.Add(-time.Hour)},
		{ID: revoked.ID, Hash: revoked.Hash, Owner: "old-gw", Created: now.Add(-time.Hour), Revoked: now.Add(-time.Minute)},
		{ID: expired.ID, Hash: expired.Hash, Owner: "tmp-gw", Created: now.Add(-time.Hour), Expires: now.Add(-time.Minute)},
	})
	if err != nil {
		t.Fatal(err)
	}
	logs := &telemetrytest.LogBuffer{}
	url := serve(t, echoDecider(t, logs), server.Options{
		ClientTokens:   apikey.New(store, apikey.Options{}),
		TrustedProxies: loopback,
		Logger:         slog.New(slog.NewJSONHandler(logs, nil)),
	})
	key := good.Key.Reveal()
	// A token with the good id and another secret.
	wrongSecret := key[:len(key)-5] + "AAAAA"
	if wrongSecret == key {
		wrongSecret = key[:len(key)-5] + "BBBBB"
	}

	tests := []struct {
		name   string
		tokens []string
		want   int
	}{
		{name: "no token", want: 401},
		{name: "empty token", tokens: []string{""}, want: 401},
		{name: "malformed token", tokens: []string{"let-me-in"}, want: 401},
		{name: "token of another store", tokens: []string{unlisted.Key.Reveal()}, want: 401},
		{name: "right id, wrong secret", tokens: []string{wrongSecret}, want: 401},
		{name: "revoked token", tokens: []string{revoked.Key.Reveal()}, want: 401},
		{name: "expired token", tokens: []string{expired.Key.Reveal()}, want: 401},
		{name: "good token twice", tokens: []string{key, key}, want: 401},
		{name: "good and bad token", tokens: []string{key, "x"}, want: 401},
		{name: "good token", tokens: []string{key}, want: 200},
	}
	endpoints := []struct {
		name, method, path, body string
	}{
		{"decision", http.MethodPost, "/v1/decision", decisionBody},
		{"forward-auth", http.MethodGet, "/v1/forward-auth/public/x", ""},
		{"metrics", http.MethodGet, "/metrics", ""},
	}
	for _, ep := range endpoints {
		for _, tc := range tests {
			t.Run(ep.name+"/"+tc.name, func(t *testing.T) {
				req, err := http.NewRequest(ep.method, url+ep.path, strings.NewReader(ep.body))
				if err != nil {
					t.Fatal(err)
				}
				for _, v := range tc.tokens {
					req.Header.Add(server.ClientTokenHeader, v)
				}
				req.Header.Set("X-User-Header", "1")
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				if resp.StatusCode != tc.want {
					t.Fatalf("status %d (%s), want %d", resp.StatusCode, b, tc.want)
				}
				if tc.want == 401 && strings.TrimSpace(string(b)) != `{"status":"unauthorized"}` {
					t.Errorf("401 body %q says more than unauthorized", b)
				}
				if tc.want != 200 || ep.name == "metrics" {
					return
				}
				// What the policy saw: decision body headers, or the
				// forward-auth request's own headers.
				seen := resp.Header.Get("X-Seen")
				if ep.name == "decision" {
					var dec struct{ Headers map[string]string }
					if err := json.Unmarshal(b, &dec); err != nil {
						t.Fatal(err)
					}
					seen = dec.Headers["x-seen"]
				}
				if !strings.Contains(seen, "x-user-header") {
					t.Errorf("policy saw headers %q, want x-user-header among them", seen)
				}
				if strings.Contains(strings.ToLower(seen), "tollgate-client-token") {
					t.Errorf("the client token header reached the policy input: %q", seen)
				}
			})
		}
	}
	for _, g := range []apikey.Generated{good, revoked, expired, unlisted} {
		if strings.Contains(logs.String(), g.Key.Reveal()) {
			t.Fatal("a client token reached the logs")
		}
	}
	if !strings.Contains(logs.String(), "client authentication failed") {
		t.Error("failures are not logged")
	}
}

// TestClientTokenHeaderStrippedWithoutClientAuth checks that the header is
// removed even when no client authentication is configured.
func TestClientTokenHeaderStrippedWithoutClientAuth(t *testing.T) {
	url := serve(t, echoDecider(t, io.Discard), server.Options{TrustedProxies: loopback})
	req, err := http.NewRequest(http.MethodGet, url+"/v1/forward-auth/public/x", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set(server.ClientTokenHeader, "tgk_secret")
	req.Header.Set("X-User-Header", "1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	seen := resp.Header.Get("X-Seen")
	if resp.StatusCode != 200 || !strings.Contains(seen, "x-user-header") || strings.Contains(seen, "tollgate-client-token") {
		t.Fatalf("status %d, policy saw %q", resp.StatusCode, seen)
	}
}
