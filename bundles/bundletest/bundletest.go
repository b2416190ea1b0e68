// Package bundletest is a test kit for policy bundles: signing keys,
// variants of the default policy bundle, signed builds, and tampering.
package bundletest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/bundles"
	"github.com/tollgate/tollgate/policies"
)

// Key is an RSA signing key pair written to files.
type Key struct {
	// Private and Public are the PEM files' paths.
	Private, Public string
	// PublicPEM is the public key's PEM text (for a `keys` section).
	PublicPEM string
}

// NewKey generates an RSA key pair into t's temporary directory.
func NewKey(t testing.TB) Key {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	priv := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)})
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pub := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	key := Key{Private: filepath.Join(dir, "key.pem"), Public: filepath.Join(dir, "key.pub.pem"), PublicPEM: string(pub)}
	if err := os.WriteFile(key.Private, priv, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key.Public, pub, 0o644); err != nil {
		t.Fatal(err)
	}
	return key
}

// Route is one entry of the default policy's route table.
type Route = map[string]any

// PolicyDir copies the default policy bundle (package policies, with its
// test files) into a new temporary directory, lets edit change its route
// table (nil edits nothing), and returns the directory.
func PolicyDir(t testing.TB, edit func([]Route) []Route) string {
	t.Helper()
	dir := t.TempDir()
	err := fs.WalkDir(policies.FS(), ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		target := filepath.Join(dir, filepath.FromSlash(path))
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		b, err := fs.ReadFile(policies.FS(), path)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		path := filepath.Join(dir, "tollgate", "routes", "data.json")
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var routes []Route
		if err := json.Unmarshal(b, &routes); err != nil {
			t.Fatal(err)
		}
		out, err := json.MarshalIndent(edit(routes), "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, out, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// MovePublic moves the default policy's public route from /public/** to
// prefix/** (e.g. "/open"): GET /public/x flips from allow to deny
// (no_route), GET /open/x from deny to allow.
func MovePublic(prefix string) func([]Route) []Route {
	return func(rs []Route) []Route {
		for _, r := range rs {
			if r["id"] == "public" {
				r["paths"] = []string{prefix + "/**"}
			}
		}
		return rs
	}
}

// Build builds dir into a bundle tarball with revision rev, signed with
// key's private key unless key is nil.
func Build(t testing.TB, dir, rev string, key *Key) []byte {
	t.Helper()
	opts := bundles.BuildOptions{Revision: rev}
	if key != nil {
		opts.SigningKey = key.Private
	}
	data, _, err := bundles.Build(context.Background(), dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// Tamper returns a copy of the bundle tarball data in which one byte of
// the file whose path ends with name is changed (the signature is left as
// it was).
func Tamper(t testing.TB, data []byte, name string) []byte {
	t.Helper()
	out, err := rewrite(data, func(hdr *tar.Header, body []byte) []byte {
		if strings.HasSuffix(hdr.Name, name) && len(body) > 0 {
			body = flipOneByte(hdr.Name, bytes.Clone(body))
		}
		return body
	})
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(out, data) {
		t.Fatalf("tamper: no file %q in the bundle", name)
	}
	return out
}

// flipOneByte changes one byte so that the file still parses but means
// something else (OPA hashes JSON files by content, not by bytes): in JSON
// (data, manifest) the last lower-case letter, which is inside a string,
// becomes upper case; in Rego (hashed byte for byte) the last space or
// newline becomes the other.
func flipOneByte(name string, b []byte) []byte {
	if strings.HasSuffix(name, ".rego") {
		if i := bytes.LastIndexAny(b, " \n"); i >= 0 {
			if b[i] == ' ' {
				b[i] = '\n'
			} else {
				b[i] = ' '
			}
			return b
		}
	}
	for i := len(b) - 1; i >= 0; i-- {
		if c := b[i]; c >= 'a' && c <= 'z' {
			b[i] = c - 'a' + 'A'
			return b
		}
	}
	b[len(b)-1] ^= 1
	return b
}

// rewrite copies a tar.gz, passing each file's content through f.
func rewrite(data []byte, f func(*tar.Header, []byte) []byte) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	tr := tar.NewReader(zr)
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			return nil, err
		}
		body = f(hdr, body)
		hdr.Size = int64(len(body))
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if _, err := tw.Write(body); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
