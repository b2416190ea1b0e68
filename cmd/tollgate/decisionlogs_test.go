package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/pdp/request"
	"github.com/tollgate/tollgate/pdp/telemetry/telemetrytest"
)

// TestDecisionLogsConfig (issue 10): OPA's decision_logs section is read
// with OPA's meaning and rules; mistakes are errors naming the key.
func TestDecisionLogsConfig(t *testing.T) {
	const svc = "services: {collector: {url: \"https://logs.example.com\"}, other: {url: \"https://x.example.com\"}}\n"
	tests := []struct {
		name    string
		yaml    string
		wantErr string
		service string
	}{
		{name: "service and reporting", yaml: svc + "decision_logs: {service: collector, resource: /v1/logs, reporting: {min_delay_seconds: 5, max_delay_seconds: 10, buffer_type: event, buffer_size_limit_events: 500, upload_size_limit_bytes: 65536}}", service: "collector"},
		{name: "console only", yaml: "decision_logs: {console: true, mask_decision: /system/log/mask, drop_decision: system/log/drop}"},
		{name: "the only service is the default", yaml: "services: {c: {url: \"https://logs.example.com\"}}\ndecision_logs: {reporting: {buffer_size_limit_bytes: 1048576}}", service: "c"},
		{name: "several services, none named", yaml: svc + "decision_logs: {}", wantErr: "decision_logs.service"},
		{name: "unknown service", yaml: svc + "decision_logs: {service: nope}", wantErr: `decision_logs.service "nope"`},
		{name: "min without max", yaml: svc + "decision_logs: {service: collector, reporting: {min_delay_seconds: 5}}", wantErr: "go together"},
		{name: "max below min", yaml: svc + "decision_logs: {service: collector, reporting: {min_delay_seconds: 5, max_delay_seconds: 1}}", wantErr: "min_delay_seconds <= max_delay_seconds"},
		{name: "events limit on a size buffer", yaml: svc + "decision_logs: {service: collector, reporting: {buffer_size_limit_events: 10}}", wantErr: "buffer_size_limit_events"},
		{name: "bytes limit on an event buffer", yaml: svc + "decision_logs: {service: collector, reporting: {buffer_type: event, buffer_size_limit_bytes: 10}}", wantErr: "buffer_size_limit_bytes"},
		{name: "unknown buffer type", yaml: svc + "decision_logs: {service: collector, reporting: {buffer_type: disk}}", wantErr: "buffer_type"},
		{name: "zero buffer", yaml: svc + "decision_logs: {service: collector, reporting: {buffer_size_limit_bytes: 0}}", wantErr: "above 0"},
		{name: "tiny uploads", yaml: svc + "decision_logs: {service: collector, reporting: {upload_size_limit_bytes: 10}}", wantErr: "at least 90"},
		{name: "unknown key", yaml: svc + "decision_logs: {service: collector, plugin: x}", wantErr: "plugin"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := parseConfig([]byte(tc.yaml))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one naming %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := c.decisionLogService(); got != tc.service {
				t.Fatalf("service = %q, want %q", got, tc.service)
			}
			l, err := newDecisionLog(c, &bytes.Buffer{}, "test", nil, slog.New(slog.DiscardHandler))
			if err != nil || l == nil {
				t.Fatalf("newDecisionLog: %v %v", l, err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			l.Start()
			l.Stop(ctx)
		})
	}
}

// TestDecisionLogDeprecatedEnabled: decision_log.enabled still writes
// the decision line of earlier versions, with a deprecation warning, and
// is no decision_logs section.
func TestDecisionLogDeprecatedEnabled(t *testing.T) {
	c, err := parseConfig([]byte("decision_log: {enabled: true}"))
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&logs, nil))
	legacy := legacyDecisionLog(c, log)
	if legacy == nil || !strings.Contains(logs.String(), "deprecated") {
		t.Fatalf("legacy logger %v, logs %q", legacy, logs.String())
	}
	d, err := buildDecider(context.Background(), c, false, log)
	if err != nil {
		t.Fatal(err)
	}
	d.Decide(context.Background(), request.Raw{Method: "GET", Target: "/public/x"})
	if !strings.Contains(logs.String(), `"msg":"decision"`) {
		t.Fatalf("no decision line: %s", logs.String())
	}
	if l, err := newDecisionLog(c, &bytes.Buffer{}, "test", nil, log); l != nil || err != nil {
		t.Fatalf("decision_log.enabled made a decision_logs logger: %v %v", l, err)
	}
	off, err := parseConfig(nil)
	if err != nil {
		t.Fatal(err)
	}
	if legacyDecisionLog(off, log) != nil {
		t.Fatal("the legacy decision log is on by default")
	}
}

// TestServeDecisionLogsExplainAndPprof (issue 10) runs serve as configured
// by a file: the decision log uploads OPA events to a collector on
// loopback, with the revision and the matched route of the embedded
// default policy (the log follows the activated bundle); the admin
// listener answers POST /v1/explain and /debug/pprof/ to an admin key
// only; /metrics counts the decisions.
func TestServeDecisionLogsExplainAndPprof(t *testing.T) {
	dir := t.TempDir()
	events := make(chan map[string]any, 100)
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		zr, err := gzip.NewReader(r.Body)
		if err != nil || r.URL.Path != "/logs" {
			http.Error(w, "bad", http.StatusBadRequest)
			return
		}
		var batch []map[string]any
		if err := json.NewDecoder(zr).Decode(&batch); err != nil {
			http.Error(w, "bad", http.StatusBadRequest)
			return
		}
		for _, e := range batch {
			events <- e
		}
	}))
	defer collector.Close()
	keyFile := filepath.Join(dir, "admin-keys.yaml")
	out, err := runCmd(t, "apikey", "new", "--owner", "ops", "--scopes", "tollgate:admin", "--file", keyFile)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	adminKey := lines[len(lines)-1]
	cfg := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfg, []byte(`listen: "127.0.0.1:0"
admin: {listen: "127.0.0.2:0", api_keys_file: "`+keyFile+`"}
services: {collector: {url: "`+collector.URL+`"}}
decision_logs: {service: collector, reporting: {min_delay_seconds: 1, max_delay_seconds: 1}}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	logs := &telemetrytest.LogBuffer{}
	done := make(chan error, 1)
	go func() { done <- runServe(ctx, serveFlags{configFile: cfg}, logs) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	}()
	addr := func(msg string) string {
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			for _, line := range strings.Split(logs.String(), "\n") {
				var rec struct {
					Msg  string `json:"msg"`
					Addr string `json:"addr"`
				}
				if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == msg {
					return "http://" + rec.Addr
				}
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Fatalf("no %q in the logs:\n%s", msg, logs.String())
		return ""
	}
	api, adm := addr("tollgate listening"), addr("tollgate admin API listening")

	secret := "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJtYWxsb3J5In0.Zm9yZ2VkLXNpZ25hdHVyZQ"
	body := `{"method": "GET", "path": "/customers/42?access_token=` + secret + `"}`
	resp, err := http.Post(api+"/v1/decision", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	var dec struct {
		ID       string `json:"decision_id"`
		Revision string `json:"policy_revision"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&dec)
	resp.Body.Close()

	select {
	case e := <-events:
		raw, _ := json.Marshal(e)
		if e["decision_id"] != dec.ID || !strings.Contains(string(raw), `"revision":"`+dec.Revision+`"`) {
			t.Fatalf("event %s, want decision %s by %s", raw, dec.ID, dec.Revision)
		}
		if tg := e["tollgate"].(map[string]any); tg["route"] != "/customers/{customer_number}" {
			t.Errorf("tollgate.route = %v: the decision log does not follow the active bundle", tg["route"])
		}
		if strings.Contains(string(raw), secret) || strings.Contains(string(raw), "Zm9yZ2VkLXNpZ25hdHVyZQ") {
			t.Fatal("the token is in the event")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no event at the collector")
	}

	adminDo := func(method, path, key, body string) (int, string) {
		req, _ := http.NewRequest(method, adm+path, strings.NewReader(body))
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, path := range []string{"/v1/explain", "/debug/pprof/"} {
		if code, _ := adminDo(http.MethodPost, path, "", body); code != http.StatusUnauthorized {
			t.Errorf("%s without an admin key: %d, want 401", path, code)
		}
	}
	code, text := adminDo(http.MethodPost, "/v1/explain", adminKey, body)
	if code != http.StatusOK || !strings.Contains(text, "credential_in_query") || !strings.Contains(text, `"result":"failed"`) ||
		!strings.Contains(text, "/customers/{customer_number}") {
		t.Errorf("explain: %d %s", code, text)
	}
	if strings.Contains(text, secret) {
		t.Error("the token is in the explanation")
	}
	if code, _ := adminDo(http.MethodGet, "/debug/pprof/", adminKey, ""); code != http.StatusOK {
		t.Errorf("pprof with the admin key: %d", code)
	}
	if code, _ := adminDo(http.MethodGet, "/debug/pprof/", "", ""); code != http.StatusUnauthorized {
		t.Errorf("pprof without a key: %d", code)
	}
	resp, err = http.Get(api + "/debug/pprof/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("pprof on the decision listener: %d, want 404", resp.StatusCode)
	}
	resp, err = http.Get(api + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`tollgate_decisions_total{allow="false",reason="credential_in_query",status="403"}`,
		`tollgate_credentials_total{placement="query",status="invalid",type="bearer"}`, `tollgate_decision_log_events_total{result="delivered"}`,
		`tollgate_bundle_checked_timestamp_seconds{bundle="tollgate"}`, `tollgate_decision_duration_seconds_bucket{stage="eval"`,
		`tollgate_cache_requests_total{cache="decision",result="miss"} 1`, `tollgate_cache_entries{cache="decision"} 1`} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if strings.Contains(logs.String(), secret) || strings.Contains(string(metrics), secret) {
		t.Error("the token is in the logs or metrics")
	}
}
