package server_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/tollgate/tollgate/pdp/server"
)

func TestReadyReportsBundlesAndFailsWhenStale(t *testing.T) {
	now := time.Now()
	tests := []struct {
		name      string
		checked   time.Duration // ago
		maxAge    time.Duration
		wantCode  int
		wantState string
	}{
		{"fresh", 5 * time.Second, time.Minute, 200, "ready"},
		{"stale", 2 * time.Minute, time.Minute, 503, "stale policy"},
		{"no max_bundle_age", 24 * time.Hour, 0, 200, "ready"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := server.Options{
				MaxBundleAge: tt.maxAge,
				Bundles: func() []server.BundleStatus {
					return []server.BundleStatus{{Name: "tollgate", Revision: "r1", ActivatedAt: now.Add(-time.Hour), CheckedAt: now.Add(-tt.checked)}}
				},
			}
			srv := httptest.NewServer(server.Handler(newDecider(t, true), opts))
			defer srv.Close()
			resp, err := http.Get(srv.URL + "/health/ready")
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body struct {
				Status  string `json:"status"`
				Bundles map[string]struct {
					Revision   string `json:"revision"`
					AgeSeconds int64  `json:"age_seconds"`
				} `json:"bundles"`
			}
			if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tt.wantCode || body.Status != tt.wantState {
				t.Errorf("ready = %d %q, want %d %q", resp.StatusCode, body.Status, tt.wantCode, tt.wantState)
			}
			if b := body.Bundles["tollgate"]; b.Revision != "r1" || b.AgeSeconds < 3599 {
				t.Errorf("bundles = %+v, want r1 about an hour old", body.Bundles)
			}
		})
	}
}
