package telemetry

import (
	"context"
	"log/slog"

	"github.com/tollgate/tollgate/pdp/decisionlog"
)

// decisionIDs are the ids of the decision a context belongs to.
type decisionIDs struct {
	decision, request string
}

type decisionIDsKey struct{}

// WithDecisionIDs returns ctx carrying the decision id and the request's
// x-request-id, for LogHandler to put on every log line logged with it.
func WithDecisionIDs(ctx context.Context, decisionID, requestID string) context.Context {
	return context.WithValue(ctx, decisionIDsKey{}, decisionIDs{decisionID, requestID})
}

// DecisionIDs returns the ids WithDecisionIDs put in ctx.
func DecisionIDs(ctx context.Context) (decisionID, requestID string) {
	ids, _ := ctx.Value(decisionIDsKey{}).(decisionIDs)
	return ids.decision, ids.request
}

// LogHandler adds decision_id and request_id to every record logged with
// a context from WithDecisionIDs, unless the record has them already.
func LogHandler(h slog.Handler) slog.Handler { return logHandler{h} }

type logHandler struct{ slog.Handler }

func (h logHandler) Handle(ctx context.Context, r slog.Record) error {
	if ctx != nil {
		if ids, ok := ctx.Value(decisionIDsKey{}).(decisionIDs); ok {
			has := map[string]bool{}
			r.Attrs(func(a slog.Attr) bool {
				has[a.Key] = true
				return true
			})
			if !has["decision_id"] && ids.decision != "" {
				r.AddAttrs(slog.String("decision_id", ids.decision))
			}
			if !has["request_id"] && ids.request != "" {
				r.AddAttrs(slog.String("request_id", decisionlogScrub(ids.request)))
			}
		}
	}
	return h.Handler.Handle(ctx, r)
}

func (h logHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return logHandler{h.Handler.WithAttrs(as)}
}

func (h logHandler) WithGroup(name string) slog.Handler {
	return logHandler{h.Handler.WithGroup(name)}
}

// decisionlogScrub keeps a credential out of the logs should a client put
// one in its x-request-id.
func decisionlogScrub(s string) string {
	if len(s) > 128 {
		s = s[:128]
	}
	return decisionlog.Scrub(s)
}
