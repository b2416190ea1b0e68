package main

import (
	"strings"
	"testing"
)

// TestConfigCacheLimits: the token and decision caches are bounded by
// limits.*_cache_entries (-1 off, 0 default) and limits.*_cache_bytes.
func TestConfigCacheLimits(t *testing.T) {
	tests := []struct {
		yaml                      string
		tokens, decisions         int
		tokenBytes, decisionBytes int64
		wantErr                   string
	}{
		{yaml: ""},
		{yaml: "limits: {token_cache_entries: 200000, token_cache_bytes: 409600000}\n", tokens: 200000, tokenBytes: 409600000},
		{yaml: "limits: {token_cache_entries: -1, decision_cache_entries: -1}\n", tokens: -1, decisions: -1},
		{yaml: "limits: {decision_cache_entries: 5000, decision_cache_bytes: 1048576}\n", decisions: 5000, decisionBytes: 1 << 20},
		{yaml: "limits: {token_cache_entries: -2}\n", wantErr: "limits.token_cache_entries"},
		{yaml: "limits: {token_cache_bytes: -1}\n", wantErr: "limits.token_cache_entries"},
		{yaml: "limits: {decision_cache_entries: -5}\n", wantErr: "limits.decision_cache_entries"},
		{yaml: "limits: {decision_cache_bytes: -1}\n", wantErr: "limits.decision_cache_entries"},
		{yaml: "limits: {token_cache_entries: lots}\n", wantErr: "token_cache_entries"},
	}
	for _, tc := range tests {
		c, err := parseConfig([]byte(tc.yaml))
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%q: err = %v, want it to mention %q", tc.yaml, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%q: %v", tc.yaml, err)
		}
		l := c.Limits
		if l.TokenCacheEntries != tc.tokens || l.TokenCacheBytes != tc.tokenBytes || l.DecisionCacheEntries != tc.decisions || l.DecisionCacheBytes != tc.decisionBytes {
			t.Errorf("%q: limits %+v", tc.yaml, l)
		}
	}
}
