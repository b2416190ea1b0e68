package oidcjwt

import (
	"encoding/base64"
	"testing"

	"github.com/tollgate/tollgate/pdp/authn"
)

// TestPrecheckCanonicalSignature: the signature part is held to canonical
// base64url like the other two, before any key is looked at.
func TestPrecheckCanonicalSignature(t *testing.T) {
	enc := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	prefix := enc(`{"alg":"ES256"}`) + "." + enc(`{"iss":"https://idp"}`) + "."
	cases := []struct{ sig, reason string }{
		{"c2k", ""},                    // "si": the unused bits of 'k' (100100) are zero
		{"c2l", authn.ReasonMalformed}, // 'l' (100101): same bytes, one bit set
		{"c2m", authn.ReasonMalformed},
		{"c2n", authn.ReasonMalformed},
		{"cw", ""}, // "s"
		{"cx", authn.ReasonMalformed},
		{"c_", authn.ReasonMalformed},
		{"c2ln", ""},
		{"c2lnA", authn.ReasonMalformed}, // a length no encoding has
		{"", ""},                         // no signature: go-jose refuses it
	}
	for _, tc := range cases {
		if _, reason := precheck(prefix+tc.sig, DefaultMaxTokenBytes); reason != tc.reason {
			t.Errorf("signature %q: precheck = %q, want %q", tc.sig, reason, tc.reason)
		}
	}
}
