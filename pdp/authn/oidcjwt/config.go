package oidcjwt

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/prometheus/client_golang/prometheus"
)

// Defaults applied where Config leaves a field zero.
const (
	DefaultClockSkew     = 30 * time.Second
	DefaultMaxTokenBytes = 8192
	// DefaultJWKSRefreshInterval is how often an issuer's JWKS is fetched
	// again in the background, so that a key the issuer withdrew stops
	// verifying within this time.
	DefaultJWKSRefreshInterval = 5 * time.Minute
	// DefaultRefetchInterval is the minimum time between two fetches of one
	// issuer's JWKS caused by tokens whose kid is unknown.
	DefaultRefetchInterval = 30 * time.Second
	DefaultHTTPTimeout     = 5 * time.Second
	// MaxResponseBytes caps every discovery and JWKS response body.
	MaxResponseBytes = 1 << 20
)

// Bounds of IssuerConfig.JWKSRefreshInterval. A Cache-Control max-age on
// the JWKS response can shorten the wait before the next refresh, never
// below MinJWKSRefreshInterval, and never lengthen it past the configured
// interval.
const (
	MinJWKSRefreshInterval = time.Second
	MaxJWKSRefreshInterval = 24 * time.Hour
)

// IssuerConfig is one trusted OpenID Connect issuer.
type IssuerConfig struct {
	// Issuer is the exact iss value. Discovery is at
	// Issuer + "/.well-known/openid-configuration" and must announce the
	// same issuer.
	Issuer string
	// Audiences: a token's aud must contain at least one of them. Required.
	Audiences []string
	// Algorithms is the allow-list of JWS algorithms; default RS256, ES256.
	// "none" and the HMAC algorithms (HS*) are refused.
	Algorithms []string
	// RequireType, when set (e.g. "at+jwt"), is the JOSE typ header every
	// token must carry; compared case-insensitively, with or without the
	// "application/" prefix.
	RequireType string
	// JWKSRefreshInterval is how often the issuer's JWKS is fetched again in
	// the background: a key that left the set stops verifying at the next
	// refresh. Zero means DefaultJWKSRefreshInterval; otherwise it must lie
	// between MinJWKSRefreshInterval and MaxJWKSRefreshInterval. A
	// Cache-Control max-age on the JWKS response shortens it (never below
	// MinJWKSRefreshInterval).
	JWKSRefreshInterval time.Duration
	// KeySet, when set, holds the issuer's keys (development, tests): no
	// discovery and no JWKS fetches happen for this issuer.
	KeySet oidc.KeySet
	// TrustEnvoyPayloadInMetadata, when set, is the payload_in_metadata
	// name of an Envoy jwt_authn provider for this issuer: a payload Envoy
	// verified and stored under it (and forwarded to the gRPC ext_authz
	// service with metadata_context_namespaces) stands in for the
	// signature check of the token the request carries, when the two
	// payloads are equal (see Authenticator.EnvoyJWTAuthn). Every claim
	// check still runs. Empty (the default): Tollgate verifies every token
	// itself. Not allowed with RequireType: the typ header is not in the
	// payload Envoy publishes.
	TrustEnvoyPayloadInMetadata string
}

// Config configures an Authenticator. The zero value of every field but
// Issuers is a safe default.
type Config struct {
	Issuers []IssuerConfig
	// ClockSkew is the tolerance applied to exp, nbf and iat. Zero means
	// DefaultClockSkew; negative is an error.
	ClockSkew time.Duration
	// MaxTokenBytes caps the token size; zero means DefaultMaxTokenBytes.
	MaxTokenBytes int
	// RefetchInterval is the minimum time between two JWKS fetches of one
	// issuer caused by tokens whose kid is unknown, so that random kids
	// cannot make every request fetch (scheduled refreshes are apart); zero
	// means DefaultRefetchInterval.
	RefetchInterval time.Duration
	// HTTPClient fetches discovery documents and key sets. Default: a client
	// with a DefaultHTTPTimeout timeout. Whatever the client, response bodies
	// past MaxResponseBytes fail with ErrResponseTooLarge.
	HTTPClient *http.Client
	// Now is the clock; default time.Now.
	Now func() time.Time
	// After waits on the clock for the background schedules (JWKS
	// refreshes, discovery retries); default time.After. Tests set it with
	// Now to a fake clock.
	After func(time.Duration) <-chan time.Time
	// Registerer, when set, receives the metrics:
	// tollgate_jwks_fetches_total{issuer,result} (result success, error or
	// not_modified), tollgate_oidc_discoveries_total{issuer,result},
	// tollgate_issuer_ready{issuer} (1 while the issuer's tokens can be
	// verified), tollgate_jwks_keys{issuer} and
	// tollgate_jwks_last_success_timestamp_seconds{issuer}. Labels hold only
	// configured issuer names. Nil: no metrics.
	Registerer prometheus.Registerer
	// Logger receives rejections (debug) and key-set fetches; default discard.
	// Tokens are never logged, only their fingerprints.
	Logger *slog.Logger
}

// supportedAlgs lists the asymmetric JWS algorithms an allow-list may hold.
const supportedAlgs = "RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512, EdDSA"

func isSupportedAlg(alg string) bool {
	switch alg {
	case oidc.RS256, oidc.RS384, oidc.RS512,
		oidc.PS256, oidc.PS384, oidc.PS512,
		oidc.ES256, oidc.ES384, oidc.ES512,
		oidc.EdDSA:
		return true
	}
	return false
}

func defaultAlgorithms() []string { return []string{oidc.RS256, oidc.ES256} }

// validate reports every problem of cfg at once.
func (cfg *Config) validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if len(cfg.Issuers) == 0 {
		add("issuers: at least one issuer is required")
	}
	seen := map[string]bool{}
	for i, ic := range cfg.Issuers {
		p := fmt.Sprintf("issuers[%d]", i)
		switch {
		case ic.Issuer == "":
			add("%s.issuer: required", p)
		case seen[ic.Issuer]:
			add("%s.issuer: %q is configured twice", p, ic.Issuer)
		case ic.KeySet == nil:
			if err := checkIssuerURL(ic.Issuer); err != nil {
				add("%s.issuer: %v", p, err)
			}
		}
		seen[ic.Issuer] = true

		if len(ic.Audiences) == 0 {
			add("%s.audiences: at least one audience is required", p)
		}
		for j, aud := range ic.Audiences {
			if strings.TrimSpace(aud) == "" {
				add("%s.audiences[%d]: empty", p, j)
			}
		}
		for j, alg := range ic.Algorithms {
			if err := checkAlgorithm(alg); err != nil {
				add("%s.algorithms[%d]: %v", p, j, err)
			}
		}
		if ic.RequireType != "" && strings.TrimSpace(ic.RequireType) != ic.RequireType {
			add("%s.require_type: %q has surrounding spaces", p, ic.RequireType)
		}
		if ic.JWKSRefreshInterval != 0 {
			if err := CheckJWKSRefreshInterval(ic.JWKSRefreshInterval); err != nil {
				add("%s.jwks_refresh_interval: %v", p, err)
			}
		}
		if err := CheckEnvoyPayloadInMetadata(ic.TrustEnvoyPayloadInMetadata, ic.RequireType); err != nil {
			add("%s.envoy_jwt_authn.payload_in_metadata: %v", p, err)
		}
	}
	if cfg.ClockSkew < 0 {
		add("clock_skew: %v is negative", cfg.ClockSkew)
	}
	if cfg.MaxTokenBytes < 0 {
		add("max_token_bytes: %d is negative", cfg.MaxTokenBytes)
	}
	if cfg.RefetchInterval < 0 {
		add("refetch_interval: %v is negative", cfg.RefetchInterval)
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("oidcjwt: invalid config: %w", errors.Join(errs...))
}

// CheckJWKSRefreshInterval reports whether d is an acceptable
// jwks_refresh_interval: between MinJWKSRefreshInterval and
// MaxJWKSRefreshInterval. (Zero, "use the default", is the caller's case.)
func CheckJWKSRefreshInterval(d time.Duration) error {
	switch {
	case d < MinJWKSRefreshInterval:
		hint := ""
		if d > 0 && d < time.Millisecond {
			hint = ` (a number without a unit is nanoseconds: write e.g. "5m" or "30s")`
		}
		return fmt.Errorf("%v is below the minimum %v%s", d, MinJWKSRefreshInterval, hint)
	case d > MaxJWKSRefreshInterval:
		return fmt.Errorf("%v is above the maximum %v", d, MaxJWKSRefreshInterval)
	}
	return nil
}

func checkIssuerURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("%q is not a URL: %v", s, err)
	}
	if (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return fmt.Errorf("%q is not an absolute http(s) URL", s)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("%q has a query or fragment", s)
	}
	return nil
}

func checkAlgorithm(alg string) error {
	switch {
	case strings.EqualFold(alg, "none"):
		return errors.New(`"none" is never allowed: it means an unsigned token`)
	case strings.HasPrefix(strings.ToUpper(alg), "HS"):
		return fmt.Errorf("%q is not allowed: an HMAC secret cannot come from a public key set", alg)
	case !isSupportedAlg(alg):
		return fmt.Errorf("%q is not a supported algorithm (want one of %s)", alg, supportedAlgs)
	}
	return nil
}

// withDefaults returns cfg with zero fields replaced by their defaults.
func (cfg Config) withDefaults() Config {
	if cfg.ClockSkew == 0 {
		cfg.ClockSkew = DefaultClockSkew
	}
	if cfg.MaxTokenBytes == 0 {
		cfg.MaxTokenBytes = DefaultMaxTokenBytes
	}
	if cfg.RefetchInterval == 0 {
		cfg.RefetchInterval = DefaultRefetchInterval
	}
	cfg.Issuers = append([]IssuerConfig(nil), cfg.Issuers...)
	for i := range cfg.Issuers {
		if cfg.Issuers[i].JWKSRefreshInterval == 0 {
			cfg.Issuers[i].JWKSRefreshInterval = DefaultJWKSRefreshInterval
		}
	}
	cfg.HTTPClient = limitedClient(cfg.HTTPClient, MaxResponseBytes)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.After == nil {
		cfg.After = time.After
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return cfg
}
