package apikey

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"sync/atomic"
	"time"

	"github.com/tollgate/tollgate/pdp/authn"
	"github.com/tollgate/tollgate/pdp/credential"
)

// Options configures an Authenticator. The zero value is all defaults.
type Options struct {
	// Now returns the current time, for expiry checks. Default time.Now.
	Now func() time.Time
}

// Authenticator verifies API keys against a Store. Create it with New or
// NewFromFile (a zero Authenticator rejects every key). It is safe for
// concurrent use; SetStore and Reload swap the whole store atomically, so an
// Authenticate call sees either the old store or the new one, never a mix.
type Authenticator struct {
	now   func() time.Time
	store atomic.Pointer[Store]
}

// New returns an Authenticator over store. A nil store is an empty one:
// every key is rejected.
func New(store *Store, opts Options) *Authenticator {
	a := &Authenticator{now: opts.Now}
	if a.now == nil {
		a.now = time.Now
	}
	a.SetStore(store)
	return a
}

// NewFromFile loads the key file at path (see LoadFile) and returns an
// Authenticator over it.
func NewFromFile(path string, opts Options) (*Authenticator, error) {
	s, err := LoadFile(path)
	if err != nil {
		return nil, err
	}
	return New(s, opts), nil
}

// SetStore replaces the store. A nil store is an empty one.
func (a *Authenticator) SetStore(s *Store) {
	if s == nil {
		s = &Store{}
	}
	a.store.Store(s)
}

func (a *Authenticator) clock() time.Time {
	if a.now == nil {
		return time.Now()
	}
	return a.now()
}

// Store returns the current store.
func (a *Authenticator) Store() *Store { return a.store.Load() }

// Reload loads the key file at path and, only if it is valid, swaps it in.
// On error the current store stays active.
func (a *Authenticator) Reload(path string) error {
	s, err := LoadFile(path)
	if err != nil {
		return err
	}
	a.SetStore(s)
	return nil
}

// Authenticate implements authn.Authenticator. It is NotApplicable unless
// cred.Type is credential.TypeAPIKey. A credential the credential stage
// already marked unusable (cred.Problem) is rejected with that problem as
// the reason. Otherwise see the package documentation for the checks and
// their reasons. It never returns an error: with the store in memory there
// is nothing that can break.
func (a *Authenticator) Authenticate(_ context.Context, cred credential.Credential) (authn.Outcome, error) {
	if cred.Type != credential.TypeAPIKey {
		return authn.Outcome{Result: authn.NotApplicable}, nil
	}
	if cred.Problem != "" {
		return authn.Reject(cred.Problem), nil
	}
	key := cred.Secret.Reveal()
	if len(key) > MaxPresentedLen {
		return authn.Reject(authn.ReasonTooLarge), nil
	}
	id, ok := parseKey(key)
	if !ok {
		return authn.Reject(authn.ReasonMalformed), nil
	}

	s := a.store.Load()
	if s == nil { // a zero Authenticator: no keys
		s = &Store{}
	}
	e, known := s.byID[id]
	// Compare against a digest no key hashes to when the id is unknown, so
	// an unknown id costs the same as a wrong secret.
	var want [sha256.Size]byte
	if known {
		want = e.digest
	}
	var buf [KeyLen]byte // parseKey checked the length; a stack copy avoids an allocation
	copy(buf[:], key)
	got := sha256.Sum256(buf[:])
	clear(buf[:])
	match := subtle.ConstantTimeCompare(got[:], want[:]) == 1
	if !known || !match {
		return authn.Reject(authn.ReasonInvalid), nil
	}

	rec := &s.records[e.index]
	if !rec.Revoked.IsZero() {
		return authn.Reject(authn.ReasonRevoked), nil
	}
	if !rec.Expires.IsZero() && a.clock().After(rec.Expires) {
		return authn.Reject(authn.ReasonExpired), nil
	}
	return authn.Accept(s.identity(e.index)), nil
}

// Peek implements authn.Peeker: the key store is in memory, so every
// credential is answered at once, exactly as Authenticate answers it.
func (a *Authenticator) Peek(cred credential.Credential) (authn.Outcome, bool) {
	out, err := a.Authenticate(context.Background(), cred)
	return out, err == nil
}

var (
	_ authn.Authenticator = (*Authenticator)(nil)
	_ authn.Peeker        = (*Authenticator)(nil)
)
