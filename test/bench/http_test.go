package bench

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/tollgate/tollgate/pdp/server"
)

// BenchmarkHTTP is one decision through the server's handler, in process:
// the router, the middleware (client auth, metrics), the JSON body in and
// the JSON decision out, around Decide. It shows what the HTTP layer adds
// to BenchmarkDecide.
func BenchmarkHTTP(b *testing.B) {
	f := newFixture(b, fixtureOptions{engines: onlyDecisionCache})
	h := server.Handler(f.decider, server.Options{})
	for _, bc := range []struct {
		name string
		body map[string]any
	}{
		{"decision_jwt_sensitive_seen_before", map[string]any{"method": "GET", "path": "/customers/42/orders?page=2",
			"headers": map[string]any{"authorization": "Bearer " + f.rsToken, "x-request-id": "0f4c2a9be1d84c7f", "user-agent": "bench"}}},
		{"decision_apikey_internal", map[string]any{"method": "GET", "path": "/products/7",
			"headers": map[string]any{"x-api-key": f.key, "x-request-id": "0f4c2a9be1d84c7f", "user-agent": "bench"}}},
	} {
		body, err := json.Marshal(bc.body)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				req := httptest.NewRequest(http.MethodPost, "/v1/decision", bytes.NewReader(body))
				req.RemoteAddr = "127.0.0.1:40000"
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				if rec.Code != http.StatusOK || !bytes.Contains(rec.Body.Bytes(), []byte(`"allow":true`)) {
					b.Fatalf("%d %s", rec.Code, rec.Body)
				}
			}
		})
	}
}
