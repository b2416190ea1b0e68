// Package shadow evaluates a candidate policy on live decisions, after the
// answer has been sent, and counts how its answers would differ:
// tollgate_shadow_decisions_total{result} with result
//
//	agree          same allow and status and reasons
//	allow_to_deny  the live policy allowed, the candidate would deny
//	deny_to_allow  the live policy denied, the candidate would allow
//	changed        same allow, another status or other reasons
//
// Disagreements are logged with the decision id, the request's method and
// path and both outcomes. The queue is bounded: when it is full, a decision
// is not shadowed (tollgate_shadow_dropped_total), so the candidate never
// slows down or blocks an answer.
package shadow

import (
	"context"
	"log/slog"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate/tollgate/pdp/decision"
	"github.com/tollgate/tollgate/pdp/policy"
)

// Results of a shadow evaluation (the metric's result label).
const (
	ResultAgree       = "agree"
	ResultAllowToDeny = "allow_to_deny"
	ResultDenyToAllow = "deny_to_allow"
	ResultChanged     = "changed"
)

// Defaults for Options' zero values.
const (
	DefaultQueueSize = 1024
	DefaultTimeout   = time.Second
)

// Options configure a Shadow. Candidate is required.
type Options struct {
	// Candidate is the engine holding the candidate revision. While it has
	// none active, decisions are not shadowed.
	Candidate *policy.Engine
	// QueueSize bounds the decisions waiting to be shadowed.
	QueueSize int
	// Timeout bounds one candidate evaluation.
	Timeout time.Duration
	// Logger receives disagreements; nil discards them.
	Logger *slog.Logger
}

type job struct {
	in  policy.Input
	dec decision.Decision
}

// Shadow is the shadow evaluator. Observe is safe for concurrent use.
type Shadow struct {
	opts    Options
	log     *slog.Logger
	queue   chan job
	results *prometheus.CounterVec
	dropped prometheus.Counter
}

// New builds a Shadow; Run evaluates what Observe queues.
func New(opts Options) *Shadow {
	if opts.QueueSize <= 0 {
		opts.QueueSize = DefaultQueueSize
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Shadow{
		opts:  opts,
		log:   log,
		queue: make(chan job, opts.QueueSize),
		results: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_shadow_decisions_total",
			Help: "Live decisions evaluated again by the shadow (candidate) policy, by how the candidate's answer compares.",
		}, []string{"result"}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tollgate_shadow_dropped_total",
			Help: "Live decisions not shadowed because the shadow queue was full.",
		}),
	}
	for _, r := range []string{ResultAgree, ResultAllowToDeny, ResultDenyToAllow, ResultChanged} {
		s.results.WithLabelValues(r)
	}
	return s
}

// Collectors are the shadow metrics, to register.
func (s *Shadow) Collectors() []prometheus.Collector {
	return []prometheus.Collector{s.results, s.dropped}
}

// Observe queues a live decision for the candidate. It never blocks: when
// the queue is full, or no candidate is active, the decision is skipped.
func (s *Shadow) Observe(in policy.Input, dec decision.Decision) {
	if !s.opts.Candidate.Ready() {
		return
	}
	select {
	case s.queue <- job{in: in, dec: dec}:
	default:
		s.dropped.Inc()
	}
}

// Run evaluates queued decisions until ctx ends.
func (s *Shadow) Run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case j := <-s.queue:
			s.evaluate(ctx, j)
		}
	}
}

// evaluate runs one decision on the candidate and counts the result.
func (s *Shadow) evaluate(ctx context.Context, j job) {
	ctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	defer cancel()
	cand, err := s.opts.Candidate.Evaluate(ctx, j.in)
	if err != nil {
		s.log.LogAttrs(ctx, slog.LevelDebug, "shadow evaluation failed; counted as the candidate's deny", slog.Any("error", err))
	}
	result := Compare(j.dec, cand)
	s.results.WithLabelValues(result).Inc()
	if result == ResultAgree {
		return
	}
	attrs := []slog.Attr{
		slog.String("decision_id", j.dec.ID),
		slog.String("result", result),
		slog.Group("live", slog.String("revision", j.dec.PolicyRevision), slog.Bool("allow", j.dec.Allow),
			slog.Int("status", j.dec.Status), slog.Any("reasons", j.dec.Reasons)),
		slog.Group("candidate", slog.String("revision", cand.PolicyRevision), slog.Bool("allow", cand.Allow),
			slog.Int("status", cand.Status), slog.Any("reasons", cand.Reasons)),
	}
	if r := j.in.Request; r != nil {
		attrs = append(attrs, slog.String("method", r.Method), slog.String("path", r.Path))
	}
	s.log.LogAttrs(ctx, slog.LevelInfo, "shadow policy disagrees", attrs...)
}

// Compare classifies the candidate's decision against the live one.
func Compare(live, cand decision.Decision) string {
	switch {
	case live.Allow && !cand.Allow:
		return ResultAllowToDeny
	case !live.Allow && cand.Allow:
		return ResultDenyToAllow
	case live.Status != cand.Status || !slices.Equal(live.Reasons, cand.Reasons):
		return ResultChanged
	}
	return ResultAgree
}
