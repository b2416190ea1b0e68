package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/tollgate/tollgate/pdp/authn"
	"github.com/tollgate/tollgate/pdp/authn/apikey"
)

// stripSeal returns a CLI-written key file as an older Tollgate wrote it:
// without its last line, the seal.
func stripSeal(t *testing.T, data []byte) []byte {
	t.Helper()
	content := bytes.TrimSuffix(data, []byte("\n"))
	i := bytes.LastIndexByte(content, '\n') + 1
	if !bytes.HasPrefix(content[i:], []byte("# tollgate-seal ")) {
		t.Fatalf("no seal line in:\n%s", data)
	}
	return data[:i]
}

// TestAPIKeySealMigration walks an operator through a file from before
// seals: every command that reads it refuses it and says which command to
// run; seal --dry-run shows the records and changes nothing; seal seals it
// and the keys work again, revocations kept.
func TestAPIKeySealMigration(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "keys.yaml")
	key, _ := newAPIKeyForTest(t, file, "--owner", "billing")
	revoked, _ := newAPIKeyForTest(t, file, "--owner", "old")
	revokedID, _ := apikey.KeyID(revoked)
	if _, _, err := runAPIKey(t, "revoke", "--file", file, revokedID); err != nil {
		t.Fatal(err)
	}
	sealed, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	legacy := stripSeal(t, sealed)
	if err := os.WriteFile(file, legacy, 0o600); err != nil {
		t.Fatal(err)
	}
	secrets := []string{key, key[len(key)-apikey.SecretLen:], revoked, revoked[len(revoked)-apikey.SecretLen:]}

	for _, args := range [][]string{
		{"list", "--file", file},
		{"new", "--file", file, "--owner", "late"},
		{"revoke", "--file", file, revokedID},
	} {
		stdout, _, err := runAPIKey(t, args...)
		if err == nil {
			t.Fatalf("%s accepted an unsealed file:\n%s", args[0], stdout)
		}
		msg := err.Error()
		if !errors.Is(err, apikey.ErrNoSeal) || !strings.Contains(msg, file) ||
			!strings.Contains(msg, "tollgate apikey seal --file "+file) || !strings.Contains(msg, "--dry-run") {
			t.Errorf("%s: error %q must wrap ErrNoSeal, name the file and the commands to run", args[0], msg)
		}
		for _, s := range secrets {
			if strings.Contains(msg, s) || strings.Contains(stdout, s) {
				t.Fatalf("%s reveals a key: %q\n%s", args[0], msg, stdout)
			}
		}
		if got, _ := os.ReadFile(file); !bytes.Equal(got, legacy) {
			t.Fatalf("%s changed the unsealed file", args[0])
		}
	}

	stdout, _, err := runAPIKey(t, "seal", "--dry-run", "--file", file)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"does not verify", "no seal", "2 records", revokedID, "revoked", "billing"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("seal --dry-run output lacks %q:\n%s", want, stdout)
		}
	}
	if got, _ := os.ReadFile(file); !bytes.Equal(got, legacy) {
		t.Fatal("seal --dry-run changed the file")
	}

	stdout, _, err = runAPIKey(t, "seal", "--file", file)
	if err != nil || !strings.Contains(stdout, "Sealed it with these 2 records") {
		t.Fatalf("seal: %v\n%s", err, stdout)
	}
	if out := authenticateAPIKey(t, file, key); out.Result != authn.Authenticated {
		t.Errorf("key after sealing: %+v", out)
	}
	if out := authenticateAPIKey(t, file, revoked); out.Reason != authn.ReasonRevoked {
		t.Errorf("revoked key after sealing: %+v", out)
	}
	stdout, _, err = runAPIKey(t, "seal", "--file", file)
	if err != nil || !strings.Contains(stdout, "nothing to do") {
		t.Fatalf("second seal: %v\n%s", err, stdout)
	}
	if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode after seal: %v %v", fi.Mode().Perm(), err)
	}
	if _, _, err := runAPIKey(t, "seal"); err == nil || !strings.Contains(err.Error(), "--file is required") {
		t.Errorf("seal without --file: %v", err)
	}
}

// TestServeRefusesUnverifiedKeyFile: serve does not start on a key file
// that is empty, cut short or edited, and says which file and what to do.
func TestServeRefusesUnverifiedKeyFile(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	key, _ := newAPIKeyForTest(t, good, "--owner", "billing")
	data, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		content []byte
		is      error
	}{
		{"empty", nil, apikey.ErrNoSeal},
		{"seal stripped", stripSeal(t, data), apikey.ErrNoSeal},
		{"cut in the middle", data[:len(data)/2], apikey.ErrNoSeal},
		{"cut inside the seal", data[:len(data)-10], apikey.ErrBadSeal},
		{"owner edited", bytes.Replace(data, []byte("owner: billing"), []byte("owner: admin"), 1), apikey.ErrBadSeal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "keys.yaml")
			if err := os.WriteFile(file, tt.content, 0o600); err != nil {
				t.Fatal(err)
			}
			c, err := resolveConfig(serveFlags{apiKeys: file})
			if err != nil {
				t.Fatal(err)
			}
			_, err = buildDecider(context.Background(), c, false, slog.New(slog.NewTextHandler(io.Discard, nil)))
			if err == nil {
				t.Fatal("serve would start")
			}
			msg := err.Error()
			if !errors.Is(err, tt.is) || !strings.Contains(msg, file) || !strings.Contains(msg, "tollgate apikey seal") {
				t.Errorf("error %q must wrap %v, name the file and the command to run", msg, tt.is)
			}
			if strings.Contains(msg, key) || strings.Contains(msg, key[len(key)-apikey.SecretLen:]) {
				t.Fatalf("error reveals the key: %q", msg)
			}
		})
	}
}

// helperEnv makes the test binary run one CLI command instead of the tests
// (see TestAPIKeyHelperProcess).
const helperEnv = "TOLLGATE_TEST_APIKEY_HELPER"

// TestAPIKeyHelperProcess is not a test: run by
// TestAPIKeyConcurrentProcesses with helperEnv set, it runs the apikey
// command whose arguments follow "--" and exits.
func TestAPIKeyHelperProcess(t *testing.T) {
	if os.Getenv(helperEnv) != "1" {
		t.Skip("helper process")
	}
	args := os.Args
	for i, a := range args {
		if a == "--" {
			args = args[i+1:]
			break
		}
	}
	cmd := newAPIKeyCommand()
	cmd.SetArgs(args)
	if err := cmd.Execute(); err != nil {
		os.Exit(2)
	}
	os.Exit(0)
}

// TestAPIKeyConcurrentProcesses runs N `apikey new` processes and revokes
// at the same time against one file: every key lands, no revocation is
// lost, and the file stays sealed and 0600.
func TestAPIKeyConcurrentProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	for _, n := range []int{3, 12} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "keys.yaml")
			var toRevoke []string
			for i := range 2 {
				k, _ := newAPIKeyForTest(t, file, "--owner", fmt.Sprintf("pre-%d", i))
				id, _ := apikey.KeyID(k)
				toRevoke = append(toRevoke, id)
			}
			run := func(args ...string) ([]byte, error) {
				cmd := exec.Command(os.Args[0], append([]string{"-test.run=^TestAPIKeyHelperProcess$", "--"}, args...)...)
				cmd.Env = append(os.Environ(), helperEnv+"=1")
				var stderr bytes.Buffer
				cmd.Stderr = &stderr
				out, err := cmd.Output()
				if err != nil {
					return out, fmt.Errorf("%s: %w\n%s", args[0], err, stderr.String())
				}
				return out, nil
			}
			var (
				wg   sync.WaitGroup
				mu   sync.Mutex
				keys []string
				errs []error
			)
			for i := range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					out, err := run("new", "--file", file, "--owner", fmt.Sprintf("proc-%d", i), "--scopes", "products:read")
					mu.Lock()
					defer mu.Unlock()
					if err != nil {
						errs = append(errs, err)
						return
					}
					lines := strings.Split(strings.TrimSpace(string(out)), "\n")
					keys = append(keys, lines[len(lines)-1])
				}()
			}
			for _, id := range toRevoke {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if _, err := run("revoke", "--file", file, id); err != nil {
						mu.Lock()
						errs = append(errs, err)
						mu.Unlock()
					}
				}()
			}
			wg.Wait()
			if len(errs) > 0 {
				t.Fatal(errors.Join(errs...))
			}
			s, err := apikey.LoadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			if s.Len() != n+len(toRevoke) {
				t.Fatalf("%d records, want %d: concurrent changes were lost", s.Len(), n+len(toRevoke))
			}
			for _, k := range keys {
				if out := authenticateAPIKey(t, file, k); out.Result != authn.Authenticated {
					t.Errorf("a key made concurrently does not work: %+v", out)
				}
			}
			for _, id := range toRevoke {
				if rec, _ := s.Get(id); rec.Revoked.IsZero() {
					t.Errorf("revocation of %s lost", id)
				}
			}
			if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o600 {
				t.Errorf("mode %v, %v; want 0600", fi.Mode().Perm(), err)
			}
		})
	}
}
