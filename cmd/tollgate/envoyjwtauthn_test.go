package main

import (
	"slices"
	"strings"
	"testing"
)

func TestEnvoyJWTAuthnConfig(t *testing.T) {
	tests := []struct {
		name    string
		yaml    string
		want    []string // jwtAuthnPayloads
		wantErr string
	}{
		{name: "off by default", yaml: "issuers: [{issuer: https://a/, audiences: [x]}]\n"},
		{name: "one issuer trusts", yaml: `
issuers:
  - issuer: https://a/
    audiences: [x]
    envoy_jwt_authn: {payload_in_metadata: jwt_payload}
  - issuer: https://b/
    audiences: [x]
`, want: []string{"jwt_payload"}},
		{name: "names without duplicates", yaml: `
issuers:
  - {issuer: https://a/, audiences: [x], envoy_jwt_authn: {payload_in_metadata: p}}
  - {issuer: https://b/, audiences: [x], envoy_jwt_authn: {payload_in_metadata: p}}
  - {issuer: https://c/, audiences: [x], envoy_jwt_authn: {payload_in_metadata: q}}
`, want: []string{"p", "q"}},
		{name: "with require_type", yaml: "issuers: [{issuer: https://a/, audiences: [x], require_type: at+jwt, envoy_jwt_authn: {payload_in_metadata: p}}]\n",
			wantErr: "issuers[0].envoy_jwt_authn.payload_in_metadata: cannot be used with require_type"},
		{name: "typo", yaml: "issuers: [{issuer: https://a/, audiences: [x], envoy_jwt_authn: {payload: p}}]\n", wantErr: `unknown key "payload"`},
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
			if got := c.jwtAuthnPayloads(); !slices.Equal(got, tc.want) {
				t.Errorf("jwtAuthnPayloads = %q, want %q", got, tc.want)
			}
		})
	}
}
