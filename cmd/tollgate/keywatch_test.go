package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/tollgate/tollgate/pdp/authn"
	"github.com/tollgate/tollgate/pdp/authn/apikey"
	"github.com/tollgate/tollgate/pdp/credential"
	"github.com/tollgate/tollgate/pdp/server"
	"github.com/tollgate/tollgate/pdp/telemetry/telemetrytest"
)

// TestKeyFileReloadedOnChange: a revoked key stops working without a
// restart, and a broken file keeps the keys in use.
func TestKeyFileReloadedOnChange(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.yaml")
	gen, err := apikey.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := apikey.Add(path, apikey.Record{ID: gen.ID, Hash: gen.Hash, Owner: "billing", Created: time.Now().Add(-time.Minute)}); err != nil {
		t.Fatal(err)
	}
	keys, err := apikey.NewFromFile(path, apikey.Options{})
	if err != nil {
		t.Fatal(err)
	}
	cred := credential.Credential{Type: credential.TypeAPIKey, Placement: credential.PlacementHeader, Secret: gen.Key}
	result := func() authn.Outcome {
		out, err := keys.Authenticate(context.Background(), cred)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	if out := result(); out.Result != authn.Authenticated {
		t.Fatalf("fresh key: %+v", out)
	}

	var logs telemetrytest.LogBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		watchKeyFile(ctx, path, keys, 10*time.Millisecond, slog.New(slog.NewTextHandler(&logs, nil)))
		close(done)
	}()
	defer func() { cancel(); <-done }()

	// Wait until the watcher has taken its first stamp, so the change below
	// is seen as a change (mtime resolution can be coarse: add a byte too).
	time.Sleep(50 * time.Millisecond)
	if _, err := apikey.Revoke(path, gen.ID, time.Now()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return result().Reason == authn.ReasonRevoked }, "revocation picked up")

	if err := os.WriteFile(path, []byte("keys: [{id: nope}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return strings.Contains(logs.String(), "refused") }, "broken file reported")
	if out := result(); out.Reason != authn.ReasonRevoked {
		t.Fatalf("a broken file must keep the previous keys: %+v", out)
	}
}

// TestKeyWatchKeepsKeysWhenFileRefused: each way a key file can stop
// verifying (emptied, cut short, edited, a wrong seal) is refused on
// reload: the keys in use stay in use, the refusal is logged with the file
// and without any key, and counted; a good file afterwards is loaded again.
func TestKeyWatchKeepsKeysWhenFileRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.yaml")
	var gens []apikey.Generated
	for _, owner := range []string{"billing", "retired"} {
		g, err := apikey.Generate(nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := apikey.Add(path, apikey.Record{ID: g.ID, Hash: g.Hash, Owner: owner, Scopes: []string{"products:read"}, Created: time.Now().Add(-time.Minute)}); err != nil {
			t.Fatal(err)
		}
		gens = append(gens, g)
	}
	if _, err := apikey.Revoke(path, gens[1].ID, time.Now()); err != nil {
		t.Fatal(err)
	}
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := apikey.NewFromFile(path, apikey.Options{})
	if err != nil {
		t.Fatal(err)
	}
	outcomes := func() []string {
		var out []string
		for _, g := range gens {
			o, err := keys.Authenticate(context.Background(), credential.Credential{Type: credential.TypeAPIKey, Placement: credential.PlacementHeader, Secret: g.Key})
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, fmt.Sprintf("%v/%s", o.Result, o.Reason))
		}
		return out
	}
	want := outcomes()
	if want[1] != fmt.Sprintf("%v/%s", authn.Rejected, authn.ReasonRevoked) {
		t.Fatalf("fixture: %v", want)
	}

	reloads := newKeyReloadCounter()
	var logs telemetrytest.LogBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	w := keyWatch{path: path, keys: keys, interval: 5 * time.Millisecond, log: slog.New(slog.NewJSONHandler(&logs, nil)), reloads: reloads}
	first := fileStamp(path) // taken before any change below
	go func() {
		w.watch(ctx, first)
		close(done)
	}()
	defer func() { cancel(); <-done }()

	revokedAt := bytes.Index(good, []byte("    revoked:"))
	tests := []struct {
		name    string
		content []byte
	}{
		{"emptied", nil},
		{"cut before the revoked line", good[:revokedAt]},
		{"cut inside the seal line", good[:len(good)-1]},
		{"revoked line removed", append(bytes.Clone(good[:revokedAt]), good[bytes.IndexByte(good[revokedAt:], '\n')+revokedAt+1:]...)},
		{"scopes widened", bytes.Replace(good, []byte("['products:read']"), []byte("['products:read', admin]"), 1)},
		{"seal stripped", good[:bytes.LastIndex(good, []byte("# tollgate-seal"))]},
		{"not yaml", []byte("keys: [\n")},
	}
	// replace writes content the way an editor or a broken script might:
	// a new file renamed into place, so the watcher sees a change.
	replace := func(content []byte) {
		tmp := path + ".new"
		if err := os.WriteFile(tmp, content, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	for i, tt := range tests {
		if bytes.Equal(tt.content, good) {
			t.Fatalf("%s: the edit changed nothing", tt.name)
		}
		replace(tt.content)
		waitFor(t, func() bool { return counterValue(reloads.WithLabelValues(reloadRefused)) == float64(i+1) }, tt.name+": refusal counted")
		if got := outcomes(); !slices.Equal(got, want) {
			t.Errorf("%s: outcomes %v after a refused reload, want %v", tt.name, got, want)
		}
	}
	if got := counterValue(reloads.WithLabelValues(reloadLoaded)); got != 0 {
		t.Errorf("loaded = %v, want 0", got)
	}
	log := logs.String()
	if n := strings.Count(log, "api key file refused; the previous keys stay in use"); n != len(tests) {
		t.Errorf("%d refusals logged, want %d:\n%s", n, len(tests), log)
	}
	if !strings.Contains(log, path) || !strings.Contains(log, "tollgate apikey seal") {
		t.Errorf("the log must name the file and the command to run:\n%s", log)
	}
	for _, g := range gens {
		k := g.Key.Reveal()
		if strings.Contains(log, k) || strings.Contains(log, k[len(k)-apikey.SecretLen:]) {
			t.Fatalf("the log reveals a key:\n%s", log)
		}
	}

	// A good file is loaded again.
	replace(good)
	waitFor(t, func() bool { return counterValue(reloads.WithLabelValues(reloadLoaded)) == 1 }, "good file loaded")
	if got := outcomes(); !slices.Equal(got, want) {
		t.Errorf("outcomes %v after reloading the good file, want %v", got, want)
	}
}

// TestKeyReloadCounterServedOnMetrics: the counter serve passes to the
// server appears on /metrics with both results from the start.
func TestKeyReloadCounterServedOnMetrics(t *testing.T) {
	t.Setenv(devKeyEnv, filepath.Join(t.TempDir(), "dev-key.pem"))
	c, err := resolveConfig(serveFlags{dev: true})
	if err != nil {
		t.Fatal(err)
	}
	d, err := buildDecider(context.Background(), c, true, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	reloads := newKeyReloadCounter()
	reloads.WithLabelValues(reloadRefused).Inc()
	srv := httptest.NewServer(server.Handler(d, server.Options{Collectors: []prometheus.Collector{reloads}}))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`tollgate_api_keys_reload_total{result="loaded"} 0`, `tollgate_api_keys_reload_total{result="refused"} 1`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// counterValue reads a counter.
func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}

// waitFor polls cond until it holds; the deadline only keeps a broken
// watcher from hanging the test, it asserts nothing about speed.
func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
