package server_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate/tollgate/pdp/authn/authntest"
	"github.com/tollgate/tollgate/pdp/authn/oidcjwt"
	"github.com/tollgate/tollgate/pdp/server"
)

// collected is a prometheus.Registerer that keeps what is registered, for
// server.Options.Collectors (as cmd/tollgate wires it).
type collected []prometheus.Collector

func (c *collected) Register(x prometheus.Collector) error   { *c = append(*c, x); return nil }
func (c *collected) MustRegister(xs ...prometheus.Collector) { *c = append(*c, xs...) }
func (c *collected) Unregister(prometheus.Collector) bool    { return false }

// TestReadyShowsIssuersWithoutJudgingThem (issue 5, operability): the body
// of /health/ready shows each issuer's state, an issuer that is down does not
// make the replica unready (readiness follows the policy alone), and
// /metrics shows the issuers' metrics.
func TestReadyShowsIssuersWithoutJudgingThem(t *testing.T) {
	up := authntest.NewIssuer(t)
	down := authntest.NewIssuer(t)
	down.SetDiscoveryResponse(http.StatusServiceUnavailable, []byte("maintenance"))
	var reg collected
	a, err := oidcjwt.New(context.Background(), oidcjwt.Config{
		Issuers: []oidcjwt.IssuerConfig{
			{Issuer: up.URL(), Audiences: []string{"a"}},
			{Issuer: down.URL(), Audiences: []string{"a"}},
		},
		Registerer: &reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)

	for _, active := range []bool{true, false} {
		srv := httptest.NewServer(server.Handler(newDecider(t, active), server.Options{Issuers: a.Status, Collectors: reg}))
		t.Cleanup(srv.Close)
		resp, err := http.Get(srv.URL + "/health/ready")
		if err != nil {
			t.Fatal(err)
		}
		var body struct {
			Status  string                 `json:"status"`
			Issuers []oidcjwt.IssuerStatus `json:"issuers"`
		}
		err = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if want := map[bool]int{true: 200, false: 503}[active]; resp.StatusCode != want {
			t.Errorf("active=%v: ready = %d, want %d: an issuer's state must not decide readiness", active, resp.StatusCode, want)
		}
		if len(body.Issuers) != 2 ||
			body.Issuers[0].Issuer != up.URL() || body.Issuers[0].State != oidcjwt.StateReady || body.Issuers[0].Keys != 2 || body.Issuers[0].LastSuccess.IsZero() ||
			body.Issuers[1].Issuer != down.URL() || body.Issuers[1].State != oidcjwt.StateDiscovering || !strings.Contains(body.Issuers[1].LastError, "503") {
			t.Errorf("active=%v: issuers = %+v", active, body.Issuers)
		}

		if !active {
			continue // the collectors went to the first server
		}
		resp, err = http.Get(srv.URL + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		m, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, want := range []string{
			`tollgate_issuer_ready{issuer="` + up.URL() + `"} 1`,
			`tollgate_issuer_ready{issuer="` + down.URL() + `"} 0`,
			`tollgate_jwks_fetches_total{issuer="` + up.URL() + `",result="success"} 1`,
			`tollgate_oidc_discoveries_total{issuer="` + down.URL() + `",result="error"} 1`,
		} {
			if !strings.Contains(string(m), want) {
				t.Errorf("/metrics lacks %s", want)
			}
		}
		reg = nil // a collector registers in one registry
	}
}
