package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/pdp/authn"
	"github.com/tollgate/tollgate/pdp/authn/apikey"
	"github.com/tollgate/tollgate/pdp/credential"
)

func runAPIKey(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	cmd := newAPIKeyCommand()
	var out, errOut bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs(args)
	err = cmd.Execute()
	return out.String(), errOut.String(), err
}

// newAPIKeyForTest runs 'apikey new' and returns the key from stdout's last line.
func newAPIKeyForTest(t *testing.T, file string, extra ...string) (key, stdout string) {
	t.Helper()
	stdout, stderr, err := runAPIKey(t, append([]string{"new", "--file", file}, extra...)...)
	if err != nil {
		t.Fatalf("apikey new: %v\n%s", err, stderr)
	}
	lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
	key = lines[len(lines)-1]
	if !strings.HasSuffix(stdout, key+"\n") {
		t.Fatalf("stdout does not end with the key line:\n%s", stdout)
	}
	return key, stdout
}

func authenticateAPIKey(t *testing.T, file, key string) authn.Outcome {
	t.Helper()
	a, err := apikey.NewFromFile(file, apikey.Options{})
	if err != nil {
		t.Fatal(err)
	}
	out, err := a.Authenticate(context.Background(), credential.Credential{
		Type: credential.TypeAPIKey, Placement: credential.PlacementHeader, Name: "x-api-key",
		Secret: credential.NewSecret(key),
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestAPIKeyNewPrintsKeyLastAndStoresOnlyItsHash(t *testing.T) {
	file := filepath.Join(t.TempDir(), "keys.yaml") // does not exist yet
	key, stdout := newAPIKeyForTest(t, file, "--owner", "billing-service", "--scopes", "products:read, orders:read", "--expires", "720h")

	id, err := apikey.KeyID(key)
	if err != nil {
		t.Fatalf("last line is not a key: %q", key)
	}
	if strings.Count(stdout, key) != 1 {
		t.Errorf("the key must be printed exactly once:\n%s", stdout)
	}
	for _, want := range []string{id, "billing-service", "products:read,orders:read", file} {
		if !strings.Contains(stdout, want) {
			t.Errorf("summary lacks %q:\n%s", want, stdout)
		}
	}

	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	secret := key[len(key)-apikey.SecretLen:]
	if bytes.Contains(data, []byte(key)) || bytes.Contains(data, []byte(secret)) {
		t.Fatalf("key file contains the key:\n%s", data)
	}
	if !bytes.Contains(data, []byte(apikey.HashKey(credential.NewSecret(key)))) {
		t.Errorf("key file lacks the key's hash:\n%s", data)
	}

	out := authenticateAPIKey(t, file, key)
	if out.Result != authn.Authenticated {
		t.Fatalf("printed key does not authenticate: %+v", out)
	}
	id2 := out.Identity
	if id2.Kind != authn.KindService || id2.Subject != "billing-service" || id2.KeyID != id ||
		strings.Join(id2.Scopes, " ") != "products:read orders:read" {
		t.Errorf("identity = %+v", id2)
	}
	s, _ := apikey.LoadFile(file)
	rec, _ := s.Get(id)
	if d := time.Until(rec.Expires); d < 719*time.Hour || d > 721*time.Hour {
		t.Errorf("expires in %v, want about 720h", d)
	}
}

func TestAPIKeyRevoke(t *testing.T) {
	for _, by := range []string{"id", "key"} {
		t.Run("by "+by, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "keys.yaml")
			key, _ := newAPIKeyForTest(t, file, "--owner", "svc")
			other, _ := newAPIKeyForTest(t, file, "--owner", "other")
			id, _ := apikey.KeyID(key)
			arg := id
			if by == "key" {
				arg = key
			}
			stdout, _, err := runAPIKey(t, "revoke", "--file", file, arg)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(stdout, id) || strings.Contains(stdout, key) {
				t.Errorf("revoke output must name the id and not the key:\n%s", stdout)
			}
			if out := authenticateAPIKey(t, file, key); out.Result != authn.Rejected || out.Reason != authn.ReasonRevoked {
				t.Errorf("revoked key: %+v, want rejected %q", out, authn.ReasonRevoked)
			}
			if out := authenticateAPIKey(t, file, other); out.Result != authn.Authenticated {
				t.Errorf("other key: %+v, want authenticated", out)
			}
			// Revoking again is not an error and keeps the key revoked.
			if stdout, _, err := runAPIKey(t, "revoke", "--file", file, id); err != nil || !strings.Contains(stdout, "already revoked") {
				t.Errorf("second revoke: %v\n%s", err, stdout)
			}
		})
	}
}

func TestAPIKeyList(t *testing.T) {
	file := filepath.Join(t.TempDir(), "keys.yaml")
	key, _ := newAPIKeyForTest(t, file, "--owner", "billing-service", "--scopes", "products:read", "--expires", "2099-01-01T00:00:00Z")
	revoked, _ := newAPIKeyForTest(t, file, "--owner", "old-service")
	revokedID, _ := apikey.KeyID(revoked)
	if _, _, err := runAPIKey(t, "revoke", "-f", file, revokedID); err != nil {
		t.Fatal(err)
	}
	stdout, _, err := runAPIKey(t, "list", "--file", file)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := apikey.KeyID(key)
	for _, want := range []string{"ID", "OWNER", "SCOPES", "CREATED", "EXPIRES", "REVOKED", id, "billing-service",
		"products:read", "2099-01-01T00:00:00Z", "active", revokedID, "old-service", "revoked"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("list lacks %q:\n%s", want, stdout)
		}
	}
	for _, k := range []string{key, revoked} {
		if strings.Contains(stdout, k[len(k)-apikey.SecretLen:]) {
			t.Errorf("list shows a secret:\n%s", stdout)
		}
	}
	if lines := strings.Count(stdout, "\n"); lines != 3 {
		t.Errorf("list has %d lines, want a header and 2 keys:\n%s", lines, stdout)
	}
}

func TestAPIKeyErrors(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "keys.yaml")
	key, _ := newAPIKeyForTest(t, file, "--owner", "svc")
	tests := []struct {
		name string
		args []string
		want string // in the error
	}{
		{"new without --owner", []string{"new", "--file", file}, "--owner is required"},
		{"new without --file", []string{"new", "--owner", "svc"}, "--file is required"},
		{"new with a bad --expires", []string{"new", "--file", file, "--owner", "svc", "--expires", "soon"}, "--expires"},
		{"new with a past --expires", []string{"new", "--file", file, "--owner", "svc", "--expires", "2020-01-01T00:00:00Z"}, "already be expired"},
		{"new with a negative --expires", []string{"new", "--file", file, "--owner", "svc", "--expires", "-1h"}, "already be expired"},
		{"new with a bad owner", []string{"new", "--file", file, "--owner", "svc\nx-user-id: admin"}, "owner"},
		{"new with a bad scope", []string{"new", "--file", file, "--owner", "svc", "--scopes", "a b"}, "scope"},
		{"new into a broken file", []string{"new", "--file", writeAPIKeyTestFile(t, dir, "broken.yaml", "keys: [\n"), "--owner", "svc"}, "broken.yaml"},
		{"new with an argument", []string{"new", "--file", file, "--owner", "svc", "extra"}, "unknown command"},
		{"revoke without --file", []string{"revoke", "abcdefghijkl"}, "--file is required"},
		{"revoke without id", []string{"revoke", "--file", file}, "accepts 1 arg"},
		{"revoke unknown id", []string{"revoke", "--file", file, "zzzzzzzzzzzz"}, "unknown key id"},
		{"revoke a bad id", []string{"revoke", "--file", file, "not-an-id"}, "not a key id"},
		{"revoke a malformed key", []string{"revoke", "--file", file, key[:len(key)-1]}, "malformed"},
		{"revoke in a missing file", []string{"revoke", "--file", filepath.Join(dir, "missing.yaml"), "abcdefghijkl"}, "no such file"},
		{"list without --file", []string{"list"}, "--file is required"},
		{"list a missing file", []string{"list", "--file", filepath.Join(dir, "missing.yaml")}, "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before, _ := os.ReadFile(file)
			stdout, _, err := runAPIKey(t, tt.args...)
			if err == nil {
				t.Fatalf("want an error containing %q; stdout:\n%s", tt.want, stdout)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
			if strings.Contains(err.Error(), key[len(key)-apikey.SecretLen+1:]) {
				t.Errorf("error reveals a key: %q", err)
			}
			if stdout != "" {
				t.Errorf("a failed command wrote to stdout (a script's tail -n1 would take it for a key):\n%s", stdout)
			}
			if after, _ := os.ReadFile(file); !bytes.Equal(before, after) {
				t.Errorf("a failed command changed the key file")
			}
		})
	}
}

func TestParseKeyExpiry(t *testing.T) {
	now := time.Date(2026, 11, 29, 23, 0, 0, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Time
		ok   bool
	}{
		{"", time.Time{}, true},
		{"720h", now.Add(720 * time.Hour), true},
		{"90d", now.AddDate(0, 0, 90), true},
		{"2027-11-29T23:00:00Z", time.Date(2027, 11, 29, 23, 0, 0, 0, time.UTC), true},
		{"2027-11-30T01:00:00+02:00", time.Date(2027, 11, 29, 23, 0, 0, 0, time.UTC), true},
		{"1500ms", now.Add(time.Second), true},
		{"500ms", time.Time{}, false}, // rounds down to now
		{"0d", time.Time{}, false},
		{"-3d", time.Time{}, false},
		{"d", time.Time{}, false},
		{"1.5d", time.Time{}, false},
		{"99999999d", time.Time{}, false},
		{"2027-11-29", time.Time{}, false},
		{"next year", time.Time{}, false},
	}
	for _, tt := range tests {
		got, err := parseKeyExpiry(tt.in, now)
		if (err == nil) != tt.ok || !got.Equal(tt.want) {
			t.Errorf("parseKeyExpiry(%q) = %v, %v; want %v, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func TestAPIKeyHelp(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"new", "--help"}, {"revoke", "--help"}, {"list", "--help"}} {
		stdout, _, err := runAPIKey(t, args...)
		if err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		if !strings.Contains(stdout, "Examples:") || !strings.Contains(stdout, "tollgate apikey") {
			t.Errorf("%v help lacks examples:\n%s", args, stdout)
		}
	}
}

func writeAPIKeyTestFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
