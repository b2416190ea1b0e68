package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/keys"
	"github.com/open-policy-agent/opa/v1/plugins/rest"

	"github.com/tollgate/tollgate/bundles"
	"github.com/tollgate/tollgate/bundles/lifecycle"
	"github.com/tollgate/tollgate/bundles/source"
	"github.com/tollgate/tollgate/pdp"
	"github.com/tollgate/tollgate/pdp/admin"
	"github.com/tollgate/tollgate/pdp/authn/apikey"
	"github.com/tollgate/tollgate/pdp/policy"
	"github.com/tollgate/tollgate/pdp/server"
	"github.com/tollgate/tollgate/pdp/shadow"
)

// policyBundles is the served policy bundle's life cycle and, when
// configured, its shadow candidate.
type policyBundles struct {
	main    *lifecycle.Bundle
	shadow  *shadow.Shadow    // nil without a shadow
	cand    *lifecycle.Bundle // the shadow candidate's life cycle, nil without
	metrics *lifecycle.Metrics
	// remote: the bundle comes from a service. A local source (embedded,
	// a watched directory or file) is current by definition, so
	// max_bundle_age does not apply to it.
	remote bool
}

var _ admin.Bundles = (*policyBundles)(nil)

// Status is every bundle's state for GET /v1/bundles.
func (p *policyBundles) Status() map[string]any {
	return map[string]any{p.main.Name(): p.main.Status()}
}

// Activate rolls bundle name to revision and pins it.
func (p *policyBundles) Activate(ctx context.Context, name, revision string) error {
	if name != p.main.Name() {
		return fmt.Errorf("bundle %q: %w", name, admin.ErrNotFound)
	}
	err := p.main.ActivateRevision(ctx, revision)
	switch {
	case errors.Is(err, lifecycle.ErrUnknownRevision):
		return fmt.Errorf("%w: %w", admin.ErrNotFound, err)
	case err != nil:
		return fmt.Errorf("%w: %w", admin.ErrRefused, err)
	}
	return nil
}

// Unpin makes bundle name follow its source again.
func (p *policyBundles) Unpin(ctx context.Context, name string) error {
	if name != p.main.Name() {
		return fmt.Errorf("bundle %q: %w", name, admin.ErrNotFound)
	}
	if err := p.main.Unpin(ctx); err != nil {
		return fmt.Errorf("%w: %w", admin.ErrRefused, err)
	}
	return nil
}

// health is server.Options.Bundles.
func (p *policyBundles) health() []server.BundleStatus {
	s := p.main.Status()
	bs := server.BundleStatus{Name: p.main.Name(), CheckedAt: s.CheckedAt}
	if !p.remote {
		bs.CheckedAt = time.Now()
	}
	if s.Active != nil {
		bs.Revision, bs.ActivatedAt = s.Active.Revision, s.Active.ActivatedAt
	}
	return []server.BundleStatus{bs}
}

// errStalePolicy is why decisions fail closed past max_bundle_age.
var errStalePolicy = errors.New("policy is stale: its bundle server has not confirmed it within max_bundle_age")

// staleCheck is pdp.Config.PolicyStale: nil without max_bundle_age or for
// a local source (always current).
func (p *policyBundles) staleCheck(maxAge time.Duration) func() error {
	if p == nil || maxAge <= 0 || !p.remote {
		return nil
	}
	return func() error {
		at, ok := p.main.CheckedAt()
		if ok && time.Since(at) > maxAge {
			return fmt.Errorf("%w (%s)", errStalePolicy, maxAge)
		}
		return nil
	}
}

// observer is pdp.Config.Shadow: nil (an untyped nil) without a shadow.
func (p *policyBundles) observer() pdp.Observer {
	if p == nil || p.shadow == nil {
		return nil
	}
	return p.shadow
}

// startPolicyBundles sets up the policy bundle's life cycle on engine:
// restores the persisted history, loads a local source (embedded, dir:,
// file:) at once, and starts watching or polling its source in the
// background (when watch is set) until ctx ends. A local source that does
// not load is an error unless a persisted revision was restored; a remote
// source is polled in the background, and the engine stays without policy
// (not ready) until a revision arrives or was restored.
func startPolicyBundles(ctx context.Context, c *config, engine lifecycle.Engine, popts policy.Options, log *slog.Logger, watch bool) (*policyBundles, error) {
	ks, err := c.opaKeys()
	if err != nil {
		return nil, err
	}
	name := c.bundleName()
	bc, fromBundles := c.Bundles[name]
	if !fromBundles {
		src := c.Bundle.Source
		if src == "" {
			src = bundles.SourceEmbedded
		}
		bc = bundleConfig{Resource: src}
	}
	p := &policyBundles{metrics: lifecycle.NewMetrics(), remote: bc.remote()}
	vc, err := bc.verification(ks)
	if err != nil {
		return nil, fmt.Errorf("bundles.%s.signing: %w", name, err)
	}
	dir := ""
	if c.PersistenceDirectory != "" && (!bc.remote() || bc.Persist) {
		dir = filepath.Join(c.PersistenceDirectory, "bundles", name)
	}
	p.main, err = lifecycle.New(lifecycle.Options{
		Name: name, Engine: engine, History: c.Bundle.History, Dir: dir,
		Verification: vc, Metrics: p.metrics, Logger: log,
	})
	if err != nil {
		return nil, err
	}
	restored, err := p.main.Restore(ctx)
	if err != nil {
		log.Warn("persisted policy bundle history not read", "bundle", name, "error", err)
	}
	if err := startSource(ctx, c, name, bc, vc, ks, p.main, dir, log, watch, !restored); err != nil {
		return nil, err
	}

	if sc, ok := c.Shadow[name]; ok {
		svc, err := sc.verification(ks)
		if err != nil {
			return nil, fmt.Errorf("shadow.%s.signing: %w", name, err)
		}
		sopts := popts
		sopts.Logger = log.With("shadow", true)
		cand := policy.NewEngine(sopts)
		p.cand, err = lifecycle.New(lifecycle.Options{Name: name, Engine: cand, Logger: log.With("shadow", true)})
		if err != nil {
			return nil, err
		}
		p.shadow = shadow.New(shadow.Options{Candidate: cand, Logger: log.With("log", "shadow")})
		if watch {
			go p.shadow.Run(ctx)
		}
		// A candidate that does not load is no reason not to serve.
		if err := startSource(ctx, c, name, sc, svc, ks, p.cand, "", log.With("shadow", true), watch, false); err != nil {
			log.Warn("shadow bundle not loaded", "bundle", name, "error", err)
		}
	}
	return p, nil
}

// startSource loads (local) or starts polling (remote) the source of one
// bundle into sink.
func startSource(ctx context.Context, c *config, name string, bc bundleConfig, vc *bundle.VerificationConfig, ks map[string]*keys.Config,
	sink *lifecycle.Bundle, dir string, log *slog.Logger, watch, required bool) error {
	if bc.remote() {
		client, err := c.restClient(bc.Service, ks, rest.Logger(source.OPALogger(log)))
		if err != nil {
			return err
		}
		dc, err := bc.downloadConfig()
		if err != nil {
			return err
		}
		oci := ""
		if dir != "" {
			oci = filepath.Join(dir, "oci")
		}
		r := source.Remote{
			Name: name, Client: client, Resource: bc.Resource, Config: dc, Verification: vc,
			OCIStore: oci, MaxBytes: bc.SizeLimitBytes, Sink: sink, Logger: log,
		}
		log.Info("polling policy bundle", "bundle", name, "source", r.Describe(),
			"min_delay_seconds", *dc.Polling.MinDelaySeconds, "max_delay_seconds", *dc.Polling.MaxDelaySeconds)
		r.Start(ctx)
		return nil
	}
	src := bc.Resource
	if src != bundles.SourceEmbedded {
		var err error
		if src, err = bc.localSource(); err != nil {
			return err
		}
	}
	w := source.Watch{Source: src, Read: bundles.ReadOptions{Verification: vc, MaxBytes: bc.SizeLimitBytes}, Sink: sink, Logger: log}
	if err := w.Load(ctx); err != nil {
		if required {
			return fmt.Errorf("load policy bundle: %w", err)
		}
		log.Error("policy bundle not loaded; the restored revision keeps answering", "bundle", name, "source", src, "error", err)
	}
	if watch && src != bundles.SourceEmbedded {
		go func() {
			if err := w.Run(ctx); err != nil {
				log.Error("policy bundle not watched", "bundle", name, "error", err)
			}
		}()
	}
	return nil
}

// startAdmin serves the admin API on admin.listen until ctx ends, when
// configured, with the decision listener's TLS when it has TLS. The
// listener is open when it returns.
func startAdmin(ctx context.Context, c *config, p *policyBundles, tlsConfig *tls.Config, log *slog.Logger, extra map[string]http.Handler) error {
	if c.Admin.Listen == "" {
		return nil
	}
	keys, err := apikey.NewFromFile(c.Admin.APIKeysFile, apikey.Options{})
	if err != nil {
		return fmt.Errorf("admin.api_keys_file: %w", err)
	}
	go watchKeyFile(ctx, c.Admin.APIKeysFile, keys, defaultKeyReloadInterval, log.With("file_kind", "admin_keys"))
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", c.Admin.Listen)
	if err != nil {
		return fmt.Errorf("admin listen: %w", err)
	}
	srv := &http.Server{
		Handler:           admin.Handler(admin.Options{Keys: keys, Bundles: p, Logger: log, Handlers: extra}),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      15 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	if tlsConfig != nil {
		srv.TLSConfig = tlsConfig
		ln = tls.NewListener(ln, tlsConfig)
	} else if tcp, ok := ln.Addr().(*net.TCPAddr); ok && !tcp.IP.IsLoopback() {
		log.Warn("admin API listening beyond loopback without TLS: admin keys cross the network in clear text; set tls.cert_file and tls.key_file", "addr", ln.Addr().String())
	}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("admin listener failed", "error", err)
		}
	}()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	log.Info("tollgate admin API listening", "addr", ln.Addr().String(), "tls", tlsConfig != nil)
	return nil
}
