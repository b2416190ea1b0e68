package oidcjwt

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/tollgate/tollgate/pdp/authn/authntest"
)

func TestMaxAge(t *testing.T) {
	cases := []struct {
		cc, age string
		want    time.Duration
	}{
		{"", "", 0},
		{"max-age=60", "", time.Minute},
		{"public, max-age=60", "", time.Minute},
		{"public,max-age=60,must-revalidate", "", time.Minute},
		{"Max-Age=60", "", time.Minute},
		{`max-age="60"`, "", time.Minute},
		{"max-age=60", "20", 40 * time.Second},
		{"max-age=60", "60", MinJWKSRefreshInterval},
		{"max-age=60", "junk", time.Minute},
		{"max-age=0", "", 0},
		{"max-age=-1", "", 0},
		{"max-age=1e3", "", 0},
		{"max-age=", "", 0},
		{"no-store, max-age=60", "", 0},
		{"max-age=60, no-cache", "", 0},
		{"max-age=99999999", "", MaxJWKSRefreshInterval},
		{"max-age=99999999999999999999999", "", 0},
		{"s-maxage=60", "", 0},
	}
	for _, tc := range cases {
		h := http.Header{}
		if tc.cc != "" {
			h.Set("Cache-Control", tc.cc)
		}
		if tc.age != "" {
			h.Set("Age", tc.age)
		}
		if got := maxAge(h); got != tc.want {
			t.Errorf("maxAge(Cache-Control %q, Age %q) = %v, want %v", tc.cc, tc.age, got, tc.want)
		}
	}
	// Two Cache-Control lines: the first max-age counts.
	h := http.Header{"Cache-Control": {"max-age=30", "max-age=90"}}
	if got := maxAge(h); got != 30*time.Second {
		t.Errorf("two lines: %v", got)
	}
}

func TestBackoffIsBoundedWithJitter(t *testing.T) {
	b := backoff{min: time.Second, max: time.Minute}
	prevCap := time.Duration(0)
	for i := range 20 {
		capd := min(time.Second<<i, time.Minute)
		d := b.next()
		if d < capd/2 || d > capd {
			t.Fatalf("attempt %d: %v outside [%v, %v]", i, d, capd/2, capd)
		}
		if capd < prevCap {
			t.Fatal("the cap shrank")
		}
		prevCap = capd
	}
	b.reset()
	if d := b.next(); d > time.Second {
		t.Fatalf("after reset: %v", d)
	}
}

func TestRedaction(t *testing.T) {
	const secret = "s3cr3t"
	u := "https://user:" + secret + "@idp.example.com/keys?p=" + secret + "#" + secret
	if got := redactURL(u); strings.Contains(got, secret) || got != "https://idp.example.com/keys" {
		t.Errorf("redactURL = %q", got)
	}
	err := redactErr(&url.Error{Op: "Get", URL: u, Err: errors.New("dial tcp: refused")})
	fe := &FetchError{Issuer: "https://idp.example.com", URL: u, Err: err}
	if strings.Contains(fe.Error(), secret) || strings.Contains(publicError(fe), secret) {
		t.Errorf("error text holds the secret: %v", fe)
	}
	long := publicError(errors.New("a\nb\x00" + strings.Repeat("é", 400)))
	if strings.ContainsAny(long, "\n\x00") || len(long) > maxErrorText+len("…") || !strings.HasSuffix(long, "…") {
		t.Errorf("publicError = %q", long)
	}
	if !strings.HasPrefix(long, "a b ") {
		t.Errorf("publicError = %q", long[:10])
	}
}

func TestParseJWKSRefusesWeakRSAKeys(t *testing.T) {
	jwk := func(bits int, kid string) json.RawMessage {
		k, err := rsa.GenerateKey(rand.Reader, bits)
		if err != nil {
			t.Fatal(err)
		}
		b, err := json.Marshal(jose.JSONWebKey{Key: k.Public(), KeyID: kid, Algorithm: "RS256", Use: "sig"})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	doc := func(keys ...json.RawMessage) []byte {
		b, _ := json.Marshal(map[string]any{"keys": keys})
		return b
	}
	weak1024, weak2047, ok2048 := jwk(1024, "w1"), jwk(2047, "w2"), jwk(2048, "ok")

	var refused []string
	keys, err := parseJWKSWith(doc(weak1024, ok2048, weak2047), func(k *jose.JSONWebKey, reason string) {
		refused = append(refused, k.KeyID+": "+reason)
	})
	if err != nil || len(keys) != 1 || keys[0].KeyID != "ok" {
		t.Fatalf("keys = %v, err = %v", keys, err)
	}
	if len(refused) != 2 || !strings.Contains(refused[0], "w1: RSA modulus of 1024 bits") || !strings.Contains(refused[1], "w2: RSA modulus of 2047 bits") {
		t.Fatalf("refused = %q", refused)
	}
	if _, err := parseJWKS(doc(weak1024, weak2047)); err == nil || !strings.Contains(err.Error(), "2 RSA keys under 2048 bits refused") {
		t.Fatalf("only weak keys: %v", err)
	}
	// Belt and braces: a weak key that reached the set never fits.
	k, _ := rsa.GenerateKey(rand.Reader, 1024)
	if keyFits(&jose.JSONWebKey{Key: &k.PublicKey}, jose.RS256) {
		t.Fatal("keyFits accepted a 1024-bit RSA key")
	}
}

// TestLoopsStopWithTheContext: the background loops (and fetches under way)
// end when the context given to New ends, without Close; and Close alone
// stops them too.
func TestLoopsStopWithTheContext(t *testing.T) {
	for _, stop := range []string{"context", "Close"} {
		t.Run(stop, func(t *testing.T) {
			up := authntest.NewIssuer(t)
			down := authntest.NewIssuer(t)
			down.SetDiscoveryResponse(http.StatusBadGateway, nil) // in the discovery backoff
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			a, err := New(ctx, Config{Issuers: []IssuerConfig{
				{Issuer: up.URL(), Audiences: []string{"a"}},
				{Issuer: down.URL(), Audiences: []string{"a"}},
			}})
			if err != nil {
				t.Fatal(err)
			}
			hold := up.HoldJWKS()
			up.Rotate()
			go func() { _, _ = a.issuers[up.URL()].keys.refetchFor(context.Background()) }() // a fetch under way
			<-hold.Arrived()

			done := make(chan struct{})
			if stop == "context" {
				cancel()
				go func() { a.wg.Wait(); close(done) }()
			} else {
				go func() { a.Close(); close(done) }()
			}
			select {
			case <-done:
			case <-time.After(10 * time.Second): // a failure guard, not a timing assertion
				t.Fatal("the background goroutines did not end")
			}
			if _, err := a.issuers[up.URL()].keys.refetchFor(context.Background()); err == nil {
				t.Error("a fetch started after the end")
			}
			a.Close() // after the context ended: fine, and twice is fine
			a.Close()
		})
	}
}
