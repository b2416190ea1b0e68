package main

import (
	"context"
	"log/slog"
	"math"
	"runtime/debug"
	"strings"
	"testing"
)

// TestConfigRuntime: runtime.gogc and runtime.gomemlimit_ratio, their
// defaults and their bounds.
func TestConfigRuntime(t *testing.T) {
	for _, tc := range []struct {
		yaml    string
		gogc    int
		ratio   float64
		wantErr string
	}{
		{yaml: "", gogc: 400, ratio: 0.9},
		{yaml: "runtime: {gogc: 100}\n", gogc: 100, ratio: 0.9},
		{yaml: "runtime: {gogc: 800, gomemlimit_ratio: 0.5}\n", gogc: 800, ratio: 0.5},
		{yaml: "runtime: {gomemlimit_ratio: -1}\n", gogc: 400, ratio: -1},
		{yaml: "runtime: {gomemlimit_ratio: 1}\n", gogc: 400, ratio: 1},
		{yaml: "runtime: {gogc: 5}\n", wantErr: "runtime.gogc 5"},
		{yaml: "runtime: {gogc: -1}\n", wantErr: "cannot be turned off"},
		{yaml: "runtime: {gogc: 20000}\n", wantErr: "runtime.gogc 20000"},
		{yaml: "runtime: {gomemlimit_ratio: 1.5}\n", wantErr: "runtime.gomemlimit_ratio 1.5"},
		{yaml: "runtime: {gomemlimit_ratio: -0.5}\n", wantErr: "runtime.gomemlimit_ratio -0.5"},
		{yaml: "runtime: {gomemlimit_ratio: .nan}\n", wantErr: "runtime.gomemlimit_ratio"},
		{yaml: "runtime: {gogc: off}\n", wantErr: "gogc"},
		{yaml: "runtime: {gomaxprocs: 2}\n", wantErr: "gomaxprocs"},
	} {
		c := parseConfigCase(t, tc.yaml, tc.wantErr)
		if c == nil {
			continue
		}
		if c.Runtime.GOGC != tc.gogc || c.Runtime.GOMemLimitRatio != tc.ratio {
			t.Errorf("%q: runtime %+v, want gogc %d, ratio %g", tc.yaml, c.Runtime, tc.gogc, tc.ratio)
		}
	}
}

// TestApplyRuntime: serve sets the collector from the configuration,
// except what Go's environment variables set.
func TestApplyRuntime(t *testing.T) {
	gc, limit := debug.SetGCPercent(-1), debug.SetMemoryLimit(-1)
	debug.SetGCPercent(gc)
	t.Cleanup(func() {
		debug.SetGCPercent(gc)
		debug.SetMemoryLimit(limit)
	})
	const before = 123
	for _, tc := range []struct {
		name        string
		r           runtimeConfig
		env         map[string]string
		wantGOGC    int
		gogcFrom    string
		limitFrom   string
		limitBefore bool // the memory limit is left as it was
	}{
		{name: "config", r: runtimeConfig{GOGC: 400, GOMemLimitRatio: 0.9}, wantGOGC: 400, gogcFrom: "config", limitFrom: "config"},
		{name: "GOGC wins", r: runtimeConfig{GOGC: 400, GOMemLimitRatio: 0.9}, env: map[string]string{"GOGC": "123"}, wantGOGC: before, gogcFrom: "GOGC", limitFrom: "config"},
		{name: "GOMEMLIMIT wins", r: runtimeConfig{GOGC: 200, GOMemLimitRatio: 0.9}, env: map[string]string{"GOMEMLIMIT": "1GiB"}, wantGOGC: 200, gogcFrom: "config", limitFrom: "GOMEMLIMIT", limitBefore: true},
		{name: "AUTOMEMLIMIT=off", r: runtimeConfig{GOGC: 400, GOMemLimitRatio: 0.9}, env: map[string]string{"AUTOMEMLIMIT": "off"}, wantGOGC: 400, gogcFrom: "config", limitFrom: "none", limitBefore: true},
		{name: "no limit", r: runtimeConfig{GOGC: 400, GOMemLimitRatio: -1}, wantGOGC: 400, gogcFrom: "config", limitFrom: "none", limitBefore: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			debug.SetGCPercent(before)
			const limitBefore = 3 << 30
			debug.SetMemoryLimit(limitBefore)
			var logs strings.Builder
			s := applyRuntime(context.Background(), tc.r, func(k string) string { return tc.env[k] }, slog.New(slog.NewTextHandler(&logs, nil)))
			if got := debug.SetGCPercent(-1); got != tc.wantGOGC || s.GOGC != tc.wantGOGC || s.GOGCFrom != tc.gogcFrom {
				t.Errorf("GOGC %d (reported %d from %s), want %d from %s", got, s.GOGC, s.GOGCFrom, tc.wantGOGC, tc.gogcFrom)
			}
			got := debug.SetMemoryLimit(-1)
			switch {
			case s.MemoryLimitFrom != tc.limitFrom:
				t.Errorf("memory limit from %s, want %s", s.MemoryLimitFrom, tc.limitFrom)
			case tc.limitBefore && got != limitBefore:
				t.Errorf("memory limit %d, want it left at %d", got, int64(limitBefore))
			case !tc.limitBefore && (got == limitBefore || got == math.MaxInt64 || got != s.MemoryLimit || s.MemoryLimitError != nil):
				// No cgroup limit here: 90% of the machine's memory.
				t.Errorf("memory limit %d (reported %d, %v), want the ratio of the memory available", got, s.MemoryLimit, s.MemoryLimitError)
			}
			if !strings.Contains(logs.String(), "garbage collector") || !strings.Contains(logs.String(), "gogc_from="+tc.gogcFrom) {
				t.Errorf("the log does not say what was set:\n%s", logs.String())
			}
		})
	}
}
