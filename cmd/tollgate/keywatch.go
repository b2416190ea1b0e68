package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// reloader is what the key watcher needs from the API key authenticator.
type reloader interface {
	Reload(path string) error
}

// defaultKeyReloadInterval is how often the key file is checked for changes,
// so that `tollgate apikey new` and `revoke` take effect without a restart.
const defaultKeyReloadInterval = 5 * time.Second

// Results of a key file reload, the values of the result label of
// tollgate_api_keys_reload_total.
const (
	reloadLoaded  = "loaded"
	reloadRefused = "refused"
)

// newKeyReloadCounter returns tollgate_api_keys_reload_total{result}: the
// reloads of the API key file, "loaded" or "refused" (the file did not
// verify or could not be read, and the previous keys stayed in use).
func newKeyReloadCounter() *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tollgate_api_keys_reload_total",
		Help: "Reloads of the API key file, by result: loaded, or refused (the previous keys stay in use).",
	}, []string{"result"})
	c.WithLabelValues(reloadLoaded)
	c.WithLabelValues(reloadRefused)
	return c
}

// keyWatch reloads an API key file when it changes and on SIGHUP.
type keyWatch struct {
	path     string
	keys     reloader
	interval time.Duration
	log      *slog.Logger
	reloads  *prometheus.CounterVec // optional; see newKeyReloadCounter
}

// watchKeyFile reloads the API key file when it changes (checked every
// interval) and on SIGHUP, until ctx ends. A file that fails to load (one
// that does not match its seal, see apikey.LoadFile) is logged, without any
// key, and the keys in use stay in use.
func watchKeyFile(ctx context.Context, path string, r reloader, interval time.Duration, log *slog.Logger) {
	keyWatch{path: path, keys: r, interval: interval, log: log}.run(ctx)
}

// run watches until ctx ends.
func (w keyWatch) run(ctx context.Context) {
	w.watch(ctx, fileStamp(w.path))
}

// watch watches until ctx ends, starting from the file version last.
func (w keyWatch) watch(ctx context.Context, last stamp) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	tick := time.NewTicker(w.interval)
	defer tick.Stop()

	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			last = fileStamp(w.path)
			w.reload("SIGHUP")
		case <-tick.C:
			if s := fileStamp(w.path); s.changed(last) {
				last = s
				w.reload("changed")
			}
		}
	}
}

// reload loads the file once, logs the result and counts it.
func (w keyWatch) reload(trigger string) {
	result := reloadLoaded
	if err := w.keys.Reload(w.path); err != nil {
		result = reloadRefused
		// apikey errors name the file and the problem, never a key.
		w.log.Error("api key file refused; the previous keys stay in use",
			"file", w.path, "trigger", trigger, "error", keyFileHint(err, w.path))
	} else {
		w.log.Info("api key file reloaded", "file", w.path, "trigger", trigger)
	}
	if w.reloads != nil {
		w.reloads.WithLabelValues(result).Inc()
	}
}

// stamp identifies a version of the key file: the writers replace it by a
// rename, so a new file (inode) means a change even when the size and a
// coarse modification time are the same.
type stamp struct {
	fi os.FileInfo // nil: missing
}

func fileStamp(path string) stamp {
	fi, err := os.Stat(path)
	if err != nil {
		return stamp{}
	}
	return stamp{fi}
}

func (s stamp) changed(prev stamp) bool {
	if s.fi == nil || prev.fi == nil {
		return (s.fi == nil) != (prev.fi == nil)
	}
	return !os.SameFile(s.fi, prev.fi) || !s.fi.ModTime().Equal(prev.fi.ModTime()) || s.fi.Size() != prev.fi.Size()
}
