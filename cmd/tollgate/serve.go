package main

import (
	"cmp"
	"context"
	"crypto"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/tollgate/tollgate/bundles/lifecycle"
	"github.com/tollgate/tollgate/pdp"
	"github.com/tollgate/tollgate/pdp/authn"
	"github.com/tollgate/tollgate/pdp/authn/apikey"
	"github.com/tollgate/tollgate/pdp/authn/oidcjwt"
	"github.com/tollgate/tollgate/pdp/authn/tokencache"
	"github.com/tollgate/tollgate/pdp/policy"
	"github.com/tollgate/tollgate/pdp/server"
	"github.com/tollgate/tollgate/pdp/telemetry"
)

type serveFlags struct {
	configFile string
	dev        bool
	listen     string
	apiKeys    string
	bundle     string
}

func newServeCommand() *cobra.Command {
	var fl serveFlags
	cmd := &cobra.Command{
		Use:   "serve [--dev | --config FILE]",
		Short: "Run the policy decision point",
		Long: `Run the policy decision point: POST /v1/decision, /v1/forward-auth,
POST /v1/data (OPA's data API, for Kong and APISIX), /health/live and
/health/ready; with grpc.listen set, Envoy's ext_authz v3 gRPC service and
the gRPC health service on that address.

With --dev no file is needed: the embedded default policies, the development
OIDC issuer (tokens from 'tollgate token'), decision logs on stderr, listening
on 127.0.0.1:8181. --dev cannot be combined with --config: it would trust the
development issuer in a production configuration.

With --config FILE, the YAML configuration is read (see the README's
configuration reference and production setup). Flags override the file.
Tollgate listens on 127.0.0.1:8181 unless told otherwise; before listening on
other interfaces, set up TLS and client authentication (tls.client_ca_file or
clients.tokens_file) so that only your gateways can ask for decisions.

SIGTERM or SIGINT shuts down gracefully.`,
		Example: `  tollgate serve --dev
  tollgate serve --dev --api-keys keys.yaml
  tollgate serve --config /etc/tollgate/config.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runServe(cmd.Context(), fl, cmd.ErrOrStderr())
		},
	}
	f := cmd.Flags()
	f.StringVar(&fl.configFile, "config", "", "YAML configuration file")
	f.BoolVar(&fl.dev, "dev", false, "development mode: embedded policies and the development issuer; never in production")
	f.StringVar(&fl.listen, "listen", "", "listen address (default \""+defaultListen+"\")")
	f.StringVar(&fl.apiKeys, "api-keys", "", "API key file written by 'tollgate apikey new'")
	f.StringVar(&fl.bundle, "bundle", "", `policy bundle source: "embedded", "dir:PATH" (watched) or "file:PATH" (a bundle tarball, watched)`)
	return cmd
}

// errDevWithConfig refuses --dev with --config.
var errDevWithConfig = errors.New("--dev cannot be combined with --config: --dev trusts the development issuer, whose key sits on this machine, " +
	"and would add it to the file's issuers; run either 'serve --dev' alone or 'serve --config FILE'")

// resolveConfig merges the file, --dev and the flags into one config.
func resolveConfig(fl serveFlags) (*config, error) {
	if fl.dev && fl.configFile != "" {
		return nil, errDevWithConfig
	}
	var c *config
	var err error
	if fl.configFile != "" {
		c, err = loadConfig(fl.configFile)
	} else {
		c, err = parseConfig(nil)
	}
	if err != nil {
		return nil, err
	}
	if fl.dev {
		c.DecisionLogs = &decisionLogsConfig{Console: true}
		c.Log.Format = "text"
		c.TrustedProxies = []string{"127.0.0.1/32", "::1/128"}
	}
	if fl.listen != "" {
		c.Listen = fl.listen
	}
	if fl.apiKeys != "" {
		c.APIKeys.File = fl.apiKeys
	}
	if fl.bundle != "" {
		c.Bundle.Source = fl.bundle
	}
	return c, c.validate()
}

func newLogger(c *config, w io.Writer) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(strings.ToUpper(c.Log.Level)))
	opts := &slog.HandlerOptions{Level: lvl}
	// Lines logged with a decision's context carry its decision_id and
	// request_id (telemetry.LogHandler).
	if c.Log.Format == "text" {
		return slog.New(telemetry.LogHandler(slog.NewTextHandler(w, opts)))
	}
	return slog.New(telemetry.LogHandler(slog.NewJSONHandler(w, opts)))
}

func runServe(ctx context.Context, fl serveFlags, stderr io.Writer) error {
	c, err := resolveConfig(fl)
	if err != nil {
		return err
	}
	log := newLogger(c, stderr)
	applyRuntime(ctx, c.Runtime, os.Getenv, log)
	if fl.dev {
		log.Warn("development mode: the development issuer is trusted; never run --dev in production", "issuer", devIssuer, "key_file", devKeyPath())
	}
	keyReloads := newKeyReloadCounter()
	var parts serveParts
	parts.telemetry.console = stderr // the decision log's console sink
	d, err := buildServeDecider(ctx, c, fl.dev, log, keyReloads, &parts)
	if err != nil {
		return err
	}
	// Deferred first, so it runs last: after the listeners' graceful
	// shutdowns, the decision log delivers what is left.
	defer parts.telemetry.stop(5 * time.Second)
	proxies, err := c.trustedProxies()
	if err != nil {
		return err
	}
	tlsConfig, err := serverTLS(c, log)
	if err != nil {
		return err
	}
	clientTokens, err := loadClientTokens(ctx, c, log)
	if err != nil {
		return err
	}
	// A nil *apikey.Authenticator in the interface field would not be a nil
	// interface, and would refuse every caller: set it only when configured.
	var clientAuthn authn.Authenticator
	if clientTokens != nil {
		clientAuthn = clientTokens
	}
	srv := server.New(d, server.Options{
		TLSConfig:         tlsConfig,
		RequireClientCert: tlsConfig != nil && tlsConfig.ClientCAs != nil,
		ClientTokens:      clientAuthn,
		MaxBodyBytes:      c.Limits.MaxBodyBytes,
		MaxHeaderBytes:    c.Limits.MaxHeaderBytes,
		ReadHeaderTimeout: c.Timeouts.ReadHeader,
		ReadTimeout:       c.Timeouts.Read,
		WriteTimeout:      c.Timeouts.Write,
		IdleTimeout:       c.Timeouts.Idle,
		ShutdownTimeout:   c.Timeouts.Shutdown,
		TrustedProxies:    proxies,
		Logger:            log,
		Collectors:        append([]prometheus.Collector{keyReloads}, parts.metrics...),
		Issuers:           parts.issuerStatus(),
		Bundles:           parts.bundles.health,
		MaxBundleAge:      c.MaxBundleAge,
	})
	if err := startAdmin(ctx, c, parts.bundles, tlsConfig, log, parts.telemetry.adminHandlers(d)); err != nil {
		return err
	}
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", c.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	warnIfOpen(log, ln.Addr(), tlsConfig, clientTokens != nil)
	log.Info("tollgate listening", "addr", ln.Addr().String(), "tls", tlsConfig != nil,
		"client_certificates", tlsConfig != nil && tlsConfig.ClientCAs != nil, "client_tokens", clientTokens != nil,
		"policy_revision", d.Revision())
	var grpcTokens authn.Authenticator // a nil *apikey.Authenticator must stay a nil interface
	if clientTokens != nil {
		grpcTokens = clientTokens
	}
	stopGRPC, err := startGRPC(ctx, c, d, tlsConfig, grpcTokens, log)
	if err != nil {
		_ = ln.Close()
		return err
	}
	defer stopGRPC() // gracefully, after the HTTP server's graceful shutdown
	return srv.Serve(ctx, ln)
}

// loadClientTokens loads clients.tokens_file, the hashed tokens of the
// gateways allowed to call Tollgate, and watches it like the API key file.
// It returns nil, and no error, when no file is configured.
func loadClientTokens(ctx context.Context, c *config, log *slog.Logger) (*apikey.Authenticator, error) {
	if c.Clients.TokensFile == "" {
		return nil, nil
	}
	tokens, err := apikey.NewFromFile(c.Clients.TokensFile, apikey.Options{})
	if err != nil {
		return nil, fmt.Errorf("clients.tokens_file: %w", err)
	}
	if tokens.Store().Len() == 0 {
		log.Warn("clients.tokens_file has no tokens: every request but the health checks is refused", "file", c.Clients.TokensFile)
	}
	interval := c.Clients.ReloadInterval
	if interval <= 0 {
		interval = defaultKeyReloadInterval
	}
	go watchKeyFile(ctx, c.Clients.TokensFile, tokens, interval, log.With("file_kind", "client_tokens"))
	return tokens, nil
}

// warnIfOpen warns when the listener is reachable from other machines
// while any caller may ask for decisions: the decision endpoints answer
// whether a token or key is valid and echo identity headers.
func warnIfOpen(log *slog.Logger, addr net.Addr, tlsConfig *tls.Config, tokens bool) {
	tcp, ok := addr.(*net.TCPAddr)
	if !ok || tcp.IP.IsLoopback() {
		return
	}
	if tlsConfig == nil {
		log.Warn("listening beyond loopback without TLS: credentials and decisions cross the network in clear text; set tls.cert_file and tls.key_file", "addr", addr.String())
	}
	if (tlsConfig == nil || tlsConfig.ClientCAs == nil) && !tokens {
		log.Warn("listening beyond loopback without client authentication: anyone who reaches this port can ask for decisions; set tls.client_ca_file or clients.tokens_file", "addr", addr.String())
	}
}

// buildDecider loads the policy bundle, builds the authenticators and
// returns the Decider.
func buildDecider(ctx context.Context, c *config, dev bool, log *slog.Logger) (*pdp.Decider, error) {
	return buildServeDecider(ctx, c, dev, log, nil, nil)
}

// buildServeDecider is buildDecider counting the API key file's reloads in
// keyReloads (optional, see newKeyReloadCounter) and, when parts is not nil,
// handing runServe the metrics and the issuers' state of what it built.
func buildServeDecider(ctx context.Context, c *config, dev bool, log *slog.Logger, keyReloads *prometheus.CounterVec, parts *serveParts) (*pdp.Decider, error) {
	var err error
	popts := policy.Options{Query: c.Policy.Query, CheckQuery: c.Policy.CheckQuery, Logger: log,
		DecisionCacheEntries: c.Limits.DecisionCacheEntries, DecisionCacheBytes: c.Limits.DecisionCacheBytes}
	if f := c.Policy.Capabilities; f != "" {
		if popts.Capabilities, err = policy.LoadCapabilitiesFile(f); err != nil {
			return nil, fmt.Errorf("policy.capabilities: %w", err)
		}
		log.Info("policy built-ins extended", "file", f, "builtins", len(popts.Capabilities.Builtins))
	}
	engine := policy.NewEngine(popts)
	caches := map[string]telemetry.CacheStats{"decision": engine.DecisionCacheStats}
	var recorders []pdp.Recorder
	var tracer *telemetry.Tracer
	var activator lifecycle.Engine = engine
	if parts != nil { // serving: decision metrics, the decision log, traces, explanations
		if recorders, tracer, err = newRecorders(ctx, c, log, parts); err != nil {
			return nil, err
		}
		// The decision log and the explainer follow the bundle that decides.
		activator = parts.telemetry.following(engine, log)
	}
	// Sources are watched and polled only when serving (parts is set).
	pb, err := startPolicyBundles(ctx, c, activator, popts, log, parts != nil)
	if err != nil {
		return nil, err
	}
	if parts != nil {
		parts.bundles = pb
		parts.metrics = append(parts.metrics, pb.metrics.Collectors()...)
		parts.metrics = append(parts.metrics, telemetry.NewBundleCollector(bundleTimes(pb)))
		if pb.shadow != nil {
			parts.metrics = append(parts.metrics, pb.shadow.Collectors()...)
		}
	}

	var authns []authn.Authenticator
	issuers := make([]oidcjwt.IssuerConfig, 0, len(c.Issuers)+1)
	for _, is := range c.Issuers {
		issuers = append(issuers, oidcjwt.IssuerConfig{
			Issuer: is.Issuer, Audiences: is.Audiences, Algorithms: is.Algorithms, RequireType: is.RequireType,
			JWKSRefreshInterval: is.JWKSRefreshInterval,

			TrustEnvoyPayloadInMetadata: is.EnvoyJWTAuthn.PayloadInMetadata,
		})
	}
	if dev {
		key, err := loadOrCreateDevKey(devKeyPath())
		if err != nil {
			return nil, err
		}
		issuers = append(issuers, oidcjwt.IssuerConfig{
			Issuer:     devIssuer,
			Audiences:  []string{devAudience},
			Algorithms: []string{"ES256"},
			KeySet:     &oidc.StaticKeySet{PublicKeys: []crypto.PublicKey{key.key.Public()}},
		})
	}
	if len(issuers) > 0 {
		ocfg := oidcjwt.Config{
			Issuers:       issuers,
			ClockSkew:     c.ClockSkew,
			MaxTokenBytes: c.Limits.MaxTokenBytes,
			Logger:        log,
		}
		if parts != nil {
			ocfg.Registerer = &parts.metrics
		}
		// An issuer that is down does not stop serve: its discovery is
		// retried in the background. The loops end with ctx.
		jwts, err := oidcjwt.New(ctx, ocfg)
		if err != nil {
			return nil, fmt.Errorf("oidc issuers: %w", err)
		}
		if parts != nil {
			parts.issuers = jwts
		}
		verifier := authn.Authenticator(jwts)
		if c.Limits.TokenCacheEntries >= 0 {
			// A token seen before is not verified again: the cache keeps
			// identities until exp, and drops them when a key leaves a JWKS.
			cached, err := tokencache.New(jwts, tokencache.Config{
				MaxEntries: c.Limits.TokenCacheEntries,
				MaxBytes:   c.Limits.TokenCacheBytes,
				ClockSkew:  cmp.Or(c.ClockSkew, oidcjwt.DefaultClockSkew),
			})
			if err != nil {
				return nil, fmt.Errorf("token cache: %w", err)
			}
			verifier = cached
			caches["token"] = cached.Stats
		}
		if len(c.jwtAuthnPayloads()) > 0 {
			// Before the cache: what Envoy vouched for is never cached.
			authns = append(authns, jwts.EnvoyJWTAuthn())
		}
		authns = append(authns, verifier)
	}
	if c.APIKeys.File != "" {
		keys, err := apikey.NewFromFile(c.APIKeys.File, apikey.Options{})
		if err != nil {
			return nil, fmt.Errorf("api keys: %w", keyFileHint(err, c.APIKeys.File))
		}
		authns = append(authns, keys)
		interval := c.APIKeys.ReloadInterval
		if interval <= 0 {
			interval = defaultKeyReloadInterval
		}
		go keyWatch{path: c.APIKeys.File, keys: keys, interval: interval, log: log, reloads: keyReloads}.run(ctx)
	}
	if parts != nil {
		parts.metrics = append(parts.metrics, telemetry.NewCacheCollector(caches))
	}
	return pdp.New(pdp.Config{
		Engine:         engine,
		Credentials:    c.Credentials,
		Authenticators: authns,
		Logger:         log,
		Recorders:      recorders,
		Tracer:         tracer,
		DecisionLog:    legacyDecisionLog(c, log),

		DecisionTimeout: c.Limits.DecisionTimeout,
		Shadow:          pb.observer(),
		PolicyStale:     pb.staleCheck(c.MaxBundleAge),
	})
}
