package source

import (
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/tollgate/tollgate/bundles"
	"github.com/tollgate/tollgate/bundles/lifecycle"
)

// DefaultQuiet is how long a watched directory or file must stay unchanged
// before it is read again when Watch.Quiet is zero: a burst of writes (an
// editor's save, a `git pull`, a deploy tool's copy) is one reload.
const DefaultQuiet = 300 * time.Millisecond

// Watch reloads a bundle directory ("dir:PATH") or bundle file
// ("file:PATH", a tarball) when it changes, and offers each new read to
// Sink. Changes are coalesced: the reload happens once nothing has changed
// for Quiet. A read that fails (a file half written, a Rego syntax error,
// a bad signature) is refused; the next change is read again.
type Watch struct {
	// Source is "dir:PATH" or "file:PATH".
	Source string
	// Verification applies to a bundle file (see bundles.ReadOptions).
	Read bundles.ReadOptions
	// Quiet is DefaultQuiet when zero.
	Quiet time.Duration
	Sink  Sink
	// Logger; nil discards.
	Logger *slog.Logger
}

// Load reads the source once and offers it to Sink; the error is the
// read's or the activation's.
func (w Watch) Load(ctx context.Context) error {
	c, err := w.read(ctx)
	if err != nil {
		w.Sink.Refuse(ctx, "", w.Source, err)
		return err
	}
	return w.Sink.Offer(ctx, c)
}

func (w Watch) read(ctx context.Context) (lifecycle.Candidate, error) {
	if path, ok := cutPrefix(w.Source, bundles.SourceFilePrefix); ok {
		b, raw, err := bundles.ReadTarballFile(path, w.Read)
		if err != nil {
			return lifecycle.Candidate{}, err
		}
		return lifecycle.Candidate{Bundle: b, Raw: raw, Source: w.Source}, nil
	}
	b, err := bundles.Load(ctx, w.Source)
	if err != nil {
		return lifecycle.Candidate{}, err
	}
	return lifecycle.Candidate{Bundle: b, Source: w.Source}, nil
}

func cutPrefix(s, prefix string) (string, bool) {
	if len(s) > len(prefix) && s[:len(prefix)] == prefix {
		return filepath.Clean(s[len(prefix):]), true
	}
	return "", false
}

// Run watches the source until ctx ends. It does not load it first: call
// Load for that. An error is returned only when the watch cannot start.
func (w Watch) Run(ctx context.Context) error {
	log := w.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	quiet := w.Quiet
	if quiet <= 0 {
		quiet = DefaultQuiet
	}
	watcher, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch %s: %w", w.Source, err)
	}
	defer watcher.Close()

	var root, linkPath string
	isDir := false
	if path, ok := cutPrefix(w.Source, bundles.SourceFilePrefix); ok {
		// Watch the directory: editors and deploy tools replace files.
		root = filepath.Dir(path)
		if err := watcher.Add(root); err != nil {
			return fmt.Errorf("watch %s: %w", w.Source, err)
		}
	} else if path, ok := cutPrefix(w.Source, bundles.SourceDirPrefix); ok {
		isDir = true
		if root, err = filepath.EvalSymlinks(path); err != nil {
			return fmt.Errorf("watch %s: %w", w.Source, err)
		}
		if err := addTree(watcher, root); err != nil {
			return fmt.Errorf("watch %s: %w", w.Source, err)
		}
		if info, err := os.Lstat(path); err == nil && info.Mode()&os.ModeSymlink != 0 {
			// "current -> releases/v3": a deploy swaps the link, which
			// changes its parent directory, not the tree.
			linkPath = path
			if err := watcher.Add(filepath.Dir(path)); err != nil {
				return fmt.Errorf("watch %s: %w", w.Source, err)
			}
		}
	} else {
		return fmt.Errorf("watch %s: %w", w.Source, bundles.ErrUnsupportedSource)
	}
	log.Info("watching policy bundle for changes", "source", w.Source)

	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-watcher.Events:
			if !ok {
				return nil
			}
			if isDir && ev.Has(fsnotify.Create) {
				if info, err := os.Stat(ev.Name); err == nil && info.IsDir() {
					_ = addTree(watcher, ev.Name)
				}
			}
			timer.Reset(quiet)
		case err, ok := <-watcher.Errors:
			if !ok {
				return nil
			}
			log.Warn("policy bundle watch error; reloading", "source", w.Source, "error", err)
			timer.Reset(quiet)
		case <-timer.C:
			if linkPath != "" {
				if now, err := filepath.EvalSymlinks(linkPath); err == nil && now != root {
					root = now
					_ = addTree(watcher, root)
				}
			}
			if err := w.Load(ctx); err != nil {
				log.Debug("policy bundle reload failed", "source", w.Source, "error", err)
			}
		}
	}
}

// addTree watches dir and every directory under it.
func addTree(w *fsnotify.Watcher, dir string) error {
	return filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return w.Add(path)
		}
		return nil
	})
}
