package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/bundles/bundletest"
)

func TestBundleConfig(t *testing.T) {
	key := bundletest.NewKey(t)
	pem := strings.ReplaceAll(key.PublicPEM, "\n", `\n`)
	issueExample := fmt.Sprintf(`
services:
  policy-server: {url: "https://bundles.example.com"}
bundles:
  tollgate:
    service: policy-server
    resource: bundles/orders.tar.gz
    persist: true
    polling: {min_delay_seconds: 10, max_delay_seconds: 20, long_polling_timeout_seconds: 30}
    signing: {keyid: ci}
keys:
  ci: {algorithm: RS256, key: "%s"}
persistence_directory: /var/lib/tollgate
max_bundle_age: 10m
admin:
  listen: "127.0.0.1:8282"
  api_keys_file: admin-keys.yaml
shadow:
  tollgate:
    service: policy-server
    resource: bundles/orders-candidate.tar.gz
    signing: {keyid: ci}
`, pem)
	tests := []struct {
		name    string
		yaml    string
		wantErr string
	}{
		{"the issue's example", issueExample, ""},
		{"a bundle file", "bundle: {source: \"file:./bundle.tar.gz\", history: 5}", ""},
		{"OPA's file resource", "bundles: {tollgate: {resource: \"file:///srv/bundle.tar.gz\"}}", ""},
		{"unknown key in a bundle", "bundles: {tollgate: {resource: \"dir:./p\", pollin: {}}}", `unknown key "pollin"`},
		{"unknown key in polling", "bundles: {tollgate: {resource: \"dir:./p\", polling: {min_delay: 1}}}", `unknown key "min_delay"`},
		{"remote bundle without keys", "services: {s: {url: \"https://b.example.com\"}}\nbundles: {tollgate: {service: s, resource: b.tar.gz}}", "must be signed"},
		{"unknown service", fmt.Sprintf("keys: {ci: {key: \"%s\"}}\nbundles: {tollgate: {service: nope, resource: b.tar.gz}}", pem), `service "nope" is not in services`},
		{"signing names an unknown key", fmt.Sprintf("services: {s: {url: \"https://b.example.com\"}}\nkeys: {ci: {key: \"%s\"}}\nbundles: {tollgate: {service: s, resource: b.tar.gz, signing: {keyid: other}}}", pem), "signing"},
		{"min without max", fmt.Sprintf("services: {s: {url: \"https://b.example.com\"}}\nkeys: {ci: {key: \"%s\"}}\nbundles: {tollgate: {service: s, resource: b, polling: {min_delay_seconds: 5}}}", pem), "max_delay_seconds"},
		{"two bundles", "bundles: {a: {resource: \"dir:./a\"}, b: {resource: \"dir:./b\"}}", "one policy bundle"},
		{"bundle.source with bundles", "bundle: {source: embedded}\nbundles: {a: {resource: \"dir:./a\"}}", "choose one"},
		{"admin without keys", "admin: {listen: \"127.0.0.1:8282\"}", "api_keys_file"},
		{"admin on the decision listener", "listen: \"127.0.0.1:8181\"\nadmin: {listen: \"127.0.0.1:8181\", api_keys_file: k.yaml}", "must differ"},
		{"shadow of no bundle", "shadow: {other: {resource: \"dir:./c\"}}", "names no configured bundle"},
		{"service without a URL scheme", "services: {s: {url: \"bundles.example.com\"}}", "services.s.url"},
		{"a bad algorithm", "keys: {ci: {algorithm: XX256, key: k}}", "unsupported algorithm"},
		{"negative max_bundle_age", "max_bundle_age: -1s", "max_bundle_age"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseConfig([]byte(tt.yaml))
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("parseConfig = %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("parseConfig = %v, want an error containing %q", err, tt.wantErr)
			}
			if err != nil && strings.Contains(err.Error(), "BEGIN PUBLIC KEY") {
				t.Errorf("the error quotes a key: %v", err)
			}
		})
	}
}

func TestBundleBuildInspectVerify(t *testing.T) {
	key, other := bundletest.NewKey(t), bundletest.NewKey(t)
	dir := t.TempDir()
	out := filepath.Join(dir, "b.tar.gz")
	policyDir := bundletest.PolicyDir(t, nil)

	if text, code := runCLI(t, "bundle", "build", policyDir, "--revision", "r1", "--signing-key", key.Private, "-o", out); code != 0 || !strings.Contains(text, "revision r1") {
		t.Fatalf("build: %d %s", code, text)
	}
	if text, code := runCLI(t, "bundle", "inspect", out); code != 0 || !strings.Contains(text, "keyid default, RS256") || !strings.Contains(text, "revision:   r1") {
		t.Fatalf("inspect: %d %s", code, text)
	}
	if text, code := runCLI(t, "bundle", "verify", out, "--key", key.Public); code != 0 || !strings.Contains(text, "Verified") {
		t.Fatalf("verify: %d %s", code, text)
	}
	if text, code := runCLI(t, "bundle", "verify", out, "--key", other.Public); code == 0 {
		t.Fatalf("verify with another key passed: %s", text)
	}
	// A bundle that fails its check is not built.
	bad := bundletest.PolicyDir(t, func(rs []bundletest.Route) []bundletest.Route {
		rs[0]["sensitivity"] = "secret-ish"
		return rs
	})
	badOut := filepath.Join(dir, "bad.tar.gz")
	if text, code := runCLI(t, "bundle", "build", bad, "--revision", "bad", "-o", badOut); code == 0 || !strings.Contains(text, "bundle check failed") {
		t.Fatalf("build of a bundle failing its check: %d %s", code, text)
	}
	if _, code := runCLI(t, "bundle", "inspect", badOut); code == 0 {
		t.Error("the refused bundle was written")
	}
	// The admin commands never take the key as a flag.
	t.Setenv(adminKeyEnv, "")
	if text, code := runCLI(t, "bundle", "history", "--admin", "http://127.0.0.1:1"); code == 0 || !strings.Contains(text, "no admin key") {
		t.Errorf("history without a key: %d %s", code, text)
	}
}
