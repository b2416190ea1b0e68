package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/download"
	"github.com/open-policy-agent/opa/v1/keys"
	"github.com/open-policy-agent/opa/v1/plugins/rest"

	"github.com/tollgate/tollgate/bundles"
)

// serviceConfig is one entry of OPA's `services` section: the keys
// Tollgate takes, with OPA's meaning.
type serviceConfig struct {
	URL     string            `yaml:"url"`
	Type    string            `yaml:"type"` // "" (OPA's bundle API) or "oci"
	Headers map[string]string `yaml:"headers"`
	// ResponseHeaderTimeoutSeconds is OPA's response_header_timeout_seconds
	// (default 10).
	ResponseHeaderTimeoutSeconds *int64 `yaml:"response_header_timeout_seconds"`
	Credentials                  struct {
		Bearer *struct {
			Token     string `yaml:"token"`
			TokenPath string `yaml:"token_path"`
			Scheme    string `yaml:"scheme"`
		} `yaml:"bearer"`
	} `yaml:"credentials"`
	TLS struct {
		CACert string `yaml:"ca_cert"`
	} `yaml:"tls"`
}

// bundleConfig is one entry of OPA's `bundles` section (and of Tollgate's
// `shadow`).
type bundleConfig struct {
	Service  string `yaml:"service"`
	Resource string `yaml:"resource"`
	Persist  bool   `yaml:"persist"`
	Polling  struct {
		MinDelaySeconds           *int64 `yaml:"min_delay_seconds"`
		MaxDelaySeconds           *int64 `yaml:"max_delay_seconds"`
		LongPollingTimeoutSeconds *int64 `yaml:"long_polling_timeout_seconds"`
	} `yaml:"polling"`
	Signing *struct {
		KeyID        string   `yaml:"keyid"`
		Scope        string   `yaml:"scope"`
		ExcludeFiles []string `yaml:"exclude_files"`
	} `yaml:"signing"`
	SizeLimitBytes int64 `yaml:"size_limit_bytes"`
}

// keyConfig is one entry of OPA's `keys` section (public keys only: a
// serving Tollgate never signs).
type keyConfig struct {
	Algorithm string `yaml:"algorithm"`
	Key       string `yaml:"key"`
	Scope     string `yaml:"scope"`
}

// defaultBundleName names the bundle of `bundle.source` (and of the
// embedded default).
const defaultBundleName = "tollgate"

// remote reports whether the bundle is pulled from a service.
func (b bundleConfig) remote() bool { return b.Service != "" }

// localSource is the bundle's "dir:" or "file:" source when it has no
// service: resource "dir:PATH", "file:PATH" or OPA's "file:///PATH".
func (b bundleConfig) localSource() (string, error) {
	r := b.Resource
	switch {
	case strings.HasPrefix(r, "file://"):
		u, err := url.Parse(r)
		if err != nil || u.Path == "" {
			return "", fmt.Errorf("resource %q: want file:///PATH", r)
		}
		return bundles.SourceFilePrefix + u.Path, nil
	case strings.HasPrefix(r, bundles.SourceFilePrefix) && len(r) > len(bundles.SourceFilePrefix),
		strings.HasPrefix(r, bundles.SourceDirPrefix) && len(r) > len(bundles.SourceDirPrefix):
		return r, nil
	}
	return "", fmt.Errorf("resource %q: without a service, want file:PATH, file:///PATH or dir:PATH", r)
}

// downloadConfig is OPA's downloader config for the bundle.
func (b bundleConfig) downloadConfig() (download.Config, error) {
	var dc download.Config
	dc.Polling.MinDelaySeconds = b.Polling.MinDelaySeconds
	dc.Polling.MaxDelaySeconds = b.Polling.MaxDelaySeconds
	dc.Polling.LongPollingTimeoutSeconds = b.Polling.LongPollingTimeoutSeconds
	if err := dc.ValidateAndInjectDefaults(); err != nil {
		return dc, err
	}
	return dc, nil
}

// verification is the bundle's signature requirement: OPA's `signing`
// block against `keys`. A bundle from a service must be signed: with keys
// configured and no `signing` block, any configured key may have signed
// it. Nil when the bundle is local and has no `signing` block.
func (b bundleConfig) verification(ks map[string]*keys.Config) (*bundle.VerificationConfig, error) {
	if b.Signing == nil && !b.remote() {
		return nil, nil
	}
	if len(ks) == 0 {
		return nil, errors.New("a signed bundle needs the public keys that may sign it in `keys` (bundles from a service must be signed)")
	}
	var keyID, scope string
	var exclude []string
	if b.Signing != nil {
		keyID, scope, exclude = b.Signing.KeyID, b.Signing.Scope, b.Signing.ExcludeFiles
	}
	vc := bundle.NewVerificationConfig(ks, keyID, scope, exclude)
	if err := vc.ValidateAndInjectDefaults(ks); err != nil {
		return nil, err
	}
	return vc, nil
}

// opaKeys parses `keys` with OPA's own parser (algorithm defaults, checks).
func (c *config) opaKeys() (map[string]*keys.Config, error) {
	if len(c.Keys) == 0 {
		return nil, nil
	}
	raw, err := json.Marshal(c.Keys)
	if err != nil {
		return nil, err
	}
	ks, err := keys.ParseKeysConfig(raw)
	if err != nil {
		return nil, fmt.Errorf("keys: %w", err)
	}
	return ks, nil
}

// restClient builds the REST client of service name with OPA's rest package.
func (c *config) restClient(name string, ks map[string]*keys.Config, opts ...func(*rest.Client)) (rest.Client, error) {
	s, ok := c.Services[name]
	if !ok {
		return rest.Client{}, fmt.Errorf("service %q is not in `services`", name)
	}
	m := map[string]any{"name": name, "url": s.URL}
	if s.Type != "" {
		m["type"] = s.Type
	}
	if len(s.Headers) > 0 {
		m["headers"] = s.Headers
	}
	if s.ResponseHeaderTimeoutSeconds != nil {
		m["response_header_timeout_seconds"] = *s.ResponseHeaderTimeoutSeconds
	}
	if s.Credentials.Bearer != nil {
		m["credentials"] = map[string]any{"bearer": map[string]any{
			"token": s.Credentials.Bearer.Token, "token_path": s.Credentials.Bearer.TokenPath, "scheme": s.Credentials.Bearer.Scheme,
		}}
	}
	if s.TLS.CACert != "" {
		m["tls"] = map[string]any{"ca_cert": s.TLS.CACert}
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return rest.Client{}, err
	}
	client, err := rest.New(raw, ks, opts...)
	if err != nil {
		// OPA's message may quote the configuration: name the service only.
		return rest.Client{}, fmt.Errorf("service %q: invalid configuration", name)
	}
	return client, nil
}

// validateBundles checks the policy bundle sections without I/O.
func (c *config) validateBundles() []error {
	var errs []error
	if len(c.Bundles) > 1 {
		errs = append(errs, fmt.Errorf("bundles: %d bundles configured; Tollgate serves one policy bundle", len(c.Bundles)))
	}
	if len(c.Bundles) > 0 && c.Bundle.Source != "" {
		errs = append(errs, errors.New("bundle.source and bundles: choose one source for the policy"))
	}
	if h := c.Bundle.History; h < 0 || h > 1000 {
		errs = append(errs, fmt.Errorf("bundle.history %d: want 1 to 1000 (default 10)", h))
	}
	if c.MaxBundleAge < 0 {
		errs = append(errs, errors.New("max_bundle_age must not be negative"))
	}
	ks, err := c.opaKeys()
	if err != nil {
		errs = append(errs, err)
	}
	for name, s := range c.Services {
		u, err := url.Parse(s.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("services.%s.url: want an http or https URL", name))
		}
		if s.Type != "" && s.Type != "oci" {
			errs = append(errs, fmt.Errorf("services.%s.type %q: want oci or nothing", name, s.Type))
		}
	}
	check := func(section, name string, b bundleConfig) {
		where := section + "." + name
		if b.remote() {
			if _, ok := c.Services[b.Service]; !ok {
				errs = append(errs, fmt.Errorf("%s.service %q is not in services", where, b.Service))
			}
			if b.Resource == "" {
				errs = append(errs, fmt.Errorf("%s.resource is required", where))
			}
			if _, err := b.downloadConfig(); err != nil {
				errs = append(errs, fmt.Errorf("%s.polling: %w", where, err))
			}
		} else if _, err := b.localSource(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", where, err))
		}
		if b.SizeLimitBytes < 0 {
			errs = append(errs, fmt.Errorf("%s.size_limit_bytes must not be negative", where))
		}
		if _, err := b.verification(ks); err != nil {
			errs = append(errs, fmt.Errorf("%s.signing: %w", where, err))
		}
	}
	for name, b := range c.Bundles {
		check("bundles", name, b)
	}
	for name, b := range c.Shadow {
		check("shadow", name, b)
		if name != c.bundleName() {
			errs = append(errs, fmt.Errorf("shadow.%s: names no configured bundle (the policy bundle is %q)", name, c.bundleName()))
		}
	}
	if (c.Admin.Listen == "") != (c.Admin.APIKeysFile == "") {
		errs = append(errs, errors.New("admin: listen and api_keys_file go together (every admin request needs an admin key)"))
	}
	if c.Admin.Listen != "" && c.Admin.Listen == c.Listen {
		errs = append(errs, errors.New("admin.listen must differ from listen"))
	}
	return errs
}

// bundleName is the policy bundle's name: the one key under `bundles`,
// else "tollgate".
func (c *config) bundleName() string {
	for name := range c.Bundles {
		return name
	}
	return defaultBundleName
}
