// Package policies holds Tollgate's default policy bundle: the Rego rules
// (package tollgate.authz), their unit tests, the orders-API route table and
// the bundle manifest. It is embedded in the binary, so `tollgate serve` runs
// with no files at all.
//
// The directory is an OPA bundle as it stands:
//
//	.manifest                   {"revision": "default-…", "roots": ["tollgate"]}
//	authz.rego                  data.tollgate.authz (the decision rule)
//	authz_test.rego             data.tollgate.authz_test (opa test policies/)
//	tollgate/routes/data.json   data.tollgate.routes (the route table)
//
// Load it with bundles.Load, which drops the *_test.rego modules; run the Rego
// tests with `opa test policies/` or `go test ./policies/`.
package policies

import (
	"embed"
	"io/fs"
)

// bundleFiles is the bundle directory. The .manifest is named explicitly
// because go:embed skips dot files in directory and glob patterns. A new
// top-level directory of Rego or data must be added here too
// (TestEmbeddedFiles fails until it is).
//
//go:embed .manifest *.rego tollgate
var bundleFiles embed.FS

// FS returns the embedded bundle as a read-only file system rooted at the
// bundle's top directory (it contains ".manifest" and "authz.rego").
func FS() fs.FS { return bundleFiles }
