// Package lifecycle keeps one named policy bundle's life: which revision is
// active, the history of revisions that were, the last refusal, and
// pinning. Sources (package bundles/source) offer it candidates; the admin
// API rolls it back and forth.
//
// A candidate takes effect only if it was read and verified by its source
// and then compiled and checked by the engine (policy.Engine.Activate); a
// candidate that fails any step never does: the previous revision keeps
// answering, and the refusal is logged, counted and kept as LastError.
package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/opa/v1/bundle"

	"github.com/tollgate/tollgate/bundles"
)

// DefaultHistory is how many activated revisions are kept when
// Options.History is zero.
const DefaultHistory = 10

// MaxHistory bounds Options.History.
const MaxHistory = 1000

// ErrUnknownRevision: the revision is not in the bundle's history.
var ErrUnknownRevision = errors.New("unknown revision")

// Engine is what activates a bundle: policy.Engine. Activate must leave the
// previous bundle active when it returns an error.
type Engine interface {
	Activate(ctx context.Context, b *bundle.Bundle) error
}

// Candidate is a bundle a source read and verified.
type Candidate struct {
	// Bundle is the parsed bundle. Required.
	Bundle *bundle.Bundle
	// Raw is the bundle tarball as received; when nil, it is written from
	// Bundle (bundles.WriteTarball) for history.
	Raw []byte
	// Source says where it came from: "embedded", "dir:./policies",
	// "file:/x.tar.gz", "service policy-server: bundles/orders.tar.gz".
	Source string
}

// Entry is one revision in a bundle's history.
type Entry struct {
	Revision    string    `json:"revision"`
	Digest      string    `json:"digest"`
	Source      string    `json:"source"`
	ActivatedAt time.Time `json:"activated_at"`
}

// Failure is the last candidate that was refused.
type Failure struct {
	Revision string    `json:"revision"`
	Error    string    `json:"error"`
	At       time.Time `json:"at"`
}

// Status is a bundle's state, as GET /v1/bundles shows it.
type Status struct {
	Active    *Entry   `json:"active"`
	Pinned    bool     `json:"pinned"`
	History   []Entry  `json:"history"`
	LastError *Failure `json:"last_error"`
	// CheckedAt is when the source last confirmed what is active (a
	// download, a "not modified", a reload), for max_bundle_age.
	CheckedAt time.Time `json:"checked_at"`
}

// Options configure a Bundle. Name and Engine are required.
type Options struct {
	// Name is the bundle's name (the key under `bundles`, "tollgate" by
	// default).
	Name string
	// Engine activates revisions.
	Engine Engine
	// History is how many revisions are kept (DefaultHistory when zero).
	History int
	// Dir, when set, persists the history there (one tarball per revision
	// and a state file), so that a restart comes up on the last good
	// revision even while the source is unreachable.
	Dir string
	// Verification, when set, is checked again on every tarball read back
	// from Dir: a persisted file that was changed is refused like a
	// downloaded one.
	Verification *bundle.VerificationConfig
	// Metrics, when set, counts activations and refusals and exports the
	// active revision (see NewMetrics).
	Metrics *Metrics
	// Logger receives activations and refusals; nil discards them.
	Logger *slog.Logger
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// record is one kept revision.
type record struct {
	Entry
	raw []byte
	b   *bundle.Bundle
}

// Bundle is one named bundle's life cycle. It is safe for concurrent use;
// its methods are serialized, so activations happen in the order they are
// made.
type Bundle struct {
	opts Options
	log  *slog.Logger
	now  func() time.Time

	mu        sync.Mutex
	active    *record
	latest    *record   // the newest valid candidate from the source
	history   []*record // activated revisions, newest first, unique by digest
	pinned    bool
	lastErr   *Failure
	checkedAt time.Time
	// checked mirrors checkedAt (unix nanoseconds, 0 when nothing is
	// active) for CheckedAt, which is read on every decision.
	checked atomic.Int64
}

// New validates opts and returns a Bundle with nothing active. It does
// not read Dir: call Restore for that.
func New(opts Options) (*Bundle, error) {
	if opts.Name == "" {
		return nil, errors.New("lifecycle: Name is required")
	}
	if opts.Engine == nil {
		return nil, errors.New("lifecycle: Engine is required")
	}
	switch {
	case opts.History == 0:
		opts.History = DefaultHistory
	case opts.History < 1 || opts.History > MaxHistory:
		return nil, fmt.Errorf("lifecycle: History %d: want 1 to %d", opts.History, MaxHistory)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	return &Bundle{opts: opts, log: log.With("bundle", opts.Name), now: now}, nil
}

// Name is the bundle's name.
func (m *Bundle) Name() string { return m.opts.Name }

// Offer is how a source hands over a new candidate. Unless the bundle is
// pinned, the candidate is activated; when it is refused, the error is
// returned (and recorded as LastError) and the active revision stays.
// While pinned, a candidate is kept as the source's latest but not
// activated (Unpin activates it).
func (m *Bundle) Offer(ctx context.Context, c Candidate) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if c.Bundle == nil {
		return errors.New("lifecycle: offer without a bundle")
	}
	rec, err := newRecord(c)
	if err != nil {
		m.refuse(ctx, c.Bundle.Manifest.Revision, c.Source, err)
		return err
	}
	m.setChecked(m.now())
	m.disambiguate(ctx, rec)
	if m.pinned {
		m.latest = rec
		m.log.LogAttrs(ctx, slog.LevelInfo, "policy bundle received while pinned; not activated",
			slog.String("revision", rec.Revision), slog.String("digest", rec.Digest), slog.String("source", rec.Source),
			slog.String("pinned_revision", m.activeRevision()))
		return nil
	}
	if m.active != nil && m.active.Digest == rec.Digest {
		m.latest = m.active
		return nil // the same bytes again (a reload that changed nothing)
	}
	if err := m.activate(ctx, rec); err != nil {
		return err
	}
	m.latest = m.active
	return nil
}

// Refuse records a candidate its source could not read or verify (a bad
// signature, a broken tarball): logged, counted and shown as LastError.
// revision may be empty when it could not be read.
func (m *Bundle) Refuse(ctx context.Context, revision, source string, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.refuse(ctx, revision, source, err)
}

// Confirm records that the source confirmed the active revision (a
// download that found nothing new).
func (m *Bundle) Confirm() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.active != nil {
		m.setChecked(m.now())
	}
}

// ActivateRevision activates revision from the history and pins it: the
// source's candidates are still received and verified, but not activated,
// until Unpin. It wraps ErrUnknownRevision when the history has no such
// revision.
func (m *Bundle) ActivateRevision(ctx context.Context, revision string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	i := slices.IndexFunc(m.history, func(r *record) bool { return r.Revision == revision })
	if i < 0 {
		return fmt.Errorf("bundle %s: %w %q", m.opts.Name, ErrUnknownRevision, revision)
	}
	rec := m.history[i]
	if m.active != rec {
		if err := m.activate(ctx, rec); err != nil {
			return err
		}
	}
	m.pinned = true
	m.save(ctx)
	m.log.LogAttrs(ctx, slog.LevelWarn, "policy bundle pinned", slog.String("revision", rec.Revision), slog.String("digest", rec.Digest))
	return nil
}

// Unpin makes the bundle follow its source again: the source's newest
// valid candidate becomes active.
func (m *Bundle) Unpin(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.pinned = false
	if m.latest != nil && m.latest != m.active {
		if err := m.activate(ctx, m.latest); err != nil {
			m.save(ctx)
			return err
		}
	}
	m.save(ctx)
	m.log.LogAttrs(ctx, slog.LevelInfo, "policy bundle unpinned", slog.String("revision", m.activeRevision()))
	return nil
}

// Status returns the bundle's state.
func (m *Bundle) Status() Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := Status{Pinned: m.pinned, History: make([]Entry, 0, len(m.history)), CheckedAt: m.checkedAt}
	if m.active != nil {
		e := m.active.Entry
		s.Active = &e
	}
	for _, r := range m.history {
		s.History = append(s.History, r.Entry)
	}
	if m.lastErr != nil {
		f := *m.lastErr
		s.LastError = &f
	}
	return s
}

// CheckedAt is when the source last confirmed the active revision (see
// Status.CheckedAt), and false when none is active. It takes no lock.
func (m *Bundle) CheckedAt() (time.Time, bool) {
	n := m.checked.Load()
	if n == 0 {
		return time.Time{}, false
	}
	return time.Unix(0, n), true
}

// setChecked records a confirmation. Callers hold m.mu.
func (m *Bundle) setChecked(t time.Time) {
	m.checkedAt = t
	m.checked.Store(t.UnixNano())
}

// Ready reports whether a revision is active.
func (m *Bundle) Ready() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.active != nil
}

// activate hands rec to the engine and, when it takes it, makes it active
// and first in history. Callers hold m.mu.
func (m *Bundle) activate(ctx context.Context, rec *record) error {
	if err := m.opts.Engine.Activate(ctx, rec.b); err != nil {
		m.refuse(ctx, rec.Revision, rec.Source, err)
		return err
	}
	prev := m.activeRevision()
	rec.ActivatedAt = m.now()
	m.active = rec
	m.setChecked(rec.ActivatedAt)
	m.history = slices.DeleteFunc(m.history, func(r *record) bool { return r.Digest == rec.Digest })
	m.history = slices.Insert(m.history, 0, rec)
	if len(m.history) > m.opts.History {
		m.history = m.history[:m.opts.History]
	}
	m.opts.Metrics.activated(m.opts.Name, prev, rec.Revision)
	m.log.LogAttrs(ctx, slog.LevelInfo, "policy bundle activated",
		slog.String("revision", rec.Revision), slog.String("digest", rec.Digest), slog.String("source", rec.Source),
		slog.String("previous_revision", prev))
	m.save(ctx)
	return nil
}

// disambiguate renames rec when another content already has its revision
// (a directory edited without changing its .manifest, a server that
// republished a revision): "REV+<12 hex digits of the digest>", so that
// every revision names one content and every decision the content that
// made it. Callers hold m.mu.
func (m *Bundle) disambiguate(ctx context.Context, rec *record) {
	clash := func(r *record) bool { return r != nil && r.Revision == rec.Revision && r.Digest != rec.Digest }
	if !clash(m.active) && !clash(m.latest) && !slices.ContainsFunc(m.history, clash) {
		return
	}
	for _, r := range m.history {
		if r.Digest == rec.Digest {
			rec.Revision = r.Revision // this content was seen before: same name
			rec.b.Manifest.Revision = r.Revision
			return
		}
	}
	orig := rec.Revision
	rec.Revision = orig + "+" + strings.TrimPrefix(rec.Digest, "sha256:")[:12]
	rec.b.Manifest.Revision = rec.Revision
	m.log.LogAttrs(ctx, slog.LevelWarn, "policy bundle revision already names other content; renamed",
		slog.String("revision", orig), slog.String("renamed", rec.Revision), slog.String("digest", rec.Digest))
}

// refuse records a refusal. Callers hold m.mu.
func (m *Bundle) refuse(ctx context.Context, revision, source string, err error) {
	m.lastErr = &Failure{Revision: revision, Error: err.Error(), At: m.now()}
	m.opts.Metrics.refused(m.opts.Name)
	m.log.LogAttrs(ctx, slog.LevelError, "policy bundle refused; the active revision keeps answering",
		slog.String("revision", revision), slog.String("source", source),
		slog.String("active_revision", m.activeRevision()), slog.Any("error", err))
}

func (m *Bundle) activeRevision() string {
	if m.active == nil {
		return ""
	}
	return m.active.Revision
}

// newRecord fills in a candidate's raw bytes, digest and revision.
func newRecord(c Candidate) (*record, error) {
	raw := c.Raw
	if raw == nil {
		var err error
		if raw, err = bundles.WriteTarball(c.Bundle); err != nil {
			return nil, err
		}
	}
	return &record{
		Entry: Entry{Revision: c.Bundle.Manifest.Revision, Digest: bundles.Digest(raw), Source: c.Source},
		raw:   raw,
		b:     c.Bundle,
	}, nil
}
