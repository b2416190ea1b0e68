package server

import (
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the server's Prometheus metrics, in a registry of its own
// (never the global default one).
type metrics struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	// clientAuthFailures counts refused gateway clients, by reason.
	clientAuthFailures *prometheus.CounterVec
}

func newMetrics(ready func() bool) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_http_requests_total",
			Help: "HTTP requests served, by endpoint and status code.",
		}, []string{"endpoint", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tollgate_http_request_duration_seconds",
			Help:    "Time to answer, by endpoint.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1},
		}, []string{"endpoint"}),
		clientAuthFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_client_auth_failures_total",
			Help: "Requests refused with 401 because the calling gateway did not authenticate, by reason.",
		}, []string{"reason"}),
	}
	m.reg.MustRegister(m.requests, m.duration, m.clientAuthFailures,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "tollgate_policy_ready",
			Help: "1 when a policy is active, else 0.",
		}, func() float64 {
			if ready() {
				return 1
			}
			return 0
		}),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// handler serves GET /metrics.
func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// instrument counts and times the requests of one endpoint. Its labels
// are bound once: the endpoint's here, each status code's the first time
// it is answered.
func (m *metrics) instrument(endpoint string, h http.Handler) http.Handler {
	obs := m.duration.WithLabelValues(endpoint)
	counts := &codeCounters{vec: m.requests, endpoint: endpoint}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
		h.ServeHTTP(sw, r)
		obs.Observe(time.Since(start).Seconds())
		counts.inc(sw.code)
	})
}

// codeCounters are one endpoint's request counters by status code, bound
// on first use.
type codeCounters struct {
	vec      *prometheus.CounterVec
	endpoint string
	bound    [600]atomic.Pointer[prometheus.Counter] // by status code
}

func (c *codeCounters) inc(code int) {
	if code < 0 || code >= len(c.bound) { // not a status net/http sends
		c.vec.WithLabelValues(c.endpoint, strconv.Itoa(code)).Inc()
		return
	}
	p := c.bound[code].Load()
	if p == nil {
		counter := c.vec.WithLabelValues(c.endpoint, strconv.Itoa(code))
		p = &counter
		c.bound[code].Store(p)
	}
	(*p).Inc()
}

type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	w.code = code
	w.ResponseWriter.WriteHeader(code)
}
