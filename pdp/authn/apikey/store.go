package apikey

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"
	"unicode"

	"github.com/tollgate/tollgate/pdp/authn"
)

// Errors about key records and key files. Match them with errors.Is.
var (
	// ErrInvalidRecord reports a record that fails validation.
	ErrInvalidRecord = errors.New("invalid key record")
	// ErrDuplicateID reports two records with the same id.
	ErrDuplicateID = errors.New("duplicate key id")
	// ErrUnknownID reports an id that no record has.
	ErrUnknownID = errors.New("unknown key id")
	// ErrAlreadyRevoked reports a Revoke of a key that is already revoked.
	ErrAlreadyRevoked = errors.New("key already revoked")
)

// Record is one key as the key file describes it: its id and hash, never
// the key itself.
type Record struct {
	ID      string
	Hash    string // "sha256:" + 64 lower-case hex digits
	Owner   string // becomes Identity.Subject
	Scopes  []string
	Created time.Time
	Expires time.Time // zero: never expires
	Revoked time.Time // zero: not revoked
}

// Validate checks a record's fields. Errors wrap ErrInvalidRecord.
func (r Record) Validate() error {
	if !ValidID(r.ID) {
		return fmt.Errorf("%w: id must be %d characters of a-z and 2-7", ErrInvalidRecord, IDLen)
	}
	if _, ok := parseHash(r.Hash); !ok {
		return fmt.Errorf("%w: hash must be %q followed by 64 lower-case hex digits", ErrInvalidRecord, HashPrefix)
	}
	if err := validateOwner(r.Owner); err != nil {
		return err
	}
	for i, s := range r.Scopes {
		if err := validateScope(i, s); err != nil {
			return err
		}
	}
	if r.Created.IsZero() {
		return fmt.Errorf("%w: created is missing", ErrInvalidRecord)
	}
	if !r.Expires.IsZero() && !r.Expires.After(r.Created) {
		return fmt.Errorf("%w: expires must be after created", ErrInvalidRecord)
	}
	return nil
}

// validateOwner accepts a non-empty name without surrounding spaces or
// control characters: it becomes the identity's subject and may end up in
// an upstream header.
func validateOwner(owner string) error {
	if owner == "" {
		return fmt.Errorf("%w: owner is empty", ErrInvalidRecord)
	}
	if strings.TrimSpace(owner) != owner {
		return fmt.Errorf("%w: owner has leading or trailing spaces", ErrInvalidRecord)
	}
	if strings.ContainsFunc(owner, unicode.IsControl) {
		return fmt.Errorf("%w: owner contains control characters", ErrInvalidRecord)
	}
	return nil
}

// validateScope accepts a non-empty scope without spaces, commas or control
// characters (OAuth scope tokens are space separated; the CLI splits on
// commas). Its errors name the scope by index, never quote it: a key pasted
// by mistake must not reach a log.
func validateScope(i int, s string) error {
	if s == "" {
		return fmt.Errorf("%w: scopes[%d] is empty", ErrInvalidRecord, i)
	}
	if strings.ContainsFunc(s, func(r rune) bool { return r == ',' || unicode.IsSpace(r) || unicode.IsControl(r) }) {
		return fmt.Errorf("%w: scopes[%d] contains a space, comma or control character", ErrInvalidRecord, i)
	}
	return nil
}

// clone returns a copy of r sharing no memory with it.
func (r Record) clone() Record {
	r.Scopes = slices.Clone(r.Scopes)
	return r
}

// Store is an immutable, validated set of key records. It is safe for
// concurrent use. To change keys, build or load a new Store and swap it in
// (Authenticator.SetStore, Authenticator.Reload); a Store is never edited.
type Store struct {
	records []Record // in file order
	byID    map[string]entry
	// ids are the identities of records, built on a record's first
	// successful use and shared read-only after that (8 bytes per record
	// until then).
	ids []atomic.Pointer[authn.Identity]
}

// entry is what verification needs, precomputed at load.
type entry struct {
	index  int
	digest [sha256.Size]byte
}

// NewStore validates records and builds a store from copies of them.
// Duplicate ids are an error (ErrDuplicateID); so is any invalid record
// (ErrInvalidRecord). A nil or empty slice gives an empty store, which
// rejects every key.
func NewStore(records []Record) (*Store, error) {
	s := &Store{
		records: make([]Record, 0, len(records)),
		byID:    make(map[string]entry, len(records)),
	}
	for i, r := range records {
		if err := r.Validate(); err != nil {
			return nil, fmt.Errorf("keys[%d]: %w", i, err)
		}
		if _, dup := s.byID[r.ID]; dup {
			return nil, fmt.Errorf("keys[%d]: %w %q", i, ErrDuplicateID, r.ID)
		}
		digest, _ := parseHash(r.Hash) // Validate checked it
		s.byID[r.ID] = entry{index: len(s.records), digest: digest}
		s.records = append(s.records, r.clone())
	}
	s.ids = make([]atomic.Pointer[authn.Identity], len(s.records))
	return s, nil
}

// identity is the identity of record i, built once.
func (s *Store) identity(i int) *authn.Identity {
	if id := s.ids[i].Load(); id != nil {
		return id
	}
	rec := &s.records[i]
	id := &authn.Identity{
		Kind:    authn.KindService,
		Subject: rec.Owner,
		KeyID:   rec.ID,
		Scopes:  slices.Clone(rec.Scopes),
	}
	s.ids[i].CompareAndSwap(nil, id)
	return s.ids[i].Load()
}

// Len returns the number of records, revoked and expired ones included.
func (s *Store) Len() int {
	if s == nil {
		return 0
	}
	return len(s.records)
}

// Records returns copies of all records in file order.
func (s *Store) Records() []Record {
	if s == nil {
		return nil
	}
	out := make([]Record, len(s.records))
	for i, r := range s.records {
		out[i] = r.clone()
	}
	return out
}

// Get returns a copy of the record with the given id.
func (s *Store) Get(id string) (Record, bool) {
	if s == nil {
		return Record{}, false
	}
	e, ok := s.byID[id]
	if !ok {
		return Record{}, false
	}
	return s.records[e.index].clone(), true
}
