package bundles_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/bundle"

	"github.com/tollgate/tollgate/bundles"
)

const (
	manifestFile = `{"revision": "test-1", "roots": ["tollgate"]}`
	moduleFile   = "package tollgate.authz\n\ndecision := {\"allow\": true, \"status\": 200, \"reasons\": [], \"headers\": {}}\n"
	testFile     = "package tollgate.authz_test\n\ntest_ok if true\n"
	routesFile   = `[{"methods": ["GET"], "paths": ["/x"], "sensitivity": "public"}]`
)

// writeBundle writes files (slash-separated paths) into a new temp dir and
// returns its "dir:" source.
func writeBundle(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		path := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return bundles.SourceDirPrefix + dir
}

// validFiles is a small valid bundle; each call returns a fresh map.
func validFiles() map[string]string {
	return map[string]string{
		".manifest":                 manifestFile,
		"authz.rego":                moduleFile,
		"authz_test.rego":           testFile,
		"tollgate/routes/data.json": routesFile,
	}
}

func with(files map[string]string, changes map[string]string) map[string]string {
	for name, content := range changes {
		if content == "" {
			delete(files, name)
			continue
		}
		files[name] = content
	}
	return files
}

func moduleNames(b *bundle.Bundle) []string {
	var names []string
	for _, m := range b.Modules {
		names = append(names, m.RelativePath)
	}
	return names
}

func routes(t *testing.T, b *bundle.Bundle) []any {
	t.Helper()
	tg, ok := b.Data["tollgate"].(map[string]any)
	if !ok {
		t.Fatalf("data.tollgate missing: %v", b.Data)
	}
	r, ok := tg["routes"].([]any)
	if !ok {
		t.Fatalf("data.tollgate.routes is not an array: %v", tg["routes"])
	}
	return r
}

var computedRevision = regexp.MustCompile(`^sha256:[0-9a-f]{12}$`)

func TestLoad(t *testing.T) {
	tests := []struct {
		name         string
		source       string // or files, written to a temp dir
		files        map[string]string
		wantRevision string // "computed" for a sha256: revision
		wantModules  []string
		wantRoutes   int
	}{
		{name: "empty source is embedded", source: "", wantRevision: "default-2026.12.1", wantModules: []string{"/authz.rego"}, wantRoutes: 5},
		{name: "embedded", source: bundles.SourceEmbedded, wantRevision: "default-2026.12.1", wantModules: []string{"/authz.rego"}, wantRoutes: 5},
		{name: "policies directory", source: "dir:../policies", wantRevision: "default-2026.12.1", wantModules: []string{"/authz.rego"}, wantRoutes: 5},
		{name: "directory", files: validFiles(), wantRevision: "test-1", wantModules: []string{"/authz.rego"}, wantRoutes: 1},
		{
			name: "data.json at the root",
			files: with(validFiles(), map[string]string{
				"tollgate/routes/data.json": "",
				"data.json":                 `{"tollgate": {"routes": ` + routesFile + `}}`,
			}),
			wantRevision: "test-1", wantModules: []string{"/authz.rego"}, wantRoutes: 1,
		},
		{
			name:         "data.yaml",
			files:        with(validFiles(), map[string]string{"tollgate/routes/data.json": "", "tollgate/routes/data.yaml": "- {methods: [GET], paths: [/x], sensitivity: public}\n"}),
			wantRevision: "test-1", wantModules: []string{"/authz.rego"}, wantRoutes: 1,
		},
		{name: "no manifest", files: with(validFiles(), map[string]string{".manifest": ""}), wantRevision: "computed", wantModules: []string{"/authz.rego"}, wantRoutes: 1},
		{name: "manifest without revision", files: with(validFiles(), map[string]string{".manifest": `{"roots": ["tollgate"]}`}), wantRevision: "computed", wantModules: []string{"/authz.rego"}, wantRoutes: 1},
		{
			name:         "nested modules, tests left out",
			files:        with(validFiles(), map[string]string{"lib/util.rego": "package tollgate.lib\n\nx := 1\n", "lib/util_test.rego": "package tollgate.lib_test\n\ntest_x if true\n"}),
			wantRevision: "test-1", wantModules: []string{"/authz.rego", "/lib/util.rego"}, wantRoutes: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			source := tt.source
			if tt.files != nil {
				source = writeBundle(t, tt.files)
			}
			b, err := bundles.Load(context.Background(), source)
			if err != nil {
				t.Fatalf("Load(%q): %v", source, err)
			}
			switch rev := b.Manifest.Revision; {
			case tt.wantRevision == "computed" && !computedRevision.MatchString(rev):
				t.Errorf("revision = %q, want sha256:<12 hex>", rev)
			case tt.wantRevision != "computed" && rev != tt.wantRevision:
				t.Errorf("revision = %q, want %q", rev, tt.wantRevision)
			}
			got := moduleNames(b)
			if !reflect.DeepEqual(got, tt.wantModules) {
				t.Errorf("modules = %v, want %v", got, tt.wantModules)
			}
			for _, m := range b.Modules {
				if strings.HasSuffix(m.Path, "_test.rego") || strings.HasSuffix(m.Parsed.Package.Path.String(), "_test") {
					t.Errorf("test module %s served", m.Path)
				}
			}
			if n := len(routes(t, b)); n != tt.wantRoutes {
				t.Errorf("len(data.tollgate.routes) = %d, want %d", n, tt.wantRoutes)
			}
			wantRoots := []string{"tollgate"}
			if _, ok := tt.files[".manifest"]; tt.files != nil && !ok {
				wantRoots = []string{""} // OPA's default: the bundle owns all of data
			}
			if b.Manifest.Roots == nil || !reflect.DeepEqual(*b.Manifest.Roots, wantRoots) {
				t.Errorf("roots = %v, want %q", b.Manifest.Roots, wantRoots)
			}
		})
	}
}

func TestLoadDirectoryModulePathsNameTheDirectory(t *testing.T) {
	source := writeBundle(t, validFiles())
	b, err := bundles.Load(context.Background(), source)
	if err != nil {
		t.Fatal(err)
	}
	dir := strings.TrimPrefix(source, bundles.SourceDirPrefix)
	if want := filepath.Join(dir, "authz.rego"); b.Modules[0].Path != want {
		t.Errorf("module path = %q, want %q", b.Modules[0].Path, want)
	}
}

func TestLoadSymlinkedDirectory(t *testing.T) {
	target := strings.TrimPrefix(writeBundle(t, validFiles()), bundles.SourceDirPrefix)
	link := filepath.Join(t.TempDir(), "current")
	if err := os.Symlink(target, link); err != nil {
		t.Skipf("no symbolic links here: %v", err)
	}
	b, err := bundles.Load(context.Background(), bundles.SourceDirPrefix+link)
	if err != nil {
		t.Fatal(err)
	}
	if b.Manifest.Revision != "test-1" || len(b.Modules) != 1 {
		t.Errorf("revision %q, %d modules; want test-1, 1", b.Manifest.Revision, len(b.Modules))
	}
	if want := filepath.Join(link, "authz.rego"); b.Modules[0].Path != want {
		t.Errorf("module path = %q, want %q", b.Modules[0].Path, want)
	}
}

func TestLoadEmbeddedMatchesPoliciesDirectory(t *testing.T) {
	embedded, err := bundles.Load(context.Background(), bundles.SourceEmbedded)
	if err != nil {
		t.Fatal(err)
	}
	dir, err := bundles.Load(context.Background(), "dir:../policies")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(embedded.Data, dir.Data) {
		t.Error("embedded data differs from policies/")
	}
	if len(embedded.Modules) != len(dir.Modules) {
		t.Fatalf("embedded has %d modules, policies/ %d", len(embedded.Modules), len(dir.Modules))
	}
	for i := range embedded.Modules {
		if string(embedded.Modules[i].Raw) != string(dir.Modules[i].Raw) {
			t.Errorf("module %s differs", embedded.Modules[i].RelativePath)
		}
	}
	e, err := bundles.ComputeRevision(embedded)
	if err != nil {
		t.Fatal(err)
	}
	d, err := bundles.ComputeRevision(dir)
	if err != nil {
		t.Fatal(err)
	}
	if e != d {
		t.Errorf("ComputeRevision: embedded %s, policies/ %s", e, d)
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name     string
		source   string // or files, written to a temp dir
		files    map[string]string
		wantIs   error
		wantText []string // substrings of the error message
	}{
		{name: "missing directory", source: "dir:" + filepath.Join(os.TempDir(), "tollgate-no-such-dir"), wantIs: fs.ErrNotExist, wantText: []string{"tollgate-no-such-dir"}},
		{name: "file, not a directory", source: "dir:load_test.go", wantText: []string{"not a directory"}},
		{name: "dir without a path", source: "dir:", wantIs: bundles.ErrUnsupportedSource},
		{name: "tarball", source: "tar:/tmp/bundle.tar.gz", wantIs: bundles.ErrUnsupportedSource, wantText: []string{`"file:PATH"`}},
		{name: "http", source: "http://bundles.example.com/b.tar.gz", wantIs: bundles.ErrUnsupportedSource, wantText: []string{"`services` and `bundles`"}},
		{name: "https", source: "https://bundles.example.com/b.tar.gz", wantIs: bundles.ErrUnsupportedSource, wantText: []string{"`services` and `bundles`"}},
		{name: "oci", source: "oci://ghcr.io/x/y:1", wantIs: bundles.ErrUnsupportedSource, wantText: []string{"type: oci"}},
		{name: "unknown scheme", source: "ftp:x", wantIs: bundles.ErrUnsupportedSource, wantText: []string{`"ftp:x"`}},
		{name: "bare path", source: "./policies", wantIs: bundles.ErrUnsupportedSource, wantText: []string{`"dir:./policies"`}},
		{
			name:     "bad rego",
			files:    with(validFiles(), map[string]string{"broken.rego": "package tollgate.broken\n\nallow if {\n"}),
			wantIs:   bundles.ErrInvalidBundle,
			wantText: []string{"broken.rego"},
		},
		{
			name:     "rego v0 syntax",
			files:    with(validFiles(), map[string]string{"old.rego": "package tollgate.old\n\nallow { true }\n"}),
			wantIs:   bundles.ErrInvalidBundle,
			wantText: []string{"old.rego"},
		},
		{
			name:     "bad data",
			files:    with(validFiles(), map[string]string{"tollgate/routes/data.json": `[{"methods": `}),
			wantIs:   bundles.ErrInvalidBundle,
			wantText: []string{"data.json"},
		},
		{
			name:     "module outside the roots",
			files:    with(validFiles(), map[string]string{"other.rego": "package other\n\nx := 1\n"}),
			wantIs:   bundles.ErrInvalidBundle,
			wantText: []string{"roots", "other.rego"},
		},
		{
			name:     "data outside the roots",
			files:    with(validFiles(), map[string]string{"elsewhere/data.json": `{"a": 1}`}),
			wantIs:   bundles.ErrInvalidBundle,
			wantText: []string{"roots", "/elsewhere"},
		},
		{
			name:     "bad manifest",
			files:    with(validFiles(), map[string]string{".manifest": `{"revision": 7}`}),
			wantIs:   bundles.ErrInvalidBundle,
			wantText: []string{"manifest"},
		},
		{
			name:     "only tests",
			files:    map[string]string{".manifest": manifestFile, "authz_test.rego": testFile},
			wantIs:   bundles.ErrInvalidBundle,
			wantText: []string{"no policy modules"},
		},
		{
			name:     "delta bundle",
			files:    map[string]string{".manifest": manifestFile, "patch.json": `{"data": [{"op": "upsert", "path": "/tollgate/x", "value": 1}]}`},
			wantIs:   bundles.ErrInvalidBundle,
			wantText: []string{"delta"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			source := tt.source
			if tt.files != nil {
				source = writeBundle(t, tt.files)
			}
			b, err := bundles.Load(context.Background(), source)
			if err == nil {
				t.Fatalf("Load(%q) = bundle %q, want an error", source, b.Manifest.Revision)
			}
			t.Logf("error: %v", err)
			if b != nil {
				t.Errorf("Load(%q) returned a bundle with its error", source)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("error %q is not %v", err, tt.wantIs)
			}
			for _, s := range tt.wantText {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not mention %q", err, s)
				}
			}
		})
	}
}

func TestLoadCanceledContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := bundles.Load(ctx, bundles.SourceEmbedded); !errors.Is(err, context.Canceled) {
		t.Errorf("Load with a canceled context: %v, want context.Canceled", err)
	}
}

func TestComputedRevision(t *testing.T) {
	noManifest := func(changes map[string]string) map[string]string {
		return with(with(validFiles(), map[string]string{".manifest": ""}), changes)
	}
	load := func(t *testing.T, files map[string]string) string {
		t.Helper()
		b, err := bundles.Load(context.Background(), writeBundle(t, files))
		if err != nil {
			t.Fatal(err)
		}
		return b.Manifest.Revision
	}

	base := load(t, noManifest(nil))
	if !computedRevision.MatchString(base) {
		t.Fatalf("revision %q, want sha256:<12 hex>", base)
	}

	tests := []struct {
		name  string
		files map[string]string
		same  bool
	}{
		{name: "same content, other directory", files: noManifest(nil), same: true},
		{name: "test file changed", files: noManifest(map[string]string{"authz_test.rego": testFile + "\ntest_more if true\n"}), same: true},
		{name: "test file removed", files: noManifest(map[string]string{"authz_test.rego": ""}), same: true},
		{name: "data reformatted", files: noManifest(map[string]string{"tollgate/routes/data.json": "[\n  {\"sensitivity\": \"public\", \"paths\": [\"/x\"], \"methods\": [\"GET\"]}\n]\n"}), same: true},
		{name: "module changed", files: noManifest(map[string]string{"authz.rego": moduleFile + "\nx := 1\n"}), same: false},
		{name: "module renamed", files: noManifest(map[string]string{"authz.rego": "", "policy.rego": moduleFile}), same: false},
		{name: "data changed", files: noManifest(map[string]string{"tollgate/routes/data.json": `[]`}), same: false},
		{name: "roots declared", files: noManifest(map[string]string{".manifest": `{"roots": ["tollgate"]}`}), same: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := load(t, tt.files)
			if (got == base) != tt.same {
				t.Errorf("revision %s, base %s: same = %v, want %v", got, base, got == base, tt.same)
			}
		})
	}
}

func TestComputeRevisionIsStableAcrossLoads(t *testing.T) {
	var first string
	for i := range 3 {
		b, err := bundles.Load(context.Background(), bundles.SourceEmbedded)
		if err != nil {
			t.Fatal(err)
		}
		rev, err := bundles.ComputeRevision(b)
		if err != nil {
			t.Fatal(err)
		}
		if !computedRevision.MatchString(rev) {
			t.Fatalf("ComputeRevision = %q, want sha256:<12 hex>", rev)
		}
		if i == 0 {
			first = rev
		} else if rev != first {
			t.Fatalf("load %d: ComputeRevision = %s, first %s", i, rev, first)
		}
	}
}
