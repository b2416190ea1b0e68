// Package native serves Tollgate's own decision API, POST /v1/decision: a
// JSON description of the request in, the decision as JSON out.
package native

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"

	"github.com/tollgate/tollgate/pdp/decision"
	"github.com/tollgate/tollgate/pdp/request"
)

// Decider is what the handler needs from the PDP.
type Decider interface {
	Decide(ctx context.Context, raw request.Raw) decision.Decision
}

// DefaultMaxBodyBytes bounds the request body when Options.MaxBodyBytes is 0.
const DefaultMaxBodyBytes = 64 << 10

// Options configure the handler. The zero value is safe.
type Options struct {
	MaxBodyBytes int64
	Logger       *slog.Logger
}

// Handler serves POST /v1/decision.
type Handler struct {
	decider Decider
	max     int64
	log     *slog.Logger
}

var _ http.Handler = (*Handler)(nil)

// New returns the decision API handler.
func New(d Decider, opts Options) *Handler {
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Handler{decider: d, max: opts.MaxBodyBytes, log: opts.Logger}
}

// Body is the decision request document.
type Body struct {
	Method   string       `json:"method"`
	Path     string       `json:"path"`
	Host     string       `json:"host"`
	Scheme   string       `json:"scheme"`
	Headers  HeaderValues `json:"headers"`
	SourceIP string       `json:"source_ip"`
}

// HeaderValues are header values, each given as a string or a list of
// strings in JSON.
type HeaderValues map[string][]string

// UnmarshalJSON accepts {"name": "v"} and {"name": ["v1", "v2"]}.
func (h *HeaderValues) UnmarshalJSON(b []byte) error {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return errors.New("headers must be an object")
	}
	out := make(HeaderValues, len(raw))
	for name, v := range raw {
		var one string
		if err := json.Unmarshal(v, &one); err == nil {
			out[name] = append(out[name], one)
			continue
		}
		var many []string
		if err := json.Unmarshal(v, &many); err != nil {
			return fmt.Errorf("header %q must be a string or a list of strings", truncate(name))
		}
		out[name] = append(out[name], many...)
	}
	*h = out
	return nil
}

// errorBody is the answer to a malformed request.
type errorBody struct {
	Error string `json:"error"`
}

// ServeHTTP implements http.Handler. The body must be one JSON object
// whatever the Content-Type says (so a plain `curl -d` works).
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, status, err := h.decode(r.Body, w)
	if err != nil {
		writeJSON(w, status, errorBody{Error: err.Error()})
		return
	}
	dec := h.decider.Decide(r.Context(), request.Raw{
		Method:   body.Method,
		Target:   body.Path,
		Host:     body.Host,
		Scheme:   body.Scheme,
		Headers:  body.Headers,
		SourceIP: body.SourceIP,
	})
	writeJSON(w, http.StatusOK, dec)
}

func (h *Handler) decode(rc io.ReadCloser, w http.ResponseWriter) (Body, int, error) {
	var body Body
	dec := json.NewDecoder(http.MaxBytesReader(w, rc, h.max))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil {
		var tooBig *http.MaxBytesError
		var syntax *json.SyntaxError
		var typ *json.UnmarshalTypeError
		switch {
		case errors.As(err, &tooBig):
			return body, http.StatusRequestEntityTooLarge, fmt.Errorf("request body over %d bytes", h.max)
		case errors.Is(err, io.EOF):
			return body, http.StatusBadRequest, errors.New("request body is empty; want a JSON object")
		case errors.As(err, &syntax), errors.Is(err, io.ErrUnexpectedEOF):
			return body, http.StatusBadRequest, errors.New("request body is not valid JSON")
		case errors.As(err, &typ) && typ.Field == "":
			return body, http.StatusBadRequest, errors.New("request body must be a JSON object")
		case errors.As(err, &typ):
			return body, http.StatusBadRequest, fmt.Errorf("field %q has the wrong type", typ.Field)
		default:
			return body, http.StatusBadRequest, fmt.Errorf("malformed request body: %s", truncate(err.Error()))
		}
	}
	if dec.More() {
		return body, http.StatusBadRequest, errors.New("request body must hold exactly one JSON object")
	}
	if body.Method == "" || body.Path == "" {
		return body, http.StatusBadRequest, errors.New(`"method" and "path" are required`)
	}
	return body, 0, nil
}

func truncate(s string) string {
	if len(s) > 100 {
		return s[:100] + "…"
	}
	return s
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
