package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestConfigErrorsNameFileAndLine writes bad configuration files and checks
// that each error names the file and the line of the mistake, lists the
// valid keys for an unknown one, and gives a hint for a bare-number
// duration.
func TestConfigErrorsNameFileAndLine(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string // each must appear; FILE stands for the file's path
		not  []string // none may appear
	}{
		{
			name: "unknown key in limits",
			yaml: "listen: 127.0.0.1:8181\nissuers:\n  - issuer: https://idp.example.com/\n    audiences: [a]\n\nlimits:\n  max_body: 10\n",
			want: []string{`FILE:7: unknown key "max_body" in limits; valid keys: max_body_bytes, max_header_bytes, max_token_bytes`},
			not:  []string{"config.Limits", "struct", "main."},
		},
		{
			name: "unknown key at the top level",
			yaml: "# comment\n\nlisten: x\nlisen: y\n",
			want: []string{`FILE:4: unknown key "lisen" at the top level; valid keys: listen, `},
		},
		{
			name: "unknown key in an issuer",
			yaml: "issuers:\n  - issuer: https://a/\n    audiences: [a]\n  - issuer: https://b/\n    audience: [b]\n",
			want: []string{`FILE:5: unknown key "audience" in issuers[1]; valid keys: issuer, audiences, `},
		},
		{
			name: "unknown key in credentials",
			yaml: "credentials:\n  bearer:\n    header: [authorization]\n",
			want: []string{`FILE:3: unknown key "header" in credentials.bearer; valid keys: headers, cookies, query`},
		},
		{
			name: "unknown key in tls",
			yaml: "tls:\n  cert: a.pem\n",
			want: []string{`FILE:2: unknown key "cert" in tls; valid keys: cert_file, key_file, client_ca_file`},
		},
		{
			name: "two unknown keys, both reported",
			yaml: "log:\n  lvl: debug\ntimeouts:\n  reed: 1s\n",
			want: []string{`FILE:2: unknown key "lvl" in log`, `FILE:4: unknown key "reed" in timeouts`},
		},
		{
			name: "bare number duration",
			yaml: "listen: x\nclock_skew: 30\n",
			want: []string{"FILE:2: clock_skew: 30 is a number without a unit", "write 30s"},
		},
		{
			name: "bare number duration, nested",
			yaml: "timeouts:\n  read: 10\n  write: 2.5\n",
			want: []string{"FILE:2: timeouts.read: 10 is a number", "write 10s", "FILE:3: timeouts.write: 2.5 is a number", "write 2.5s"},
		},
		{
			name: "quoted bare number duration",
			yaml: "api_keys:\n  reload_interval: \"5\"\n",
			want: []string{"FILE:2: api_keys.reload_interval: 5 is a number", "write 5s"},
		},
		{
			name: "not a duration",
			yaml: "\nclock_skew: soon\n",
			want: []string{`FILE:2: clock_skew: want a duration such as 30s, 5m or 1h, got "soon"`},
		},
		{
			name: "string for a number",
			yaml: "limits:\n  max_body_bytes: lots\n",
			want: []string{`FILE:2: limits.max_body_bytes: want a whole number, got "lots"`},
		},
		{
			name: "list for a mapping",
			yaml: "limits: [1, 2]\n",
			want: []string{"FILE:1: limits: want a mapping with the keys max_body_bytes"},
		},
		{
			name: "scalar for a list",
			yaml: "\n\ntrusted_proxies: 10.0.0.1\n",
			want: []string{"FILE:3: trusted_proxies: want a list"},
		},
		{
			name: "bool",
			yaml: "decision_log:\n  enabled: maybe\n",
			want: []string{`FILE:2: decision_log.enabled: want true or false, got "maybe"`},
		},
		{
			name: "bad indentation",
			yaml: "listen: x\nlimits:\n  max_body_bytes: 1\n max_header_bytes: 2\nlog: {}\n",
			want: []string{"FILE:4: invalid YAML"},
		},
		{
			name: "unclosed flow sequence",
			yaml: "listen: x\ntrusted_proxies: [10.0.0.1\nlog: {}\nclock_skew: 1s\n",
			want: []string{"FILE:3: invalid YAML"},
		},
		{
			name: "tab indentation",
			yaml: "listen: x\nlimits:\n\tmax_body_bytes: 1\n",
			want: []string{"FILE:3: invalid YAML"},
		},
		{
			name: "duplicate key",
			yaml: "listen: x\nlog: {}\nlisten: y\n",
			want: []string{`FILE:3: mapping key "listen" already defined at line 1`},
		},
		{
			name: "duplicate key, nested",
			yaml: "limits:\n  max_body_bytes: 1\n\n  max_body_bytes: 2\n",
			want: []string{`FILE:4: mapping key "max_body_bytes" already defined at line 2`},
		},
		{
			name: "second document",
			yaml: "listen: x\n---\nlisten: y\n",
			want: []string{"FILE:2: a second YAML document"},
		},
		{
			name: "validation names the file",
			yaml: "clock_skew: 1h\n",
			want: []string{"FILE: invalid config: clock_skew 1h0m0s"},
		},
		{
			name: "tls key without certificate",
			yaml: "tls:\n  key_file: k.pem\n",
			want: []string{"FILE: invalid config: tls: cert_file and key_file go together"},
		},
		{
			name: "client CA without TLS",
			yaml: "tls:\n  client_ca_file: ca.pem\n",
			want: []string{"tls.client_ca_file needs tls.cert_file"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "tollgate.yaml")
			if err := os.WriteFile(path, []byte(tc.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := loadConfig(path)
			if err == nil {
				t.Fatal("no error")
			}
			msg := err.Error()
			for _, w := range tc.want {
				if w = strings.ReplaceAll(w, "FILE", path); !strings.Contains(msg, w) {
					t.Errorf("error %q\nwant it to contain %q", msg, w)
				}
			}
			for _, n := range tc.not {
				if strings.Contains(msg, n) {
					t.Errorf("error %q mentions %q", msg, n)
				}
			}
		})
	}
}

// TestConfigAcceptsTLSAndClients checks the keys of the production setup.
func TestConfigAcceptsTLSAndClients(t *testing.T) {
	c, err := parseConfig([]byte(`
listen: "0.0.0.0:8443"
tls: {cert_file: tls.crt, key_file: tls.key, client_ca_file: gateways-ca.pem}
clients: {tokens_file: clients.yaml, reload_interval: 10s}
`))
	if err != nil {
		t.Fatal(err)
	}
	if c.TLS.CertFile != "tls.crt" || c.TLS.KeyFile != "tls.key" || c.TLS.ClientCAFile != "gateways-ca.pem" ||
		c.Clients.TokensFile != "clients.yaml" || c.Clients.ReloadInterval.String() != "10s" {
		t.Fatalf("parsed %+v", c)
	}
}

// TestServeRefusesDevWithConfig checks that --dev never mixes the
// development issuer into a configuration file: the command fails before
// listening, whatever the order of the flags.
func TestServeRefusesDevWithConfig(t *testing.T) {
	t.Setenv(devKeyEnv, filepath.Join(t.TempDir(), "dev-key.pem"))
	path := filepath.Join(t.TempDir(), "prod.yaml")
	if err := os.WriteFile(path, []byte("issuers:\n  - issuer: https://idp.example.com/\n    audiences: [orders-api]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"serve", "--dev", "--config", path},
		{"serve", "--config", path, "--dev"},
		{"serve", "--config=" + path, "--dev=true", "--listen", "127.0.0.1:0"},
		{"serve", "--dev", "--config", filepath.Join(t.TempDir(), "missing.yaml")},
	} {
		_, err := runCmd(t, args...)
		if err == nil || !strings.Contains(err.Error(), "--dev cannot be combined with --config") {
			t.Errorf("%q: err = %v", args, err)
		}
	}
}
