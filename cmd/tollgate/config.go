package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/tollgate/tollgate/pdp/credential"
)

// config is the YAML configuration file (tollgate serve --config FILE).
// Its zero value plus defaults() is a safe configuration: embedded policies,
// no issuers, no API keys, no trusted proxies.
type config struct {
	Listen         string         `yaml:"listen"`
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
	} `yaml:"bundle"`
	Policy struct {
		Query      string `yaml:"query"`
		CheckQuery string `yaml:"check_query"`
	} `yaml:"policy"`
	Limits struct {
		MaxBodyBytes   int64 `yaml:"max_body_bytes"`
		MaxHeaderBytes int   `yaml:"max_header_bytes"`
		MaxTokenBytes  int   `yaml:"max_token_bytes"`
	} `yaml:"limits"`
	Timeouts struct {
		ReadHeader time.Duration `yaml:"read_header"`
		Read       time.Duration `yaml:"read"`
		Write      time.Duration `yaml:"write"`
		Idle       time.Duration `yaml:"idle"`
		Shutdown   time.Duration `yaml:"shutdown"`
	} `yaml:"timeouts"`
	DecisionLog struct {
		Enabled bool `yaml:"enabled"`
	} `yaml:"decision_log"`
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
}

const defaultListen = ":8181"

// loadConfig reads and validates a configuration file. Unknown keys are an
// error, so a typo never silently turns a setting off.
func loadConfig(path string) (*config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return parseConfig(b)
}

func parseConfig(b []byte) (*config, error) {
	var c config
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("parse config: %w", err)
	}
	c.defaults()
	if err := c.validate(); err != nil {
		return nil, err
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
}

// validate checks everything that can be checked without I/O.
func (c *config) validate() error {
	var errs []error
	if _, err := c.trustedProxies(); err != nil {
		errs = append(errs, err)
	}
	for i, is := range c.Issuers {
		if is.Issuer == "" {
			errs = append(errs, fmt.Errorf("issuers[%d]: issuer is required", i))
		}
		if len(is.Audiences) == 0 {
			errs = append(errs, fmt.Errorf("issuers[%d]: at least one audience is required", i))
		}
	}
	if c.ClockSkew < 0 || c.ClockSkew > 5*time.Minute {
		errs = append(errs, fmt.Errorf("clock_skew %s: want between 0s and 5m", c.ClockSkew))
	}
	if c.Limits.MaxBodyBytes < 0 || c.Limits.MaxHeaderBytes < 0 || c.Limits.MaxTokenBytes < 0 {
		errs = append(errs, errors.New("limits must not be negative"))
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
