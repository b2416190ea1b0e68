// Package server is Tollgate's HTTP server: the router, the health
// endpoints, size limits and timeouts, and graceful shutdown. It is the only
// package that knows gorilla/mux.
package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"time"

	"github.com/gorilla/mux"

	"github.com/tollgate/tollgate/pdp"
	"github.com/tollgate/tollgate/pdp/adapter/forwardauth"
	"github.com/tollgate/tollgate/pdp/adapter/native"
)

// Defaults for Options' zero values.
const (
	DefaultMaxHeaderBytes    = 32 << 10
	DefaultReadHeaderTimeout = 5 * time.Second
	DefaultReadTimeout       = 10 * time.Second
	DefaultWriteTimeout      = 10 * time.Second
	DefaultIdleTimeout       = 60 * time.Second
	DefaultShutdownTimeout   = 15 * time.Second
)

// Options configure the server. The zero value is safe: defaults apply and
// no proxy is trusted.
type Options struct {
	MaxBodyBytes      int64
	MaxHeaderBytes    int
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	WriteTimeout      time.Duration
	IdleTimeout       time.Duration
	ShutdownTimeout   time.Duration
	TrustedProxies    []netip.Prefix
	Logger            *slog.Logger
}

// Server serves the decision endpoints for one Decider.
type Server struct {
	http     *http.Server
	shutdown time.Duration
	log      *slog.Logger
}

// New builds the server; it does not listen yet.
func New(d *pdp.Decider, opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	def := func(v, d time.Duration) time.Duration {
		if v <= 0 {
			return d
		}
		return v
	}
	if opts.MaxHeaderBytes <= 0 {
		opts.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	return &Server{
		http: &http.Server{
			Handler:           Handler(d, opts),
			MaxHeaderBytes:    opts.MaxHeaderBytes,
			ReadHeaderTimeout: def(opts.ReadHeaderTimeout, DefaultReadHeaderTimeout),
			ReadTimeout:       def(opts.ReadTimeout, DefaultReadTimeout),
			WriteTimeout:      def(opts.WriteTimeout, DefaultWriteTimeout),
			IdleTimeout:       def(opts.IdleTimeout, DefaultIdleTimeout),
			ErrorLog:          slog.NewLogLogger(opts.Logger.Handler(), slog.LevelWarn),
		},
		shutdown: def(opts.ShutdownTimeout, DefaultShutdownTimeout),
		log:      opts.Logger,
	}
}

// Handler returns the router with every endpoint, for tests and for Go
// programs that mount Tollgate in their own server.
func Handler(d *pdp.Decider, opts Options) http.Handler {
	// The router must neither clean nor decode paths: the forward-auth
	// prefix form carries the original, unnormalized path, which only
	// pdp/request may judge.
	r := mux.NewRouter().SkipClean(true).UseEncodedPath()
	m := newMetrics(d.Ready)
	fa := m.instrument("forward-auth", forwardauth.New(d, forwardauth.Options{TrustedProxies: opts.TrustedProxies, Logger: opts.Logger}))
	r.Handle("/v1/decision", m.instrument("decision", native.New(d, native.Options{MaxBodyBytes: opts.MaxBodyBytes, Logger: opts.Logger}))).Methods(http.MethodPost)
	r.Handle(forwardauth.DefaultPathPrefix, fa)
	r.PathPrefix(forwardauth.DefaultPathPrefix + "/").Handler(fa)
	r.Handle("/metrics", m.handler()).Methods(http.MethodGet)
	r.HandleFunc("/health/live", func(w http.ResponseWriter, _ *http.Request) {
		writeStatus(w, http.StatusOK, "live")
	}).Methods(http.MethodGet, http.MethodHead)
	r.HandleFunc("/health/ready", func(w http.ResponseWriter, _ *http.Request) {
		if !d.Ready() {
			writeStatus(w, http.StatusServiceUnavailable, "no active policy")
			return
		}
		writeStatus(w, http.StatusOK, "ready")
	}).Methods(http.MethodGet, http.MethodHead)
	r.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		writeStatus(w, http.StatusNotFound, "not found")
	})
	r.MethodNotAllowedHandler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		writeStatus(w, http.StatusMethodNotAllowed, "method not allowed")
	})
	return r
}

func writeStatus(w http.ResponseWriter, code int, status string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"status": status})
}

// Serve serves on ln until ctx is cancelled, then shuts down gracefully:
// in-flight requests get up to the shutdown timeout to finish.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	errc := make(chan error, 1)
	go func() { errc <- s.http.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	s.log.Info("shutting down", "timeout", s.shutdown)
	sctx, cancel := context.WithTimeout(context.Background(), s.shutdown)
	defer cancel()
	if err := s.http.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}
