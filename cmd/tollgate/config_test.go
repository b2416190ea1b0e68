package main

import (
	"strings"
	"testing"
	"time"
)

func TestParseConfig(t *testing.T) {
	tests := []struct {
		name    string
		yaml    string
		wantErr string
		check   func(t *testing.T, c *config)
	}{
		{name: "empty is safe defaults", yaml: "", check: func(t *testing.T, c *config) {
			if c.Listen != "127.0.0.1:8181" || len(c.TrustedProxies) != 0 || len(c.Issuers) != 0 || c.APIKeys.File != "" || c.Bundle.Source != "" {
				t.Errorf("defaults = %+v", c)
			}
		}},
		{name: "design example", yaml: `
listen: ":9000"
trusted_proxies: ["127.0.0.1/32", "10.0.0.1"]
issuers:
  - issuer: "https://idp.example.com/"
    audiences: ["orders-api"]
    algorithms: ["RS256", "ES256"]
api_keys:
  file: "keys.yaml"
credentials:
  bearer: {headers: ["authorization"], cookies: ["session"], query: ["access_token"]}
  api_key: {headers: ["x-api-key"], query: ["api_key"]}
bundle:
  source: "dir:./policies"
clock_skew: 10s
`, check: func(t *testing.T, c *config) {
			if c.Listen != ":9000" || c.Issuers[0].Audiences[0] != "orders-api" || c.APIKeys.File != "keys.yaml" ||
				c.Bundle.Source != "dir:./policies" || c.ClockSkew != 10*time.Second || c.Credentials.APIKey.Headers[0] != "x-api-key" {
				t.Errorf("parsed = %+v", c)
			}
			p, err := c.trustedProxies()
			if err != nil || len(p) != 2 || p[1].String() != "10.0.0.1/32" {
				t.Errorf("proxies = %v, %v", p, err)
			}
		}},
		{name: "typo is an error", yaml: "listne: x\n", wantErr: `config:1: unknown key "listne" at the top level; valid keys: listen, tls,`},
		{name: "bad proxy", yaml: "trusted_proxies: [nope]\n", wantErr: "trusted_proxies"},
		{name: "issuer without audience", yaml: "issuers: [{issuer: https://x/}]\n", wantErr: "audience"},
		{name: "issuer without url", yaml: "issuers: [{audiences: [a]}]\n", wantErr: "issuer is required"},
		{name: "skew too large", yaml: "clock_skew: 1h\n", wantErr: "clock_skew"},
		{name: "bad log level", yaml: "log: {level: loud}\n", wantErr: "log.level"},
		{name: "negative limit", yaml: "limits: {max_body_bytes: -1}\n", wantErr: "negative"},
		{name: "not yaml", yaml: "listen: [", wantErr: "config:1: invalid YAML"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := parseConfig([]byte(tc.yaml))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want it to mention %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, c)
		})
	}
}

// parseConfigCase parses one table case's YAML. With wantErr, it checks
// that parsing fails with an error that mentions it, and returns nil;
// otherwise it returns the configuration (nil, with an error reported,
// when parsing fails).
func parseConfigCase(t *testing.T, yaml, wantErr string) *config {
	t.Helper()
	c, err := parseConfig([]byte(yaml))
	switch {
	case wantErr != "":
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Errorf("%q: err = %v, want it to mention %q", yaml, err, wantErr)
		}
		return nil
	case err != nil:
		t.Errorf("%q: %v", yaml, err)
		return nil
	}
	return c
}
