package bundles

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
)

// DefaultMaxBundleBytes bounds a bundle tarball read by ReadTarball when
// ReadOptions.MaxBytes is zero: both the compressed file and each file in it.
const DefaultMaxBundleBytes = 64 << 20

// ErrSignature wraps every failure to verify a bundle's signature: no
// .signatures.json where one is required, a key that is not configured, a
// signature that does not verify, or a file whose digest differs from the
// signed one (a tampered file).
var ErrSignature = errors.New("bundle signature verification failed")

// ReadOptions configure ReadTarball. The zero value reads an unsigned bundle
// without verification; set Verification to require a signature.
type ReadOptions struct {
	// Verification, when set, makes a signature from one of its keys
	// mandatory (OPA's bundle.VerificationConfig: keys, keyid, scope,
	// exclude_files), exactly as OPA's `signing` section does.
	Verification *bundle.VerificationConfig
	// MaxBytes bounds the tarball and each file in it; DefaultMaxBundleBytes
	// when zero.
	MaxBytes int64
	// InsecureSkipVerification reads a signed bundle without checking its
	// signature (to inspect it, or to read back what Build just signed).
	// Never for a bundle that is going to be activated.
	InsecureSkipVerification bool
}

// ReadTarball reads an OPA bundle tarball (.tar.gz, as `opa build` and
// `tollgate bundle build` write it) with OPA's reader, verifies its
// signature when opts require one, and applies Tollgate's rules (see Load):
// *_test.rego modules are dropped after verification (they are signed like
// every other file), delta bundles and bundles without policy are refused,
// and a missing revision is computed. source names the bundle in errors.
func ReadTarball(source string, data []byte, opts ReadOptions) (*bundle.Bundle, error) {
	limit := opts.MaxBytes
	if limit <= 0 {
		limit = DefaultMaxBundleBytes
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("bundle %s: %w: %d bytes, more than the limit of %d", source, ErrInvalidBundle, len(data), limit)
	}
	loader := bundle.NewTarballLoader(bytes.NewReader(data)).WithSizeLimitBytes(limit)
	reader := bundle.NewCustomReader(loader).
		WithRegoVersion(ast.RegoV1).
		WithProcessAnnotations(true).
		WithLazyLoadingMode(false).
		WithSizeLimitBytes(limit).
		WithBundleVerificationConfig(opts.Verification).
		WithSkipBundleVerification(opts.InsecureSkipVerification)
	b, err := reader.Read()
	if err != nil {
		if opts.Verification != nil && readsUnverified(data, limit) {
			// It reads without verification: the signature is what failed.
			return nil, fmt.Errorf("bundle %s: %w: %w", source, ErrSignature, err)
		}
		return nil, fmt.Errorf("bundle %s: %w: %w", source, ErrInvalidBundle, err)
	}
	return Prepare(source, &b)
}

// Prepare applies Tollgate's rules to a bundle OPA's reader read from a
// tarball (ReadTarball, or OPA's downloader): it drops *_test.rego modules
// (after verification: they are signed like every other file), refuses
// delta bundles and bundles without policy, and computes a missing
// revision. b is modified.
func Prepare(source string, b *bundle.Bundle) (*bundle.Bundle, error) {
	b.Modules = slices.DeleteFunc(b.Modules, func(m bundle.ModuleFile) bool {
		return strings.HasSuffix(m.Path, "_test.rego")
	})
	return finish(source, b)
}

// ReadTarballFile reads the bundle tarball at path; see ReadTarball.
func ReadTarballFile(path string, opts ReadOptions) (*bundle.Bundle, []byte, error) {
	data, err := readFileLimited(path, opts.MaxBytes)
	if err != nil {
		return nil, nil, fmt.Errorf("bundle %s: %w", path, err)
	}
	b, err := ReadTarball(path, data, opts)
	return b, data, err
}

// readFileLimited reads a file of at most limit bytes (DefaultMaxBundleBytes
// when limit is zero).
func readFileLimited(path string, limit int64) ([]byte, error) {
	if limit <= 0 {
		limit = DefaultMaxBundleBytes
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%w: more than the limit of %d bytes", ErrInvalidBundle, limit)
	}
	return data, nil
}

// readsUnverified reports whether the tarball reads when its signature is
// not checked: how a refused signed bundle is told apart from a broken one.
func readsUnverified(data []byte, limit int64) bool {
	_, err := bundle.NewCustomReader(bundle.NewTarballLoader(bytes.NewReader(data)).WithSizeLimitBytes(limit)).
		WithRegoVersion(ast.RegoV1).
		WithSizeLimitBytes(limit).
		WithSkipBundleVerification(true).
		Read()
	return err == nil
}

// Digest is the SHA-256 of a bundle tarball's bytes, as "sha256:" and 64 hex
// digits: what a history entry and the admin API name it by, beside its
// revision.
func Digest(data []byte) string {
	sum := sha256.Sum256(data)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// WriteTarball writes b as a bundle tarball (signatures included, modules
// unformatted) and returns its bytes: how a bundle from a directory is kept
// in history.
func WriteTarball(b *bundle.Bundle) ([]byte, error) {
	var buf bytes.Buffer
	cp := *b
	for i := range cp.Modules {
		if cp.Modules[i].URL == "" {
			cp.Modules[i].URL = cp.Modules[i].Path
		}
	}
	if err := bundle.NewWriter(&buf).DisableFormat(true).Write(cp); err != nil {
		return nil, fmt.Errorf("write bundle %s: %w", b.Manifest.Revision, err)
	}
	return buf.Bytes(), nil
}
