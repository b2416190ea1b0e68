package native_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/pdp/adapter/native"
	"github.com/tollgate/tollgate/pdp/decision"
	"github.com/tollgate/tollgate/pdp/request"
)

type recorder struct {
	got    request.Raw
	called bool
}

func (r *recorder) Decide(_ context.Context, raw request.Raw) decision.Decision {
	r.got, r.called = raw, true
	return decision.Decision{ID: "d1", Allow: true, Status: 200, Reasons: []string{}, Headers: map[string]string{"x-user-id": "alice"}, PolicyRevision: "rev-1"}
}

func TestDecisionBody(t *testing.T) {
	tests := []struct {
		name       string
		body       string
		ctype      string
		wantStatus int
		wantErr    string // substring of the error message
	}{
		{name: "valid", body: `{"method":"GET","path":"/products?page=2","host":"api","scheme":"https","headers":{"Authorization":"Bearer x","Accept":["a","b"]},"source_ip":"203.0.113.7"}`, wantStatus: 200},
		{name: "not json", body: `method=GET`, wantStatus: 400, wantErr: "not valid JSON"},
		{name: "empty", body: ``, wantStatus: 400, wantErr: "empty"},
		{name: "truncated", body: `{"method":"GET"`, wantStatus: 400, wantErr: "not valid JSON"},
		{name: "wrong type", body: `{"method":1,"path":"/"}`, wantStatus: 400, wantErr: `"method"`},
		{name: "header number", body: `{"method":"GET","path":"/","headers":{"a":1}}`, wantStatus: 400, wantErr: `header "a"`},
		{name: "headers not object", body: `{"method":"GET","path":"/","headers":[]}`, wantStatus: 400, wantErr: "headers must be an object"},
		{name: "missing method", body: `{"path":"/"}`, wantStatus: 400, wantErr: "required"},
		{name: "missing path", body: `{"method":"GET"}`, wantStatus: 400, wantErr: "required"},
		{name: "unknown field", body: `{"method":"GET","path":"/","pathh":"/x"}`, wantStatus: 400, wantErr: "unknown field"},
		{name: "trailing data", body: `{"method":"GET","path":"/"} {}`, wantStatus: 400, wantErr: "exactly one"},
		{name: "array", body: `[]`, wantStatus: 400, wantErr: "must be a JSON object"},
		{name: "oversized", body: `{"method":"GET","path":"/` + strings.Repeat("a", 2000) + `"}`, wantStatus: 413, wantErr: "over 1024 bytes"},
		{name: "content type is not required", body: `{"method":"GET","path":"/products?page=2","scheme":"https","headers":{"Accept":["a","b"]},"source_ip":"203.0.113.7"}`, ctype: "application/x-www-form-urlencoded", wantStatus: 200},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{}
			h := native.New(rec, native.Options{MaxBodyBytes: 1024})
			r := httptest.NewRequest(http.MethodPost, "/v1/decision", strings.NewReader(tc.body))
			if tc.ctype != "" {
				r.Header.Set("Content-Type", tc.ctype)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tc.wantStatus {
				t.Fatalf("status = %d, want %d; body %s", w.Code, tc.wantStatus, w.Body)
			}
			var out map[string]any
			if err := json.Unmarshal(w.Body.Bytes(), &out); err != nil {
				t.Fatalf("answer is not JSON: %v: %s", err, w.Body)
			}
			if tc.wantStatus != 200 {
				if rec.called {
					t.Fatal("decider called for a bad body")
				}
				msg, _ := out["error"].(string)
				if !strings.Contains(msg, tc.wantErr) {
					t.Fatalf("error = %q, want it to mention %q", msg, tc.wantErr)
				}
				return
			}
			for _, k := range []string{"decision_id", "allow", "status", "reasons", "headers", "policy_revision"} {
				if _, ok := out[k]; !ok {
					t.Errorf("answer lacks %q: %s", k, w.Body)
				}
			}
			if rec.got.Target != "/products?page=2" || rec.got.SourceIP != "203.0.113.7" || rec.got.Scheme != "https" {
				t.Errorf("raw = %+v", rec.got)
			}
			if got := rec.got.Headers["Accept"]; len(got) != 2 {
				t.Errorf("list header = %q", got)
			}
		})
	}
}
