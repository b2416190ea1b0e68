package telemetry

import (
	"net/http"
	"net/http/pprof"
)

// Pprof returns net/http/pprof's handlers under /debug/pprof/, for the
// admin listener only (profiles show memory, which may hold request data).
// It serves from a mux of its own, never http.DefaultServeMux.
func Pprof() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}
