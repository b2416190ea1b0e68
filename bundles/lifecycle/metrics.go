package lifecycle

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the bundle metrics: tollgate_bundle_info{bundle,revision}
// (1 for the active revision) and
// tollgate_bundle_activations_total{bundle,result} (result "activated" or
// "refused"). A nil *Metrics records nothing.
type Metrics struct {
	info        *prometheus.GaugeVec
	activations *prometheus.CounterVec
}

// NewMetrics returns unregistered metrics; register them with Collectors.
func NewMetrics() *Metrics {
	return &Metrics{
		info: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tollgate_bundle_info",
			Help: "The active policy bundle revision (1), per bundle.",
		}, []string{"bundle", "revision"}),
		activations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_bundle_activations_total",
			Help: "Policy bundle candidates activated or refused (bad signature, does not compile, fails its check), per bundle.",
		}, []string{"bundle", "result"}),
	}
}

// Collectors are the metrics to register.
func (m *Metrics) Collectors() []prometheus.Collector {
	return []prometheus.Collector{m.info, m.activations}
}

func (m *Metrics) activated(name, prev, rev string) {
	if m == nil {
		return
	}
	if prev != "" && prev != rev {
		m.info.DeleteLabelValues(name, prev)
	}
	m.info.WithLabelValues(name, rev).Set(1)
	m.activations.WithLabelValues(name, "activated").Inc()
}

func (m *Metrics) refused(name string) {
	if m == nil {
		return
	}
	m.activations.WithLabelValues(name, "refused").Inc()
}
