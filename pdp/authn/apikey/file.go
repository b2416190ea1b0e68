package apikey

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"time"

	"github.com/gofrs/flock"
	"go.yaml.in/yaml/v3"
)

// fileHeader opens every key file this package writes.
const fileHeader = "# Tollgate API keys: hashes only, never the keys themselves.\n" +
	"# Managed by `tollgate apikey`; rewriting the file does not keep comments.\n"

// keyFile is the YAML form of a key file.
type keyFile struct {
	Keys []fileRecord `yaml:"keys"`
}

type fileRecord struct {
	ID      string     `yaml:"id"`
	Hash    string     `yaml:"hash"`
	Owner   string     `yaml:"owner"`
	Scopes  []string   `yaml:"scopes,flow"`
	Created time.Time  `yaml:"created"`
	Expires *time.Time `yaml:"expires,omitempty"`
	Revoked *time.Time `yaml:"revoked,omitempty"`
}

// MaxFileBytes bounds the size of a key file: about 1,500,000 records of
// about 300 bytes (a store of a million keys takes about 450 MiB of memory).
const MaxFileBytes = 512 << 20

// lockWait bounds how long Add, Revoke and Seal wait for another writer of
// the same file to finish.
const lockWait = 30 * time.Second

// LoadFile reads, verifies and validates a key file. It has this form
// (YAML, then a seal line):
//
//	keys:
//	  - id: 4kq7m2xv7ab3
//	    hash: sha256:<64 lower-case hex digits>
//	    owner: billing-service
//	    scopes: [products:read]
//	    created: 2026-11-29T23:00:00Z
//	    expires: 2027-11-29T23:00:00Z   # optional
//	    revoked: 2026-12-01T00:00:00Z   # optional, set by Revoke
//	# tollgate-seal v1 records=1 sha256=<64 lower-case hex digits>
//
// The seal line is the file's last line, ending in a newline. Its digest is
// SHA-256 over the exact bytes before it, and records is the number of
// entries under keys. Add, Revoke and Seal write it; a file whose last line
// is not a seal (an empty file, a file cut short, a file from before seals)
// is refused with ErrNoSeal, and one whose seal does not match (a record
// edited, added or removed by hand, a cut seal line, a wrong count) with
// ErrBadSeal. The seal is a checksum against truncation and stray edits,
// not a signature: whoever may write the file may also reseal it.
//
// Decoding is strict: an unknown field, a second YAML document, an invalid
// record (ErrInvalidRecord) or a repeated id (ErrDuplicateID) is an error,
// and nothing is loaded. A file larger than MaxFileBytes is refused. Errors
// name the file and the record's index, never a key.
func LoadFile(path string) (*Store, error) {
	data, err := readFile(path)
	if err != nil {
		return nil, err
	}
	s, err := decodeSealed(data)
	if err != nil {
		return nil, fmt.Errorf("apikey: %s: %w", path, err)
	}
	return s, nil
}

// readFile reads at most MaxFileBytes of the file at path.
func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("apikey: %w", err)
	}
	defer func() { _ = f.Close() }()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("apikey: %w", err)
	}
	if len(data) > MaxFileBytes {
		return nil, fmt.Errorf("apikey: %s: larger than %d bytes", path, MaxFileBytes)
	}
	return data, nil
}

// decodeSealed verifies data's seal, then decodes the body it covers.
func decodeSealed(data []byte) (*Store, error) {
	body, n, err := unseal(data)
	if err != nil {
		return nil, err
	}
	s, err := decode(body)
	if err != nil {
		return nil, err
	}
	if s.Len() != n {
		return nil, fmt.Errorf("%w: the seal line says %d records, the file holds %d", ErrBadSeal, n, s.Len())
	}
	return s, nil
}

// decode parses and validates a key file's contents.
func decode(data []byte) (*Store, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var kf keyFile
	if err := dec.Decode(&kf); err != nil {
		if errors.Is(err, io.EOF) {
			return NewStore(nil)
		}
		return nil, redactYAMLError(err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, errors.New("more than one YAML document")
	}
	records := make([]Record, len(kf.Keys))
	for i, fr := range kf.Keys {
		records[i] = Record{
			ID:      fr.ID,
			Hash:    fr.Hash,
			Owner:   fr.Owner,
			Scopes:  fr.Scopes,
			Created: fr.Created,
		}
		if fr.Expires != nil {
			records[i].Expires = *fr.Expires
		}
		if fr.Revoked != nil {
			records[i].Revoked = *fr.Revoked
		}
	}
	return NewStore(records)
}

// secretLike matches a run of the characters keys are made of, long enough
// to be a key or its secret part (nothing in a valid key file's field names
// is that long).
var secretLike = regexp.MustCompile(`[A-Za-z0-9_-]{20,}`)

// redactYAMLError returns err's text with anything that could be a key
// replaced: the YAML decoder quotes unknown field names whole, and a key
// pasted into the file by mistake must not reach a log.
func redactYAMLError(err error) error {
	return errors.New(secretLike.ReplaceAllString(err.Error(), "[redacted]"))
}

// encode renders a store as a sealed key file.
func encode(s *Store) ([]byte, error) {
	kf := keyFile{Keys: make([]fileRecord, 0, s.Len())}
	for _, r := range s.records {
		fr := fileRecord{
			ID:      r.ID,
			Hash:    r.Hash,
			Owner:   r.Owner,
			Scopes:  r.Scopes,
			Created: r.Created.UTC(),
		}
		if fr.Scopes == nil {
			fr.Scopes = []string{}
		}
		if !r.Expires.IsZero() {
			t := r.Expires.UTC()
			fr.Expires = &t
		}
		if !r.Revoked.IsZero() {
			t := r.Revoked.UTC()
			fr.Revoked = &t
		}
		kf.Keys = append(kf.Keys, fr)
	}
	var buf bytes.Buffer
	buf.WriteString(fileHeader)
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&kf); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return seal(buf.Bytes(), len(kf.Keys)), nil
}

// Add appends rec to the key file at path, creating the file when it does
// not exist, and rewrites it sealed and atomically (see Revoke). rec
// carries the key's hash, never the key: build it from Generate's ID and
// Hash. It returns ErrInvalidRecord for an invalid record, ErrDuplicateID
// when the id is already in the file, and ErrNoSeal or ErrBadSeal, leaving
// the file untouched, when the existing file does not verify (see
// LoadFile): a change is never built on a file that may be cut short.
func Add(path string, rec Record) error {
	unlock, err := lockFile(path)
	if err != nil {
		return err
	}
	defer unlock()
	current, err := loadForUpdate(path)
	if err != nil {
		return err
	}
	if _, dup := current.Get(rec.ID); dup {
		return fmt.Errorf("apikey: %s: %w %q", path, ErrDuplicateID, rec.ID)
	}
	next, err := NewStore(append(current.Records(), rec))
	if err != nil {
		return fmt.Errorf("apikey: %s: %w", path, err)
	}
	return writeFile(path, next)
}

// Revoke marks the key with the given id revoked at the time at and
// rewrites the file sealed and atomically: a temporary file in the same
// directory, mode 0600, fsynced, then renamed over the old one, so a reader
// sees either the old file or the new one, never a part of either. It
// returns the updated record, ErrUnknownID when no record has that id, and
// ErrAlreadyRevoked (with the record, its original revocation time kept and
// the file untouched) when it is already revoked. A file that does not
// verify is refused as in Add.
//
// Add, Revoke and Seal hold an exclusive lock (flock(2)) on a sidecar file,
// path + ".lock", from reading the file to renaming the new one into place,
// so concurrent changes from any number of processes are all kept. They
// wait at most 30 seconds for the lock. The lock file is left in place.
func Revoke(path, id string, at time.Time) (Record, error) {
	if at.IsZero() {
		return Record{}, errors.New("apikey: revoke: zero revocation time")
	}
	unlock, err := lockFile(path)
	if err != nil {
		return Record{}, err
	}
	defer unlock()
	current, err := LoadFile(path)
	if err != nil {
		return Record{}, err
	}
	rec, ok := current.Get(id)
	if !ok {
		return Record{}, fmt.Errorf("apikey: %s: %w %q", path, ErrUnknownID, id)
	}
	if !rec.Revoked.IsZero() {
		return rec, fmt.Errorf("apikey: %s: %w %q", path, ErrAlreadyRevoked, id)
	}
	rec.Revoked = at.UTC().Truncate(time.Second)
	records := current.Records()
	records[current.byID[id].index] = rec
	next, err := NewStore(records)
	if err != nil {
		return Record{}, fmt.Errorf("apikey: %s: %w", path, err)
	}
	if err := writeFile(path, next); err != nil {
		return Record{}, err
	}
	return rec, nil
}

// SealResult is what Seal found and did.
type SealResult struct {
	// Store holds the file's records: the ones sealed, or with DryRun the
	// ones that would be.
	Store *Store
	// Problem is why the file did not verify (it wraps ErrNoSeal or
	// ErrBadSeal); nil when it was already sealed and matched its seal.
	Problem error
	// Written reports that the file was rewritten with a seal.
	Written bool
}

// Seal is the migration path for key files without a seal (written by a
// Tollgate from before seals, or edited by hand). It reads the file at path
// without requiring a seal, decodes and validates it as strictly as
// LoadFile, and, unless dryRun is set or the file already verifies,
// rewrites it sealed, atomically and under the lock (see Revoke). The file
// is re-encoded: comments are not kept. Sealing accepts the records as they
// are, so check them (SealResult.Store) first: a file cut short seals as
// cut. An invalid file is refused and left untouched.
func Seal(path string, dryRun bool) (SealResult, error) {
	unlock, err := lockFile(path)
	if err != nil {
		return SealResult{}, err
	}
	defer unlock()
	data, err := readFile(path)
	if err != nil {
		return SealResult{}, err
	}
	s, problem := decodeSealed(data)
	if problem == nil {
		return SealResult{Store: s}, nil
	}
	if !errors.Is(problem, ErrNoSeal) && !errors.Is(problem, ErrBadSeal) {
		return SealResult{}, fmt.Errorf("apikey: %s: %w", path, problem)
	}
	// The YAML decoder skips an old seal line: it is a comment.
	if s, err = decode(data); err != nil {
		return SealResult{}, fmt.Errorf("apikey: %s: %w", path, err)
	}
	res := SealResult{Store: s, Problem: problem}
	if dryRun {
		return res, nil
	}
	if err := writeFile(path, s); err != nil {
		return SealResult{}, err
	}
	res.Written = true
	return res, nil
}

// loadForUpdate loads the file at path, or an empty store if it does not
// exist.
func loadForUpdate(path string) (*Store, error) {
	s, err := LoadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return NewStore(nil)
	}
	return s, err
}

// resolve returns the file path names: the target of a symbolic link, or
// path itself.
func resolve(path string) string {
	if resolved, err := filepath.EvalSymlinks(path); err == nil {
		return resolved
	}
	return path
}

// lockFile takes the exclusive lock that serialises the writers of the key
// file at path, waiting at most lockWait, and returns its release.
func lockFile(path string) (unlock func(), err error) {
	lk := flock.New(resolve(path)+".lock", flock.SetFlag(os.O_CREATE|os.O_RDWR), flock.SetPermissions(0o600))
	ctx, cancel := context.WithTimeout(context.Background(), lockWait)
	defer cancel()
	ok, err := lk.TryLockContext(ctx, 20*time.Millisecond)
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return nil, fmt.Errorf("apikey: %s: lock: %w", path, err)
	}
	if !ok {
		return nil, fmt.Errorf("apikey: %s: another command has held the lock %s for %s", path, lk.Path(), lockWait)
	}
	return func() { _ = lk.Close() }, nil
}

// writeFile replaces the file at path with s, sealed, atomically. When path
// is a symbolic link, the file it points to is replaced and the link kept.
func writeFile(path string, s *Store) (err error) {
	data, err := encode(s)
	if err != nil {
		return fmt.Errorf("apikey: encode %s: %w", path, err)
	}
	target := resolve(path)
	dir := filepath.Dir(target)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(target)+".tmp-*")
	if err != nil {
		return fmt.Errorf("apikey: write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	if err = tmp.Chmod(0o600); err != nil {
		return fmt.Errorf("apikey: write %s: %w", path, err)
	}
	if _, err = tmp.Write(data); err != nil {
		return fmt.Errorf("apikey: write %s: %w", path, err)
	}
	if err = tmp.Sync(); err != nil {
		return fmt.Errorf("apikey: write %s: %w", path, err)
	}
	if err = tmp.Close(); err != nil {
		return fmt.Errorf("apikey: write %s: %w", path, err)
	}
	if err = os.Rename(tmp.Name(), target); err != nil {
		return fmt.Errorf("apikey: write %s: %w", path, err)
	}
	// Make the rename itself durable. Some platforms cannot sync a
	// directory; the file is in place either way, so that is not an error.
	if d, derr := os.Open(dir); derr == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}
