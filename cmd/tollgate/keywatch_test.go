package main

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate/tollgate/pdp/authn"
	"github.com/tollgate/tollgate/pdp/authn/apikey"
	"github.com/tollgate/tollgate/pdp/credential"
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

	var logs syncBuffer
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
	waitFor(t, func() bool { return strings.Contains(logs.String(), "not reloaded") }, "broken file reported")
	if out := result(); out.Reason != authn.ReasonRevoked {
		t.Fatalf("a broken file must keep the previous keys: %+v", out)
	}
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

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
