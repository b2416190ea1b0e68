package telemetry_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/tollgate/tollgate/pdp"
	"github.com/tollgate/tollgate/pdp/authn"
	"github.com/tollgate/tollgate/pdp/request"
	"github.com/tollgate/tollgate/pdp/telemetry"
)

func tracedDecider(t *testing.T, tp *sdktrace.TracerProvider) *pdp.Decider {
	t.Helper()
	d, err := pdp.New(pdp.Config{Engine: engineOf(t), Authenticators: []authn.Authenticator{keyAuthn{}}, Tracer: telemetry.NewTracer(tp)})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

const (
	parentTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
	parentSpan  = "00f067aa0ba902b7"
)

// TestDecisionSpans (issue 10): a decision is a span with a child per
// stage that ran, continuing the trace its request's traceparent names;
// the decision id is on the span; no attribute carries the credential.
func TestDecisionSpans(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	d := tracedDecider(t, tp)
	tests := []struct {
		name       string
		raw        request.Raw
		wantStages []string
	}{
		{"policy decision", request.Raw{Method: "GET", Target: "/a", Headers: map[string][]string{
			"traceparent": {"00-" + parentTrace + "-" + parentSpan + "-01"}, "X-Api-Key": {"good-secret-value"}}},
			[]string{telemetry.SpanNormalize, telemetry.SpanAuthn, telemetry.SpanEval}},
		{"refused before the policy", request.Raw{Method: "GET", Target: "/a/..%2f", Headers: map[string][]string{
			"TraceParent": {"00-" + parentTrace + "-" + parentSpan + "-01"}, "Authorization": {"Bearer bad-secret-value"}}},
			[]string{telemetry.SpanNormalize}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := len(rec.Ended())
			dec := d.Decide(context.Background(), tc.raw)
			spans := rec.Ended()[before:]
			var root sdktrace.ReadOnlySpan
			var stages []string
			for _, s := range spans {
				if s.Name() == telemetry.SpanDecision {
					root = s
				} else {
					stages = append(stages, s.Name())
				}
			}
			if root == nil {
				t.Fatalf("no %s span among %d", telemetry.SpanDecision, len(spans))
			}
			if got := root.SpanContext().TraceID().String(); got != parentTrace {
				t.Errorf("trace %s, want the request's %s", got, parentTrace)
			}
			if got := root.Parent().SpanID().String(); got != parentSpan {
				t.Errorf("parent span %s, want %s", got, parentSpan)
			}
			if strings.Join(stages, ",") != strings.Join(tc.wantStages, ",") {
				t.Errorf("stages %q, want %q", stages, tc.wantStages)
			}
			for _, s := range spans {
				if s.Name() != telemetry.SpanDecision && s.Parent().SpanID() != root.SpanContext().SpanID() {
					t.Errorf("stage %s is not a child of the decision", s.Name())
				}
			}
			found := false
			for _, a := range root.Attributes() {
				if a.Key == "tollgate.decision_id" && a.Value.AsString() == dec.ID {
					found = true
				}
				if v := a.Value.String(); strings.Contains(v, "secret-value") {
					t.Errorf("attribute %s carries the credential", a.Key)
				}
			}
			if !found {
				t.Errorf("no tollgate.decision_id=%s on the span: %v", dec.ID, root.Attributes())
			}
		})
	}
}

// TestDecisionSpansExportedByOTLP: with an OTLP endpoint configured, the
// decision's spans reach a collector (OTLP/HTTP, a real server on
// loopback decoding the protobuf), the decision id among their attributes.
func TestDecisionSpansExportedByOTLP(t *testing.T) {
	var mu sync.Mutex
	var got []*coltracepb.ExportTraceServiceRequest
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var req coltracepb.ExportTraceServiceRequest
		if r.URL.Path != "/v1/traces" || proto.Unmarshal(body, &req) != nil {
			http.Error(w, "bad", http.StatusBadRequest)
			return
		}
		mu.Lock()
		got = append(got, &req)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(nil)
	}))
	defer srv.Close()
	tp, err := telemetry.NewTracerProvider(context.Background(), telemetry.TracingOptions{
		Protocol: "http", Endpoint: strings.TrimPrefix(srv.URL, "http://"), Insecure: true, SampleRatio: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	d := tracedDecider(t, tp)
	dec := d.Decide(context.Background(), request.Raw{Method: "GET", Target: "/a", Headers: map[string][]string{"X-Api-Key": {"good-secret-value"}}})
	if err := tp.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	names, hasID := map[string]bool{}, false
	for _, req := range got {
		for _, rs := range req.GetResourceSpans() {
			for _, ss := range rs.GetScopeSpans() {
				for _, s := range ss.GetSpans() {
					names[s.GetName()] = true
					for _, a := range s.GetAttributes() {
						if a.GetKey() == "tollgate.decision_id" && a.GetValue().GetStringValue() == dec.ID {
							hasID = true
						}
					}
				}
			}
		}
	}
	for _, n := range []string{telemetry.SpanDecision, telemetry.SpanNormalize, telemetry.SpanAuthn, telemetry.SpanEval} {
		if !names[n] {
			t.Errorf("span %s not exported; got %v", n, names)
		}
	}
	if !hasID {
		t.Error("the decision id is not on the exported span")
	}
}

// BenchmarkDecideTracing compares a decision without a tracer (tracing
// off costs nothing) and with one.
func BenchmarkDecideTracing(b *testing.B) {
	for _, on := range []bool{false, true} {
		b.Run(map[bool]string{false: "off", true: "on"}[on], func(b *testing.B) {
			var tr *telemetry.Tracer
			if on {
				tr = telemetry.NewTracer(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(tracetest.NewSpanRecorder())))
			}
			d, err := pdp.New(pdp.Config{Engine: engineOf(b), Authenticators: []authn.Authenticator{keyAuthn{}}, Tracer: tr})
			if err != nil {
				b.Fatal(err)
			}
			raw := request.Raw{Method: "GET", Target: "/a", Headers: map[string][]string{"X-Api-Key": {"good-secret-value"}}}
			b.ReportAllocs()
			for b.Loop() {
				d.Decide(context.Background(), raw)
			}
		})
	}
}
