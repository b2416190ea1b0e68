package server

import (
	"testing"
	"time"
)

func TestBundleHealth(t *testing.T) {
	now := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name      string
		status    BundleStatus
		maxAge    time.Duration
		wantStale bool
		wantAge   int64
	}{
		{"fresh", BundleStatus{Name: "t", Revision: "r1", ActivatedAt: now.Add(-time.Hour), CheckedAt: now.Add(-5 * time.Second)}, time.Minute, false, 3600},
		{"stale", BundleStatus{Name: "t", Revision: "r1", ActivatedAt: now.Add(-time.Hour), CheckedAt: now.Add(-2 * time.Minute)}, time.Minute, true, 3600},
		{"no limit", BundleStatus{Name: "t", Revision: "r1", ActivatedAt: now.Add(-time.Hour), CheckedAt: now.Add(-time.Hour)}, 0, false, 3600},
		{"nothing active is not stale (not ready instead)", BundleStatus{Name: "t"}, time.Minute, false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, stale := bundleHealth([]BundleStatus{tt.status}, tt.maxAge, now)
			if stale != tt.wantStale || got["t"].Stale != tt.wantStale {
				t.Errorf("stale = %v, want %v", stale, tt.wantStale)
			}
			if got["t"].AgeSeconds != tt.wantAge || got["t"].Revision != tt.status.Revision {
				t.Errorf("report = %+v", got["t"])
			}
		})
	}
}
