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
)

// Defaults applied where Config leaves a field zero.
const (
	DefaultClockSkew           = 30 * time.Second
	DefaultMaxTokenBytes       = 8192
	DefaultJWKSRefreshInterval = 30 * time.Second
	DefaultHTTPTimeout         = 5 * time.Second
	// MaxResponseBytes caps every discovery and JWKS response body.
	MaxResponseBytes = 1 << 20
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
	// KeySet, when set, holds the issuer's keys (development, tests): no
	// discovery and no JWKS fetches happen for this issuer.
	KeySet oidc.KeySet
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
	// JWKSRefreshInterval is the minimum time between two JWKS fetches of one
	// issuer caused by a token whose kid is unknown; zero means
	// DefaultJWKSRefreshInterval.
	JWKSRefreshInterval time.Duration
	// HTTPClient fetches discovery documents and key sets. Default: a client
	// with a DefaultHTTPTimeout timeout. Whatever the client, response bodies
	// past MaxResponseBytes fail with ErrResponseTooLarge.
	HTTPClient *http.Client
	// Now is the clock; default time.Now.
	Now func() time.Time
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
	}
	if cfg.ClockSkew < 0 {
		add("clock_skew: %v is negative", cfg.ClockSkew)
	}
	if cfg.MaxTokenBytes < 0 {
		add("max_token_bytes: %d is negative", cfg.MaxTokenBytes)
	}
	if cfg.JWKSRefreshInterval < 0 {
		add("jwks_refresh_interval: %v is negative", cfg.JWKSRefreshInterval)
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("oidcjwt: invalid config: %w", errors.Join(errs...))
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
	if cfg.JWKSRefreshInterval == 0 {
		cfg.JWKSRefreshInterval = DefaultJWKSRefreshInterval
	}
	cfg.HTTPClient = limitedClient(cfg.HTTPClient, MaxResponseBytes)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return cfg
}
