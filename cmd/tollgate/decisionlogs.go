package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/plugins/rest"
	"github.com/prometheus/client_golang/prometheus"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/tollgate/tollgate/bundles/lifecycle"
	"github.com/tollgate/tollgate/bundles/source"
	"github.com/tollgate/tollgate/pdp"
	"github.com/tollgate/tollgate/pdp/credential"
	"github.com/tollgate/tollgate/pdp/decisionlog"
	"github.com/tollgate/tollgate/pdp/explain"
	"github.com/tollgate/tollgate/pdp/telemetry"
)

// decisionLogsConfig is OPA's `decision_logs` section, with OPA's meaning,
// for the keys Tollgate takes.
type decisionLogsConfig struct {
	// Service names an entry of `services`: events are POSTed there.
	Service string `yaml:"service"`
	// Resource is the path under the service's url (default "/logs").
	Resource  string `yaml:"resource"`
	Reporting struct {
		MinDelaySeconds       *int64 `yaml:"min_delay_seconds"`
		MaxDelaySeconds       *int64 `yaml:"max_delay_seconds"`
		BufferType            string `yaml:"buffer_type"`
		BufferSizeLimitBytes  *int64 `yaml:"buffer_size_limit_bytes"`
		BufferSizeLimitEvents *int64 `yaml:"buffer_size_limit_events"`
		UploadSizeLimitBytes  *int64 `yaml:"upload_size_limit_bytes"`
	} `yaml:"reporting"`
	// Console writes every event as a JSON line on standard error.
	Console      bool   `yaml:"console"`
	MaskDecision string `yaml:"mask_decision"`
	DropDecision string `yaml:"drop_decision"`
}

// validateDecisionLogs checks decision_logs without I/O, with OPA's rules.
func (c *config) validateDecisionLogs() []error {
	dl := c.DecisionLogs
	if dl == nil {
		return nil
	}
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf("decision_logs."+format, a...)) }
	if dl.Service != "" {
		if _, ok := c.Services[dl.Service]; !ok {
			add("service %q is not in `services`", dl.Service)
		}
	}
	r := dl.Reporting
	switch {
	case (r.MinDelaySeconds == nil) != (r.MaxDelaySeconds == nil):
		add("reporting: min_delay_seconds and max_delay_seconds go together")
	case r.MinDelaySeconds != nil && (*r.MinDelaySeconds < 1 || *r.MaxDelaySeconds < *r.MinDelaySeconds):
		add("reporting: want 1 <= min_delay_seconds <= max_delay_seconds")
	}
	switch r.BufferType {
	case "", decisionlog.BufferSize:
		if r.BufferSizeLimitEvents != nil {
			add("reporting.buffer_size_limit_events: not for buffer_type %q (use buffer_size_limit_bytes)", decisionlog.BufferSize)
		}
	case decisionlog.BufferEvent:
		if r.BufferSizeLimitBytes != nil {
			add("reporting.buffer_size_limit_bytes: not for buffer_type %q (use buffer_size_limit_events)", decisionlog.BufferEvent)
		}
	default:
		add("reporting.buffer_type %q: want %q or %q", r.BufferType, decisionlog.BufferSize, decisionlog.BufferEvent)
	}
	for name, v := range map[string]*int64{"buffer_size_limit_bytes": r.BufferSizeLimitBytes, "buffer_size_limit_events": r.BufferSizeLimitEvents} {
		if v != nil && *v <= 0 {
			add("reporting.%s must be above 0", name)
		}
	}
	if v := r.UploadSizeLimitBytes; v != nil && *v < decisionlog.MinUploadSizeLimitBytes {
		add("reporting.upload_size_limit_bytes must be at least %d", decisionlog.MinUploadSizeLimitBytes)
	}
	if dl.Service == "" && !dl.Console && len(c.Services) != 1 {
		add("service: name the service to upload to, or set console: true")
	}
	return errs
}

// decisionLogService is the service events go to, "" for none: the named
// one or, as OPA does when console is off, the only service there is.
func (c *config) decisionLogService() string {
	dl := c.DecisionLogs
	switch {
	case dl == nil:
		return ""
	case dl.Service != "":
		return dl.Service
	case !dl.Console && len(c.Services) == 1:
		for name := range c.Services {
			return name
		}
	}
	return ""
}

// newDecisionLog builds the decision logger from decision_logs; nil when
// it is absent. console receives the console sink's JSON lines.
func newDecisionLog(c *config, console io.Writer, version string, reg prometheus.Registerer, log *slog.Logger) (*decisionlog.Logger, error) {
	dl := c.DecisionLogs
	if dl == nil {
		return nil, nil
	}
	opts := decisionlog.Options{
		Labels:       map[string]string{"id": instanceID(), "version": version},
		Query:        c.Policy.Query,
		BundleName:   c.bundleName(),
		MaskDecision: dl.MaskDecision,
		DropDecision: dl.DropDecision,
		Sensitive:    sensitiveNames(c.Credentials),
		Registerer:   reg,
		Logger:       log.With("log", "decision_logs"),
	}
	for k, v := range c.Labels {
		opts.Labels[k] = v
	}
	if dl.Console {
		opts.Console = console
	}
	if svc := c.decisionLogService(); svc != "" {
		ks, err := c.opaKeys()
		if err != nil {
			return nil, err
		}
		client, err := c.restClient(svc, ks, rest.Logger(source.OPALogger(log)))
		if err != nil {
			return nil, fmt.Errorf("decision_logs: %w", err)
		}
		r := dl.Reporting
		up := &decisionlog.Upload{
			Client:     decisionlog.RESTClient{Client: client},
			Resource:   dl.Resource,
			BufferType: r.BufferType,
		}
		if r.MinDelaySeconds != nil {
			up.MinDelay = time.Duration(*r.MinDelaySeconds) * time.Second
			up.MaxDelay = time.Duration(*r.MaxDelaySeconds) * time.Second
		}
		up.BufferSizeLimitBytes = deref(r.BufferSizeLimitBytes)
		up.BufferSizeLimitEvents = deref(r.BufferSizeLimitEvents)
		up.UploadSizeLimitBytes = deref(r.UploadSizeLimitBytes)
		opts.Upload = up
	}
	if opts.Console == nil && opts.Upload == nil {
		return nil, errors.New("decision_logs: no sink: set service or console")
	}
	return decisionlog.New(opts)
}

func deref(p *int64) int64 {
	if p == nil {
		return 0
	}
	return *p
}

// sensitiveNames are the configured credential locations, which the
// decision log always erases (beside its built-in list).
func sensitiveNames(loc *credential.Locations) decisionlog.Sensitive {
	l := credential.DefaultLocations()
	if loc != nil {
		l = *loc
	}
	var s decisionlog.Sensitive
	for _, src := range []credential.Sources{l.Bearer, l.APIKey} {
		s.Headers = append(s.Headers, src.Headers...)
		s.Query = append(s.Query, src.Query...)
	}
	return s
}

// instanceID is this process's id in the events' labels, as OPA's is.
func instanceID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// legacyDecisionLog is the deprecated decision_log.enabled: one slog line
// per policy decision, as before decision_logs existed; nil when off.
func legacyDecisionLog(c *config, log *slog.Logger) *slog.Logger {
	if !c.DecisionLog.Enabled {
		return nil
	}
	log.Warn("decision_log.enabled is deprecated: decision_logs: {console: true} writes OPA-compatible events, refusals included")
	return log.With("log", "decision")
}

// stopDecisionLog flushes the decision log for up to timeout at shutdown.
func stopDecisionLog(l *decisionlog.Logger, timeout time.Duration) {
	if l == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	l.Stop(ctx)
}

// serveTelemetry is what runServe stops at shutdown.
type serveTelemetry struct {
	// console receives the decision log's console sink (runServe's
	// standard error); os.Stderr when nil.
	console     io.Writer
	decisionLog *decisionlog.Logger
	tracing     *sdktrace.TracerProvider
	explainer   *explain.Explainer // nil without an admin listener
}

// following returns engine with the decision log and the explainer
// following its activations: each bundle it activates gives them its
// mask and drop rules, route table and checks.
func (t serveTelemetry) following(engine lifecycle.Engine, log *slog.Logger) lifecycle.Engine {
	var hooks []func(context.Context, *bundle.Bundle) error
	if t.decisionLog != nil {
		hooks = append(hooks, t.decisionLog.SetPolicy)
	}
	if t.explainer != nil {
		hooks = append(hooks, t.explainer.SetPolicy)
	}
	if len(hooks) == 0 {
		return engine
	}
	return activation(func(ctx context.Context, b *bundle.Bundle) error {
		if err := engine.Activate(ctx, b); err != nil {
			return err
		}
		for _, h := range hooks {
			if err := h(ctx, b); err != nil {
				// The bundle decides all the same; its log rules or
				// explanations are the previous bundle's.
				log.Error("decision log or explanations not updated for the new bundle", "revision", b.Manifest.Revision, "error", err)
			}
		}
		return nil
	})
}

type activation func(ctx context.Context, b *bundle.Bundle) error

func (f activation) Activate(ctx context.Context, b *bundle.Bundle) error { return f(ctx, b) }

// adminHandlers are the endpoints the admin listener adds for operators:
// POST /v1/explain and /debug/pprof/.
func (t serveTelemetry) adminHandlers(d *pdp.Decider) map[string]http.Handler {
	h := map[string]http.Handler{"/debug/pprof/": telemetry.Pprof()}
	if t.explainer != nil {
		h["POST /v1/explain"] = t.explainer.Handler(d)
	}
	return h
}

// stop delivers what the decision log holds and flushes the spans, for
// up to timeout each.
func (t serveTelemetry) stop(timeout time.Duration) {
	stopDecisionLog(t.decisionLog, timeout)
	if t.tracing != nil {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		_ = t.tracing.Shutdown(ctx)
	}
}

// newRecorders builds what records each decision when serving: the
// decision metrics (tollgate_decisions_total, …), the decision log,
// started, and the tracer when distributed_tracing is set. Their metrics
// go to parts.metrics; parts.telemetry keeps what runServe stops.
func newRecorders(ctx context.Context, c *config, log *slog.Logger, parts *serveParts) ([]pdp.Recorder, *telemetry.Tracer, error) {
	m, err := telemetry.NewMetrics(&parts.metrics, telemetry.MetricsOptions{})
	if err != nil {
		return nil, nil, err
	}
	recorders := []pdp.Recorder{m}
	version := readBuildVersion().Version
	console := parts.telemetry.console
	if console == nil {
		console = os.Stderr
	}
	l, err := newDecisionLog(c, console, version, &parts.metrics, log)
	if err != nil {
		return nil, nil, err
	}
	if l != nil {
		l.Start()
		parts.telemetry.decisionLog = l
		recorders = append(recorders, l)
	}
	if c.Admin.Listen != "" {
		x, err := explain.New(explain.Options{Query: c.Policy.Query, MaxBodyBytes: c.Limits.MaxBodyBytes, Logger: log})
		if err != nil {
			return nil, nil, err
		}
		parts.telemetry.explainer = x
		recorders = append(recorders, x)
	}
	var tracer *telemetry.Tracer
	if opts, ok := c.tracingOptions(version); ok {
		tp, err := telemetry.NewTracerProvider(ctx, opts)
		if err != nil {
			return nil, nil, err
		}
		parts.telemetry.tracing = tp
		tracer = telemetry.NewTracer(tp)
		log.Info("decision traces exported by OTLP", "protocol", opts.Protocol, "endpoint", opts.Endpoint, "sample_ratio", opts.SampleRatio)
	}
	return recorders, tracer, nil
}

// tracingConfig is OPA's distributed_tracing section, for the keys
// Tollgate takes: off unless type is set.
type tracingConfig struct {
	// Type is "grpc" or "http" (OTLP/HTTP).
	Type string `yaml:"type"`
	// Address is the OTLP collector's host:port (default localhost:4317
	// for grpc, localhost:4318 for http).
	Address string `yaml:"address"`
	// ServiceName is service.name (default "tollgate").
	ServiceName string `yaml:"service_name"`
	// SamplePercentage is the percentage of new traces sampled (default
	// 100); a continued trace follows its parent's decision.
	SamplePercentage *int `yaml:"sample_percentage"`
	// Encryption is "off" (default, as OPA) or "tls".
	Encryption string `yaml:"encryption"`
}

func (c *config) validateTracing() []error {
	t := c.DistributedTracing
	var errs []error
	switch t.Type {
	case "", "grpc", "http":
	default:
		errs = append(errs, fmt.Errorf("distributed_tracing.type %q: want grpc or http", t.Type))
	}
	if p := t.SamplePercentage; p != nil && (*p < 0 || *p > 100) {
		errs = append(errs, fmt.Errorf("distributed_tracing.sample_percentage %d: want 0 to 100", *p))
	}
	switch t.Encryption {
	case "", "off", "tls":
	default:
		errs = append(errs, fmt.Errorf("distributed_tracing.encryption %q: want off or tls", t.Encryption))
	}
	return errs
}

// tracingOptions maps distributed_tracing; false when tracing is off.
func (c *config) tracingOptions(version string) (telemetry.TracingOptions, bool) {
	t := c.DistributedTracing
	if t.Type == "" {
		return telemetry.TracingOptions{}, false
	}
	o := telemetry.TracingOptions{Protocol: t.Type, Endpoint: t.Address, SampleRatio: 1, ServiceName: t.ServiceName,
		ServiceVersion: version, Insecure: t.Encryption == "" || t.Encryption == "off"}
	if o.Endpoint == "" {
		o.Endpoint = map[string]string{"grpc": "localhost:4317", "http": "localhost:4318"}[t.Type]
	}
	if t.SamplePercentage != nil {
		o.SampleRatio = float64(*t.SamplePercentage) / 100
	}
	return o, true
}

// bundleTimes reports the bundles' activation and confirmation times for
// tollgate_bundle_*_timestamp_seconds.
func bundleTimes(p *policyBundles) func() []telemetry.BundleTimes {
	return func() []telemetry.BundleTimes {
		var out []telemetry.BundleTimes
		for _, b := range p.health() {
			out = append(out, telemetry.BundleTimes{Name: b.Name, ActivatedAt: b.ActivatedAt, CheckedAt: b.CheckedAt})
		}
		return out
	}
}
