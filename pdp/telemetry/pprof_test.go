package telemetry_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/tollgate/tollgate/pdp/telemetry"
)

// TestPprof: the profiles are served under /debug/pprof/ by a mux of their
// own, and nothing else is.
func TestPprof(t *testing.T) {
	srv := httptest.NewServer(telemetry.Pprof())
	defer srv.Close()
	for path, want := range map[string]int{
		"/debug/pprof/":                  http.StatusOK,
		"/debug/pprof/goroutine?debug=1": http.StatusOK,
		"/debug/pprof/heap":              http.StatusOK,
		"/debug/pprof/cmdline":           http.StatusOK,
		"/v1/decision":                   http.StatusNotFound,
	} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s: %d, want %d", path, resp.StatusCode, want)
		}
	}
}
