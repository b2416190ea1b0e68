package oidcjwt

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the Authenticator's Prometheus metrics. Every label value is
// a configured issuer name or a fixed result, so the series are bounded and
// carry no secret.
type metrics struct {
	reg         prometheus.Registerer
	fetches     *prometheus.CounterVec
	discoveries *prometheus.CounterVec
	state       *stateCollector
}

func newMetrics(reg prometheus.Registerer, a *Authenticator) (*metrics, error) {
	m := &metrics{
		reg: reg,
		fetches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_jwks_fetches_total",
			Help: "JWKS fetches, by issuer and result (success, not_modified, error).",
		}, []string{"issuer", "result"}),
		discoveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_oidc_discoveries_total",
			Help: "OpenID Connect discovery attempts, by issuer and result (success, error).",
		}, []string{"issuer", "result"}),
		state: &stateCollector{a: a},
	}
	// Every series exists from the start, at zero.
	for _, iss := range a.order {
		if iss.keys == nil {
			continue
		}
		for _, r := range []string{resultSuccess, resultNotModified, resultError} {
			m.fetches.WithLabelValues(iss.name, r)
		}
		for _, r := range []string{resultSuccess, resultError} {
			m.discoveries.WithLabelValues(iss.name, r)
		}
	}
	var done []prometheus.Collector
	for _, c := range []prometheus.Collector{m.fetches, m.discoveries, m.state} {
		if err := reg.Register(c); err != nil {
			for _, d := range done {
				reg.Unregister(d)
			}
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return nil, fmt.Errorf("oidcjwt: metrics already registered (one Authenticator per registry): %w", err)
			}
			return nil, fmt.Errorf("oidcjwt: registering metrics: %w", err)
		}
		done = append(done, c)
	}
	return m, nil
}

func (m *metrics) count(kind, issuer, result string) {
	switch kind {
	case "jwks":
		m.fetches.WithLabelValues(issuer, result).Inc()
	case "discovery":
		m.discoveries.WithLabelValues(issuer, result).Inc()
	}
}

func (m *metrics) unregister() {
	m.reg.Unregister(m.fetches)
	m.reg.Unregister(m.discoveries)
	m.reg.Unregister(m.state)
}

// stateCollector reports each issuer's Status at scrape time.
type stateCollector struct{ a *Authenticator }

var (
	descIssuerReady = prometheus.NewDesc("tollgate_issuer_ready",
		"1 while the issuer's tokens can be verified (state ready or stale), else 0.", []string{"issuer"}, nil)
	descJWKSKeys = prometheus.NewDesc("tollgate_jwks_keys",
		"Usable keys held for the issuer.", []string{"issuer"}, nil)
	descJWKSLastSuccess = prometheus.NewDesc("tollgate_jwks_last_success_timestamp_seconds",
		"Unix time of the issuer's last successful JWKS fetch; 0 before the first.", []string{"issuer"}, nil)
)

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descIssuerReady
	ch <- descJWKSKeys
	ch <- descJWKSLastSuccess
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	for _, st := range c.a.Status() {
		ready := 0.0
		if st.State == StateReady || st.State == StateStale {
			ready = 1
		}
		ch <- prometheus.MustNewConstMetric(descIssuerReady, prometheus.GaugeValue, ready, st.Issuer)
		if st.Static {
			continue
		}
		ch <- prometheus.MustNewConstMetric(descJWKSKeys, prometheus.GaugeValue, float64(st.Keys), st.Issuer)
		last := 0.0
		if !st.LastSuccess.IsZero() {
			last = float64(st.LastSuccess.UnixNano()) / 1e9
		}
		ch <- prometheus.MustNewConstMetric(descJWKSLastSuccess, prometheus.GaugeValue, last, st.Issuer)
	}
}
