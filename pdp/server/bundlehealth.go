package server

import (
	"math"
	"time"
)

// BundleStatus is one policy bundle's state, for /health/ready.
type BundleStatus struct {
	Name     string
	Revision string // "" when none is active
	// ActivatedAt is when the active revision was activated.
	ActivatedAt time.Time
	// CheckedAt is when the bundle's source last confirmed the active
	// revision (a download, a 304, a reload); MaxBundleAge is measured
	// from it.
	CheckedAt time.Time
}

// bundleReport is how /health/ready shows a bundle.
type bundleReport struct {
	Revision string `json:"revision"`
	// AgeSeconds is the time since activation.
	AgeSeconds int64 `json:"age_seconds"`
	// CheckedSecondsAgo is the time since the source last confirmed it.
	CheckedSecondsAgo int64 `json:"checked_seconds_ago"`
	Stale             bool  `json:"stale,omitempty"`
}

// bundleHealth reports each bundle and whether any is stale: older than
// maxAge since its source confirmed it (never when maxAge is zero).
func bundleHealth(list []BundleStatus, maxAge time.Duration, now time.Time) (map[string]bundleReport, bool) {
	out := make(map[string]bundleReport, len(list))
	anyStale := false
	for _, b := range list {
		r := bundleReport{Revision: b.Revision}
		if b.Revision != "" {
			r.AgeSeconds = seconds(now.Sub(b.ActivatedAt))
			r.CheckedSecondsAgo = seconds(now.Sub(b.CheckedAt))
			r.Stale = maxAge > 0 && now.Sub(b.CheckedAt) > maxAge
		}
		anyStale = anyStale || r.Stale
		out[b.Name] = r
	}
	return out, anyStale
}

func seconds(d time.Duration) int64 {
	return int64(math.Max(0, d.Seconds()))
}
