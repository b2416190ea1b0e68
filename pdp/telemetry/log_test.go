package telemetry_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/pdp"
	"github.com/tollgate/tollgate/pdp/authn"
	"github.com/tollgate/tollgate/pdp/credential"
	"github.com/tollgate/tollgate/pdp/request"
	"github.com/tollgate/tollgate/pdp/telemetry"
)

type brokenAuthn struct{}

func (brokenAuthn) Authenticate(context.Context, credential.Credential) (authn.Outcome, error) {
	return authn.Outcome{}, errors.New("jwks unreachable")
}

// TestLogLinesCarryDecisionAndRequestIDs (issue 10): a line the pipeline
// logs about a decision carries its decision_id and the request's
// x-request-id (and a credential-shaped x-request-id is masked).
func TestLogLinesCarryDecisionAndRequestIDs(t *testing.T) {
	tests := []struct {
		name, requestID, want string
	}{
		{"plain request id", "req-7f3a", "req-7f3a"},
		{"a token as request id", "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl", "[masked]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			log := slog.New(telemetry.LogHandler(slog.NewJSONHandler(&buf, nil)))
			d, err := pdp.New(pdp.Config{Engine: engineOf(t), Authenticators: []authn.Authenticator{brokenAuthn{}}, Logger: log})
			if err != nil {
				t.Fatal(err)
			}
			dec := d.Decide(context.Background(), request.Raw{Method: "GET", Target: "/a", Headers: map[string][]string{
				"Authorization": {"Bearer some-token-value"}, "X-Request-Id": {tc.requestID}}})
			lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
			if len(lines) == 0 || lines[0] == "" {
				t.Fatal("nothing logged")
			}
			for _, line := range lines {
				var rec map[string]any
				if err := json.Unmarshal([]byte(line), &rec); err != nil {
					t.Fatal(err)
				}
				if rec["decision_id"] != dec.ID || rec["request_id"] != tc.want {
					t.Errorf("line %s: want decision_id %s and request_id %q", line, dec.ID, tc.want)
				}
			}
			if strings.Contains(buf.String(), "some-token-value") || strings.Contains(buf.String(), "c2lnbmF0dXJl") {
				t.Error("a credential is in the logs")
			}
		})
	}
}
