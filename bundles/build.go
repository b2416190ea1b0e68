package bundles

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/compile"
)

// DefaultKeyID is the key id OPA signs and verifies with when none is
// given (`opa build --signing-key` and `opa run --verification-key`).
const DefaultKeyID = "default"

// DefaultSigningAlgorithm is OPA's default signing algorithm.
const DefaultSigningAlgorithm = "RS256"

// BuildOptions configure Build. The zero value builds an unsigned bundle
// whose revision is computed from its content (ComputeRevision).
type BuildOptions struct {
	// Revision is written to the manifest; when empty, the directory's
	// .manifest revision, else ComputeRevision.
	Revision string
	// SigningKey, when set, signs the bundle: a PEM private key (RS*, PS*,
	// ES*) or an HMAC secret (HS*), or the path of a file holding one, as
	// `opa build --signing-key` takes it.
	SigningKey string
	// SigningAlgorithm is DefaultSigningAlgorithm when empty.
	SigningAlgorithm string
	// KeyID names the key in the signature; DefaultKeyID when empty.
	KeyID string
	// Scope, when set, is signed into the bundle; a verifier configured
	// with a scope requires the same one.
	Scope string
}

// Build builds the bundle directory dir into an OPA bundle tarball, as
// `opa build --bundle dir` does (OPA's own compile package: modules are
// formatted, data files placed by directory, .manifest kept), without the
// *_test.rego files, and signs it when opts.SigningKey is set, as
// `opa build --signing-key` does. It returns the tarball's bytes.
//
// Build checks that the result reads back as a Tollgate bundle (ReadTarball)
// and returns it parsed too, so that the caller can compile it before
// publishing.
func Build(ctx context.Context, dir string, opts BuildOptions) ([]byte, *bundle.Bundle, error) {
	info, err := os.Stat(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("build %s: %w", dir, err)
	}
	if !info.IsDir() {
		return nil, nil, fmt.Errorf("build %s: not a directory", dir)
	}
	root, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("build %s: %w", dir, err)
	}
	rev := opts.Revision
	if rev == "" {
		// The directory's own revision, else one from its content.
		b, err := Load(ctx, SourceDirPrefix+root)
		if err != nil {
			return nil, nil, fmt.Errorf("build %s: %w", dir, err)
		}
		rev = b.Manifest.Revision
	}

	var out bytes.Buffer
	c := compile.New().
		WithRegoVersion(ast.RegoV1).
		WithAsBundle(true).
		// Paths inside the bundle are relative to its root, as with
		// `opa build --bundle .` run inside the directory.
		WithFS(os.DirFS(root)).
		WithPaths(".").
		WithFilter(skipTestFilesLoader).
		WithRevision(rev).
		WithOutput(&out)
	if opts.SigningKey != "" {
		alg := opts.SigningAlgorithm
		if alg == "" {
			alg = DefaultSigningAlgorithm
		}
		keyID := opts.KeyID
		if keyID == "" {
			keyID = DefaultKeyID
		}
		sc := bundle.NewSigningConfig(opts.SigningKey, alg, "")
		if opts.Scope != "" {
			claims, err := scopeClaimsFile(opts.Scope)
			if err != nil {
				return nil, nil, err
			}
			defer os.Remove(claims)
			sc = bundle.NewSigningConfig(opts.SigningKey, alg, claims)
		}
		c = c.WithBundleSigningConfig(sc).WithBundleVerificationKeyID(keyID)
	}
	if err := c.Build(ctx); err != nil {
		if opts.SigningKey != "" {
			// OPA's errors can quote the key file's content; never echo it.
			return nil, nil, fmt.Errorf("build %s: %w", dir, redactKey(err, opts.SigningKey))
		}
		return nil, nil, fmt.Errorf("build %s: %w: %w", dir, ErrInvalidBundle, err)
	}
	data := out.Bytes()
	b, err := ReadTarball(dir, data, ReadOptions{InsecureSkipVerification: true})
	if err != nil {
		return nil, nil, err
	}
	return data, b, nil
}

// skipTestFilesLoader is an OPA loader filter (true means skip) that
// leaves out Rego unit test files.
func skipTestFilesLoader(_ string, info fs.FileInfo, _ int) bool {
	return skipTestFiles("", info, 0)
}

// scopeClaimsFile writes the claims file OPA's signing config reads a
// scope from, and returns its path.
func scopeClaimsFile(scope string) (string, error) {
	f, err := os.CreateTemp("", "tollgate-claims-*.json")
	if err != nil {
		return "", err
	}
	defer f.Close()
	if _, err := fmt.Fprintf(f, `{"scope": %q}`, scope); err != nil {
		return "", err
	}
	return f.Name(), nil
}

// errSigning replaces an OPA signing error that quotes the key.
var errSigning = errors.New("signing failed (check --signing-key and --signing-alg)")

func redactKey(err error, key string) error {
	if strings.Contains(err.Error(), key) || strings.Contains(err.Error(), "PRIVATE KEY") {
		return errSigning
	}
	return fmt.Errorf("%w: %w", errSigning, err)
}
