package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// pki writes a CA and leaf certificates as PEM files for one test.
type pki struct {
	dir  string
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newPKI(t *testing.T, dir, name string) *pki {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	p := &pki{dir: dir, cert: cert, key: key}
	writePEM(t, filepath.Join(dir, name+"-ca.pem"), "CERTIFICATE", der)
	return p
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// leaf issues a certificate and writes NAME.crt and NAME.key; it returns
// the pair.
func (p *pki) leaf(t *testing.T, name string, usage x509.ExtKeyUsage) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.cert, &key.PublicKey, p.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, filepath.Join(p.dir, name+".crt"), "CERTIFICATE", der)
	writePEM(t, filepath.Join(p.dir, name+".key"), "PRIVATE KEY", kder)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// startServe runs `tollgate serve args...` until the test ends and returns
// the address it listens on, read from its "tollgate listening" log line.
func startServe(t *testing.T, args ...string) string {
	t.Helper()
	pr, pw := io.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	root := newRootCommand()
	root.SetArgs(append([]string{"serve"}, args...))
	root.SetOut(io.Discard)
	root.SetErr(pw)
	done := make(chan error, 1)
	go func() {
		err := root.ExecuteContext(ctx)
		pw.CloseWithError(fmt.Errorf("serve ended: %v", err))
		done <- err
	}()
	addrRE := regexp.MustCompile(`"addr":"([^"]+)"`)
	sc := bufio.NewScanner(pr)
	var addr string
	for sc.Scan() {
		if line := sc.Text(); strings.Contains(line, "tollgate listening") {
			if m := addrRE.FindStringSubmatch(line); m != nil {
				addr = m[1]
				break
			}
		}
	}
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	if addr == "" {
		t.Fatalf("serve did not report its address: %v", sc.Err())
	}
	return addr
}

// TestServeWithTLSClientCertsAndTokens runs `tollgate serve --config` with
// TLS, client certificates and client tokens, as the README's production
// setup does, the tokens made by `tollgate apikey new`.
func TestServeWithTLSClientCertsAndTokens(t *testing.T) {
	dir := t.TempDir()
	serverCA := newPKI(t, dir, "server")
	gwCA := newPKI(t, dir, "gateways")
	serverCA.leaf(t, "tollgate", x509.ExtKeyUsageServerAuth)
	gwCert := gwCA.leaf(t, "nginx-gw", x509.ExtKeyUsageClientAuth)

	clients := filepath.Join(dir, "clients.yaml")
	out, err := runCmd(t, "apikey", "new", "--owner", "nginx-gw", "--file", clients)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	token := lines[len(lines)-1]
	wrong := []byte(token)
	wrong[len(wrong)-1] ^= 1 // another base64url character

	cfg := filepath.Join(dir, "tollgate.yaml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, `
listen: "127.0.0.1:0"
tls:
  cert_file: %[1]s/tollgate.crt
  key_file: %[1]s/tollgate.key
  client_ca_file: %[1]s/gateways-ca.pem
clients:
  tokens_file: %[1]s/clients.yaml
  reload_interval: 100ms
`, dir), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := startServe(t, "--config", cfg)

	roots := x509.NewCertPool()
	roots.AddCert(serverCA.cert)
	do := func(t *testing.T, withCert bool, tok, path string) int {
		t.Helper()
		tc := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
		if withCert {
			tc.Certificates = []tls.Certificate{gwCert}
		}
		c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: tc}}
		method, body := http.MethodGet, io.Reader(nil)
		if path == "/v1/decision" {
			method, body = http.MethodPost, bytes.NewReader([]byte(`{"method":"GET","path":"/customers/42","host":"api","scheme":"https","headers":{}}`))
		}
		req, _ := http.NewRequest(method, "https://"+addr+path, body)
		if tok != "" {
			req.Header.Set("Tollgate-Client-Token", tok)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	tests := []struct {
		name     string
		withCert bool
		token    string
		path     string
		want     int
	}{
		{"certificate and token", true, token, "/v1/decision", 200},
		{"certificate and token, metrics", true, token, "/metrics", 200},
		{"certificate, no token", true, "", "/v1/decision", 401},
		{"certificate, wrong token", true, string(wrong), "/v1/decision", 401},
		{"token, no certificate", false, token, "/v1/decision", 401},
		{"nothing, live", false, "", "/health/live", 200},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := do(t, tc.withCert, tc.token, tc.path); got != tc.want {
				t.Errorf("status %d, want %d", got, tc.want)
			}
		})
	}
	t.Run("revoked token", func(t *testing.T) {
		id := strings.Fields(lines[0])[3]
		if _, err := runCmd(t, "apikey", "revoke", "--file", clients, id); err != nil {
			t.Fatal(err)
		}
		// The file watcher reloads within its interval; wait for the
		// refusal rather than for a clock.
		deadline := time.Now().Add(15 * time.Second)
		for do(t, true, token, "/v1/decision") != 401 {
			if time.Now().After(deadline) {
				t.Fatal("revoked client token still accepted")
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
}

// TestCertReloader checks that a renewed certificate pair is served without
// a restart and that a broken pair keeps the previous one.
func TestCertReloader(t *testing.T) {
	dir := t.TempDir()
	ca := newPKI(t, dir, "ca")
	first := ca.leaf(t, "tollgate", x509.ExtKeyUsageServerAuth)
	var logs bytes.Buffer
	r, err := newCertReloader(filepath.Join(dir, "tollgate.crt"), filepath.Join(dir, "tollgate.key"), slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	serving := func() []byte {
		t.Helper()
		r.mu.Lock()
		r.checked = time.Time{} // as if the check interval had passed
		r.mu.Unlock()
		c, err := r.getCertificate(nil)
		if err != nil {
			t.Fatal(err)
		}
		return c.Certificate[0]
	}
	if !bytes.Equal(serving(), first.Certificate[0]) {
		t.Fatal("not serving the first certificate")
	}
	second := ca.leaf(t, "tollgate", x509.ExtKeyUsageServerAuth)
	if !bytes.Equal(serving(), second.Certificate[0]) {
		t.Fatal("renewed certificate not served")
	}
	if err := os.WriteFile(filepath.Join(dir, "tollgate.key"), []byte("truncated"), 0o600); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(serving(), second.Certificate[0]) {
		t.Fatal("a broken pair replaced the working certificate")
	}
	if !strings.Contains(logs.String(), "tls certificate not reloaded") {
		t.Errorf("broken pair not logged: %s", logs.String())
	}
	if _, err := newCertReloader(filepath.Join(dir, "tollgate.crt"), filepath.Join(dir, "tollgate.key"), slog.Default()); err == nil {
		t.Error("a broken pair at startup is not an error")
	}
}

// TestWarnIfOpen checks the startup warnings for a listener reachable from
// other machines without TLS or without client authentication.
func TestWarnIfOpen(t *testing.T) {
	withCA := &tls.Config{ClientCAs: x509.NewCertPool()}
	tests := []struct {
		name     string
		ip       net.IP
		tls      *tls.Config
		tokens   bool
		wantTLS  bool
		wantAuth bool
	}{
		{name: "loopback v4", ip: net.IPv4(127, 0, 0, 1)},
		{name: "loopback v6", ip: net.IPv6loopback},
		{name: "all interfaces, nothing", ip: net.IPv4zero, wantTLS: true, wantAuth: true},
		{name: "all interfaces v6, tokens only", ip: net.IPv6unspecified, tokens: true, wantTLS: true},
		{name: "address, TLS without client auth", ip: net.IPv4(10, 0, 0, 5), tls: &tls.Config{}, wantAuth: true},
		{name: "address, TLS and client certificates", ip: net.IPv4(10, 0, 0, 5), tls: withCA},
		{name: "address, TLS and tokens", ip: net.IPv4(10, 0, 0, 5), tls: &tls.Config{}, tokens: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			warnIfOpen(slog.New(slog.NewTextHandler(&buf, nil)), &net.TCPAddr{IP: tc.ip, Port: 8181}, tc.tls, tc.tokens)
			if got := strings.Contains(buf.String(), "without TLS"); got != tc.wantTLS {
				t.Errorf("TLS warning = %v, want %v: %s", got, tc.wantTLS, buf.String())
			}
			if got := strings.Contains(buf.String(), "without client authentication"); got != tc.wantAuth {
				t.Errorf("client auth warning = %v, want %v: %s", got, tc.wantAuth, buf.String())
			}
		})
	}
}

// TestServerTLSRefusesBadFiles checks that serve stops on unusable TLS
// files rather than serving without them.
func TestServerTLSRefusesBadFiles(t *testing.T) {
	dir := t.TempDir()
	ca := newPKI(t, dir, "ca")
	ca.leaf(t, "tollgate", x509.ExtKeyUsageServerAuth)
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	crt, key := filepath.Join(dir, "tollgate.crt"), filepath.Join(dir, "tollgate.key")
	tests := []struct {
		name, cert, key, ca, want string
	}{
		{"missing certificate", filepath.Join(dir, "nope.crt"), key, "", "tls: load"},
		{"key of another pair", crt, notPEM, "", "tls: load"},
		{"missing client CA file", crt, key, filepath.Join(dir, "nope.pem"), "tls.client_ca_file"},
		{"client CA file without certificates", crt, key, notPEM, "no PEM certificate"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var c config
			c.TLS.CertFile, c.TLS.KeyFile, c.TLS.ClientCAFile = tc.cert, tc.key, tc.ca
			if _, err := serverTLS(&c, slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
	var c config
	c.TLS.CertFile, c.TLS.KeyFile, c.TLS.ClientCAFile = crt, key, filepath.Join(dir, "ca-ca.pem")
	cfg, err := serverTLS(&c, slog.New(slog.DiscardHandler))
	if err != nil || cfg.MinVersion != tls.VersionTLS12 || cfg.ClientAuth != tls.VerifyClientCertIfGiven || cfg.ClientCAs == nil {
		t.Fatalf("good files: %+v, %v", cfg, err)
	}
}
