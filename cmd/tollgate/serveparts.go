package main

import (
	"slices"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate/tollgate/pdp/authn/oidcjwt"
)

// serveParts are what runServe needs from buildServeDecider besides the
// Decider: the metrics of the parts it built, for /metrics, and the OIDC
// issuers, whose state /health/ready shows.
type serveParts struct {
	metrics collectorList
	issuers *oidcjwt.Authenticator // nil without issuers
	bundles *policyBundles         // the policy bundle's life cycle (bundleserve.go)
	// telemetry is the decision log and the tracer provider
	// (decisionlogs.go): runServe stops them after the server's graceful
	// shutdown.
	telemetry serveTelemetry
}

// issuerStatus is the server's Options.Issuers: nil without issuers.
func (p *serveParts) issuerStatus() func() []oidcjwt.IssuerStatus {
	if p.issuers == nil {
		return nil
	}
	return p.issuers.Status
}

// collectorList is a prometheus.Registerer that keeps what is registered,
// so that the parts built before the server (which owns the registry) can
// hand their metrics to server.Options.Collectors.
type collectorList []prometheus.Collector

var _ prometheus.Registerer = (*collectorList)(nil)

func (l *collectorList) Register(c prometheus.Collector) error {
	*l = append(*l, c)
	return nil
}

func (l *collectorList) MustRegister(cs ...prometheus.Collector) { *l = append(*l, cs...) }

func (l *collectorList) Unregister(c prometheus.Collector) bool {
	i := slices.Index(*l, c)
	if i < 0 {
		return false
	}
	*l = slices.Delete(*l, i, i+1)
	return true
}
