package main

import (
	"context"
	"crypto"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/spf13/cobra"

	"github.com/tollgate/tollgate/bundles"
	"github.com/tollgate/tollgate/pdp"
	"github.com/tollgate/tollgate/pdp/authn"
	"github.com/tollgate/tollgate/pdp/authn/apikey"
	"github.com/tollgate/tollgate/pdp/authn/oidcjwt"
	"github.com/tollgate/tollgate/pdp/policy"
	"github.com/tollgate/tollgate/pdp/server"
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
/health/live and /health/ready.

With --dev no file is needed: the embedded default policies, the development
OIDC issuer (tokens from 'tollgate token'), decision logs on stderr, listening
on 127.0.0.1:8181. With --config FILE, the YAML configuration is read (see the
README's configuration reference). Flags override the file.

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
	f.StringVar(&fl.listen, "listen", "", "listen address (default \":8181\"; 127.0.0.1:8181 with --dev)")
	f.StringVar(&fl.apiKeys, "api-keys", "", "API key file written by 'tollgate apikey new'")
	f.StringVar(&fl.bundle, "bundle", "", `policy bundle source: "embedded" or "dir:PATH"`)
	return cmd
}

// resolveConfig merges the file, --dev and the flags into one config.
func resolveConfig(fl serveFlags) (*config, error) {
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
		if fl.configFile == "" && fl.listen == "" {
			c.Listen = "127.0.0.1:8181"
		}
		c.DecisionLog.Enabled = true
		if fl.configFile == "" {
			c.Log.Format = "text"
			c.TrustedProxies = []string{"127.0.0.1/32", "::1/128"}
		}
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
	if c.Log.Format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

func runServe(ctx context.Context, fl serveFlags, stderr io.Writer) error {
	c, err := resolveConfig(fl)
	if err != nil {
		return err
	}
	log := newLogger(c, stderr)
	if fl.dev {
		log.Warn("development mode: the development issuer is trusted; never run --dev in production", "issuer", devIssuer, "key_file", devKeyPath())
	}
	d, err := buildDecider(ctx, c, fl.dev, log)
	if err != nil {
		return err
	}
	proxies, err := c.trustedProxies()
	if err != nil {
		return err
	}
	srv := server.New(d, server.Options{
		MaxBodyBytes:      c.Limits.MaxBodyBytes,
		MaxHeaderBytes:    c.Limits.MaxHeaderBytes,
		ReadHeaderTimeout: c.Timeouts.ReadHeader,
		ReadTimeout:       c.Timeouts.Read,
		WriteTimeout:      c.Timeouts.Write,
		IdleTimeout:       c.Timeouts.Idle,
		ShutdownTimeout:   c.Timeouts.Shutdown,
		TrustedProxies:    proxies,
		Logger:            log,
	})
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", c.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	log.Info("tollgate listening", "addr", ln.Addr().String(), "policy_revision", d.Revision())
	return srv.Serve(ctx, ln)
}

// buildDecider loads the policy bundle, builds the authenticators and
// returns the Decider.
func buildDecider(ctx context.Context, c *config, dev bool, log *slog.Logger) (*pdp.Decider, error) {
	b, err := bundles.Load(ctx, c.Bundle.Source)
	if err != nil {
		return nil, fmt.Errorf("load policy bundle: %w", err)
	}
	engine := policy.NewEngine(policy.Options{Query: c.Policy.Query, CheckQuery: c.Policy.CheckQuery, Logger: log})
	if err := engine.Activate(ctx, b); err != nil {
		return nil, fmt.Errorf("activate policy bundle: %w", err)
	}

	var authns []authn.Authenticator
	issuers := make([]oidcjwt.IssuerConfig, 0, len(c.Issuers)+1)
	for _, is := range c.Issuers {
		issuers = append(issuers, oidcjwt.IssuerConfig{
			Issuer: is.Issuer, Audiences: is.Audiences, Algorithms: is.Algorithms, RequireType: is.RequireType,
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
		jwts, err := oidcjwt.New(ctx, oidcjwt.Config{
			Issuers:       issuers,
			ClockSkew:     c.ClockSkew,
			MaxTokenBytes: c.Limits.MaxTokenBytes,
			Logger:        log,
		})
		if err != nil {
			return nil, fmt.Errorf("oidc issuers: %w", err)
		}
		authns = append(authns, jwts)
	}
	if c.APIKeys.File != "" {
		keys, err := apikey.NewFromFile(c.APIKeys.File, apikey.Options{})
		if err != nil {
			return nil, fmt.Errorf("api keys: %w", err)
		}
		authns = append(authns, keys)
		interval := c.APIKeys.ReloadInterval
		if interval <= 0 {
			interval = defaultKeyReloadInterval
		}
		go watchKeyFile(ctx, c.APIKeys.File, keys, interval, log)
	}
	var declog *slog.Logger
	if c.DecisionLog.Enabled {
		declog = log.With("log", "decision")
	}
	return pdp.New(pdp.Config{
		Engine:         engine,
		Credentials:    c.Credentials,
		Authenticators: authns,
		Logger:         log,
		DecisionLog:    declog,
	})
}
