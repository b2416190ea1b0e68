package telemetry

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/tollgate/tollgate/pdp/decisionlog"
)

// Span names.
const (
	SpanDecision  = "tollgate.decision"
	SpanNormalize = "tollgate.normalize"
	SpanAuthn     = "tollgate.authn"
	SpanEval      = "tollgate.eval"
)

// Tracer makes the spans of decisions: one per decision, a child per
// stage, continuing the trace of the request judged (its traceparent
// header) or of the caller's context. A nil *Tracer makes none and costs
// nothing. Span attributes never carry a secret: the decision id, allow,
// status, first reason, policy revision and the credential's type,
// placement and status.
type Tracer struct {
	t    trace.Tracer
	prop propagation.TextMapPropagator
}

// NewTracer returns a Tracer on tp; nil when tp is nil.
func NewTracer(tp trace.TracerProvider) *Tracer {
	if tp == nil {
		return nil
	}
	return &Tracer{t: tp.Tracer("github.com/tollgate/tollgate/pdp"), prop: propagation.TraceContext{}}
}

// Start starts a decision's span. Its parent is the span in ctx, if any,
// else the one the request's traceparent header names (headers as the
// gateway described them, names in any case).
func (t *Tracer) Start(ctx context.Context, headers map[string][]string) (context.Context, trace.Span) {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		ctx = t.prop.Extract(ctx, rawCarrier(headers))
	}
	return t.t.Start(ctx, SpanDecision, trace.WithSpanKind(trace.SpanKindServer))
}

// End ends a decision's span with its stages as children, from the times
// the Decider measured: a stage whose time is zero did not run.
func (t *Tracer) End(ctx context.Context, span trace.Span, rec *decisionlog.Record) {
	dec := rec.Decision
	at := rec.Time
	for _, st := range []struct {
		name string
		d    time.Duration
	}{{SpanNormalize, rec.Stages.Normalize}, {SpanAuthn, rec.Stages.Authn}, {SpanEval, rec.Stages.Eval}} {
		if st.d <= 0 {
			continue
		}
		_, s := t.t.Start(ctx, st.name, trace.WithTimestamp(at))
		at = at.Add(st.d)
		s.End(trace.WithTimestamp(at))
	}
	reason := ""
	if len(dec.Reasons) > 0 {
		reason = dec.Reasons[0]
	}
	attrs := []attribute.KeyValue{
		attribute.String("tollgate.decision_id", dec.ID),
		attribute.Bool("tollgate.allow", dec.Allow),
		attribute.Int("tollgate.status", dec.Status),
		attribute.String("tollgate.reason", decisionlog.Scrub(reason)),
		attribute.String("tollgate.policy_revision", dec.PolicyRevision),
	}
	if in := rec.Input; in != nil {
		attrs = append(attrs,
			attribute.String("tollgate.credential.type", string(in.Credential.Type)),
			attribute.String("tollgate.credential.placement", string(in.Credential.Placement)),
			attribute.String("tollgate.credential.status", in.Status))
	}
	if rec.Refusal != "" {
		attrs = append(attrs, attribute.String("tollgate.refused", rec.Refusal))
	}
	span.SetAttributes(attrs...)
	if dec.Status >= 500 {
		span.SetStatus(codes.Error, "policy_error")
	}
	span.End()
}

// IDs returns the trace and span ids of span ("" when it is not recording).
func IDs(span trace.Span) (traceID, spanID string) {
	sc := span.SpanContext()
	if !sc.IsValid() {
		return "", ""
	}
	return sc.TraceID().String(), sc.SpanID().String()
}

// rawCarrier reads the traceparent and tracestate headers of a request
// as a gateway described it: header names in any case.
type rawCarrier map[string][]string

func (c rawCarrier) Get(key string) string {
	for k, v := range c {
		if len(v) > 0 && strings.EqualFold(k, key) {
			return v[0]
		}
	}
	return ""
}

func (c rawCarrier) Set(string, string) {}

func (c rawCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// TracingOptions configure the OTLP export of decision spans.
type TracingOptions struct {
	// Protocol is "grpc" or "http" (OTLP/HTTP protobuf).
	Protocol string
	// Endpoint is the collector's host:port.
	Endpoint string
	// Insecure sends spans without TLS.
	Insecure bool
	// SampleRatio is the fraction of new traces sampled (0 to 1); a
	// continued trace follows its parent's sampling decision.
	SampleRatio float64
	// ServiceName is service.name; "tollgate" when empty.
	ServiceName    string
	ServiceVersion string
}

// NewTracerProvider builds an OTLP-exporting tracer provider. Shut it
// down to flush.
func NewTracerProvider(ctx context.Context, o TracingOptions) (*sdktrace.TracerProvider, error) {
	if o.Endpoint == "" {
		return nil, errors.New("tracing: no endpoint")
	}
	if o.SampleRatio < 0 || o.SampleRatio > 1 {
		return nil, fmt.Errorf("tracing: sample ratio %v: want 0 to 1", o.SampleRatio)
	}
	var client otlptrace.Client
	switch o.Protocol {
	case "grpc":
		opts := []otlptracegrpc.Option{otlptracegrpc.WithEndpoint(o.Endpoint)}
		if o.Insecure {
			opts = append(opts, otlptracegrpc.WithInsecure())
		}
		client = otlptracegrpc.NewClient(opts...)
	case "http", "":
		opts := []otlptracehttp.Option{otlptracehttp.WithEndpoint(o.Endpoint)}
		if o.Insecure {
			opts = append(opts, otlptracehttp.WithInsecure())
		}
		client = otlptracehttp.NewClient(opts...)
	default:
		return nil, fmt.Errorf("tracing: protocol %q: want grpc or http", o.Protocol)
	}
	exp, err := otlptrace.New(ctx, client)
	if err != nil {
		return nil, fmt.Errorf("tracing: %w", err)
	}
	name := o.ServiceName
	if name == "" {
		name = "tollgate"
	}
	res := resource.NewSchemaless(semconv.ServiceName(name), semconv.ServiceVersion(o.ServiceVersion))
	return sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(o.SampleRatio))),
	), nil
}
