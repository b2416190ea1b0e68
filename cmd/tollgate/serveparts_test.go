package main

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/pdp/authn/authntest"
	"github.com/tollgate/tollgate/pdp/authn/oidcjwt"
)

func TestJWKSRefreshIntervalConfig(t *testing.T) {
	issuer := func(v string) string {
		return "issuers:\n  - issuer: \"https://idp.example.com/\"\n    audiences: [\"orders-api\"]\n    jwks_refresh_interval: " + v + "\n"
	}
	for _, tc := range []struct {
		value   string
		want    time.Duration
		wantErr string
	}{
		{"5m", 5 * time.Minute, ""},
		{"1s", time.Second, ""},
		{"24h", 24 * time.Hour, ""},
		{"90s", 90 * time.Second, ""},
		{"999ms", 0, "issuers[0].jwks_refresh_interval: 999ms is below the minimum 1s"},
		{"0.5s", 0, "is below the minimum 1s"},
		{"-1m", 0, "is below the minimum 1s"},
		{"25h", 0, "issuers[0].jwks_refresh_interval: 25h0m0s is above the maximum 24h0m0s"},
		{"8760h", 0, "is above the maximum"},
		{"30", 0, "jwks_refresh_interval"},
		{"soon", 0, "jwks_refresh_interval"},
	} {
		c, err := parseConfig([]byte(issuer(tc.value)))
		switch {
		case tc.wantErr != "":
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%s: err = %v, want one containing %q", tc.value, err, tc.wantErr)
			}
		case err != nil:
			t.Errorf("%s: %v", tc.value, err)
		case c.Issuers[0].JWKSRefreshInterval != tc.want:
			t.Errorf("%s: parsed %v", tc.value, c.Issuers[0].JWKSRefreshInterval)
		}
	}
	c, err := parseConfig([]byte("issuers:\n  - issuer: \"https://idp.example.com/\"\n    audiences: [\"a\"]\n"))
	if err != nil || c.Issuers[0].JWKSRefreshInterval != 0 {
		t.Fatalf("absent: %+v, %v (zero means oidcjwt's default)", c, err)
	}
}

// TestServeStartsWhenAnIssuerIsDown (issue 5, operability): discovery that
// fails at startup no longer stops serve; the issuer's state and metrics
// reach what the server shows.
func TestServeStartsWhenAnIssuerIsDown(t *testing.T) {
	up := authntest.NewIssuer(t)
	down := authntest.NewIssuer(t)
	down.SetDiscoveryResponse(http.StatusBadGateway, nil)
	c, err := parseConfig([]byte("issuers:\n" +
		"  - {issuer: \"" + up.URL() + "\", audiences: [a], jwks_refresh_interval: 1m}\n" +
		"  - {issuer: \"" + down.URL() + "\", audiences: [a]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var parts serveParts
	if _, err := buildServeDecider(ctx, c, false, slog.New(slog.DiscardHandler), nil, &parts); err != nil {
		t.Fatalf("buildServeDecider with an issuer down: %v", err)
	}
	t.Cleanup(parts.issuers.Close)
	st := parts.issuerStatus()()
	if len(st) != 2 || st[0].State != oidcjwt.StateReady || st[1].State != oidcjwt.StateDiscovering || !strings.Contains(st[1].LastError, "502") {
		t.Fatalf("issuers = %+v", st)
	}
	if len(parts.metrics) == 0 {
		t.Fatal("no issuer metrics for /metrics")
	}
	var none serveParts
	if none.issuerStatus() != nil {
		t.Fatal("issuerStatus without issuers must be nil")
	}
}
