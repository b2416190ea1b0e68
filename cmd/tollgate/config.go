package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"reflect"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/tollgate/tollgate/pdp"
	"github.com/tollgate/tollgate/pdp/authn/oidcjwt"
	"github.com/tollgate/tollgate/pdp/credential"
)

// config is the YAML configuration file (tollgate serve --config FILE).
// Its zero value plus defaults() is a safe configuration: embedded policies,
// no issuers, no API keys, no trusted proxies.
type config struct {
	Listen string `yaml:"listen"`
	TLS    struct {
		CertFile     string `yaml:"cert_file"`
		KeyFile      string `yaml:"key_file"`
		ClientCAFile string `yaml:"client_ca_file"`
	} `yaml:"tls"`
	Clients struct {
		TokensFile     string        `yaml:"tokens_file"`
		ReloadInterval time.Duration `yaml:"reload_interval"`
	} `yaml:"clients"`
	// GRPC is Envoy's ext_authz v3 gRPC listener (and the gRPC health
	// service); off when Listen is empty.
	GRPC struct {
		Listen string `yaml:"listen"`
	} `yaml:"grpc"`
	TrustedProxies []string       `yaml:"trusted_proxies"`
	Issuers        []issuerConfig `yaml:"issuers"`
	ClockSkew      time.Duration  `yaml:"clock_skew"`
	APIKeys        struct {
		File           string        `yaml:"file"`
		ReloadInterval time.Duration `yaml:"reload_interval"`
	} `yaml:"api_keys"`
	Credentials *credential.Locations `yaml:"credentials"`
	Bundle      struct {
		Source string `yaml:"source"`
		// History is how many activated revisions are kept (default 10).
		History int `yaml:"history"`
	} `yaml:"bundle"`
	// OPA's sections, with OPA's meaning (see bundleconfig.go).
	Services             map[string]serviceConfig `yaml:"services"`
	Bundles              map[string]bundleConfig  `yaml:"bundles"`
	Keys                 map[string]keyConfig     `yaml:"keys"`
	PersistenceDirectory string                   `yaml:"persistence_directory"`
	// MaxBundleAge, when set, makes /health/ready fail while the bundle's
	// source has not confirmed the active revision for longer.
	MaxBundleAge time.Duration `yaml:"max_bundle_age"`
	// Admin is the admin listener (GET /v1/bundles, rollback, pinning).
	Admin struct {
		Listen      string `yaml:"listen"`
		APIKeysFile string `yaml:"api_keys_file"`
	} `yaml:"admin"`
	// Shadow names, per bundle, the candidate evaluated beside it.
	Shadow map[string]bundleConfig `yaml:"shadow"`
	Policy struct {
		Query      string `yaml:"query"`
		CheckQuery string `yaml:"check_query"`
		// Capabilities is an OPA capabilities document (JSON) whose
		// built-ins are allowed in addition to the pinned ones.
		Capabilities string `yaml:"capabilities"`
	} `yaml:"policy"`
	Limits struct {
		MaxBodyBytes   int64 `yaml:"max_body_bytes"`
		MaxHeaderBytes int   `yaml:"max_header_bytes"`
		MaxTokenBytes  int   `yaml:"max_token_bytes"`
		// DecisionTimeout bounds each decision (pdp.Config.DecisionTimeout);
		// 0 means pdp.DefaultDecisionTimeout.
		DecisionTimeout time.Duration `yaml:"decision_timeout"`
		// TokenCacheEntries and TokenCacheBytes bound the verified-token
		// cache (pdp/authn/tokencache); 0 means its defaults (100,000
		// tokens, 64 MiB), -1 entries turns the cache off.
		TokenCacheEntries int   `yaml:"token_cache_entries"`
		TokenCacheBytes   int64 `yaml:"token_cache_bytes"`
		// DecisionCacheEntries and DecisionCacheBytes bound the decision
		// cache of each policy revision (pdp/policy); 0 means its defaults
		// (100,000 decisions, 64 MiB), -1 entries turns it off.
		DecisionCacheEntries int   `yaml:"decision_cache_entries"`
		DecisionCacheBytes   int64 `yaml:"decision_cache_bytes"`
	} `yaml:"limits"`
	Timeouts struct {
		ReadHeader time.Duration `yaml:"read_header"`
		Read       time.Duration `yaml:"read"`
		Write      time.Duration `yaml:"write"`
		Idle       time.Duration `yaml:"idle"`
		Shutdown   time.Duration `yaml:"shutdown"`
	} `yaml:"timeouts"`
	// DecisionLog is deprecated: enabled: true writes the slog decision
	// line of earlier versions; decision_logs replaces it.
	DecisionLog struct {
		Enabled bool `yaml:"enabled"`
	} `yaml:"decision_log"`
	// DecisionLogs is OPA's decision_logs section, with OPA's meaning
	// (decisionlogs.go); off when absent.
	DecisionLogs *decisionLogsConfig `yaml:"decision_logs"`
	// Labels are OPA's labels: added to every decision-log event, beside
	// id and version.
	Labels map[string]string `yaml:"labels"`
	// DistributedTracing is OPA's distributed_tracing section: OTLP
	// export of decision spans (decisionlogs.go); off when absent.
	DistributedTracing tracingConfig `yaml:"distributed_tracing"`

	// Runtime is the Go garbage collector's settings (runtime.go).
	Runtime runtimeConfig `yaml:"runtime"`

	Log struct {
		Level  string `yaml:"level"`  // debug, info, warn, error
		Format string `yaml:"format"` // json or text
	} `yaml:"log"`
}

type issuerConfig struct {
	Issuer      string   `yaml:"issuer"`
	Audiences   []string `yaml:"audiences"`
	Algorithms  []string `yaml:"algorithms"`
	RequireType string   `yaml:"require_type"`
	// JWKSRefreshInterval: how often the JWKS is fetched again, so that
	// withdrawn keys stop verifying (default 5m, 1s to 24h).
	JWKSRefreshInterval time.Duration `yaml:"jwks_refresh_interval"`
	// EnvoyJWTAuthn, when payload_in_metadata is set, trusts the payloads
	// Envoy's jwt_authn filter verified for this issuer and stored under
	// that name, as the gRPC ext_authz service receives them (see
	// oidcjwt.IssuerConfig.TrustEnvoyPayloadInMetadata). Off by default.
	EnvoyJWTAuthn struct {
		PayloadInMetadata string `yaml:"payload_in_metadata"`
	} `yaml:"envoy_jwt_authn"`
}

// jwtAuthnPayloads are the names of the jwt_authn payloads some issuer
// trusts (issuers[].envoy_jwt_authn.payload_in_metadata), without
// duplicates; the gRPC ext_authz service reads only these.
func (c *config) jwtAuthnPayloads() []string {
	var out []string
	for _, is := range c.Issuers {
		if n := is.EnvoyJWTAuthn.PayloadInMetadata; n != "" && !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}

// defaultListen is loopback only, as OPA 1.x: listening on other
// interfaces is a choice, made with listen (and TLS and client
// authentication).
const defaultListen = "127.0.0.1:8181"

// loadConfig reads and validates a configuration file. Unknown keys are an
// error, so a typo never silently turns a setting off. Errors read
// "FILE:LINE: message" (see configcheck.go).
func loadConfig(path string) (*config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return parseNamedConfig(path, b)
}

// parseConfig parses a configuration that comes from no file.
func parseConfig(b []byte) (*config, error) {
	return parseNamedConfig("config", b)
}

// parseNamedConfig parses b, the contents of the file named file: first
// into YAML nodes, which are checked against the config type (unknown keys,
// values of the wrong kind, each with its line), then into the config.
func parseNamedConfig(file string, b []byte) (*config, error) {
	var c config
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(b))
	switch err := dec.Decode(&doc); {
	case errors.Is(err, io.EOF):
	case err != nil:
		return nil, syntaxError(file, b, err)
	default:
		var extra yaml.Node
		switch err := dec.Decode(&extra); {
		case errors.Is(err, io.EOF):
		case err != nil:
			return nil, syntaxError(file, b, err)
		default:
			return nil, fmt.Errorf("%s:%d: a second YAML document: the configuration is one document", file, extra.Line)
		}
		if len(doc.Content) == 1 {
			if errs := checkNode(file, doc.Content[0], reflect.TypeFor[config](), ""); len(errs) > 0 {
				return nil, errors.Join(errs...)
			}
		}
		strict := yaml.NewDecoder(bytes.NewReader(b))
		strict.KnownFields(true)
		if err := strict.Decode(&c); err != nil {
			return nil, decodeError(file, err)
		}
	}
	c.defaults()
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return &c, nil
}

func (c *config) defaults() {
	if c.Listen == "" {
		c.Listen = defaultListen
	}
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	if c.Log.Format == "" {
		c.Log.Format = "json"
	}
	c.Runtime.defaults()
}

// validate checks everything that can be checked without I/O.
func (c *config) validate() error {
	var errs []error
	if _, err := c.trustedProxies(); err != nil {
		errs = append(errs, err)
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		errs = append(errs, errors.New("tls: cert_file and key_file go together"))
	}
	if c.TLS.ClientCAFile != "" && c.TLS.CertFile == "" {
		errs = append(errs, errors.New("tls.client_ca_file needs tls.cert_file and tls.key_file: client certificates need TLS"))
	}
	if l := c.GRPC.Listen; l != "" {
		if _, _, err := net.SplitHostPort(l); err != nil {
			errs = append(errs, fmt.Errorf("grpc.listen %q: want host:port", l))
		} else if l == c.Listen {
			errs = append(errs, errors.New("grpc.listen must differ from listen"))
		}
	}
	if c.Clients.ReloadInterval < 0 {
		errs = append(errs, errors.New("clients.reload_interval must not be negative"))
	}
	for i, is := range c.Issuers {
		if is.Issuer == "" {
			errs = append(errs, fmt.Errorf("issuers[%d]: issuer is required", i))
		}
		if len(is.Audiences) == 0 {
			errs = append(errs, fmt.Errorf("issuers[%d]: at least one audience is required", i))
		}
		if d := is.JWKSRefreshInterval; d != 0 {
			if err := oidcjwt.CheckJWKSRefreshInterval(d); err != nil {
				errs = append(errs, fmt.Errorf("issuers[%d].jwks_refresh_interval: %w", i, err))
			}
		}
		if err := oidcjwt.CheckEnvoyPayloadInMetadata(is.EnvoyJWTAuthn.PayloadInMetadata, is.RequireType); err != nil {
			errs = append(errs, fmt.Errorf("issuers[%d].envoy_jwt_authn.payload_in_metadata: %w", i, err))
		}
	}
	if c.ClockSkew < 0 || c.ClockSkew > 5*time.Minute {
		errs = append(errs, fmt.Errorf("clock_skew %s: want between 0s and 5m", c.ClockSkew))
	}
	if c.Limits.TokenCacheEntries < -1 || c.Limits.TokenCacheBytes < 0 {
		errs = append(errs, errors.New("limits.token_cache_entries must be -1 (off), 0 (default) or positive, and limits.token_cache_bytes not negative"))
	}
	if c.Limits.DecisionCacheEntries < -1 || c.Limits.DecisionCacheBytes < 0 {
		errs = append(errs, errors.New("limits.decision_cache_entries must be -1 (off), 0 (default) or positive, and limits.decision_cache_bytes not negative"))
	}
	if c.Limits.MaxBodyBytes < 0 || c.Limits.MaxHeaderBytes < 0 || c.Limits.MaxTokenBytes < 0 {
		errs = append(errs, errors.New("limits must not be negative"))
	}
	if d := c.Limits.DecisionTimeout; d != 0 && (d < time.Millisecond || d > pdp.MaxDecisionTimeout) {
		errs = append(errs, fmt.Errorf("limits.decision_timeout %s: want between 1ms and %s (default %s)", d, pdp.MaxDecisionTimeout, pdp.DefaultDecisionTimeout))
	}
	switch strings.ToLower(c.Log.Level) {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("log.level %q: want debug, info, warn or error", c.Log.Level))
	}
	switch c.Log.Format {
	case "json", "text":
	default:
		errs = append(errs, fmt.Errorf("log.format %q: want json or text", c.Log.Format))
	}
	errs = append(errs, c.Runtime.validate()...)
	errs = append(errs, c.validateBundles()...)
	errs = append(errs, c.validateDecisionLogs()...)
	errs = append(errs, c.validateTracing()...)
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("invalid config: %w", err)
	}
	return nil
}

// trustedProxies parses trusted_proxies: CIDR prefixes or single addresses.
func (c *config) trustedProxies() ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(c.TrustedProxies))
	for _, s := range c.TrustedProxies {
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("trusted_proxies: %q is neither an address nor a CIDR prefix", s)
		}
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}
