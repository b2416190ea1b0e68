package bundles

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"slices"
	"strings"

	"github.com/open-policy-agent/opa/v1/bundle"
)

// RevisionPrefix starts every revision ComputeRevision makes.
const RevisionPrefix = "sha256:"

// ComputeRevision returns a revision for a bundle whose manifest has none:
// "sha256:" followed by the first 12 hex digits of a SHA-256 over
//
//   - each module's bundle-relative path and raw bytes, in path order;
//   - the bundle data as canonical JSON (object keys sorted);
//   - the manifest as JSON, without its revision (roots, rego_version,
//     metadata).
//
// Each part is length-prefixed. The revision depends only on the served
// content: not on where the bundle lies, the order files are read in, data
// file formatting, or test files (Load leaves those out).
func ComputeRevision(b *bundle.Bundle) (string, error) {
	h := sha256.New()
	put(h, "tollgate bundle revision v1")

	modules := slices.Clone(b.Modules)
	slices.SortFunc(modules, func(x, y bundle.ModuleFile) int {
		return strings.Compare(modulePath(x), modulePath(y))
	})
	for _, m := range modules {
		put(h, "module")
		put(h, modulePath(m))
		putBytes(h, m.Raw)
	}

	data, err := json.Marshal(b.Data)
	if err != nil {
		return "", fmt.Errorf("computing revision: data: %w", err)
	}
	put(h, "data")
	putBytes(h, data)

	manifest := b.Manifest.Copy()
	manifest.Revision = ""
	mbytes, err := json.Marshal(manifest)
	if err != nil {
		return "", fmt.Errorf("computing revision: manifest: %w", err)
	}
	put(h, "manifest")
	putBytes(h, mbytes)

	return RevisionPrefix + hex.EncodeToString(h.Sum(nil))[:12], nil
}

// modulePath is the module's path relative to the bundle root.
func modulePath(m bundle.ModuleFile) string {
	if m.RelativePath != "" {
		return m.RelativePath
	}
	return m.Path
}

func put(h hash.Hash, s string) { putBytes(h, []byte(s)) }

func putBytes(h hash.Hash, b []byte) {
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(b)))
	h.Write(n[:])
	h.Write(b)
}
