// Package telemetry holds the decision metrics (Prometheus) and the
// decision traces (OpenTelemetry) of the PDP.
//
// Every metric label is bounded and carries no secret: no user, no path,
// no credential. Each label set is bound once (a counter per series,
// looked up without allocating), so counting a decision costs a few atomic
// additions.
package telemetry

import (
	"fmt"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate/tollgate/pdp/credential"
	"github.com/tollgate/tollgate/pdp/decisionlog"
	"github.com/tollgate/tollgate/pdp/policy"
)

// Stages of tollgate_decision_duration_seconds.
const (
	StageNormalize = "normalize"
	StageAuthn     = "authn"
	StageEval      = "eval"
)

// Other is the label value of everything past a bound: a reason past
// MaxReasons distinct ones or not shaped like a reason code, a status
// outside the known list, a credential field outside its enumeration.
const Other = "other"

// None is the reason label of a decision without reasons (an allow).
const None = "none"

// DefaultMaxReasons bounds the distinct reason label values.
const DefaultMaxReasons = 64

// MetricsOptions configure Metrics. The zero value is all defaults.
type MetricsOptions struct {
	// MaxReasons bounds the distinct values of the reason label; a reason
	// seen after that many is counted as Other. DefaultMaxReasons when 0.
	MaxReasons int
	// Buckets of the duration histogram; a default from 10µs to 1s when nil.
	Buckets []float64
}

// Metrics counts decisions: tollgate_decisions_total{allow,status,reason},
// tollgate_decision_duration_seconds{stage} and
// tollgate_credentials_total{type,placement,status}. It implements
// pdp.Recorder. Safe for concurrent use.
type Metrics struct {
	decisions *prometheus.CounterVec
	durations [3]prometheus.Observer                      // normalize, authn, eval
	creds     [4][5][4]atomic.Pointer[prometheus.Counter] // bound on first use
	credVec   *prometheus.CounterVec

	maxReasons int
	mu         sync.RWMutex
	bound      map[decisionKey]prometheus.Counter
	reasons    map[string]bool
}

type decisionKey struct {
	allow  bool
	status int // a known status, or 0 for Other
	reason string
}

var (
	credTypes      = []string{string(credential.TypeBearer), string(credential.TypeAPIKey), string(credential.TypeNone), Other}
	credPlacements = []string{string(credential.PlacementHeader), string(credential.PlacementCookie), string(credential.PlacementQuery), string(credential.PlacementNone), Other}
	credStatuses   = []string{policy.StatusValid, policy.StatusInvalid, policy.StatusAbsent, Other}
)

// reasonShape is what a reason label value may look like: a stable code.
var reasonShape = regexp.MustCompile(`^[a-z][a-z0-9_.:-]{0,63}$`)

// NewMetrics builds the decision metrics and registers them on reg.
func NewMetrics(reg prometheus.Registerer, opts MetricsOptions) (*Metrics, error) {
	if opts.MaxReasons <= 0 {
		opts.MaxReasons = DefaultMaxReasons
	}
	if opts.Buckets == nil {
		opts.Buckets = []float64{.00001, .000025, .00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1}
	}
	m := &Metrics{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_decisions_total",
			Help: "Decisions, by allow, status and first reason (bounded; past the bound \"other\").",
		}, []string{"allow", "status", "reason"}),
		credVec: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_credentials_total",
			Help: "Credentials seen, by type, placement and status (placement=\"query\" finds clients putting credentials in URLs).",
		}, []string{"type", "placement", "status"}),
		maxReasons: opts.MaxReasons,
		bound:      map[decisionKey]prometheus.Counter{},
		reasons:    map[string]bool{},
	}
	hist := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "tollgate_decision_duration_seconds",
		Help:    "Time spent per decision stage: normalize, authn, eval.",
		Buckets: opts.Buckets,
	}, []string{"stage"})
	for i, s := range []string{StageNormalize, StageAuthn, StageEval} {
		m.durations[i] = hist.WithLabelValues(s)
	}
	for _, c := range []prometheus.Collector{m.decisions, hist, m.credVec} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("telemetry: register metrics: %w", err)
		}
	}
	return m, nil
}

// Record implements pdp.Recorder: it counts one decision.
func (m *Metrics) Record(rec decisionlog.Record) {
	dec := rec.Decision
	reason := None
	if len(dec.Reasons) > 0 {
		reason = dec.Reasons[0]
	}
	m.counter(dec.Allow, knownStatus(dec.Status), reason).Inc()

	if rec.Stages.Normalize > 0 {
		m.durations[0].Observe(rec.Stages.Normalize.Seconds())
	}
	if rec.Stages.Authn > 0 {
		m.durations[1].Observe(rec.Stages.Authn.Seconds())
	}
	if rec.Stages.Eval > 0 {
		m.durations[2].Observe(rec.Stages.Eval.Seconds())
	}

	if rec.Input != nil {
		c := rec.Input.Credential
		m.credential(index(credTypes, string(c.Type), 2), index(credPlacements, string(c.Placement), 3), index(credStatuses, rec.Input.Status, 2)).Inc()
	}
}

// credential returns the bound counter of one credential label set,
// binding it the first time it is seen (so /metrics shows only the
// combinations that happen).
func (m *Metrics) credential(i, j, k int) prometheus.Counter {
	slot := &m.creds[i][j][k]
	if c := slot.Load(); c != nil {
		return *c
	}
	c := m.credVec.WithLabelValues(credTypes[i], credPlacements[j], credStatuses[k])
	slot.Store(&c)
	return c
}

// index is the position of v in list; def for "", len(list)-1 (Other) for
// anything not in it.
func index(list []string, v string, def int) int {
	if v == "" {
		return def
	}
	for i, x := range list[:len(list)-1] {
		if x == v {
			return i
		}
	}
	return len(list) - 1
}

// knownStatus returns s when it is a status label value of its own, else
// 0 (the label Other).
func knownStatus(s int) int {
	switch s {
	case 200, 201, 204, 400, 401, 403, 404, 405, 409, 413, 422, 429, 500, 502, 503, 504:
		return s
	}
	return 0
}

func statusLabel(s int) string {
	if s == 0 {
		return Other
	}
	return strconv.Itoa(s)
}

// counter returns the bound counter of a label set, binding it the first
// time. Reasons are admitted up to maxReasons distinct values.
func (m *Metrics) counter(allow bool, status int, reason string) prometheus.Counter {
	k := decisionKey{allow: allow, status: status, reason: reason}
	m.mu.RLock()
	c, ok := m.bound[k]
	m.mu.RUnlock()
	if ok {
		return c
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if c, ok := m.bound[k]; ok {
		return c
	}
	label := reason
	if !m.reasons[reason] {
		if len(m.reasons) >= m.maxReasons || !reasonShape.MatchString(reason) {
			label = Other
		} else {
			m.reasons[reason] = true
		}
	}
	c = m.decisions.WithLabelValues(strconv.FormatBool(allow), statusLabel(status), label)
	// Bind the raw key too (bounded: a raw reason that maps to Other is
	// bound only while the map is small), so the next lookup is a read.
	if len(m.bound) < 40*m.maxReasons {
		m.bound[k] = c
	}
	return c
}
