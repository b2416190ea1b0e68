package main

import (
	"testing"
	"time"

	"github.com/tollgate/tollgate/pdp"
)

// TestConfigDecisionTimeout: limits.decision_timeout is a duration, positive
// and bounded; absent means pdp's default.
func TestConfigDecisionTimeout(t *testing.T) {
	tests := []struct {
		yaml    string
		want    time.Duration // as parsed; 0 means pdp.DefaultDecisionTimeout applies
		wantErr string
	}{
		{yaml: "", want: 0},
		{yaml: "limits: {max_body_bytes: 1024}\n", want: 0},
		{yaml: "limits: {decision_timeout: 250ms}\n", want: 250 * time.Millisecond},
		{yaml: "limits: {decision_timeout: 2s}\n", want: 2 * time.Second},
		{yaml: "limits: {decision_timeout: 1ms}\n", want: time.Millisecond},
		{yaml: "limits: {decision_timeout: 1m}\n", want: pdp.MaxDecisionTimeout},
		{yaml: "limits: {decision_timeout: -1s}\n", wantErr: "limits.decision_timeout"},
		{yaml: "limits: {decision_timeout: 500us}\n", wantErr: "limits.decision_timeout"},
		{yaml: "limits: {decision_timeout: 61s}\n", wantErr: "limits.decision_timeout"},
		{yaml: "limits: {decision_timeout: 1h}\n", wantErr: "limits.decision_timeout"},
		{yaml: "limits: {decision_timeout: soon}\n", wantErr: "decision_timeout"},
	}
	for _, tc := range tests {
		c := parseConfigCase(t, tc.yaml, tc.wantErr)
		if c == nil {
			continue
		}
		if c.Limits.DecisionTimeout != tc.want {
			t.Errorf("%q: decision_timeout %v, want %v", tc.yaml, c.Limits.DecisionTimeout, tc.want)
		}
	}
}
