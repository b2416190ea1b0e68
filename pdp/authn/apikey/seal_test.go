package apikey_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate/tollgate/pdp/authn"
	"github.com/tollgate/tollgate/pdp/authn/apikey"
)

// sealedFixture is a key file written by Add and Revoke: an active key, a
// revoked one, one with an expiry and one with two scopes.
type sealedFixture struct {
	path    string
	data    []byte
	keys    []apikey.Generated // active, revoked, expiring, scoped
	records []apikey.Record    // as the file holds them
}

func newSealedFixture(t *testing.T) sealedFixture {
	t.Helper()
	f := sealedFixture{path: filepath.Join(t.TempDir(), "keys.yaml")}
	for i, owner := range []string{"active", "revoked", "expiring", "scoped"} {
		var scopes []string
		if owner == "scoped" {
			scopes = []string{"products:read", "orders:read"}
		}
		g, r := newRecord(t, owner, scopes...)
		if i == 2 {
			r.Expires = time.Now().Add(time.Hour).UTC().Truncate(time.Second)
		}
		if err := apikey.Add(f.path, r); err != nil {
			t.Fatal(err)
		}
		f.keys = append(f.keys, g)
	}
	if _, err := apikey.Revoke(f.path, f.keys[1].ID, created.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	var err error
	if f.data, err = os.ReadFile(f.path); err != nil {
		t.Fatal(err)
	}
	s, err := apikey.LoadFile(f.path)
	if err != nil {
		t.Fatalf("the file Add and Revoke wrote does not load: %v", err)
	}
	f.records = s.Records()
	return f
}

// outcomes authenticates every fixture key and returns the results.
func (f sealedFixture) outcomes(t *testing.T, a *apikey.Authenticator) []string {
	t.Helper()
	var out []string
	for _, g := range f.keys {
		o, err := a.Authenticate(context.Background(), apiKey(g.Key.Reveal()))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, fmt.Sprintf("%v/%s", o.Result, o.Reason))
	}
	return out
}

// checkNoSecret fails when msg contains any fixture key or its secret part.
func (f sealedFixture) checkNoSecret(t *testing.T, msg string) {
	t.Helper()
	for _, g := range f.keys {
		key := g.Key.Reveal()
		if strings.Contains(msg, key) || strings.Contains(msg, key[len(key)-apikey.SecretLen:]) {
			t.Fatalf("message carries a key or its secret: %s", msg)
		}
	}
}

func isSealError(err error) bool {
	return errors.Is(err, apikey.ErrNoSeal) || errors.Is(err, apikey.ErrBadSeal)
}

// TestTruncatedKeyFileIsRefused cuts a file written by Add and Revoke at
// every byte offset, line boundaries included: every proper prefix is
// refused, so none yields a key set other than the full file's.
func TestTruncatedKeyFileIsRefused(t *testing.T) {
	f := newSealedFixture(t)
	if !bytes.Contains(f.data, []byte("revoked:")) {
		t.Fatalf("fixture lacks a revoked line:\n%s", f.data)
	}
	lineEnds := 0
	for n := 0; n < len(f.data); n++ {
		if n > 0 && f.data[n-1] == '\n' {
			lineEnds++
		}
		path := writeRaw(t, string(f.data[:n]))
		s, err := apikey.LoadFile(path)
		if err == nil {
			t.Fatalf("prefix of %d of %d bytes accepted (%d records):\n%s", n, len(f.data), s.Len(), f.data[:n])
		}
		if !isSealError(err) {
			t.Fatalf("prefix of %d bytes: err = %v, want ErrNoSeal or ErrBadSeal", n, err)
		}
		if !strings.Contains(err.Error(), path) {
			t.Fatalf("prefix of %d bytes: error %q does not name the file", n, err)
		}
		f.checkNoSecret(t, err.Error())
	}
	if lineEnds < 10 {
		t.Fatalf("only %d line boundaries tried", lineEnds)
	}
	// The full file still loads, with the revocation.
	s, err := apikey.LoadFile(writeRaw(t, string(f.data)))
	if err != nil {
		t.Fatal(err)
	}
	if rec, _ := s.Get(f.keys[1].ID); rec.Revoked.IsZero() {
		t.Fatal("full file lost the revocation")
	}
}

// TestIssueCutBeforeRevokedLine is the reported case: a file cut just
// before a key's revoked line must not bring the key back, at startup or
// on reload.
func TestIssueCutBeforeRevokedLine(t *testing.T) {
	f := newSealedFixture(t)
	i := bytes.Index(f.data, []byte("    revoked:"))
	if i < 0 {
		t.Fatalf("no revoked line:\n%s", f.data)
	}
	for _, cut := range []int{i, i + 4, i + len("    revoked:")} {
		path := writeRaw(t, string(f.data[:cut]))
		if _, err := apikey.NewFromFile(path, apikey.Options{}); !isSealError(err) {
			t.Errorf("cut at %d: NewFromFile err = %v, want a seal error", cut, err)
		}
		a, err := apikey.NewFromFile(f.path, apikey.Options{})
		if err != nil {
			t.Fatal(err)
		}
		before := f.outcomes(t, a)
		if err := a.Reload(path); !isSealError(err) {
			t.Errorf("cut at %d: Reload err = %v, want a seal error", cut, err)
		}
		if got := f.outcomes(t, a); !reflect.DeepEqual(got, before) || got[1] != fmt.Sprintf("%v/%s", authn.Rejected, authn.ReasonRevoked) {
			t.Errorf("cut at %d: outcomes after a refused reload = %v, want %v", cut, got, before)
		}
	}
}

// tamper describes one way of changing a sealed key file.
type tamper struct {
	name string
	edit func(t *testing.T, f sealedFixture) []byte
	is   error
}

// body returns data without its seal line.
func body(data []byte) []byte {
	content := bytes.TrimSuffix(data, []byte("\n"))
	return data[:bytes.LastIndexByte(content, '\n')+1]
}

// replaceOnce replaces the first old in data with new, failing the test
// when old is absent.
func replaceOnce(t *testing.T, data []byte, old, new string) []byte {
	t.Helper()
	if !bytes.Contains(data, []byte(old)) {
		t.Fatalf("%q not in:\n%s", old, data)
	}
	return bytes.Replace(data, []byte(old), []byte(new), 1)
}

var sealLineRE = regexp.MustCompile(`(?m)^# tollgate-seal v1 records=(\d+) sha256=([0-9a-f]{64})\n\z`)

func tampers() []tamper {
	lineOf := func(t *testing.T, data []byte, prefix string) string {
		t.Helper()
		for _, l := range strings.SplitAfter(string(data), "\n") {
			if strings.HasPrefix(l, prefix) {
				return l
			}
		}
		t.Fatalf("no line starting %q", prefix)
		return ""
	}
	return []tamper{
		{"empty file", func(*testing.T, sealedFixture) []byte { return nil }, apikey.ErrNoSeal},
		{"only a newline", func(*testing.T, sealedFixture) []byte { return []byte("\n") }, apikey.ErrNoSeal},
		{"seal removed (hand-edited without it)", func(_ *testing.T, f sealedFixture) []byte { return body(f.data) }, apikey.ErrNoSeal},
		{"revoked line removed", func(t *testing.T, f sealedFixture) []byte {
			return replaceOnce(t, f.data, lineOf(t, f.data, "    revoked:"), "")
		}, apikey.ErrBadSeal},
		{"revoked time moved", func(t *testing.T, f sealedFixture) []byte {
			return replaceOnce(t, f.data, "    revoked: 2026", "    revoked: 2036")
		}, apikey.ErrBadSeal},
		{"scopes widened", func(t *testing.T, f sealedFixture) []byte {
			return replaceOnce(t, f.data, "scopes: ['products:read', 'orders:read']", "scopes: ['products:read', 'orders:read', admin]")
		}, apikey.ErrBadSeal},
		{"scopes given to a key without", func(t *testing.T, f sealedFixture) []byte {
			return replaceOnce(t, f.data, "scopes: []", "scopes: [admin]")
		}, apikey.ErrBadSeal},
		{"expiry extended", func(t *testing.T, f sealedFixture) []byte {
			l := lineOf(t, f.data, "    expires:")
			return replaceOnce(t, f.data, l, "    expires: 2099-01-01T00:00:00Z\n")
		}, apikey.ErrBadSeal},
		{"expiry removed", func(t *testing.T, f sealedFixture) []byte {
			return replaceOnce(t, f.data, lineOf(t, f.data, "    expires:"), "")
		}, apikey.ErrBadSeal},
		{"owner changed", func(t *testing.T, f sealedFixture) []byte {
			return replaceOnce(t, f.data, "owner: active", "owner: admin")
		}, apikey.ErrBadSeal},
		{"hash swapped", func(t *testing.T, f sealedFixture) []byte {
			return replaceOnce(t, f.data, f.keys[0].Hash, f.keys[1].Hash)
		}, apikey.ErrBadSeal},
		{"comment added", func(t *testing.T, f sealedFixture) []byte {
			return replaceOnce(t, f.data, "keys:\n", "# reviewed\nkeys:\n")
		}, apikey.ErrBadSeal},
		{"CRLF line ends", func(_ *testing.T, f sealedFixture) []byte {
			return bytes.ReplaceAll(f.data, []byte("\n"), []byte("\r\n"))
		}, nil},
		{"whole record removed, seal recomputed with the old count", func(t *testing.T, f sealedFixture) []byte {
			b := body(f.data)
			i := bytes.Index(b, []byte("  - id: "+f.keys[1].ID))
			j := bytes.Index(b[i+1:], []byte("  - id: ")) + i + 1
			m := sealLineRE.FindSubmatch(f.data)
			var n int
			fmt.Sscan(string(m[1]), &n)
			return apikey.SealBodyCount(append(b[:i:i], b[j:]...), n)
		}, apikey.ErrBadSeal},
		{"count one too high", func(_ *testing.T, f sealedFixture) []byte {
			return apikey.SealBodyCount(body(f.data), len(f.records)+1)
		}, apikey.ErrBadSeal},
		{"count one too low", func(_ *testing.T, f sealedFixture) []byte {
			return apikey.SealBodyCount(body(f.data), len(f.records)-1)
		}, apikey.ErrBadSeal},
		{"count zero", func(_ *testing.T, f sealedFixture) []byte {
			return apikey.SealBodyCount(body(f.data), 0)
		}, apikey.ErrBadSeal},
		{"count with a leading zero", func(t *testing.T, f sealedFixture) []byte {
			return replaceOnce(t, f.data, fmt.Sprintf("records=%d ", len(f.records)), fmt.Sprintf("records=0%d ", len(f.records)))
		}, apikey.ErrBadSeal},
		{"count negative", func(t *testing.T, f sealedFixture) []byte {
			return replaceOnce(t, f.data, fmt.Sprintf("records=%d ", len(f.records)), "records=-1 ")
		}, apikey.ErrBadSeal},
		{"digest upper case", func(_ *testing.T, f sealedFixture) []byte {
			m := sealLineRE.FindSubmatchIndex(f.data)
			out := bytes.Clone(f.data)
			copy(out[m[4]:m[5]], bytes.ToUpper(f.data[m[4]:m[5]]))
			return out
		}, apikey.ErrBadSeal},
		{"digest of another file", func(t *testing.T, f sealedFixture) []byte {
			other := newSealedFixture(t)
			m := sealLineRE.FindSubmatch(other.data)
			return append(bytes.Clone(body(f.data)), fmt.Sprintf("# tollgate-seal v1 records=%d sha256=%s\n", len(f.records), m[2])...)
		}, apikey.ErrBadSeal},
		{"unknown seal version", func(t *testing.T, f sealedFixture) []byte {
			return replaceOnce(t, f.data, "# tollgate-seal v1 ", "# tollgate-seal v2 ")
		}, apikey.ErrNoSeal},
		{"extra space in seal", func(t *testing.T, f sealedFixture) []byte {
			return replaceOnce(t, f.data, " sha256=", "  sha256=")
		}, apikey.ErrBadSeal},
		{"text after the seal", func(_ *testing.T, f sealedFixture) []byte {
			return append(bytes.Clone(f.data), "  - id: aaaaaaaaaaaa\n"...)
		}, apikey.ErrNoSeal},
		{"blank line after the seal", func(_ *testing.T, f sealedFixture) []byte {
			return append(bytes.Clone(f.data), '\n')
		}, apikey.ErrNoSeal},
		{"seal twice", func(_ *testing.T, f sealedFixture) []byte {
			m := sealLineRE.Find(f.data)
			return append(bytes.Clone(f.data), m...)
		}, apikey.ErrBadSeal},
		{"record appended above the old seal", func(_ *testing.T, f sealedFixture) []byte {
			b := bytes.Clone(body(f.data))
			extra := strings.Replace(string(b[bytes.Index(b, []byte("  - id: ")):bytes.Index(b, []byte("    hash:"))]), f.keys[0].ID, "aaaaaaaaaaaa", 1)
			b = append(b, extra+"    hash: "+f.keys[0].Hash+"\n    owner: intruder\n    scopes: [admin]\n    created: 2026-11-29T23:00:00Z\n"...)
			return append(b, sealLineRE.Find(f.data)...)
		}, apikey.ErrBadSeal},
	}
}

// TestEditedKeyFileIsRefused: a sealed file changed in any way, or with a
// seal that does not match, is refused at load, and a reload keeps the
// keys in use.
func TestEditedKeyFileIsRefused(t *testing.T) {
	f := newSealedFixture(t)
	for _, tc := range tampers() {
		t.Run(tc.name, func(t *testing.T) {
			data := tc.edit(t, f)
			if bytes.Equal(data, f.data) {
				t.Fatal("the edit changed nothing")
			}
			path := writeRaw(t, string(data))
			s, err := apikey.LoadFile(path)
			if err == nil {
				t.Fatalf("accepted (%d records):\n%s", s.Len(), data)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Fatalf("err = %v, want %v", err, tc.is)
			}
			if tc.is == nil && !isSealError(err) {
				t.Fatalf("err = %v, want a seal error", err)
			}
			if !strings.Contains(err.Error(), path) {
				t.Errorf("error %q does not name the file", err)
			}
			f.checkNoSecret(t, err.Error())

			// Reload keeps the previous keys.
			a, err := apikey.NewFromFile(f.path, apikey.Options{})
			if err != nil {
				t.Fatal(err)
			}
			before := f.outcomes(t, a)
			if err := a.Reload(path); err == nil {
				t.Fatal("Reload accepted the file")
			}
			if got := f.outcomes(t, a); !reflect.DeepEqual(got, before) {
				t.Errorf("outcomes after a refused reload = %v, want %v", got, before)
			}
			if !reflect.DeepEqual(a.Store().Records(), f.records) {
				t.Error("a refused reload changed the store")
			}

			// Add and Revoke refuse to build on it, leaving it as it is.
			_, r := newRecord(t, "late")
			if err := apikey.Add(path, r); err == nil {
				t.Error("Add built on the file")
			}
			if _, err := apikey.Revoke(path, f.keys[0].ID, time.Now()); err == nil {
				t.Error("Revoke built on the file")
			}
			if after, _ := os.ReadFile(path); !bytes.Equal(after, data) {
				t.Error("a refused Add or Revoke changed the file")
			}
		})
	}
}

// TestSealMigratesUnsealedFile: a file from before seals is refused until
// Seal seals it; a dry run changes nothing; sealing keeps every record.
func TestSealMigratesUnsealedFile(t *testing.T) {
	f := newSealedFixture(t)
	legacy := body(f.data) // what an older Tollgate wrote
	for _, tc := range []struct {
		name    string
		content []byte
		problem error
	}{
		{"file from before seals", legacy, apikey.ErrNoSeal},
		{"hand-edited sealed file", replaceOnce(t, f.data, "owner: active", "owner: renamed"), apikey.ErrBadSeal},
		{"empty file", nil, apikey.ErrNoSeal},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeRaw(t, string(tc.content))
			if _, err := apikey.LoadFile(path); !errors.Is(err, tc.problem) {
				t.Fatalf("before sealing: err = %v, want %v", err, tc.problem)
			}
			dry, err := apikey.Seal(path, true)
			if err != nil {
				t.Fatal(err)
			}
			if dry.Written || !errors.Is(dry.Problem, tc.problem) {
				t.Fatalf("dry run = %+v", dry)
			}
			if got, _ := os.ReadFile(path); !bytes.Equal(got, tc.content) {
				t.Fatal("a dry run changed the file")
			}
			res, err := apikey.Seal(path, false)
			if err != nil {
				t.Fatal(err)
			}
			if !res.Written || !errors.Is(res.Problem, tc.problem) {
				t.Fatalf("seal = %+v", res)
			}
			s, err := apikey.LoadFile(path)
			if err != nil {
				t.Fatalf("sealed file does not load: %v", err)
			}
			if !reflect.DeepEqual(s.Records(), res.Store.Records()) || !reflect.DeepEqual(s.Records(), dry.Store.Records()) {
				t.Fatal("the sealed records differ from the ones Seal reported")
			}
			if tc.content != nil && s.Len() != len(f.records) {
				t.Fatalf("sealed %d records, want %d", s.Len(), len(f.records))
			}
			again, err := apikey.Seal(path, false)
			if err != nil || again.Written || again.Problem != nil {
				t.Fatalf("sealing a sealed file: %+v, %v", again, err)
			}
			if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
				t.Errorf("mode %v, want 0600", fi.Mode().Perm())
			}
		})
	}
	// Seal refuses what LoadFile would refuse for any other reason.
	for _, content := range []string{"keys: [\n", "keys:\n  - id: x\n", "keys: []\nextra: 1\n"} {
		path := writeRaw(t, content)
		if _, err := apikey.Seal(path, false); err == nil || isSealError(err) {
			t.Errorf("Seal(%q): err = %v, want a decoding error", content, err)
		}
		if got, _ := os.ReadFile(path); string(got) != content {
			t.Errorf("Seal(%q) changed the file", content)
		}
	}
}

// TestConcurrentAddAndRevokeAreAllKept: writers that race on one file all
// land, through the lock, and a reader never sees a partial file.
func TestConcurrentAddAndRevokeAreAllKept(t *testing.T) {
	for _, n := range []int{2, 8, 24} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			f := newSealedFixture(t)
			var (
				wg      sync.WaitGroup
				mu      sync.Mutex
				added   []apikey.Record
				errs    []error
				stop    = make(chan struct{})
				readers sync.WaitGroup
			)
			// A reader loads the file in a loop: every load must succeed.
			readers.Add(1)
			go func() {
				defer readers.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					if _, err := apikey.LoadFile(f.path); err != nil {
						mu.Lock()
						errs = append(errs, fmt.Errorf("reader: %w", err))
						mu.Unlock()
						return
					}
				}
			}()
			for i := range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					_, r := newRecord(t, fmt.Sprintf("svc-%d", i))
					err := apikey.Add(f.path, r)
					mu.Lock()
					defer mu.Unlock()
					if err != nil {
						errs = append(errs, err)
						return
					}
					added = append(added, r)
				}()
			}
			// Revokes of the two active keys race with the adds.
			for _, g := range []apikey.Generated{f.keys[0], f.keys[3]} {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if _, err := apikey.Revoke(f.path, g.ID, time.Now()); err != nil {
						mu.Lock()
						errs = append(errs, err)
						mu.Unlock()
					}
				}()
			}
			wg.Wait()
			close(stop)
			readers.Wait()
			if len(errs) > 0 {
				t.Fatal(errors.Join(errs...))
			}
			s, err := apikey.LoadFile(f.path)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := s.Len(), len(f.records)+n; got != want {
				t.Fatalf("%d records, want %d: concurrent changes were lost", got, want)
			}
			for _, r := range added {
				if _, ok := s.Get(r.ID); !ok {
					t.Errorf("added key %s lost", r.ID)
				}
			}
			for _, g := range []apikey.Generated{f.keys[0], f.keys[1], f.keys[3]} {
				if rec, _ := s.Get(g.ID); rec.Revoked.IsZero() {
					t.Errorf("revocation of %s lost", g.ID)
				}
			}
			for _, name := range []string{f.path, f.path + ".lock"} {
				if fi, err := os.Stat(name); err != nil || fi.Mode().Perm() != 0o600 {
					t.Errorf("%s: mode %v, %v; want 0600", filepath.Base(name), fi.Mode().Perm(), err)
				}
			}
		})
	}
}

// TestErrorsNeverCarryAKey pastes a key, or its secret part, into each
// place of a key file where a confused operator might put it: whether the
// file is sealed (LoadFile decodes it) or not (Seal decodes it), no error
// quotes it.
func TestErrorsNeverCarryAKey(t *testing.T) {
	g, err := apikey.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	key := g.Key.Reveal()
	secret := key[len(key)-apikey.SecretLen:]
	base := "keys:\n  - id: abcdefghijkl\n    hash: " + goodHash + "\n    owner: svc\n    created: 2026-11-29T23:00:00Z\n"
	for _, pasted := range []struct{ name, value string }{{"key", key}, {"secret", "s" + secret}} {
		v := pasted.value
		for _, tc := range []struct{ name, content string }{
			{"as a record field", base + "    " + v + ": 1\n"},
			{"as a top-level field", base + v + ": 1\n"},
			{"as the id", strings.Replace(base, "abcdefghijkl", v, 1)},
			{"as the hash", strings.Replace(base, goodHash, v, 1)},
			{"as created", strings.Replace(base, "2026-11-29T23:00:00Z", v, 1)},
			{"as expires", base + "    expires: " + v + "\n"},
			{"in the owner", strings.Replace(base, "owner: svc", `owner: "`+v+`\nx"`, 1)},
			{"in a scope", base + `    scopes: ["` + v + ` admin"]` + "\n"},
			{"as a scope list", base + "    scopes: " + v + "\n"},
			{"in broken YAML", base + "    scopes: [" + v + "\n"},
			{"as a document", v + "\n"},
		} {
			t.Run(pasted.name+" "+tc.name, func(t *testing.T) {
				for _, path := range []string{writeTemp(t, tc.content), writeRaw(t, tc.content)} {
					_, lerr := apikey.LoadFile(path)
					_, serr := apikey.Seal(path, true)
					if lerr == nil && serr == nil {
						t.Fatalf("accepted:\n%s", tc.content)
					}
					for _, err := range []error{lerr, serr} {
						if err != nil && (strings.Contains(err.Error(), key) || strings.Contains(err.Error(), secret)) {
							t.Errorf("error carries the %s: %v", pasted.name, err)
						}
					}
				}
			})
		}
	}
}
