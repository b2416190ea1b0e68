package apikey_test

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/pdp/authn/apikey"
)

var created = time.Date(2026, 11, 29, 23, 0, 0, 0, time.UTC)

// newRecord generates a key and the record that stores it.
func newRecord(t testing.TB, owner string, scopes ...string) (apikey.Generated, apikey.Record) {
	t.Helper()
	g, err := apikey.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	return g, apikey.Record{ID: g.ID, Hash: g.Hash, Owner: owner, Scopes: scopes, Created: created}
}

// writeTemp writes content, sealed, to a new key file.
func writeTemp(t *testing.T, content string) string {
	t.Helper()
	return writeRaw(t, string(apikey.SealBody([]byte(content))))
}

// writeRaw writes content as it is to a new key file.
func writeRaw(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "keys.yaml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

const goodHash = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"

func TestLoadFileDocumentedFormat(t *testing.T) {
	path := writeTemp(t, `keys:
  - id: 4kq7m2xv7ab3
    hash: `+goodHash+`
    owner: billing-service
    scopes: [products:read]
    created: 2026-11-29T23:00:00Z
    expires: 2027-11-29T23:00:00Z   # optional
  - id: abcdefghijkl
    hash: `+goodHash+`
    owner: reports
    scopes:
      - products:read
      - orders:read
    created: 2026-11-29T23:00:00Z
    revoked: 2026-12-01T00:00:00Z
`)
	s, err := apikey.LoadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := []apikey.Record{
		{ID: "4kq7m2xv7ab3", Hash: goodHash, Owner: "billing-service", Scopes: []string{"products:read"},
			Created: created, Expires: time.Date(2027, 11, 29, 23, 0, 0, 0, time.UTC)},
		{ID: "abcdefghijkl", Hash: goodHash, Owner: "reports", Scopes: []string{"products:read", "orders:read"},
			Created: created, Revoked: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)},
	}
	if got := s.Records(); !reflect.DeepEqual(got, want) {
		t.Fatalf("records:\n got %+v\nwant %+v", got, want)
	}
}

func TestLoadFileStrict(t *testing.T) {
	rec := func(fields string) string {
		return "keys:\n  - id: abcdefghijkl\n    hash: " + goodHash + "\n    owner: svc\n    created: 2026-11-29T23:00:00Z\n" + fields
	}
	tests := []struct {
		name    string
		content string
		is      error // nil: any error
	}{
		{"unknown top-level field", rec("") + "extra: 1\n", nil},
		{"unknown record field", rec("    secret: tgk_x\n"), nil},
		{"misspelt optional field", rec("    expire: 2027-11-29T23:00:00Z\n"), nil},
		{"repeated field", rec("    owner: other\n"), nil},
		{"two documents", rec("") + "---\nkeys: []\n", nil},
		{"not yaml", "keys: [\n", nil},
		{"keys not a list", "keys: {}\n", nil},
		{"bad created", rec("")[:len(rec(""))-len("2026-11-29T23:00:00Z\n")] + "yesterday\n", nil},
		{"id too short", strings.Replace(rec(""), "abcdefghijkl", "abcdefghijk", 1), apikey.ErrInvalidRecord},
		{"id upper case", strings.Replace(rec(""), "abcdefghijkl", "ABCDEFGHIJKL", 1), apikey.ErrInvalidRecord},
		{"id not base32", strings.Replace(rec(""), "abcdefghijkl", "abcdefghijk0", 1), apikey.ErrInvalidRecord},
		{"hash without prefix", strings.Replace(rec(""), "sha256:", "", 1), apikey.ErrInvalidRecord},
		{"hash other algorithm", strings.Replace(rec(""), "sha256:", "md5:", 1), apikey.ErrInvalidRecord},
		{"hash too short", strings.Replace(rec(""), "15ad\n", "15a\n", 1), apikey.ErrInvalidRecord},
		{"hash upper case", strings.Replace(rec(""), "ba7816bf", "BA7816BF", 1), apikey.ErrInvalidRecord},
		{"hash not hex", strings.Replace(rec(""), "ba7816bf", "zz7816bf", 1), apikey.ErrInvalidRecord},
		{"raw key instead of hash", strings.Replace(rec(""), goodHash, "tgk_abcdefghijkl_"+strings.Repeat("A", 43), 1), apikey.ErrInvalidRecord},
		{"owner empty", strings.Replace(rec(""), "owner: svc", `owner: ""`, 1), apikey.ErrInvalidRecord},
		{"owner missing", strings.Replace(rec(""), "    owner: svc\n", "", 1), apikey.ErrInvalidRecord},
		{"owner with newline", strings.Replace(rec(""), "owner: svc", `owner: "svc\nx-user-id: admin"`, 1), apikey.ErrInvalidRecord},
		{"owner with spaces around", strings.Replace(rec(""), "owner: svc", `owner: " svc"`, 1), apikey.ErrInvalidRecord},
		{"created missing", strings.Replace(rec(""), "    created: 2026-11-29T23:00:00Z\n", "", 1), apikey.ErrInvalidRecord},
		{"expires before created", rec("    expires: 2026-11-01T00:00:00Z\n"), apikey.ErrInvalidRecord},
		{"empty scope", rec("    scopes: [\"\"]\n"), apikey.ErrInvalidRecord},
		{"scope with space", rec("    scopes: [\"a b\"]\n"), apikey.ErrInvalidRecord},
		{"duplicate id", rec("") + strings.TrimPrefix(rec(""), "keys:\n"), apikey.ErrDuplicateID},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeTemp(t, tt.content)
			s, err := apikey.LoadFile(path)
			if err == nil {
				t.Fatalf("LoadFile accepted:\n%s\n(%d records)", tt.content, s.Len())
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Fatalf("err = %v, want %v", err, tt.is)
			}
			if !strings.Contains(err.Error(), path) {
				t.Errorf("error %q does not name the file", err)
			}
		})
	}
	// The base record itself is valid, so each case above fails for its own reason.
	if _, err := apikey.LoadFile(writeTemp(t, rec("    scopes: [a, b]\n    expires: 2027-01-01T00:00:00Z\n"))); err != nil {
		t.Fatalf("base record rejected: %v", err)
	}
}

func TestLoadFileEmptyAndMissing(t *testing.T) {
	// Sealed, these are empty stores.
	for _, content := range []string{"", "# only a comment\n", "keys: []\n", "keys:\n"} {
		s, err := apikey.LoadFile(writeTemp(t, content))
		if err != nil || s.Len() != 0 {
			t.Errorf("LoadFile(sealed %q) = %d records, %v; want an empty store", content, s.Len(), err)
		}
	}
	// Unsealed, they are refused: an empty file may be one cut to nothing.
	for _, content := range []string{"", "\n", "# only a comment\n", "keys: []\n", "keys:\n"} {
		path := writeRaw(t, content)
		_, err := apikey.LoadFile(path)
		if !errors.Is(err, apikey.ErrNoSeal) || !strings.Contains(err.Error(), path) {
			t.Errorf("LoadFile(unsealed %q): err = %v, want ErrNoSeal naming the file", content, err)
		}
	}
	_, err := apikey.LoadFile(filepath.Join(t.TempDir(), "missing.yaml"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: err = %v, want fs.ErrNotExist", err)
	}
}

func TestFileRoundTrip(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "keys.yaml")
	_, r1 := newRecord(t, "billing-service", "products:read")
	_, r2 := newRecord(t, "reports", "products:read", "orders:read")
	r2.Expires = created.Add(365 * 24 * time.Hour)
	_, r3 := newRecord(t, "no-scopes")

	for _, r := range []apikey.Record{r1, r2, r3} {
		if err := apikey.Add(path, r); err != nil { // the first Add creates the file
			t.Fatal(err)
		}
	}
	s, err := apikey.LoadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	r3.Scopes = []string{} // written as "scopes: []"
	if got, want := s.Records(), []apikey.Record{r1, r2, r3}; !reflect.DeepEqual(got, want) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, want)
	}

	revokedAt := created.Add(48*time.Hour + 1500*time.Millisecond)
	got, err := apikey.Revoke(path, r2.ID, revokedAt)
	if err != nil {
		t.Fatal(err)
	}
	if want := revokedAt.Truncate(time.Second); !got.Revoked.Equal(want) {
		t.Errorf("Revoke returned revoked = %v, want %v", got.Revoked, want)
	}
	s, err = apikey.LoadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if rec, _ := s.Get(r2.ID); !rec.Revoked.Equal(revokedAt.Truncate(time.Second)) {
		t.Errorf("file has revoked = %v", rec.Revoked)
	}
	if rec, _ := s.Get(r1.ID); !rec.Revoked.IsZero() {
		t.Errorf("revoking one key touched another")
	}

	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := info.Mode().Perm(); perm != 0o600 {
		t.Errorf("file mode = %v, want 0600", perm)
	}
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if want := []string{"keys.yaml", "keys.yaml.lock"}; !reflect.DeepEqual(names, want) {
		t.Errorf("directory holds %q, want %q (temporary files left?)", names, want)
	}
}

func TestKeyFileNeverContainsKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.yaml")
	var keys []apikey.Generated
	for range 5 {
		g, r := newRecord(t, "svc", "products:read")
		if err := apikey.Add(path, r); err != nil {
			t.Fatal(err)
		}
		keys = append(keys, g)
	}
	if _, err := apikey.Revoke(path, keys[0].ID, created.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range keys {
		key := g.Key.Reveal()
		secret := key[len(key)-apikey.SecretLen:]
		if bytes.Contains(data, []byte(key)) || bytes.Contains(data, []byte(secret)) {
			t.Fatalf("key file contains a key or its secret:\n%s", data)
		}
		if !bytes.Contains(data, []byte(g.Hash)) {
			t.Errorf("key file lacks hash %s", g.Hash)
		}
	}
	if bytes.Contains(data, []byte(apikey.Prefix)) {
		t.Errorf("key file contains the key prefix %q", apikey.Prefix)
	}
}

func TestAddRejects(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.yaml")
	_, r := newRecord(t, "svc")
	if err := apikey.Add(path, r); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(path)

	bad := r
	bad.Owner = ""
	bad.ID = "bbbbbbbbbbbb"
	if err := apikey.Add(path, bad); !errors.Is(err, apikey.ErrInvalidRecord) {
		t.Errorf("invalid record: err = %v, want ErrInvalidRecord", err)
	}
	if err := apikey.Add(path, r); !errors.Is(err, apikey.ErrDuplicateID) {
		t.Errorf("duplicate id: err = %v, want ErrDuplicateID", err)
	}
	after, _ := os.ReadFile(path)
	if !bytes.Equal(before, after) {
		t.Errorf("a rejected Add changed the file")
	}

	broken := writeRaw(t, "keys: [\n")
	if err := apikey.Add(broken, r); err == nil {
		t.Errorf("Add to a broken file must fail, not overwrite it")
	}
	if data, _ := os.ReadFile(broken); string(data) != "keys: [\n" {
		t.Errorf("Add overwrote a broken file")
	}
	if err := apikey.Add(filepath.Join(t.TempDir(), "no", "such", "dir", "keys.yaml"), r); err == nil {
		t.Errorf("Add into a missing directory must fail")
	}
}

func TestRevokeErrors(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.yaml")
	_, r := newRecord(t, "svc")
	if err := apikey.Add(path, r); err != nil {
		t.Fatal(err)
	}
	if _, err := apikey.Revoke(path, "zzzzzzzzzzzz", created); !errors.Is(err, apikey.ErrUnknownID) {
		t.Errorf("unknown id: err = %v, want ErrUnknownID", err)
	}
	first := created.Add(time.Hour)
	if _, err := apikey.Revoke(path, r.ID, first); err != nil {
		t.Fatal(err)
	}
	rec, err := apikey.Revoke(path, r.ID, first.Add(time.Hour))
	if !errors.Is(err, apikey.ErrAlreadyRevoked) {
		t.Errorf("second revoke: err = %v, want ErrAlreadyRevoked", err)
	}
	if !rec.Revoked.Equal(first) {
		t.Errorf("second revoke changed the revocation time to %v", rec.Revoked)
	}
	if _, err := apikey.Revoke(filepath.Join(t.TempDir(), "missing.yaml"), r.ID, created); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: err = %v, want fs.ErrNotExist", err)
	}
}

func TestAddThroughSymlinkKeepsLink(t *testing.T) {
	dir := t.TempDir()
	real := filepath.Join(dir, "real.yaml")
	link := filepath.Join(dir, "keys.yaml")
	if err := os.WriteFile(real, apikey.SealBody([]byte("keys: []\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(real, link); err != nil {
		t.Skip("symlinks not supported:", err)
	}
	_, r := newRecord(t, "svc")
	if err := apikey.Add(link, r); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&fs.ModeSymlink == 0 {
		t.Fatalf("keys.yaml is no longer a symlink")
	}
	s, err := apikey.LoadFile(real)
	if err != nil || s.Len() != 1 {
		t.Fatalf("target file: %d records, %v", s.Len(), err)
	}
}

func TestStoreIsImmutable(t *testing.T) {
	_, r := newRecord(t, "svc", "a")
	in := []apikey.Record{r}
	s, err := apikey.NewStore(in)
	if err != nil {
		t.Fatal(err)
	}
	in[0].Scopes[0] = "changed-input"
	out := s.Records()
	out[0].Scopes[0] = "changed-output"
	got, _ := s.Get(r.ID)
	got.Scopes[0] = "changed-get"
	if again, _ := s.Get(r.ID); again.Scopes[0] != "a" {
		t.Fatalf("store was modified through a slice: %q", again.Scopes[0])
	}
}
