package main

import (
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
		c := parseConfigCase(t, tc.yaml, tc.wantErr)
		if c == nil {
			continue
		}
		l := c.Limits
		if l.TokenCacheEntries != tc.tokens || l.TokenCacheBytes != tc.tokenBytes || l.DecisionCacheEntries != tc.decisions || l.DecisionCacheBytes != tc.decisionBytes {
			t.Errorf("%q: limits %+v", tc.yaml, l)
		}
	}
}
