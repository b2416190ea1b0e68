package admin_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate/tollgate/pdp/admin"
	"github.com/tollgate/tollgate/pdp/authn/apikey"
)

// fakeBundles is a bundle registry with one bundle and a history.
type fakeBundles struct {
	mu      sync.Mutex
	active  string
	pinned  bool
	history []string
}

func (f *fakeBundles) Status() map[string]any {
	f.mu.Lock()
	defer f.mu.Unlock()
	return map[string]any{"tollgate": map[string]any{"active": map[string]string{"revision": f.active}, "pinned": f.pinned, "history": f.history, "last_error": nil}}
}

func (f *fakeBundles) Activate(_ context.Context, name, rev string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if name != "tollgate" {
		return fmt.Errorf("bundle %q: %w", name, admin.ErrNotFound)
	}
	for _, h := range f.history {
		if h == rev {
			f.active, f.pinned = rev, true
			return nil
		}
	}
	return fmt.Errorf("revision %q: %w", rev, admin.ErrNotFound)
}

func (f *fakeBundles) Unpin(_ context.Context, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if name != "tollgate" {
		return admin.ErrNotFound
	}
	f.pinned, f.active = false, f.history[0]
	return nil
}

// newKey adds a key with scopes to records and returns the raw key.
func newKey(t *testing.T, records *[]apikey.Record, owner string, scopes ...string) string {
	t.Helper()
	g, err := apikey.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	*records = append(*records, apikey.Record{ID: g.ID, Hash: g.Hash, Owner: owner, Scopes: scopes, Created: time.Now()})
	return g.Key.Reveal()
}

func TestAdminAPIRequiresAnAdminKey(t *testing.T) {
	var records []apikey.Record
	adminKey := newKey(t, &records, "ops", admin.Scope)
	decisionKey := newKey(t, &records, "billing", "products:read")
	revoked := newKey(t, &records, "former", admin.Scope)
	records[2].Revoked = time.Now().Add(-time.Hour)
	store, err := apikey.NewStore(records)
	if err != nil {
		t.Fatal(err)
	}
	fb := &fakeBundles{active: "r2", history: []string{"r2", "r1"}}
	srv := httptest.NewServer(admin.Handler(admin.Options{Keys: apikey.New(store, apikey.Options{}), Bundles: fb}))
	defer srv.Close()

	tests := []struct {
		name    string
		headers map[string][]string
		want    int
	}{
		{"no key", nil, http.StatusUnauthorized},
		{"unknown key", map[string][]string{"X-Api-Key": {"tgk_aaaaaaaaaaaaaaaa_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"}}, http.StatusUnauthorized},
		{"garbage bearer", map[string][]string{"Authorization": {"Bearer nope"}}, http.StatusUnauthorized},
		{"basic scheme", map[string][]string{"Authorization": {"Basic " + adminKey}}, http.StatusUnauthorized},
		{"two keys", map[string][]string{"X-Api-Key": {adminKey}, "Authorization": {"Bearer " + adminKey}}, http.StatusUnauthorized},
		{"revoked admin key", map[string][]string{"X-Api-Key": {revoked}}, http.StatusUnauthorized},
		{"decision key (no admin scope)", map[string][]string{"X-Api-Key": {decisionKey}}, http.StatusForbidden},
		{"decision key as bearer", map[string][]string{"Authorization": {"Bearer " + decisionKey}}, http.StatusForbidden},
		{"admin key in X-API-Key", map[string][]string{"X-Api-Key": {adminKey}}, http.StatusOK},
		{"admin key as bearer", map[string][]string{"Authorization": {"Bearer " + adminKey}}, http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, ep := range []struct{ method, path, body string }{
				{"GET", "/v1/bundles", ""},
				{"POST", "/v1/bundles/tollgate/activate", `{"revision": "r1"}`},
				{"POST", "/v1/bundles/tollgate/unpin", ""},
			} {
				req, _ := http.NewRequest(ep.method, srv.URL+ep.path, strings.NewReader(ep.body))
				for k, vs := range tt.headers {
					for _, v := range vs {
						req.Header.Add(k, v)
					}
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				var body map[string]any
				_ = json.NewDecoder(resp.Body).Decode(&body)
				resp.Body.Close()
				if resp.StatusCode != tt.want {
					t.Errorf("%s %s = %d, want %d", ep.method, ep.path, resp.StatusCode, tt.want)
				}
				if tt.want != http.StatusOK {
					if _, leaked := body["bundles"]; leaked {
						t.Errorf("%s %s: refused request got the bundles", ep.method, ep.path)
					}
				}
				raw, _ := json.Marshal(body)
				if strings.Contains(string(raw), adminKey) || strings.Contains(string(raw), decisionKey) {
					t.Errorf("%s %s: the answer echoes a key", ep.method, ep.path)
				}
			}
		})
	}
}

func TestAdminAPIActivateAndUnpin(t *testing.T) {
	var records []apikey.Record
	key := newKey(t, &records, "ops", admin.Scope)
	store, err := apikey.NewStore(records)
	if err != nil {
		t.Fatal(err)
	}
	fb := &fakeBundles{active: "r2", history: []string{"r2", "r1"}}
	srv := httptest.NewServer(admin.Handler(admin.Options{Keys: apikey.New(store, apikey.Options{}), Bundles: fb}))
	defer srv.Close()
	do := func(method, path, body string) int {
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	tests := []struct {
		name, method, path, body string
		want                     int
		active                   string
		pinned                   bool
	}{
		{"unknown revision", "POST", "/v1/bundles/tollgate/activate", `{"revision": "r9"}`, 404, "r2", false},
		{"unknown bundle", "POST", "/v1/bundles/other/activate", `{"revision": "r1"}`, 404, "r2", false},
		{"no revision", "POST", "/v1/bundles/tollgate/activate", `{}`, 400, "r2", false},
		{"unknown field", "POST", "/v1/bundles/tollgate/activate", `{"revision": "r1", "x": 1}`, 400, "r2", false},
		{"huge body", "POST", "/v1/bundles/tollgate/activate", `{"revision": "` + strings.Repeat("a", 10000) + `"}`, 400, "r2", false},
		{"GET activate", "GET", "/v1/bundles/tollgate/activate", ``, 405, "r2", false},
		{"rollback", "POST", "/v1/bundles/tollgate/activate", `{"revision": "r1"}`, 200, "r1", true},
		{"unpin", "POST", "/v1/bundles/tollgate/unpin", ``, 200, "r2", false},
		{"unknown path", "GET", "/v1/nothing", ``, 404, "r2", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := do(tt.method, tt.path, tt.body); got != tt.want {
				t.Errorf("status = %d, want %d", got, tt.want)
			}
			if fb.active != tt.active || fb.pinned != tt.pinned {
				t.Errorf("active %s pinned %v, want %s %v", fb.active, fb.pinned, tt.active, tt.pinned)
			}
		})
	}
}
