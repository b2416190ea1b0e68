package bundles_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/bundle"

	"github.com/tollgate/tollgate/bundles"
	"github.com/tollgate/tollgate/bundles/bundletest"
	"github.com/tollgate/tollgate/pdp/policy"
)

func TestBuildWritesOPABundleWithoutTests(t *testing.T) {
	dir := bundletest.PolicyDir(t, nil)
	data, b, err := bundles.Build(context.Background(), dir, bundles.BuildOptions{Revision: "r1"})
	if err != nil {
		t.Fatal(err)
	}
	if b.Manifest.Revision != "r1" {
		t.Errorf("revision = %q, want r1", b.Manifest.Revision)
	}
	info := bundles.Inspect(b, data)
	if !slices.Equal(info.Modules, []string{"authz.rego"}) {
		t.Errorf("modules = %v, want [authz.rego] (no test files, paths relative to the bundle root)", info.Modules)
	}
	if len(info.Signatures) != 0 {
		t.Errorf("unsigned build has signatures %v", info.Signatures)
	}
	if err := policy.NewEngine(policy.Options{}).Activate(context.Background(), b); err != nil {
		t.Fatalf("built bundle does not activate: %v", err)
	}
	// The revision defaults to the directory's manifest.
	_, b2, err := bundles.Build(context.Background(), dir, bundles.BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(b2.Manifest.Revision, "default-") {
		t.Errorf("default revision = %q, want the manifest's", b2.Manifest.Revision)
	}
}

func TestSignedBundleVerification(t *testing.T) {
	key, other := bundletest.NewKey(t), bundletest.NewKey(t)
	dir := bundletest.PolicyDir(t, nil)
	signed := bundletest.Build(t, dir, "r1", &key)
	unsigned := bundletest.Build(t, dir, "r1", nil)
	byOther := bundletest.Build(t, dir, "r1", &other)

	vc, err := bundles.Verification(key.Public, "", "", "")
	if err != nil {
		t.Fatal(err)
	}
	scoped, err := bundles.Verification(key.Public, "", "", "write")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		data  []byte
		vc    *bundle.VerificationConfig
		valid bool
	}{
		{"signed by the key", signed, vc, true},
		{"tampered module", bundletest.Tamper(t, signed, "authz.rego"), vc, false},
		{"tampered data", bundletest.Tamper(t, signed, "data.json"), vc, false},
		{"tampered manifest", bundletest.Tamper(t, signed, ".manifest"), vc, false},
		{"unsigned", unsigned, vc, false},
		{"signed by an unknown key", byOther, vc, false},
		{"scope required, none signed", signed, scoped, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := bundles.ReadTarball("test", tt.data, bundles.ReadOptions{Verification: tt.vc})
			if tt.valid {
				if err != nil {
					t.Fatalf("ReadTarball = %v, want it accepted", err)
				}
				if b.Manifest.Revision != "r1" {
					t.Errorf("revision = %q", b.Manifest.Revision)
				}
				return
			}
			if !errors.Is(err, bundles.ErrSignature) {
				t.Fatalf("ReadTarball = %v, want ErrSignature", err)
			}
		})
	}
}

func TestSignedWithScope(t *testing.T) {
	key := bundletest.NewKey(t)
	dir := bundletest.PolicyDir(t, nil)
	data, _, err := bundles.Build(context.Background(), dir, bundles.BuildOptions{Revision: "r1", SigningKey: key.Private, Scope: "write"})
	if err != nil {
		t.Fatal(err)
	}
	for scope, ok := range map[string]bool{"write": true, "read": false} {
		vc, err := bundles.Verification(key.Public, "", "", scope)
		if err != nil {
			t.Fatal(err)
		}
		_, err = bundles.ReadTarball("test", data, bundles.ReadOptions{Verification: vc})
		if (err == nil) != ok {
			t.Errorf("scope %s: ReadTarball = %v, want accepted %v", scope, err, ok)
		}
	}
}

func TestBuildSigningErrorsNeverQuoteTheKey(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.pem")
	secret := "-----BEGIN RSA PRIVATE KEY-----\nnot-really-a-key-SECRET\n-----END RSA PRIVATE KEY-----\n"
	if err := os.WriteFile(bad, []byte(secret), 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, err := bundles.Build(context.Background(), bundletest.PolicyDir(t, nil), bundles.BuildOptions{Revision: "r", SigningKey: bad})
	if err == nil {
		t.Fatal("Build with a broken key succeeded")
	}
	if strings.Contains(err.Error(), "SECRET") {
		t.Fatalf("error quotes the key: %v", err)
	}
}

func TestReadTarballLimits(t *testing.T) {
	data := bundletest.Build(t, bundletest.PolicyDir(t, nil), "r1", nil)
	if _, err := bundles.ReadTarball("test", data, bundles.ReadOptions{MaxBytes: int64(len(data) - 1)}); !errors.Is(err, bundles.ErrInvalidBundle) {
		t.Errorf("over the limit: %v, want ErrInvalidBundle", err)
	}
	if _, err := bundles.ReadTarball("test", []byte("not a tarball"), bundles.ReadOptions{}); !errors.Is(err, bundles.ErrInvalidBundle) {
		t.Errorf("garbage: %v, want ErrInvalidBundle", err)
	}
}

func TestInspectShowsSignature(t *testing.T) {
	key := bundletest.NewKey(t)
	data := bundletest.Build(t, bundletest.PolicyDir(t, nil), "r1", &key)
	b, err := bundles.ReadTarball("test", data, bundles.ReadOptions{InsecureSkipVerification: true})
	if err != nil {
		t.Fatal(err)
	}
	info := bundles.Inspect(b, data)
	if len(info.Signatures) != 1 || info.Signatures[0].KeyID != bundles.DefaultKeyID || info.Signatures[0].Algorithm != "RS256" {
		t.Fatalf("signatures = %+v, want one by %q with RS256", info.Signatures, bundles.DefaultKeyID)
	}
	if info.Digest != bundles.Digest(data) || info.Revision != "r1" {
		t.Errorf("info = %+v", info)
	}
}

func TestLoadFileSource(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "b.tar.gz")
	if err := os.WriteFile(path, bundletest.Build(t, bundletest.PolicyDir(t, nil), "from-file", nil), 0o644); err != nil {
		t.Fatal(err)
	}
	b, err := bundles.Load(context.Background(), bundles.SourceFilePrefix+path)
	if err != nil {
		t.Fatal(err)
	}
	if b.Manifest.Revision != "from-file" {
		t.Errorf("revision = %q", b.Manifest.Revision)
	}
	// A signed file needs its key: Load has none, so it is refused.
	key := bundletest.NewKey(t)
	if err := os.WriteFile(path, bundletest.Build(t, bundletest.PolicyDir(t, nil), "signed", &key), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := bundles.Load(context.Background(), bundles.SourceFilePrefix+path); err == nil {
		t.Error("Load read a signed bundle without verifying it")
	}
	if _, err := bundles.Load(context.Background(), bundles.SourceFilePrefix+filepath.Join(dir, "missing.tar.gz")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: %v, want fs.ErrNotExist", err)
	}
}
