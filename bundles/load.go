// Package bundles loads Tollgate's versioned policy bundles.
//
// A bundle is an OPA bundle: Rego modules, data files placed by their
// directory (tollgate/routes/data.json is data.tollgate.routes) and a
// .manifest naming the revision and the roots the bundle owns. Load reads one
// with OPA's own bundle reader, so the format behaves exactly as it does in
// OPA; see Load for what Tollgate adds on top.
package bundles

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"

	"github.com/tollgate/tollgate/policies"
)

// Bundle sources accepted by Load.
const (
	// SourceEmbedded is the default policy bundle compiled into the binary
	// (package policies). The empty source means the same.
	SourceEmbedded = "embedded"
	// SourceDirPrefix introduces a bundle directory: "dir:./policies".
	SourceDirPrefix = "dir:"
	// SourceFilePrefix introduces a bundle tarball (built by `opa build`
	// or `tollgate bundle build`): "file:./bundle.tar.gz". Load reads it
	// unsigned; package bundles/source reads it with verification.
	SourceFilePrefix = "file:"
)

// Errors Load wraps, for errors.Is. A missing directory wraps
// fs.ErrNotExist instead.
var (
	// ErrUnsupportedSource: the source names no bundle location Load can read.
	ErrUnsupportedSource = errors.New("unsupported bundle source")
	// ErrInvalidBundle: the bundle was found but is not a usable policy
	// bundle (a Rego parse error, bad JSON, a manifest whose roots do not
	// cover its contents, no policy at all, ...). The wrapped message names
	// the file.
	ErrInvalidBundle = errors.New("invalid policy bundle")
)

// otherwiseConfigured maps source schemes Load does not read to where
// they are configured instead, so that the error says so.
var otherwiseConfigured = map[string]string{
	"tar":   `bundle tarballs are read with "file:PATH"`,
	"http":  "bundle servers are configured with the `services` and `bundles` sections",
	"https": "bundle servers are configured with the `services` and `bundles` sections",
	"oci":   "OCI registries are configured with the `services` (type: oci) and `bundles` sections",
}

// Load reads the policy bundle named by source:
//
//	"" or "embedded"   the default bundle embedded in the binary (policies.FS)
//	"dir:PATH"         a bundle directory, as `opa run --bundle PATH` reads it
//	                   (PATH may be a symbolic link; links inside it are not
//	                   followed, as in OPA)
//	"file:PATH"        a bundle tarball, unsigned (ReadTarballFile reads
//	                   signed ones)
//
// Any other source is an error wrapping ErrUnsupportedSource (bundle
// servers and OCI registries are read by package bundles/source).
//
// The bundle is read with OPA's bundle reader (Rego v1 unless the manifest
// says otherwise), so .manifest, data file placement and manifest roots work
// exactly as in OPA. On top of that, Load
//
//   - leaves out Rego test files (*_test.rego): they stay in the directory
//     for `opa test` but are not part of the served policy;
//   - rejects delta bundles and bundles without any policy module;
//   - fills in a missing manifest revision with ComputeRevision, so every
//     decision can name the policy that made it.
//
// Reading is not interruptible; ctx is checked before it starts.
func Load(ctx context.Context, source string) (*bundle.Bundle, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	switch {
	case source == "" || source == SourceEmbedded:
		loader, err := bundle.NewFSLoader(policies.FS())
		if err != nil {
			return nil, fmt.Errorf("bundle %s: %w", SourceEmbedded, err)
		}
		return read(SourceEmbedded, loader, "")

	case strings.HasPrefix(source, SourceDirPrefix):
		dir := strings.TrimPrefix(source, SourceDirPrefix)
		if dir == "" {
			return nil, fmt.Errorf("%w %q: the directory is missing (want dir:PATH)", ErrUnsupportedSource, source)
		}
		dir = filepath.Clean(dir)
		info, err := os.Stat(dir)
		if err != nil {
			return nil, fmt.Errorf("bundle %s: %w", source, err)
		}
		if !info.IsDir() {
			return nil, fmt.Errorf("bundle %s: %s is not a directory", source, dir)
		}
		// OPA's directory loader does not follow symbolic links, not even
		// the root: resolve the root, so "current -> releases/v3" works.
		root, err := filepath.EvalSymlinks(dir)
		if err != nil {
			return nil, fmt.Errorf("bundle %s: %w", source, err)
		}
		// As OPA does for directories, module paths include the directory
		// (as configured), so errors point at the file to fix.
		return read(source, bundle.NewDirectoryLoader(root), dir)
	}

	if path, ok := strings.CutPrefix(source, SourceFilePrefix); ok && path != "" {
		b, _, err := ReadTarballFile(filepath.Clean(path), ReadOptions{})
		return b, err
	}

	scheme, _, found := strings.Cut(source, ":")
	if hint, ok := otherwiseConfigured[strings.ToLower(scheme)]; found && ok {
		return nil, fmt.Errorf("%w %q: %s", ErrUnsupportedSource, source, hint)
	}
	if !found {
		return nil, fmt.Errorf("%w %q (want %q or %q; for a directory, %q)",
			ErrUnsupportedSource, source, SourceEmbedded, SourceDirPrefix+"PATH", SourceDirPrefix+source)
	}
	return nil, fmt.Errorf("%w %q (want %q or %q)", ErrUnsupportedSource, source, SourceEmbedded, SourceDirPrefix+"PATH")
}

// read reads one bundle through OPA's reader and applies Tollgate's rules.
func read(source string, loader bundle.DirectoryLoader, baseDir string) (*bundle.Bundle, error) {
	reader := bundle.NewCustomReader(loader.WithFilter(skipTestFiles)).
		WithRegoVersion(ast.RegoV1).
		WithProcessAnnotations(true).
		WithLazyLoadingMode(false)
	if baseDir != "" {
		reader = reader.WithBaseDir(baseDir)
	}

	b, err := reader.Read()
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("bundle %s: %w", source, err)
		}
		return nil, fmt.Errorf("bundle %s: %w: %w", source, ErrInvalidBundle, err)
	}
	return finish(source, &b)
}

// finish applies Tollgate's rules to a bundle OPA's reader read: no delta
// bundles, at least one policy module, and a revision (computed when the
// manifest has none).
func finish(source string, b *bundle.Bundle) (*bundle.Bundle, error) {
	if b.Type() == bundle.DeltaBundleType {
		return nil, fmt.Errorf("bundle %s: %w: delta bundles are not supported", source, ErrInvalidBundle)
	}
	if len(b.Modules) == 0 {
		return nil, fmt.Errorf("bundle %s: %w: no policy modules (*.rego, not counting *_test.rego)", source, ErrInvalidBundle)
	}
	if b.Manifest.Revision == "" {
		rev, err := ComputeRevision(b)
		if err != nil {
			return nil, fmt.Errorf("bundle %s: %w", source, err)
		}
		b.Manifest.Revision = rev
	}
	return b, nil
}

// skipTestFiles is a loader filter (true means skip) that leaves out Rego
// unit test files.
func skipTestFiles(_ string, info fs.FileInfo, _ int) bool {
	return !info.IsDir() && strings.HasSuffix(info.Name(), "_test.rego")
}
