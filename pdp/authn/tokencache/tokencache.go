// Package tokencache remembers verified bearer tokens, so that a token seen
// before is not parsed and its signature not checked again on every request.
//
// It wraps the authenticator that verifies tokens (oidcjwt) and answers for
// it when it can:
//
//   - the key is the credential's canonical digest (credential.Secret.Digest:
//     the SHA-256 of the token, an ECDSA signature taken in its low-S form);
//     the raw token is never kept. Verifiers refuse non-canonical base64url,
//     so one token has one key, and equal keys mean equal verification
//     outcomes;
//   - only accepted tokens are kept; a rejection or an error is never cached,
//     so a token cannot be "stuck" rejected after a key rotation and a flood
//     of bad tokens cannot fill the cache;
//   - an entry never outlives the token's exp (plus the verifier's clock
//     skew) and is checked against the clock on every hit;
//   - an entry remembers the verifier's key epoch (see Epocher): when a key
//     set changes (a key left the JWKS), every entry verified before is
//     dropped on its next use and the token is verified again;
//   - the cache is bounded by entries and by bytes (see Config); when full,
//     the least useful entries are evicted (otter's S3-FIFO policy).
//
// Identities handed out from the cache are shared between requests and must
// be treated as read-only, as everywhere in the pipeline.
package tokencache

import (
	"context"
	"crypto/sha256"
	"errors"
	"time"

	"github.com/maypok86/otter/v2"
	"github.com/maypok86/otter/v2/stats"

	"github.com/tollgate/tollgate/pdp/authn"
	"github.com/tollgate/tollgate/pdp/credential"
)

// Defaults for Config's zero values: with them the cache holds at most
// 100,000 tokens and 256 MiB of (estimated) identity data, whichever comes
// first; an access token of nine claims weighs about 4 KiB, so the bytes
// bound is reached at about 68,000 such tokens. Size MaxBytes
// (limits.token_cache_bytes) for the number of live tokens you expect.
const (
	DefaultMaxEntries = 100_000
	DefaultMaxBytes   = 256 << 20
	// DefaultMaxTTL bounds how long an entry lives, whatever the token's exp.
	DefaultMaxTTL = 10 * time.Minute
)

// Epocher is implemented by a verifier whose trust can change while it runs
// (an OIDC key set that is refreshed). KeyEpoch changes whenever a key stops
// being trusted; entries verified under an older epoch are not used.
type Epocher interface {
	KeyEpoch() uint64
}

// Config configures the cache. The zero value gives the defaults.
type Config struct {
	// MaxEntries bounds the number of tokens kept.
	MaxEntries int
	// MaxBytes bounds the estimated memory of the kept identities.
	MaxBytes int64
	// MaxTTL bounds the life of an entry, whatever the token's exp.
	MaxTTL time.Duration
	// ClockSkew is the verifier's: an entry is kept until exp + ClockSkew,
	// as the verifier would accept the token until then.
	ClockSkew time.Duration
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Authenticator answers from the cache, and asks the wrapped verifier on a
// miss. It is safe for concurrent use.
type Authenticator struct {
	next   authn.Authenticator
	epoch  func() uint64
	cache  *otter.Cache[[sha256.Size]byte, entry]
	now    func() time.Time
	skew   time.Duration
	maxTTL time.Duration
	// stats counts hits (tokens answered here) and misses (tokens the
	// wrapped verifier verified), on otter's striped counter.
	stats *stats.Counter
}

var (
	_ authn.Authenticator = (*Authenticator)(nil)
	_ authn.Peeker        = (*Authenticator)(nil)
)

type entry struct {
	id        *authn.Identity
	expiresAt time.Time // exp + skew
	epoch     uint64
}

// New wraps next, which must verify bearer tokens. If next implements
// Epocher, a change of its key epoch invalidates what was cached before.
func New(next authn.Authenticator, cfg Config) (*Authenticator, error) {
	if next == nil {
		return nil, errors.New("tokencache: no authenticator to wrap")
	}
	if cfg.MaxEntries < 0 || cfg.MaxBytes < 0 || cfg.MaxTTL < 0 {
		return nil, errors.New("tokencache: limits must not be negative")
	}
	if cfg.MaxEntries == 0 {
		cfg.MaxEntries = DefaultMaxEntries
	}
	if cfg.MaxBytes == 0 {
		cfg.MaxBytes = DefaultMaxBytes
	}
	if cfg.MaxTTL == 0 {
		cfg.MaxTTL = DefaultMaxTTL
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	a := &Authenticator{next: next, now: cfg.Now, skew: cfg.ClockSkew, maxTTL: cfg.MaxTTL, epoch: func() uint64 { return 0 }, stats: stats.NewCounter()}
	if e, ok := next.(Epocher); ok {
		a.epoch = e.KeyEpoch
	}
	// One weight bounds both: each entry weighs at least MaxBytes/MaxEntries,
	// so the total weight (≤ MaxBytes) also caps the count at MaxEntries.
	floor := uint64(cfg.MaxBytes) / uint64(cfg.MaxEntries)
	if floor == 0 {
		floor = 1
	}
	cache, err := otter.New(&otter.Options[[sha256.Size]byte, entry]{
		MaximumWeight: uint64(cfg.MaxBytes),
		Weigher: func(_ [sha256.Size]byte, e entry) uint32 {
			return uint32(min(max(weight(e.id), floor), 1<<31))
		},
		ExpiryCalculator: otter.ExpiryCreatingFunc(func(e otter.Entry[[sha256.Size]byte, entry]) time.Duration {
			return min(e.Value.expiresAt.Sub(cfg.Now()), cfg.MaxTTL)
		}),
	})
	if err != nil {
		return nil, err
	}
	a.cache = cache
	return a, nil
}

// Authenticate implements authn.Authenticator. Bearer tokens are looked up
// first; anything else goes straight to the wrapped verifier.
func (a *Authenticator) Authenticate(ctx context.Context, cred credential.Credential) (authn.Outcome, error) {
	if cred.Type != credential.TypeBearer || cred.Secret.Empty() {
		return a.next.Authenticate(ctx, cred)
	}
	key := cred.Secret.Digest()
	epoch := a.epoch()
	if id, ok := a.lookup(key, epoch); ok {
		a.stats.RecordHits(1)
		return authn.Accept(id), nil
	}
	a.stats.RecordMisses(1)
	out, err := a.next.Authenticate(ctx, cred)
	if err != nil || out.Result != authn.Authenticated || out.Identity == nil || out.Identity.ExpiresAt.IsZero() {
		return out, err
	}
	exp := out.Identity.ExpiresAt.Add(a.skew)
	if ttl := exp.Sub(a.now()); ttl > 0 {
		a.cache.Set(key, entry{id: out.Identity, expiresAt: exp, epoch: epoch})
	}
	return out, nil
}

// Peek implements authn.Peeker: it answers a bearer token it holds; for
// other credentials it passes on what the wrapped verifier's Peek says.
func (a *Authenticator) Peek(cred credential.Credential) (authn.Outcome, bool) {
	if cred.Type != credential.TypeBearer || cred.Secret.Empty() {
		if p, ok := a.next.(authn.Peeker); ok {
			return p.Peek(cred) // e.g. "not a bearer token: not mine"
		}
		return authn.Outcome{}, false
	}
	if id, ok := a.lookup(cred.Secret.Digest(), a.epoch()); ok {
		a.stats.RecordHits(1)
		return authn.Accept(id), true
	}
	return authn.Outcome{}, false
}

// lookup returns the identity cached under key, if it was verified under
// the current key epoch and has not expired; a stale entry is dropped.
func (a *Authenticator) lookup(key [sha256.Size]byte, epoch uint64) (*authn.Identity, bool) {
	e, ok := a.cache.GetIfPresent(key)
	if !ok {
		return nil, false
	}
	if e.epoch == epoch && a.now().Before(e.expiresAt) {
		return e.id, true
	}
	a.cache.Invalidate(key)
	return nil, false
}

// Stats reports the bearer tokens answered from the cache (hits), those
// the wrapped verifier was asked to verify (misses), and the tokens kept.
func (a *Authenticator) Stats() (hits, misses uint64, entries int) {
	s := a.stats.Snapshot()
	return s.Hits, s.Misses, a.cache.EstimatedSize()
}

// Len is the number of tokens kept (an estimate while evictions run).
func (a *Authenticator) Len() int { return a.cache.EstimatedSize() }

// weight estimates the bytes an identity holds: its strings, its scopes and
// roles, and its claims (1.75 times when the verifier also keeps them as an
// AST value for the policy), with a fixed overhead per value.
func weight(id *authn.Identity) uint64 {
	// Calibrated against the heap (TestWeightFollowsTheHeap: identities the
	// verifier built from real tokens, 1.0–1.1× the heap they take): an
	// entry, its otter node, the identity and a Go map of claims cost about
	// 1 KiB before the claims themselves, and a claim about 128 bytes beyond
	// its key and value.
	const overhead = 128
	n := uint64(1024 + len(id.Subject) + len(id.Issuer) + len(id.KeyID))
	for _, s := range id.Scopes {
		n += overhead + uint64(len(s))
	}
	for _, s := range id.Roles {
		n += overhead + uint64(len(s))
	}
	var claims uint64
	for k, v := range id.Claims {
		claims += overhead + uint64(len(k)) + valueWeight(v)
	}
	if id.ClaimsValue != nil {
		claims = claims * 7 / 4 // the same claims again as the policy's AST value: about three quarters of the map
	}
	return n + claims
}

func valueWeight(v any) uint64 {
	const overhead = 32
	switch v := v.(type) {
	case string:
		return overhead + uint64(len(v))
	case []any:
		n := uint64(overhead)
		for _, x := range v {
			n += valueWeight(x)
		}
		return n
	case map[string]any:
		n := uint64(overhead)
		for k, x := range v {
			n += overhead + uint64(len(k)) + valueWeight(x)
		}
		return n
	default:
		return overhead
	}
}
