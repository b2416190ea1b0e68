package e2e

// The policy life cycle with the real tollgate binary and the real opa:
// OPA's bundle format both ways, refused bundles, replicas polling one
// bundle server, restart on the persisted revision, rollback and pinning
// through the admin API, and shadow evaluation.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/tollgate/tollgate/bundles/bundletest"
)

// opaBinary finds the opa that ./test/run builds into test/.bin, or skips
// (fails under TOLLGATE_E2E=1).
func opaBinary(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("TOLLGATE_TOOLS_BIN")
	if dir == "" {
		if root, err := repoRoot(); err == nil {
			dir = filepath.Join(root, "test", ".bin")
		}
	}
	bin := filepath.Join(dir, "opa")
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	if os.Getenv("TOLLGATE_E2E") == "1" {
		t.Fatal("TOLLGATE_E2E=1 but opa is not built (./test/run builds it into test/.bin from test/tools)")
	}
	t.Skip("opa is not built (./test/run builds it)")
	return ""
}

// runCmd runs a command to completion and returns its combined output and
// error.
func runCmd(t *testing.T, env []string, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// lcServe is one `tollgate serve` of these tests.
type lcServe struct {
	*process
	url, adminURL string
	config        string
}

// startServe writes cfg (listen, and admin.listen when cfg has admin, set
// to free ports) and runs `tollgate serve --config`; it returns once
// /health/live answers (the policy may not be ready yet).
func startServe(t *testing.T, name string, cfg map[string]any) *lcServe {
	t.Helper()
	dir := t.TempDir()
	for attempt := 1; ; attempt++ {
		cfg["listen"] = freeAddr(t)
		s := &lcServe{url: "http://" + cfg["listen"].(string)}
		if a, ok := cfg["admin"].(map[string]any); ok {
			a["listen"] = freeAddr(t)
			s.adminURL = "http://" + a["listen"].(string)
		}
		b, err := yaml.Marshal(cfg)
		if err != nil {
			t.Fatal(err)
		}
		s.config = filepath.Join(dir, name+".yaml")
		if err := os.WriteFile(s.config, b, 0o600); err != nil {
			t.Fatal(err)
		}
		s.process = startProcess(t, name, exec.Command(tollgateBin, "serve", "--config", s.config))
		err = waitHTTP(s.process, s.url+"/health/live")
		if err == nil {
			return s
		}
		if !errors.Is(err, errAddrInUse) || attempt == startAttempts {
			t.Fatal(err)
		}
	}
}

// restart runs the same configuration again after the process stopped.
func (s *lcServe) restart(t *testing.T, name string) {
	t.Helper()
	s.process = startProcess(t, name, exec.Command(tollgateBin, "serve", "--config", s.config))
	if err := waitHTTP(s.process, s.url+"/health/live"); err != nil {
		t.Fatal(err)
	}
}

// decide asks for GET path without a credential and returns allow and
// the revision.
func (s *lcServe) decide(t *testing.T, path string) (bool, string) {
	t.Helper()
	resp, err := http.Post(s.url+"/v1/decision", "application/json",
		strings.NewReader(`{"method":"GET","path":"`+path+`","host":"api.example.com","scheme":"https"}`))
	if err != nil {
		t.Fatalf("decision: %v", err)
	}
	defer resp.Body.Close()
	var d struct {
		Allow    bool   `json:"allow"`
		Revision string `json:"policy_revision"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&d); err != nil {
		t.Fatalf("decision: %v", err)
	}
	return d.Allow, d.Revision
}

func (s *lcServe) ready(t *testing.T) (int, map[string]any) {
	t.Helper()
	resp, err := http.Get(s.url + "/health/ready")
	if err != nil {
		return 0, nil
	}
	defer resp.Body.Close()
	var body map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body
}

// admin calls the admin API with key (none when empty).
func (s *lcServe) admin(t *testing.T, method, path, key, body string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, s.adminURL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("admin API: %v", err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

// metric returns the value of the sample line starting with prefix on
// /metrics (0 when absent).
func (s *lcServe) metric(t *testing.T, prefix string) float64 {
	t.Helper()
	resp, err := http.Get(s.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, prefix+" ") {
			v, _ := strconv.ParseFloat(strings.TrimSpace(strings.TrimPrefix(line, prefix)), 64)
			return v
		}
	}
	return 0
}

func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// lcBundleServer is a bundle server on loopback (OPA's bundle API,
// bundletest.Server) that can be stopped and started again on the same
// address, as a bundle server that goes down and comes back.
type lcBundleServer struct {
	bundletest.Server
	addr string
	srv  *http.Server
}

func newLCBundleServer(t *testing.T) *lcBundleServer {
	s := &lcBundleServer{addr: freeAddr(t)}
	s.start(t)
	t.Cleanup(s.stop)
	return s
}

func (s *lcBundleServer) url() string { return "http://" + s.addr }

func (s *lcBundleServer) start(t *testing.T) {
	t.Helper()
	ln, err := net.Listen("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	s.srv = &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: &s.Server}
	go func() { _ = s.srv.Serve(ln) }()
}

func (s *lcBundleServer) stop() {
	if s.srv != nil {
		_ = s.srv.Close()
		s.srv = nil
	}
}

// remoteConfig is a serve configuration polling srv for a bundle signed by
// key, persisting under dir.
func remoteConfig(srv *lcBundleServer, key bundletest.Key, dir string, minDelay, maxDelay int) map[string]any {
	return map[string]any{
		"services": map[string]any{"policy-server": map[string]any{"url": srv.url()}},
		"bundles": map[string]any{"tollgate": map[string]any{
			"service": "policy-server", "resource": "bundles/tollgate.tar.gz", "persist": true,
			"polling": map[string]any{"min_delay_seconds": minDelay, "max_delay_seconds": maxDelay},
			"signing": map[string]any{"keyid": "ci"},
		}},
		"keys":                  map[string]any{"ci": map[string]any{"algorithm": "RS256", "key": key.PublicPEM}},
		"persistence_directory": dir,
		"log":                   map[string]any{"level": "info"},
	}
}

func TestBundleFormatInteropWithOPA(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	opa := opaBinary(t)
	key, other := bundletest.NewKey(t), bundletest.NewKey(t)
	dir := t.TempDir()
	policies := bundletest.PolicyDir(t, nil)

	t.Run("opa build loads in tollgate", func(t *testing.T) {
		out := filepath.Join(dir, "opa.tar.gz")
		if text, err := runCmd(t, nil, opa, "build", "--bundle", policies, "--revision", "from-opa",
			"--signing-key", key.Private, "-o", out); err != nil {
			t.Fatalf("opa build: %v\n%s", err, text)
		}
		if text, err := runCmd(t, nil, tollgateBin, "bundle", "verify", out, "--key", key.Public); err != nil {
			t.Fatalf("tollgate bundle verify: %v\n%s", err, text)
		}
		s := startServe(t, "tollgate-opa-bundle", map[string]any{
			"bundles": map[string]any{"tollgate": map[string]any{"resource": "file://" + out, "signing": map[string]any{"keyid": "default"}}},
			"keys":    map[string]any{"default": map[string]any{"key": key.PublicPEM}},
		})
		if allow, rev := s.decide(t, "/public/x"); !allow || rev != "from-opa" {
			t.Errorf("decision: allow=%v revision=%q, want the opa-built bundle allowing", allow, rev)
		}
	})

	t.Run("tollgate bundle build loads in opa", func(t *testing.T) {
		out := filepath.Join(dir, "tollgate.tar.gz")
		if text, err := runCmd(t, nil, tollgateBin, "bundle", "build", policies, "--revision", "from-tollgate",
			"--signing-key", key.Private, "-o", out); err != nil {
			t.Fatalf("tollgate bundle build: %v\n%s", err, text)
		}
		if text, err := runCmd(t, nil, opa, "build", "--verification-key", key.Public, "--bundle", out, "-o", filepath.Join(dir, "re.tar.gz")); err != nil {
			t.Errorf("opa build --verification-key: %v\n%s", err, text)
		}
		if text, err := runCmd(t, nil, opa, "build", "--verification-key", other.Public, "--bundle", out, "-o", filepath.Join(dir, "re2.tar.gz")); err == nil {
			t.Errorf("opa build verified the bundle with another key:\n%s", text)
		}
		addr := freeAddr(t)
		p := startProcess(t, "opa", exec.Command(opa, "run", "--server", "--addr", addr,
			"--verification-key", key.Public, "--bundle", out))
		if err := waitHTTP(p, "http://"+addr+"/health?bundles"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.Post("http://"+addr+"/v1/data/tollgate/authz/decision", "application/json", strings.NewReader(
			`{"input": {"request": {"method": "GET", "path": "/public/x", "segments": ["public", "x"], "host": "a", "scheme": "https", "query": {}, "headers": {}},
			  "credential": {"type": "none", "placement": "none", "status": "absent"}}}`))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out2 struct {
			Result struct {
				Allow bool `json:"allow"`
			} `json:"result"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&out2); err != nil || !out2.Result.Allow {
			t.Errorf("opa's decision: %+v %v, want allow", out2, err)
		}
	})
}

func TestBundleLifecycleReplicas(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	key, other := bundletest.NewKey(t), bundletest.NewKey(t)
	base := bundletest.PolicyDir(t, nil)
	moved := bundletest.PolicyDir(t, bundletest.MovePublic("/open"))
	srv := newLCBundleServer(t)
	srv.Serve(bundletest.Build(t, base, "r1", &key))

	// An admin key, and a key for the decision listener that is not one.
	keysDir := t.TempDir()
	adminKeys, decisionKeys := filepath.Join(keysDir, "admin-keys.yaml"), filepath.Join(keysDir, "keys.yaml")
	adminKey := lastLine(runTollgate(t, "apikey", "new", "--owner", "ops", "--scopes", "tollgate:admin", "--file", adminKeys))
	decisionKey := lastLine(runTollgate(t, "apikey", "new", "--owner", "billing", "--scopes", "products:read", "--file", decisionKeys))

	const minDelay, maxDelay = 1, 2
	var replicas []*lcServe
	for i := range 3 {
		cfg := remoteConfig(srv, key, t.TempDir(), minDelay, maxDelay)
		if i == 0 {
			cfg["admin"] = map[string]any{"api_keys_file": adminKeys}
			cfg["api_keys"] = map[string]any{"file": decisionKeys}
		}
		replicas = append(replicas, startServe(t, fmt.Sprintf("tollgate-%d", i), cfg))
	}
	for _, r := range replicas {
		eventually(t, 60*time.Second, "replica ready on r1", func() bool { _, rev := r.decide(t, "/public/x"); return rev == "r1" })
	}
	first := replicas[0]

	t.Run("refused bundles keep r1 answering", func(t *testing.T) {
		cases := []struct {
			name string
			data []byte
		}{
			{"tampered", bundletest.Tamper(t, bundletest.Build(t, moved, "bad-tampered", &key), "authz.rego")},
			{"unsigned", bundletest.Build(t, moved, "bad-unsigned", nil)},
			{"unknown key", bundletest.Build(t, moved, "bad-key", &other)},
			{"fails its check", bundletest.Build(t, bundletest.PolicyDir(t, func(rs []bundletest.Route) []bundletest.Route {
				rs[0]["sensitivity"] = "secret-ish"
				return rs
			}), "bad-check", &key)},
		}
		for _, c := range cases {
			refusedBefore := first.metric(t, `tollgate_bundle_activations_total{bundle="tollgate",result="refused"}`)
			srv.Serve(c.data)
			eventually(t, 30*time.Second, c.name+": refusal counted", func() bool {
				return !srv.SentAt().IsZero() &&
					first.metric(t, `tollgate_bundle_activations_total{bundle="tollgate",result="refused"}`) > refusedBefore
			})
			if allow, rev := first.decide(t, "/public/x"); !allow || rev != "r1" {
				t.Errorf("%s: allow=%v revision=%s, want r1 answering", c.name, allow, rev)
			}
			code, body := first.admin(t, "GET", "/v1/bundles", adminKey, "")
			b := body["bundles"].(map[string]any)["tollgate"].(map[string]any)
			if code != 200 || b["last_error"] == nil || b["active"].(map[string]any)["revision"] != "r1" {
				t.Errorf("%s: GET /v1/bundles = %d %v, want r1 active and a last_error", c.name, code, b)
			}
		}
		if !strings.Contains(first.output.String(), "policy bundle refused") {
			t.Error("no refusal in the log")
		}
	})

	t.Run("replicas converge on a new revision", func(t *testing.T) {
		srv.Serve(bundletest.Build(t, moved, "r2", &key))
		published := time.Now()
		// Each polls again within max_delay_seconds (after a refusal, a
		// backoff of at most that); allow a download and an activation.
		bound := maxDelay*time.Second + 10*time.Second
		for i, r := range replicas {
			eventually(t, bound-time.Since(published), fmt.Sprintf("replica %d on r2", i), func() bool {
				_, rev := r.decide(t, "/public/x")
				return rev == "r2"
			})
		}
		for _, r := range replicas {
			if allow, _ := r.decide(t, "/open/x"); !allow {
				t.Error("r2 does not allow /open/x")
			}
		}
	})

	t.Run("restart while the bundle server is down", func(t *testing.T) {
		srv.stop()
		r := replicas[2]
		if err := r.stop(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		r.restart(t, "tollgate-2-restarted")
		eventually(t, 30*time.Second, "ready on the persisted revision", func() bool {
			code, _ := r.ready(t)
			return code == 200
		})
		if allow, rev := r.decide(t, "/open/x"); !allow || rev != "r2" {
			t.Errorf("after restart: allow=%v revision=%s, want r2 from the persistence directory", allow, rev)
		}
		_, body := r.ready(t)
		if b, _ := body["bundles"].(map[string]any)["tollgate"].(map[string]any); b["revision"] != "r2" {
			t.Errorf("/health/ready = %v, want the bundle's revision r2", body)
		}
		srv.start(t)
	})

	t.Run("rollback through the admin API, pinned", func(t *testing.T) {
		for _, c := range []struct {
			name, key string
			want      int
		}{{"no key", "", 401}, {"decision key", decisionKey, 401}, {"garbage", "tgk_x", 401}} {
			if code, _ := first.admin(t, "POST", "/v1/bundles/tollgate/activate", c.key, `{"revision":"r1"}`); code != c.want {
				t.Errorf("%s: %d, want %d", c.name, code, c.want)
			}
		}
		if _, rev := first.decide(t, "/public/x"); rev != "r2" {
			t.Fatalf("a refused admin request changed the revision to %s", rev)
		}
		if code, _ := first.admin(t, "POST", "/v1/bundles/tollgate/activate", adminKey, `{"revision":"nope"}`); code != 404 {
			t.Errorf("unknown revision: %d, want 404", code)
		}
		env := []string{"TOLLGATE_ADMIN_KEY=" + adminKey}
		if text, err := runCmd(t, env, tollgateBin, "bundle", "activate", "r1", "--admin", first.adminURL); err != nil {
			t.Fatalf("tollgate bundle activate: %v\n%s", err, text)
		}
		// The next decision is r1's.
		if allow, rev := first.decide(t, "/public/x"); !allow || rev != "r1" {
			t.Fatalf("after rollback: allow=%v revision=%s, want r1", allow, rev)
		}
		// A new revision from the source is fetched but not activated.
		srv.Serve(bundletest.Build(t, base, "r3", &key))
		eventually(t, 30*time.Second, "r3 fetched", func() bool { return !srv.SentAt().IsZero() })
		time.Sleep(maxDelay * time.Second)
		if _, rev := first.decide(t, "/public/x"); rev != "r1" {
			t.Fatalf("pinned r1, but %s answers", rev)
		}
		text, err := runCmd(t, env, tollgateBin, "bundle", "history", "--admin", first.adminURL)
		if err != nil || !strings.Contains(text, "active r1 (pinned)") {
			t.Errorf("history: %v\n%s", err, text)
		}
		if text, err := runCmd(t, env, tollgateBin, "bundle", "unpin", "--admin", first.adminURL); err != nil {
			t.Fatalf("unpin: %v\n%s", err, text)
		}
		eventually(t, 10*time.Second, "r3 after unpin", func() bool { _, rev := first.decide(t, "/public/x"); return rev == "r3" })
		// The admin API is on the admin listener only.
		resp, err := http.Get(first.url + "/v1/bundles")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				t.Error("GET /v1/bundles answered on the decision listener")
			}
		}
	})
}

func TestShadowOnLiveDecisions(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	dir := t.TempDir()
	live := filepath.Join(dir, "live.tar.gz")
	cand := filepath.Join(dir, "candidate.tar.gz")
	if err := os.WriteFile(live, bundletest.Build(t, bundletest.PolicyDir(t, nil), "live", nil), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cand, bundletest.Build(t, bundletest.PolicyDir(t, bundletest.MovePublic("/open")), "candidate", nil), 0o644); err != nil {
		t.Fatal(err)
	}
	s := startServe(t, "tollgate-shadow", map[string]any{
		"bundle": map[string]any{"source": "file:" + live},
		"shadow": map[string]any{"tollgate": map[string]any{"resource": "file:" + cand}},
	})
	want := map[string]float64{"allow_to_deny": 3, "deny_to_allow": 2, "agree": 4, "changed": 0}
	for range 3 {
		s.decide(t, "/public/x")
	}
	for range 2 {
		s.decide(t, "/open/x")
	}
	for range 4 {
		s.decide(t, "/nowhere")
	}
	metric := func(result string) float64 {
		return s.metric(t, `tollgate_shadow_decisions_total{result="`+result+`"}`)
	}
	eventually(t, 30*time.Second, "shadowed", func() bool {
		return metric("allow_to_deny")+metric("deny_to_allow")+metric("agree")+metric("changed") >= 9
	})
	for result, n := range want {
		if got := metric(result); got != n {
			t.Errorf("tollgate_shadow_decisions_total{result=%q} = %v, want %v", result, got, n)
		}
	}
	// The live policy answered every decision.
	if allow, rev := s.decide(t, "/public/x"); !allow || rev != "live" {
		t.Errorf("live decision: allow=%v revision=%s", allow, rev)
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

func TestMaxBundleAgeFailsClosed(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	key := bundletest.NewKey(t)
	srv := newLCBundleServer(t)
	srv.Serve(bundletest.Build(t, bundletest.PolicyDir(t, nil), "r1", &key))
	cfg := remoteConfig(srv, key, t.TempDir(), 1, 1)
	cfg["max_bundle_age"] = "4s"
	s := startServe(t, "tollgate-max-age", cfg)
	eventually(t, 60*time.Second, "ready on r1", func() bool { code, _ := s.ready(t); return code == 200 })
	if allow, rev := s.decide(t, "/public/x"); !allow || rev != "r1" {
		t.Fatalf("allow=%v rev=%s", allow, rev)
	}
	// While the server answers (304s), the policy stays fresh.
	time.Sleep(5 * time.Second)
	if code, _ := s.ready(t); code != 200 {
		t.Fatalf("ready = %d while the bundle server confirms the revision", code)
	}
	srv.stop()
	eventually(t, 30*time.Second, "stale", func() bool {
		code, body := s.ready(t)
		return code == 503 && body["status"] == "stale policy"
	})
	if allow, rev := s.decide(t, "/public/x"); allow || rev != "r1" {
		t.Errorf("stale: allow=%v rev=%s, want a deny naming r1", allow, rev)
	}
	srv.start(t)
	eventually(t, 30*time.Second, "fresh again", func() bool { code, _ := s.ready(t); return code == 200 })
	if allow, _ := s.decide(t, "/public/x"); !allow {
		t.Error("still denying after the bundle server came back")
	}
}
