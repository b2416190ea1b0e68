package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/pdp/request"
)

// runCmd runs the CLI with args and returns stdout.
func runCmd(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	root := newRootCommand()
	root.SetArgs(args)
	root.SetOut(&out)
	root.SetErr(&errOut)
	err := root.ExecuteContext(context.Background())
	return out.String(), err
}

// TestDevModeAcceptsMintedTokens checks the promise of the quick start:
// `tollgate token` mints what `tollgate serve --dev` accepts, and the dev
// decider runs the embedded policy.
func TestDevModeAcceptsMintedTokens(t *testing.T) {
	t.Setenv(devKeyEnv, filepath.Join(t.TempDir(), "dev-key.pem"))
	tok, err := runCmd(t, "token", "--sub", "alice", "--claim", "customer_number=42", "--scope", "customers:read")
	if err != nil {
		t.Fatal(err)
	}
	tok = strings.TrimSpace(tok)
	if strings.Count(tok, ".") != 2 {
		t.Fatalf("token %q is not a compact JWT", tok)
	}
	c, err := resolveConfig(serveFlags{dev: true})
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "127.0.0.1:8181" {
		t.Errorf("dev listens on %q; want loopback only", c.Listen)
	}
	d, err := buildDecider(context.Background(), c, true, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		target string
		auth   string
		allow  bool
		status int
		reason string
	}{
		{"/customers/42", "Bearer " + tok, true, 200, ""},
		{"/customers/43", "Bearer " + tok, false, 403, "not_owner"},
		{"/customers/42", "", false, 401, "credential_missing"},
		{"/customers/42?access_token=" + tok, "", false, 403, "credential_in_query"},
		{"/customers/42", "Bearer " + tok + "x", false, 401, "credential_invalid"},
	}
	for _, tc := range tests {
		h := map[string][]string{}
		if tc.auth != "" {
			h["Authorization"] = []string{tc.auth}
		}
		dec := d.Decide(context.Background(), request.Raw{Method: "GET", Target: tc.target, Headers: h})
		if dec.Allow != tc.allow || dec.Status != tc.status || (tc.reason != "" && (len(dec.Reasons) == 0 || dec.Reasons[0] != tc.reason)) {
			t.Errorf("%s (auth %v): got %+v", tc.target, tc.auth != "", dec)
		}
		if tc.allow && dec.Headers["x-user-id"] != "alice" {
			t.Errorf("allow without x-user-id: %+v", dec.Headers)
		}
	}
}

func TestTokenFlags(t *testing.T) {
	t.Setenv(devKeyEnv, filepath.Join(t.TempDir(), "dev-key.pem"))
	for _, args := range [][]string{
		{"token"},
		{"token", "--sub", "a", "--claim", "novalue"},
		{"token", "--sub", "a", "--claim", "exp=1"},
		{"token", "--sub", "a", "--ttl", "0s"},
		{"token", "--sub", "a", "extra"},
	} {
		if out, err := runCmd(t, args...); err == nil {
			t.Errorf("%q: want an error, got %q", args, out)
		}
	}
}

func TestVersion(t *testing.T) {
	out, err := runCmd(t, "version")
	if err != nil || !strings.HasPrefix(out, "tollgate ") {
		t.Fatalf("%q %v", out, err)
	}
}

func TestServeRejectsBadConfig(t *testing.T) {
	dir := t.TempDir()
	if _, err := runCmd(t, "serve", "--config", filepath.Join(dir, "missing.yaml")); err == nil || !strings.Contains(err.Error(), "read config") {
		t.Fatalf("err = %v", err)
	}
	if _, err := runCmd(t, "serve", "--bundle", "dir:"+filepath.Join(dir, "nope"), "--listen", "127.0.0.1:0"); err == nil || !strings.Contains(err.Error(), "bundle") {
		t.Fatalf("err = %v", err)
	}
}
