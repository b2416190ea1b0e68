package apikey

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

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

// LoadFile reads and validates a key file. It has this form (YAML):
//
//	keys:
//	  - id: 4kq7m2xv7ab3
//	    hash: sha256:<64 lower-case hex digits>
//	    owner: billing-service
//	    scopes: [products:read]
//	    created: 2026-11-29T23:00:00Z
//	    expires: 2027-11-29T23:00:00Z   # optional
//	    revoked: 2026-12-01T00:00:00Z   # optional, set by Revoke
//
// Decoding is strict: an unknown field, a second YAML document, an invalid
// record (ErrInvalidRecord) or a repeated id (ErrDuplicateID) is an error,
// and nothing is loaded. An empty file is an empty store. Errors name the
// file and the record's index, never a key.
func LoadFile(path string) (*Store, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("apikey: %w", err)
	}
	s, err := decode(data)
	if err != nil {
		return nil, fmt.Errorf("apikey: %s: %w", path, err)
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
		return nil, err
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

// encode renders a store as a key file.
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
	return buf.Bytes(), nil
}

// Add appends rec to the key file at path, creating the file when it does
// not exist, and rewrites it atomically (see Revoke). rec carries the key's
// hash, never the key: build it from Generate's ID and Hash. It returns
// ErrInvalidRecord for an invalid record and ErrDuplicateID when the id is
// already in the file.
//
// Add and Revoke do not lock the file: two processes editing the same file
// at once can lose one change (the last rename wins).
func Add(path string, rec Record) error {
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
// rewrites the file atomically: a temporary file in the same directory, mode
// 0600, fsynced, then renamed over the old one, so a reader sees either the
// old file or the new one. It returns the updated record, ErrUnknownID when
// no record has that id, and ErrAlreadyRevoked (with the record, its
// original revocation time kept and the file untouched) when it is already
// revoked.
func Revoke(path, id string, at time.Time) (Record, error) {
	if at.IsZero() {
		return Record{}, errors.New("apikey: revoke: zero revocation time")
	}
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

// loadForUpdate loads the file at path, or an empty store if it does not
// exist.
func loadForUpdate(path string) (*Store, error) {
	s, err := LoadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return NewStore(nil)
	}
	return s, err
}

// writeFile replaces the file at path with s atomically. When path is a
// symbolic link, the file it points to is replaced and the link kept.
func writeFile(path string, s *Store) (err error) {
	data, err := encode(s)
	if err != nil {
		return fmt.Errorf("apikey: encode %s: %w", path, err)
	}
	target := path
	if resolved, rerr := filepath.EvalSymlinks(path); rerr == nil {
		target = resolved
	}
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
