// Package server is Tollgate's HTTP server: the router, the health
// endpoints, size limits and timeouts, and graceful shutdown. It is the only
// package that knows gorilla/mux.
package server

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate/tollgate/pdp"
	"github.com/tollgate/tollgate/pdp/adapter/forwardauth"
	"github.com/tollgate/tollgate/pdp/adapter/native"
	"github.com/tollgate/tollgate/pdp/adapter/opadata"
	"github.com/tollgate/tollgate/pdp/authn"
	"github.com/tollgate/tollgate/pdp/authn/oidcjwt"
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
	// Collectors are further metrics served on /metrics, such as
	// tollgate_api_keys_reload_total.
	Collectors []prometheus.Collector
	// Issuers, when set, reports each OIDC issuer's state (discovering,
	// ready, stale, error; see oidcjwt.IssuerStatus), shown in the body of
	// /health/ready. It never changes readiness, which follows the policy
	// alone: an identity provider's outage must not take every replica out
	// of the load balancer.
	Issuers func() []oidcjwt.IssuerStatus
	// Bundles, when set, reports each policy bundle's active revision and
	// age, shown in the body of /health/ready.
	Bundles func() []BundleStatus
	// MaxBundleAge, when positive, makes /health/ready answer 503 while a
	// bundle's source has not confirmed its active revision for longer
	// (BundleStatus.CheckedAt): a stale policy takes the replica out of
	// the load balancer (decisions fail closed too: pdp.Config.PolicyStale).
	MaxBundleAge time.Duration

	// TLSConfig, when set, makes Serve speak TLS on the listener. It must
	// provide the server certificate (Certificates or GetCertificate). To
	// verify gateway client certificates, set ClientCAs with ClientAuth
	// tls.VerifyClientCertIfGiven (so the health checks answer probes
	// without one) and RequireClientCert.
	TLSConfig *tls.Config
	// RequireClientCert makes every endpoint but /health/live and
	// /health/ready answer 401 unless the connection presented a client
	// certificate that TLSConfig verified.
	RequireClientCert bool
	// ClientTokens, when set, makes every endpoint but /health/live and
	// /health/ready answer 401 unless the request carries exactly one
	// ClientTokenHeader that ClientTokens accepts (an API key store, see
	// pdp/authn/apikey). The header is always removed before the endpoints
	// run.
	ClientTokens authn.Authenticator
}

// Server serves the decision endpoints for one Decider.
type Server struct {
	http     *http.Server
	tls      *tls.Config
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
		tls: opts.TLSConfig,
		http: &http.Server{
			Handler:           Handler(d, opts),
			TLSConfig:         opts.TLSConfig,
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

// Handler returns the router with every endpoint behind the client
// authentication opts configure, for tests and for Go programs that mount
// Tollgate in their own server.
func Handler(d *pdp.Decider, opts Options) http.Handler {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	// The router must neither clean nor decode paths: the forward-auth
	// prefix form carries the original, unnormalized path, which only
	// pdp/request may judge.
	r := mux.NewRouter().SkipClean(true).UseEncodedPath()
	m := newMetrics(d.Ready)
	m.reg.MustRegister(opts.Collectors...)
	fa := m.instrument("forward-auth", forwardauth.New(d, forwardauth.Options{TrustedProxies: opts.TrustedProxies, Logger: opts.Logger}))
	decide := m.instrument("decision", native.New(d, native.Options{MaxBodyBytes: opts.MaxBodyBytes, Logger: opts.Logger}))
	r.Handle("/v1/decision", decide).Methods(http.MethodPost)
	// OPA's data API for Kong's and APISIX's OPA plugins and OPA clients:
	// any method and any {path} reach the handler, which answers anything
	// but a POST with a readable input with OPA's 400.
	data := m.instrument("data", opadata.New(d, opadata.Options{MaxBodyBytes: opts.MaxBodyBytes, Logger: opts.Logger}))
	r.Handle("/v1/data", data)
	r.Handle("/v1/data/{path:.*}", data)
	r.Handle(forwardauth.DefaultPathPrefix, fa)
	r.PathPrefix(forwardauth.DefaultPathPrefix + "/").Handler(fa)
	r.Handle("/metrics", m.handler()).Methods(http.MethodGet)
	r.HandleFunc("/health/live", func(w http.ResponseWriter, _ *http.Request) {
		writeStatus(w, http.StatusOK, "live")
	}).Methods(http.MethodGet, http.MethodHead)
	r.HandleFunc("/health/ready", func(w http.ResponseWriter, _ *http.Request) {
		code, status := http.StatusOK, "ready"
		if !d.Ready() {
			code, status = http.StatusServiceUnavailable, "no active policy"
		}
		body := map[string]any{"status": status}
		if opts.Bundles != nil {
			bundles, stale := bundleHealth(opts.Bundles(), opts.MaxBundleAge, time.Now())
			body["bundles"] = bundles
			if stale && code == http.StatusOK {
				code, status = http.StatusServiceUnavailable, "stale policy"
				body["status"] = status
			}
		}
		if opts.Issuers != nil {
			// Shown, never judged: readiness follows the policy only.
			body["issuers"] = opts.Issuers()
		}
		writeJSON(w, code, body)
	}).Methods(http.MethodGet, http.MethodHead)
	r.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		writeStatus(w, http.StatusNotFound, "not found")
	})
	r.MethodNotAllowedHandler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		writeStatus(w, http.StatusMethodNotAllowed, "method not allowed")
	})
	return clientAuth(hotPaths(r, decide, fa), opts, m.clientAuthFailures)
}

// hotPaths sends the requests every gateway makes, POST /v1/decision and
// forward auth, straight to their handlers, and everything else to the
// router, which would send those to the very same handlers: it would also
// run a regular expression and copy the request twice (to put the route
// and its variables in the context, which no handler here reads), a
// measurable share of a decision answered from the caches
// (BenchmarkHTTP).
func hotPaths(router *mux.Router, decide, forwardAuth http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch p := r.URL.EscapedPath(); {
		case p == "/v1/decision" && r.Method == http.MethodPost:
			decide.ServeHTTP(w, r)
		case p == forwardauth.DefaultPathPrefix || strings.HasPrefix(p, forwardauth.DefaultPathPrefix+"/"):
			forwardAuth.ServeHTTP(w, r)
		default:
			router.ServeHTTP(w, r)
		}
	})
}

func writeStatus(w http.ResponseWriter, code int, status string) {
	writeJSON(w, code, map[string]string{"status": status})
}

func writeJSON(w http.ResponseWriter, code int, body any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(body)
}

// Serve serves on ln until ctx is cancelled, then shuts down gracefully:
// in-flight requests get up to the shutdown timeout to finish.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	errc := make(chan error, 1)
	go func() {
		if s.tls != nil {
			errc <- s.http.ServeTLS(ln, "", "")
			return
		}
		errc <- s.http.Serve(ln)
	}()
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
