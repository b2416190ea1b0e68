package lifecycle

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/tollgate/tollgate/bundles"
)

// stateFile is the persisted state in Options.Dir, beside one
// "<digest hex>.tar.gz" per revision in history.
const stateFile = "state.json"

// maxStateBytes bounds the state file read back.
const maxStateBytes = 1 << 20

// state is what stateFile holds.
type state struct {
	Active  string  `json:"active"` // digest
	Pinned  bool    `json:"pinned"`
	History []Entry `json:"history"`
}

// tarballName is the file of a revision with digest d.
func tarballName(d string) string {
	return strings.TrimPrefix(d, "sha256:") + ".tar.gz"
}

// save writes the history to Options.Dir, if set: new tarballs first, then
// the state file (atomically), then tarballs no longer in history are
// removed. A failure is logged, never returned: persistence must not stop
// a good revision from answering. Callers hold m.mu.
func (m *Bundle) save(ctx context.Context) {
	if m.opts.Dir == "" {
		return
	}
	if err := m.write(); err != nil {
		m.log.LogAttrs(ctx, slog.LevelError, "policy bundle history not persisted", slog.String("dir", m.opts.Dir), slog.Any("error", err))
	}
}

func (m *Bundle) write() error {
	if err := os.MkdirAll(m.opts.Dir, 0o700); err != nil {
		return err
	}
	st := state{Pinned: m.pinned, History: make([]Entry, 0, len(m.history))}
	if m.active != nil {
		st.Active = m.active.Digest
	}
	keep := map[string]bool{}
	for _, r := range m.history {
		name := tarballName(r.Digest)
		keep[name] = true
		st.History = append(st.History, r.Entry)
		path := filepath.Join(m.opts.Dir, name)
		if _, err := os.Stat(path); err == nil {
			continue
		}
		if err := writeAtomic(path, r.raw); err != nil {
			return err
		}
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	if err := writeAtomic(filepath.Join(m.opts.Dir, stateFile), b); err != nil {
		return err
	}
	entries, err := os.ReadDir(m.opts.Dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".tar.gz") && !keep[e.Name()] {
			_ = os.Remove(filepath.Join(m.opts.Dir, e.Name()))
		}
	}
	return nil
}

// writeAtomic writes data to a temporary file beside path and renames it.
func writeAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// Restore reads the history persisted in Options.Dir and activates the
// revision that was active (pinned again if it was pinned). Every tarball is
// read as a downloaded one would be (signature checked again when
// Options.Verification is set); entries that no longer read are dropped and
// logged. It reports whether a revision was activated. Without Options.Dir,
// or with nothing persisted, it does nothing.
func (m *Bundle) Restore(ctx context.Context) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.opts.Dir == "" {
		return false, nil
	}
	f, err := os.Open(filepath.Join(m.opts.Dir, stateFile))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("bundle %s: restore: %w", m.opts.Name, err)
	}
	defer f.Close()
	var st state
	dec := json.NewDecoder(io.LimitReader(f, maxStateBytes))
	if err := dec.Decode(&st); err != nil {
		return false, fmt.Errorf("bundle %s: restore: %s: %w", m.opts.Name, stateFile, err)
	}
	var active *record
	for _, e := range st.History {
		if len(m.history) >= m.opts.History {
			break
		}
		path := filepath.Join(m.opts.Dir, tarballName(e.Digest))
		b, raw, err := bundles.ReadTarballFile(path, bundles.ReadOptions{Verification: m.opts.Verification})
		if err == nil && bundles.Digest(raw) != e.Digest {
			err = fmt.Errorf("digest %s, want %s", bundles.Digest(raw), e.Digest)
		}
		if err != nil {
			m.log.LogAttrs(ctx, slog.LevelWarn, "persisted policy bundle dropped", slog.String("revision", e.Revision), slog.Any("error", err))
			continue
		}
		b.Manifest.Revision = e.Revision // as it was named (see disambiguate)
		r := &record{Entry: e, raw: raw, b: b}
		m.history = append(m.history, r)
		if e.Digest == st.Active {
			active = r
		}
	}
	if active == nil && len(m.history) > 0 && !st.Pinned {
		active = m.history[0]
	}
	if active == nil {
		return false, nil
	}
	activatedAt := active.ActivatedAt
	if err := m.opts.Engine.Activate(ctx, active.b); err != nil {
		m.refuse(ctx, active.Revision, active.Source, err)
		return false, nil
	}
	active.ActivatedAt = activatedAt
	m.active, m.latest, m.pinned = active, active, st.Pinned
	// The source last confirmed it no later than its activation: the age
	// max_bundle_age judges keeps counting across a restart.
	m.setChecked(activatedAt)
	m.opts.Metrics.activated(m.opts.Name, "", active.Revision)
	m.log.LogAttrs(ctx, slog.LevelInfo, "policy bundle restored from the persistence directory",
		slog.String("revision", active.Revision), slog.String("digest", active.Digest), slog.Bool("pinned", st.Pinned),
		slog.Time("activated_at", activatedAt))
	return true, nil
}
