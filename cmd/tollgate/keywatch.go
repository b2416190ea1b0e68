package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// reloader is what the key watcher needs from the API key authenticator.
type reloader interface {
	Reload(path string) error
}

// defaultKeyReloadInterval is how often the key file is checked for changes,
// so that `tollgate apikey new` and `revoke` take effect without a restart.
const defaultKeyReloadInterval = 5 * time.Second

// watchKeyFile reloads the API key file when it changes (checked every
// interval) and on SIGHUP, until ctx ends. A file that fails to load is
// logged and the keys in use stay in use.
func watchKeyFile(ctx context.Context, path string, r reloader, interval time.Duration, log *slog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	tick := time.NewTicker(interval)
	defer tick.Stop()

	last := fileStamp(path)
	reload := func(why string) {
		if err := r.Reload(path); err != nil {
			log.Error("api key file not reloaded; the previous keys stay in use", "file", path, "error", err)
			return
		}
		log.Info("api key file reloaded", "file", path, "trigger", why)
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			last = fileStamp(path)
			reload("SIGHUP")
		case <-tick.C:
			if s := fileStamp(path); s != last {
				last = s
				reload("changed")
			}
		}
	}
}

type stamp struct {
	mod  time.Time
	size int64
}

func fileStamp(path string) stamp {
	fi, err := os.Stat(path)
	if err != nil {
		return stamp{}
	}
	return stamp{fi.ModTime(), fi.Size()}
}
