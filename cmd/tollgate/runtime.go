package main

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"runtime/debug"

	"github.com/KimMachineGun/automemlimit/memlimit"
)

// runtimeConfig is the runtime section: the Go garbage collector's
// settings for serve, as Prometheus has them (runtime.gogc, and a soft
// memory limit from the container's). Go's environment variables win:
// GOGC over gogc, GOMEMLIMIT (or AUTOMEMLIMIT=off) over gomemlimit_ratio.
type runtimeConfig struct {
	// GOGC is the collector's target percentage (Go's GOGC; Go's own
	// default is 100). 0 means defaultGOGC.
	GOGC int `yaml:"gogc"`
	// GOMemLimitRatio sets Go's soft memory limit (GOMEMLIMIT) to this
	// share of the container's memory limit (cgroup v1 or v2), or of the
	// machine's memory when there is none, so that a high GOGC never takes
	// the heap past what the process may use. 0 means
	// defaultGOMemLimitRatio, -1 none.
	GOMemLimitRatio float64 `yaml:"gomemlimit_ratio"`
}

// Defaults of the runtime section. A PDP allocates a little for every
// request and keeps a small heap, so Go's default GOGC of 100 collects
// very often: in the load harness 200 gave 12–18% more decisions per
// second than 100, and 400 another 5–8% over 200 (0.039–0.043 CPU seconds
// per 1,000 decisions against 0.042–0.048), each for about 1.5 times the
// peak resident memory (docs/DESIGN.md). The memory limit keeps the heap
// bounded when the live heap is large (a million API keys, 100,000 cached
// tokens): the collector then runs as often as it must.
const (
	defaultGOGC            = 400
	defaultGOMemLimitRatio = 0.9
	maxGOGC                = 10_000
)

func (r *runtimeConfig) defaults() {
	if r.GOGC == 0 {
		r.GOGC = defaultGOGC
	}
	if r.GOMemLimitRatio == 0 {
		r.GOMemLimitRatio = defaultGOMemLimitRatio
	}
}

func (r *runtimeConfig) validate() []error {
	var errs []error
	if r.GOGC < 10 || r.GOGC > maxGOGC {
		errs = append(errs, fmt.Errorf("runtime.gogc %d: want between 10 and %d (default %d); the collector cannot be turned off", r.GOGC, maxGOGC, defaultGOGC))
	}
	if q := r.GOMemLimitRatio; q != -1 && (math.IsNaN(q) || q <= 0 || q > 1) {
		errs = append(errs, fmt.Errorf("runtime.gomemlimit_ratio %g: want a share in (0, 1] (default %g), or -1 for no limit", q, defaultGOMemLimitRatio))
	}
	return errs
}

// runtimeSettings are the collector's settings in effect, and where each
// comes from ("config" or the environment variable that set it).
type runtimeSettings struct {
	GOGC             int
	GOGCFrom         string
	MemoryLimit      int64 // bytes; math.MaxInt64 for none
	MemoryLimitFrom  string
	MemoryLimitError error
}

// applyRuntime sets the collector from r, except where the environment
// (getenv) already sets it, and returns the settings in effect. It changes
// process-wide state: serve calls it once, before it serves.
func applyRuntime(ctx context.Context, r runtimeConfig, getenv func(string) string, log *slog.Logger) runtimeSettings {
	var s runtimeSettings
	if v := getenv("GOGC"); v != "" {
		s.GOGCFrom = "GOGC"
		s.GOGC = debug.SetGCPercent(-1) // read it back...
		debug.SetGCPercent(s.GOGC)      // ...and leave it as the runtime parsed it
	} else {
		s.GOGCFrom = "config"
		s.GOGC = r.GOGC
		debug.SetGCPercent(r.GOGC)
	}
	switch {
	case getenv("GOMEMLIMIT") != "":
		s.MemoryLimitFrom = "GOMEMLIMIT"
		s.MemoryLimit = debug.SetMemoryLimit(-1)
	case getenv("AUTOMEMLIMIT") == "off" || r.GOMemLimitRatio == -1:
		s.MemoryLimitFrom = "none"
		s.MemoryLimit = debug.SetMemoryLimit(-1)
	default:
		s.MemoryLimitFrom = "config"
		ratio := r.GOMemLimitRatio
		if v := getenv("AUTOMEMLIMIT"); v != "" {
			s.MemoryLimitFrom = "AUTOMEMLIMIT" // memlimit reads it itself
		}
		limit, err := memlimit.Set(
			memlimit.WithRatio(ratio),
			memlimit.WithProvider(memlimit.ApplyFallback(memlimit.FromCgroup, memlimit.FromSystem)),
		)
		s.MemoryLimit, s.MemoryLimitError = limit, err
	}
	attrs := []slog.Attr{slog.Int("gogc", s.GOGC), slog.String("gogc_from", s.GOGCFrom), slog.String("gomemlimit_from", s.MemoryLimitFrom)}
	if s.MemoryLimit != math.MaxInt64 {
		attrs = append(attrs, slog.Int64("gomemlimit_bytes", s.MemoryLimit))
	}
	if s.MemoryLimitError != nil {
		log.LogAttrs(ctx, slog.LevelWarn, "no soft memory limit: the memory available could not be read", slog.Any("error", s.MemoryLimitError))
	}
	log.LogAttrs(ctx, slog.LevelInfo, "garbage collector", attrs...)
	return s
}
