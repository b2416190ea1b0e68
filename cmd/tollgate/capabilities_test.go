package main

import (
	"context"
	"crypto/elliptic"
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/pdp/policy"
	"github.com/tollgate/tollgate/pdp/request"
)

// TestPolicyCapabilitiesConfig: policy.capabilities extends the built-ins a
// bundle may call; without it a bundle calling one outside the pinned list
// stops serve, and a file naming a built-in OPA does not have stops it too.
func TestPolicyCapabilitiesConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("bundle/authz.rego", `package tollgate.authz

decision := {"allow": rand.intn("seed", 1) == 0, "status": 200, "reasons": [], "headers": {}}
`)
	write("bundle/.manifest", `{"revision": "caps-test"}`)
	ext := write("ext.json", `{"builtins": [{"name": "rand.intn"}]}`)
	unknown := write("unknown.json", `{"builtins": [{"name": "rand.intn"}, {"name": "net.fetch_secret"}]}`)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))

	build := func(t *testing.T, capsLine string) error {
		t.Helper()
		c, err := parseConfig([]byte("bundle: {source: \"dir:" + filepath.Join(dir, "bundle") + "\"}\n" + capsLine))
		if err != nil {
			t.Fatal(err)
		}
		d, err := buildDecider(context.Background(), c, false, log)
		if err != nil {
			return err
		}
		if dec := d.Decide(context.Background(), request.Raw{Method: "GET", Target: "/x"}); !dec.Allow || dec.PolicyRevision != "caps-test" {
			t.Fatalf("decision %+v", dec)
		}
		return nil
	}
	t.Run("pinned list refuses rand.intn", func(t *testing.T) {
		err := build(t, "")
		if !errors.Is(err, policy.ErrBuiltinNotAllowed) || !strings.Contains(err.Error(), "rand.intn") {
			t.Fatalf("buildDecider = %v, want ErrBuiltinNotAllowed naming rand.intn", err)
		}
	})
	t.Run("extension allows it", func(t *testing.T) {
		if err := build(t, "policy: {capabilities: \""+ext+"\"}\n"); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("unknown built-in in the extension", func(t *testing.T) {
		err := build(t, "policy: {capabilities: \""+unknown+"\"}\n")
		if err == nil || !strings.Contains(err.Error(), "policy.capabilities") || !strings.Contains(err.Error(), "net.fetch_secret") {
			t.Fatalf("buildDecider = %v, want an error naming policy.capabilities and net.fetch_secret", err)
		}
	})
	t.Run("missing file", func(t *testing.T) {
		err := build(t, "policy: {capabilities: \""+filepath.Join(dir, "nope.json")+"\"}\n")
		if !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("buildDecider = %v, want os.ErrNotExist", err)
		}
	})
}

// TestDeciderOneTokenOneSpelling runs item 7 through the whole pipeline
// (the dev decider, whose issuer signs ES256): every non-canonical
// base64url spelling of a token is 401 malformed, while the (r, n-s) twin of
// its ECDSA signature is the same token, allowed.
func TestDeciderOneTokenOneSpelling(t *testing.T) {
	t.Setenv(devKeyEnv, filepath.Join(t.TempDir(), "dev-key.pem"))
	out, err := runCmd(t, "token", "--sub", "alice", "--claim", "customer_number=42", "--scope", "customers:read")
	if err != nil {
		t.Fatal(err)
	}
	tok := strings.TrimSpace(out)
	c, err := resolveConfig(serveFlags{dev: true})
	if err != nil {
		t.Fatal(err)
	}
	d, err := buildDecider(context.Background(), c, true, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	decide := func(token string) (bool, int, []string) {
		dec := d.Decide(context.Background(), request.Raw{Method: "GET", Target: "/customers/42",
			Headers: map[string][]string{"Authorization": {"Bearer " + token}}})
		return dec.Allow, dec.Status, dec.Reasons
	}
	if allow, status, reasons := decide(tok); !allow {
		t.Fatalf("control: %d %q", status, reasons)
	}

	// The twin signature.
	parts := strings.Split(tok, ".")
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil || len(sig) != 64 {
		t.Fatalf("signature: %d bytes, %v", len(sig), err)
	}
	n := elliptic.P256().Params().N
	s := new(big.Int).SetBytes(sig[32:])
	s.Sub(n, s).FillBytes(sig[32:])
	twin := parts[0] + "." + parts[1] + "." + base64.RawURLEncoding.EncodeToString(sig)
	if allow, status, reasons := decide(twin); !allow {
		t.Fatalf("(r, n-s) twin: %d %q", status, reasons)
	}

	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	for i, name := range []string{"header", "payload", "signature"} {
		for _, v := range []struct {
			name string
			edit func(string) string
		}{
			{"padding", func(p string) string { return p + "=" }},
			{"unused bit", func(p string) string {
				if len(p)%4 < 2 {
					return p + "=="
				}
				j := strings.IndexByte(alphabet, p[len(p)-1])
				return p[:len(p)-1] + string(alphabet[j^1])
			}},
			{"NBSP", func(p string) string { return p + "\u00a0" }},
		} {
			ps := strings.Split(tok, ".")
			ps[i] = v.edit(ps[i])
			bad := strings.Join(ps, ".")
			allow, status, reasons := decide(bad)
			if allow || status != 401 || len(reasons) != 2 || reasons[0] != "credential_invalid" || reasons[1] != "malformed" {
				t.Errorf("%s %s: allow=%v %d %q, want 401 [credential_invalid malformed]", name, v.name, allow, status, reasons)
			}
		}
	}
}
