package decisionlog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate/tollgate/pdp/policy"
)

// Defaults of Options' zero values. The reporting delays, the event bound
// and the upload size are OPA's; the byte bound is not: OPA's default is
// unbounded, Tollgate bounds every queue.
const (
	DefaultMinDelay              = 300 * time.Second
	DefaultMaxDelay              = 600 * time.Second
	DefaultBufferSizeLimitEvents = 10000
	DefaultBufferSizeLimitBytes  = 16 << 20
	DefaultUploadSizeLimitBytes  = 32768
	// MinUploadSizeLimitBytes is OPA's lower bound of
	// upload_size_limit_bytes.
	MinUploadSizeLimitBytes = 90
	// DefaultQueueLen bounds the hand-off between decisions and the
	// logger's goroutine.
	DefaultQueueLen = 1024
	// DefaultResource is where OPA uploads decision logs.
	DefaultResource = "/logs"
)

// Buffer types of reporting.buffer_type, OPA's names.
const (
	BufferSize  = "size"  // bounded in bytes (buffer_size_limit_bytes)
	BufferEvent = "event" // bounded in events (buffer_size_limit_events)
)

// Upload configures the OPA-compatible upload sink.
type Upload struct {
	// Client posts the chunks. Required.
	Client Client
	// Resource is the path the chunks are posted to; DefaultResource
	// when empty.
	Resource string
	// MinDelay and MaxDelay bound the wait between uploads (a random
	// delay between the two); DefaultMinDelay and DefaultMaxDelay when 0.
	// After a failure the wait is an exponential backoff from 100ms, with
	// jitter, capped at MaxDelay.
	MinDelay, MaxDelay time.Duration
	// BufferType is BufferSize (default) or BufferEvent.
	BufferType string
	// BufferSizeLimitBytes bounds the buffer in bytes of encoded events
	// for BufferSize; DefaultBufferSizeLimitBytes when 0.
	BufferSizeLimitBytes int64
	// BufferSizeLimitEvents bounds the buffer in events (always: for
	// BufferEvent it is the bound, for BufferSize a backstop);
	// DefaultBufferSizeLimitEvents when 0.
	BufferSizeLimitEvents int64
	// UploadSizeLimitBytes bounds one upload's compressed body;
	// DefaultUploadSizeLimitBytes when 0. An event that cannot fit in one
	// upload by itself is dropped (and counted).
	UploadSizeLimitBytes int64
}

// Options configure a Logger. The zero value logs nowhere: set Console, or
// Upload, or both.
type Options struct {
	// Console, when set, receives each event as a JSON line.
	Console io.Writer
	// Upload, when set, uploads events to an OPA decision-log collector.
	Upload *Upload
	// Labels are OPA's event labels; Tollgate sets "id" (the instance)
	// and "version".
	Labels map[string]string
	// Query is the decision query; the event's path is its data path
	// ("data.tollgate.authz.decision" gives "tollgate/authz/decision").
	// policy.DefaultQuery when empty.
	Query string
	// BundleName names the bundle in the event's bundles; "tollgate" when
	// empty.
	BundleName string
	// MaskDecision and DropDecision are OPA's mask_decision and
	// drop_decision: data paths of rules in the active bundle evaluated on
	// every event (input: the event). DefaultMaskDecision and
	// DefaultDropDecision when empty.
	MaskDecision, DropDecision string
	// Sensitive names further headers and query parameters to erase (the
	// configured credential locations); the built-in rule set always
	// applies.
	Sensitive Sensitive
	// QueueLen bounds the records waiting for the logger's goroutine;
	// DefaultQueueLen when 0. A record that finds the queue full is
	// dropped and counted.
	QueueLen int
	// Registerer, when set, receives the logger's metrics
	// (tollgate_decision_log_events_total{result} and the buffer gauges).
	Registerer prometheus.Registerer
	// Logger receives the logger's own operational logs. Nil discards them.
	Logger *slog.Logger
}

// Results of tollgate_decision_log_events_total.
const (
	ResultDelivered = "delivered" // accepted by the collector (or written to the console when it is the only sink)
	ResultDropped   = "dropped"   // lost: queue or buffer full, too large, undeliverable at shutdown
	ResultFailed    = "failed"    // in an upload that failed (kept and retried; counted once per attempt)
)

// Logger builds, masks and delivers decision-log events. Log is safe for
// concurrent use; Start and Stop are called once each.
type Logger struct {
	opts      Options
	up        *Upload
	queue     chan Record
	buf       *buffer
	builtin   *builtinMasker
	path      string
	bundle    string
	maskRef   ast.Ref
	dropRef   ast.Ref
	policy    atomic.Pointer[logPolicy]
	log       *slog.Logger
	uploadMax int64 // uncompressed budget of one upload

	delivered, dropped, failed, suppressed prometheus.Counter

	nudge     chan struct{}
	stopped   atomic.Bool
	quit      chan struct{} // stops the worker
	stopOnce  sync.Once
	workers   sync.WaitGroup
	uploading sync.WaitGroup
	stop      chan struct{}
}

// New validates opts and builds a Logger; it starts nothing (Start does).
func New(opts Options) (*Logger, error) {
	mask, drop := opts.MaskDecision, opts.DropDecision
	if mask == "" {
		mask = DefaultMaskDecision
	}
	if drop == "" {
		drop = DefaultDropDecision
	}
	maskRef, err := dataRef(mask)
	if err != nil {
		return nil, fmt.Errorf("decision log: mask_decision: %w", err)
	}
	dropRef, err := dataRef(drop)
	if err != nil {
		return nil, fmt.Errorf("decision log: drop_decision: %w", err)
	}
	l := &Logger{
		opts:    opts,
		builtin: newBuiltinMasker(opts.Sensitive),
		path:    queryPath(opts.Query),
		bundle:  opts.BundleName,
		maskRef: maskRef,
		dropRef: dropRef,
		log:     opts.Logger,
		nudge:   make(chan struct{}, 1),
		quit:    make(chan struct{}),
		stop:    make(chan struct{}),
	}
	if l.bundle == "" {
		l.bundle = "tollgate"
	}
	if l.log == nil {
		l.log = slog.New(slog.DiscardHandler)
	}
	n := opts.QueueLen
	if n <= 0 {
		n = DefaultQueueLen
	}
	l.queue = make(chan Record, n)
	if u := opts.Upload; u != nil {
		cp := *u
		if err := cp.validate(); err != nil {
			return nil, err
		}
		l.up = &cp
		l.buf = &buffer{maxEvents: int(cp.BufferSizeLimitEvents)}
		if cp.BufferType == BufferSize {
			l.buf.maxBytes = cp.BufferSizeLimitBytes
		}
		l.uploadMax = cp.UploadSizeLimitBytes - gzipOverhead(cp.UploadSizeLimitBytes)
	}
	events := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tollgate_decision_log_events_total",
		Help: "Decision-log events by outcome: delivered, dropped (lost), failed (in a failed upload, retried).",
	}, []string{"result"})
	l.delivered = events.WithLabelValues(ResultDelivered)
	l.dropped = events.WithLabelValues(ResultDropped)
	l.failed = events.WithLabelValues(ResultFailed)
	suppressed := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "tollgate_decision_log_events_suppressed_total",
		Help: "Decision-log events the policy's drop decision left out (on purpose).",
	})
	l.suppressed = suppressed
	if reg := opts.Registerer; reg != nil {
		cs := []prometheus.Collector{events, suppressed}
		if l.buf != nil {
			cs = append(cs,
				prometheus.NewGaugeFunc(prometheus.GaugeOpts{
					Name: "tollgate_decision_log_buffer_events",
					Help: "Decision-log events waiting for upload.",
				}, func() float64 { n, _ := l.buf.len(); return float64(n) }),
				prometheus.NewGaugeFunc(prometheus.GaugeOpts{
					Name: "tollgate_decision_log_buffer_bytes",
					Help: "Bytes of encoded decision-log events waiting for upload.",
				}, func() float64 { _, b := l.buf.len(); return float64(b) }))
		}
		for _, c := range cs {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("decision log: metrics: %w", err)
			}
		}
	}
	return l, nil
}

func (u *Upload) validate() error {
	var errs []error
	if u.Client == nil {
		errs = append(errs, errors.New("no client"))
	}
	if u.Resource == "" {
		u.Resource = DefaultResource
	}
	if u.MinDelay == 0 && u.MaxDelay == 0 {
		u.MinDelay, u.MaxDelay = DefaultMinDelay, DefaultMaxDelay
	}
	if u.MinDelay <= 0 || u.MaxDelay < u.MinDelay {
		errs = append(errs, fmt.Errorf("delays: want 0 < min (%s) <= max (%s)", u.MinDelay, u.MaxDelay))
	}
	switch u.BufferType {
	case "":
		u.BufferType = BufferSize
	case BufferSize, BufferEvent:
	default:
		errs = append(errs, fmt.Errorf("buffer_type %q: want %q or %q", u.BufferType, BufferSize, BufferEvent))
	}
	if u.BufferSizeLimitBytes < 0 || u.BufferSizeLimitEvents < 0 || u.UploadSizeLimitBytes < 0 {
		errs = append(errs, errors.New("limits must not be negative"))
	}
	if u.BufferSizeLimitBytes == 0 {
		u.BufferSizeLimitBytes = DefaultBufferSizeLimitBytes
	}
	if u.BufferSizeLimitEvents == 0 {
		u.BufferSizeLimitEvents = DefaultBufferSizeLimitEvents
	}
	if u.UploadSizeLimitBytes == 0 {
		u.UploadSizeLimitBytes = DefaultUploadSizeLimitBytes
	}
	if u.UploadSizeLimitBytes < MinUploadSizeLimitBytes {
		errs = append(errs, fmt.Errorf("upload_size_limit_bytes %d: want at least %d", u.UploadSizeLimitBytes, MinUploadSizeLimitBytes))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("decision log: upload: %w", err)
	}
	return nil
}

// queryPath turns "data.a.b.c" into OPA's event path "a/b/c".
func queryPath(q string) string {
	if q == "" {
		q = policy.DefaultQuery
	}
	return strings.ReplaceAll(strings.TrimPrefix(q, "data."), ".", "/")
}

// SetPolicy takes the mask and drop rules and the route table from the
// bundle the engine has just activated. Call it after each activation; an
// error leaves the previous ones in place.
func (l *Logger) SetPolicy(ctx context.Context, b *bundle.Bundle) error {
	lp, err := compileLogPolicy(ctx, b, l.maskRef, l.dropRef)
	if err != nil {
		return err
	}
	l.policy.Store(lp)
	return nil
}

// Log hands a decision to the logger. It never blocks and never fails:
// when the queue is full, the event is dropped and counted.
func (l *Logger) Log(rec Record) {
	if l.stopped.Load() {
		l.dropped.Inc()
		return
	}
	select {
	case l.queue <- rec:
	default:
		l.dropped.Inc()
	}
}

// Start starts the logger's goroutines. They run until Stop.
func (l *Logger) Start() {
	l.workers.Add(1)
	go l.work()
	if l.up != nil {
		l.uploading.Add(1)
		go l.uploadLoop()
	}
}

// Stop stops taking events, writes those queued, and tries to upload what
// is buffered until ctx ends; whatever is left then is counted as dropped.
func (l *Logger) Stop(ctx context.Context) {
	l.stopOnce.Do(func() {
		l.stopped.Store(true)
		close(l.quit)
		l.workers.Wait()
		// A Log racing with Stop may have queued a record after the
		// worker's last look: count it.
		for n := len(l.queue); n > 0; n-- {
			<-l.queue
			l.dropped.Inc()
		}
		close(l.stop)
		l.uploading.Wait()
		if l.up == nil {
			return
		}
		for {
			if n, _ := l.buf.len(); n == 0 || ctx.Err() != nil {
				break
			}
			if err := l.uploadOnce(ctx); err != nil {
				break
			}
		}
		if n := l.buf.drain(); n > 0 {
			l.dropped.Add(float64(n))
			l.log.LogAttrs(ctx, slog.LevelWarn, "decision log events not delivered at shutdown", slog.Int("events", n))
		}
	})
}

// work turns records into events and hands them to the sinks.
func (l *Logger) work() {
	defer l.workers.Done()
	for {
		select {
		case rec := <-l.queue:
			l.handle(&rec)
		case <-l.quit:
			for {
				select {
				case rec := <-l.queue:
					l.handle(&rec)
				default:
					return
				}
			}
		}
	}
}

// handle encodes one record and hands the event to the sinks.
func (l *Logger) handle(rec *Record) {
	ctx := context.Background()
	b, ok := l.encode(ctx, rec)
	if !ok {
		return
	}
	delivered := false
	if l.opts.Console != nil {
		if _, err := l.opts.Console.Write(append(b, '\n')); err == nil {
			delivered = true
		}
	}
	switch {
	case l.up != nil:
		if int64(len(b))+2 > l.uploadMax {
			l.dropped.Inc()
			l.log.LogAttrs(ctx, slog.LevelWarn, "decision log event larger than upload_size_limit_bytes; dropped",
				slog.String("decision_id", rec.Decision.ID), slog.Int("bytes", len(b)))
			return
		}
		if n := l.buf.push(b); n > 0 {
			l.dropped.Add(float64(n))
		}
		if n, size := l.buf.len(); size >= l.uploadMax || n >= int(l.up.BufferSizeLimitEvents)/2 {
			select {
			case l.nudge <- struct{}{}:
			default:
			}
		}
	case delivered:
		l.delivered.Inc()
	default:
		l.dropped.Inc()
	}
}

// encode builds, masks and encodes the event of rec; false when the
// policy's drop decision drops it or it cannot be encoded.
func (l *Logger) encode(ctx context.Context, rec *Record) ([]byte, bool) {
	lp := l.policy.Load()
	ev := l.build(rec, lp)
	l.builtin.mask(&ev)
	if lp != nil && (lp.drop != nil || lp.mask != nil) {
		doc, err := eventDoc(&ev)
		if err != nil {
			l.dropped.Inc()
			l.log.LogAttrs(ctx, slog.LevelError, "decision log event could not be converted for the mask policy; dropped",
				slog.String("decision_id", ev.DecisionID), slog.Any("error", err))
			return nil, false
		}
		drop, err := lp.evalDrop(ctx, doc)
		if err != nil {
			l.log.LogAttrs(ctx, slog.LevelError, "decision log drop decision failed; keeping the event", slog.String("decision_id", ev.DecisionID), slog.Any("error", err))
		}
		if drop {
			l.suppressed.Inc()
			return nil, false
		}
		rules, err := lp.evalMask(ctx, doc)
		if err != nil {
			l.log.LogAttrs(ctx, slog.LevelError, "decision log mask decision failed; built-in masks only", slog.String("decision_id", ev.DecisionID), slog.Any("error", err))
		}
		for _, r := range rules {
			r.apply(&ev)
		}
		// A policy's upsert may have put back a value that looks like a
		// credential: the built-in scrub has the last word.
		ev.Input = l.builtin.scrub(&ev, ev.Input, "/input")
		ev.Result = l.builtin.scrub(&ev, ev.Result, "/result")
	}
	b, err := json.Marshal(&ev)
	if err != nil {
		l.dropped.Inc()
		l.log.LogAttrs(ctx, slog.LevelError, "decision log event could not be encoded; dropped",
			slog.String("decision_id", ev.DecisionID), slog.Any("error", err))
		return nil, false
	}
	return b, true
}

// eventDoc is the event as OPA's mask and drop policies see it (their
// input): the event's JSON as an AST value.
func eventDoc(ev *Event) (ast.Value, error) {
	b, err := json.Marshal(ev)
	if err != nil {
		return nil, err
	}
	return ast.ValueFromReader(strings.NewReader(string(b)))
}

// build turns a record into its event (before masking).
func (l *Logger) build(rec *Record, lp *logPolicy) Event {
	dec := rec.Decision
	ev := Event{
		Labels:      l.opts.Labels,
		DecisionID:  dec.ID,
		TraceID:     rec.TraceID,
		SpanID:      rec.SpanID,
		Path:        l.path,
		RequestedBy: rec.RequestedBy,
		Timestamp:   rec.Time.UTC(),
		Result: map[string]any{
			"allow":   dec.Allow,
			"status":  dec.Status,
			"reasons": stringsAny(dec.Reasons),
			"headers": headersAny(dec.Headers),
		},
		Bundles: map[string]BundleInfo{l.bundle: {Revision: dec.PolicyRevision}},
		Tollgate: Tollgate{
			Credential: credentialInfo(rec),
			Stages: StageTimes{
				NormalizeNS: rec.Stages.Normalize.Nanoseconds(),
				AuthnNS:     rec.Stages.Authn.Nanoseconds(),
				EvalNS:      rec.Stages.Eval.Nanoseconds(),
			},
			Transport: rec.Transport,
			RequestID: requestIDOf(rec.RequestID),
		},
	}
	if rec.Refusal != "" {
		ev.Tollgate.Refuse = &RefuseInfo{Reason: rec.Refusal, Error: Scrub(rec.Error)}
	}
	if total := rec.Stages.Normalize + rec.Stages.Authn + rec.Stages.Eval; total > 0 {
		ev.Metrics = map[string]any{
			"timer_rego_query_eval_ns": rec.Stages.Eval.Nanoseconds(),
			"timer_server_handler_ns":  total.Nanoseconds(),
		}
	}
	if rec.Input != nil {
		if v, err := ast.JSON(rec.Input.Value()); err == nil {
			ev.Input = v
		}
		if r := rec.Input.Request; r != nil {
			ev.Tollgate.Route = lp.routeOf(r.Method, r.Segments)
		}
	}
	return ev
}

// requestIDOf is the request's x-request-id as logged: at most 128
// bytes, and never something shaped like a credential.
func requestIDOf(s string) string {
	if len(s) > 128 {
		s = s[:128]
	}
	return Scrub(s)
}

func stringsAny(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

func headersAny(h map[string]string) map[string]any {
	out := make(map[string]any, len(h))
	for k, v := range h {
		out[k] = v
	}
	return out
}

// uploadLoop uploads what is buffered every MinDelay..MaxDelay (sooner
// when the buffer holds a full upload), backing off after failures.
func (l *Logger) uploadLoop() {
	defer l.uploading.Done()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-l.stop
		cancel()
	}()
	retry := 0
	timer := time.NewTimer(jitter(l.up.MinDelay, l.up.MaxDelay))
	defer timer.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-timer.C:
		case <-l.nudge:
			if retry > 0 {
				continue // backing off: the timer decides
			}
			timer.Stop()
		}
		var err error
		for {
			if n, _ := l.buf.len(); n == 0 {
				break
			}
			if err = l.uploadOnce(ctx); err != nil {
				break
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			l.log.LogAttrs(ctx, slog.LevelWarn, "decision log upload failed; retrying", slog.Int("retry", retry), slog.Any("error", err))
			timer.Reset(backoff(retry, l.up.MaxDelay))
			retry++
			continue
		}
		retry = 0
		timer.Reset(jitter(l.up.MinDelay, l.up.MaxDelay))
	}
}

// uploadOnce uploads one chunk; on failure its events go back in front of
// the buffer (evicting the oldest if it is full meanwhile).
func (l *Logger) uploadOnce(ctx context.Context) error {
	events := l.buf.take(l.uploadMax)
	if len(events) == 0 {
		return nil
	}
	body, err := encodeChunk(events)
	if err == nil {
		err = l.up.Client.Post(ctx, l.up.Resource, body)
	}
	if err != nil {
		l.failed.Add(float64(len(events)))
		if n := l.buf.pushFront(events); n > 0 {
			l.dropped.Add(float64(n))
		}
		return err
	}
	l.delivered.Add(float64(len(events)))
	return nil
}

// Flush uploads everything buffered now, for tests and for an operator's
// "flush" signal; it returns the first upload error.
func (l *Logger) Flush(ctx context.Context) error {
	if l.up == nil {
		return nil
	}
	for {
		if n, _ := l.buf.len(); n == 0 {
			return nil
		}
		if err := l.uploadOnce(ctx); err != nil {
			return err
		}
	}
}

// Activator activates a policy bundle: a *policy.Engine, or what
// bundles/lifecycle drives.
type Activator interface {
	Activate(ctx context.Context, b *bundle.Bundle) error
}

// Following returns an Activator that activates b on e and, when that
// succeeds, hands b to SetPolicy, so that the mask and drop rules and the
// route table always come from the bundle that decides. A bundle whose
// log rules do not prepare keeps the previous rules (and is logged); it
// still decides.
func (l *Logger) Following(e Activator) Activator {
	return activateFunc(func(ctx context.Context, b *bundle.Bundle) error {
		if err := e.Activate(ctx, b); err != nil {
			return err
		}
		if err := l.SetPolicy(ctx, b); err != nil {
			l.log.LogAttrs(ctx, slog.LevelError, "decision log mask/drop rules of the new bundle not prepared; keeping the previous ones",
				slog.String("revision", b.Manifest.Revision), slog.Any("error", err))
		}
		return nil
	})
}

type activateFunc func(ctx context.Context, b *bundle.Bundle) error

func (f activateFunc) Activate(ctx context.Context, b *bundle.Bundle) error { return f(ctx, b) }

// Record implements pdp.Recorder: it is Log.
func (l *Logger) Record(rec Record) { l.Log(rec) }
