// Package native serves Tollgate's own decision API, POST /v1/decision: a
// JSON description of the request in, the decision as JSON out.
package native

import (
	"bytes"
	"context"
	stdjson "encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"

	"github.com/tollgate/tollgate/pdp/decision"
	"github.com/tollgate/tollgate/pdp/request"
)

// Decider is what the handler needs from the PDP.
type Decider interface {
	Decide(ctx context.Context, raw request.Raw) decision.Decision
}

// refuser is implemented by a Decider that records requests refused
// before the pipeline runs (pdp.Decider.Refused), so that every refusal
// has its decision-log event and is counted.
type refuser interface {
	Refused(ctx context.Context, dec decision.Decision, transport, peer string)
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
	// bodies are read buffers, reused: the decoder copies every string
	// it keeps, so nothing refers to a buffer once decode returns.
	bodies sync.Pool
	// answers are the buffers decisions are written from (*[]byte).
	answers sync.Pool
}

// maxPooledBody is the largest read buffer put back for reuse; a larger
// body's buffer is left to the garbage collector.
const maxPooledBody = 64 << 10

var _ http.Handler = (*Handler)(nil)

// New returns the decision API handler.
func New(d Decider, opts Options) *Handler {
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Handler{decider: d, max: opts.MaxBodyBytes, log: opts.Logger,
		bodies:  sync.Pool{New: func() any { return new(bytes.Buffer) }},
		answers: sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }},
	}
}

// Body is the decision request document.
//
// It is decoded strictly (JSON v2 semantics, see decodeOptions): member
// names match exactly (case-sensitively), an unknown or duplicate member is
// an error, and so is invalid UTF-8 anywhere in the body, a lone surrogate
// escape ("\ud800") included. Nothing is replaced by U+FFFD and nothing is
// trimmed, so the request judged is the request described, byte for byte.
type Body struct {
	Method   string       `json:"method"`
	Path     string       `json:"path"`
	Host     string       `json:"host"`
	Scheme   string       `json:"scheme"`
	Headers  HeaderValues `json:"headers"`
	SourceIP string       `json:"source_ip"`
}

// fields are Body's member names, the only input an error message may name.
var fields = []string{"method", "path", "host", "scheme", "headers", "source_ip"}

// HeaderValues are header values, each given as a string or a list of
// strings in JSON.
//
// Names are kept exactly as given. Two members that differ only in case
// ("authorization" and "Authorization") name one header: both are kept, and
// request.Normalize merges their values, so two credentials are still two
// credentials (multiple_credentials), never one chosen by order. Two members
// with the very same name are a duplicate and refused by the decoder.
type HeaderValues map[string][]string

// Errors HeaderValues.UnmarshalJSONFrom reports; none quotes the input.
var (
	errHeadersNotObject = errors.New(`"headers" must be an object`)
	errHeaderValue      = errors.New(`each value in "headers" must be a string or a list of strings`)
)

// UnmarshalJSONFrom accepts {"name": "v"} and {"name": ["v1", "v2"]}. It
// reads tokens from dec, whose options (no duplicate names, valid UTF-8)
// apply throughout.
func (h *HeaderValues) UnmarshalJSONFrom(dec *jsontext.Decoder) error {
	if dec.PeekKind() == 'n' {
		_, err := dec.ReadToken()
		return err
	}
	if dec.PeekKind() != '{' {
		return errHeadersNotObject
	}
	if _, err := dec.ReadToken(); err != nil {
		return err
	}
	out := make(HeaderValues)
	for dec.PeekKind() != '}' {
		tok, err := dec.ReadToken() // the name; the decoder refuses non-strings
		if err != nil {
			return err
		}
		name := tok.String()
		switch dec.PeekKind() {
		case '"':
			tok, err := dec.ReadToken()
			if err != nil {
				return err
			}
			out[name] = append(out[name], tok.String())
		case '[':
			if _, err := dec.ReadToken(); err != nil {
				return err
			}
			vals := out[name]
			for dec.PeekKind() == '"' {
				tok, err := dec.ReadToken()
				if err != nil {
					return err
				}
				vals = append(vals, tok.String())
			}
			if dec.PeekKind() != ']' {
				return errHeaderValue
			}
			if _, err := dec.ReadToken(); err != nil {
				return err
			}
			out[name] = vals
			if vals == nil {
				out[name] = []string{}
			}
		default:
			return errHeaderValue
		}
	}
	if _, err := dec.ReadToken(); err != nil { // '}'
		return err
	}
	*h = out
	return nil
}

var _ json.UnmarshalerFrom = (*HeaderValues)(nil)

// decodeOptions make the decoder strict. Most are JSON v2's defaults; they
// are spelled out because each closes a way to describe one request two
// ways (or to hide one from the log).
var decodeOptions = json.JoinOptions(
	json.RejectUnknownMembers(true),
	json.MatchCaseInsensitiveNames(false),
	jsontext.AllowDuplicateNames(false),
	jsontext.AllowInvalidUTF8(false),
)

// errorBody is the answer to a malformed request.
type errorBody struct {
	Error string `json:"error"`
}

// ServeHTTP implements http.Handler. The body must be one JSON object
// whatever the Content-Type says (so a plain `curl -d` works).
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, status, err := h.decode(r.Body, w)
	if err != nil {
		if rf, ok := h.decider.(refuser); ok {
			dec := decision.Deny(status, decision.ReasonInvalidRequest)
			dec.ID = decision.NewID()
			rf.Refused(r.Context(), dec, "decision", r.RemoteAddr)
			w.Header().Set("X-Decision-Id", dec.ID)
		}
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
	h.writeDecision(w, dec)
}

// writeDecision answers 200 with dec, written by decision.AppendJSON.
func (h *Handler) writeDecision(w http.ResponseWriter, dec decision.Decision) {
	bp := h.answers.Get().(*[]byte)
	b := append(dec.AppendJSON((*bp)[:0]), '\n')
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b) // copied: the buffer can go back
	if cap(b) <= maxPooledBody {
		*bp = b
		h.answers.Put(bp)
	}
}

// decode reads and strictly decodes the body. Its errors are fixed texts
// that name at most a known member and a byte offset: the body carries
// credentials, and the JSON decoder's own messages quote input (a string's
// bytes, an unknown member's name), so they are never passed on.
func (h *Handler) decode(rc io.ReadCloser, w http.ResponseWriter) (Body, int, error) {
	var body Body
	buf := h.bodies.Get().(*bytes.Buffer)
	defer func() {
		if buf.Cap() <= maxPooledBody {
			buf.Reset()
			h.bodies.Put(buf)
		}
	}()
	_, err := buf.ReadFrom(http.MaxBytesReader(w, rc, h.max))
	raw := buf.Bytes()
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return body, http.StatusRequestEntityTooLarge, fmt.Errorf("request body over %d bytes", h.max)
		}
		return body, http.StatusBadRequest, errors.New("request body could not be read")
	}
	if len(bytes.Trim(raw, " \t\r\n")) == 0 {
		return body, http.StatusBadRequest, errors.New("request body is empty; want a JSON object")
	}
	if off := invalidUTF8(raw); off >= 0 {
		return body, http.StatusBadRequest, fmt.Errorf("request body is not valid UTF-8 (at byte %d)", off)
	}
	// json.Unmarshal, not a decoder of our own: its decoders are pooled,
	// with their string caches, and it reads raw in place.
	if err := json.Unmarshal(raw, &body, decodeOptions); err != nil {
		return body, http.StatusBadRequest, describe(err, raw)
	}
	if body.Method == "" || body.Path == "" {
		return body, http.StatusBadRequest, errors.New(`"method" and "path" are required`)
	}
	return body, 0, nil
}

// describe turns a decoding error into a message that quotes no input.
func describe(err error, raw []byte) error {
	if serr, ok := errors.AsType[*jsontext.SyntacticError](err); ok {
		where := at(serr.JSONPointer, serr.ByteOffset)
		off := serr.ByteOffset
		switch {
		case errors.Is(err, jsontext.ErrDuplicateName) && strings.HasPrefix(string(serr.JSONPointer), "/headers/"):
			return errors.New(`duplicate header name in "headers" (a name may appear once; put several values in a list)`)
		case errors.Is(err, jsontext.ErrDuplicateName):
			return fmt.Errorf("duplicate member name in request body%s", where)
		case errors.Is(err, io.ErrUnexpectedEOF):
			return errors.New("request body is not valid JSON: it ends early")
		case serr.JSONPointer == "" && serr.Err != nil && strings.HasSuffix(serr.Err.Error(), "after top-level value"):
			return errors.New("request body must hold exactly one JSON object")
		case off >= 0 && off+1 < int64(len(raw)) && raw[off] == '\\':
			return fmt.Errorf("request body has an invalid string escape (a lone surrogate \\ud800-\\udfff or an unknown escape)%s", where)
		}
		return fmt.Errorf("request body is not valid JSON%s", where)
	}
	if serr, ok := errors.AsType[*json.SemanticError](err); ok {
		field := knownField(serr.JSONPointer)
		switch {
		case errors.Is(err, json.ErrUnknownName) && field == "headers":
			return errHeadersNotObject
		case errors.Is(err, json.ErrUnknownName):
			return fmt.Errorf("unknown field in request body (names are case-sensitive; known: %s)", strings.Join(fields, ", "))
		case errors.Is(err, errHeadersNotObject), errors.Is(err, errHeaderValue):
			return errors.Unwrap(serr) // our own fixed text
		case serr.JSONPointer == "":
			return errors.New("request body must be a JSON object")
		case field != "":
			return fmt.Errorf("%q has the wrong type", field)
		}
		return errors.New("request body does not match the decision request schema")
	}
	return errors.New("request body is not valid JSON")
}

// at says where a decoding error is: the known member it is in, if any, and
// the byte offset.
func at(ptr jsontext.Pointer, off int64) string {
	if f := knownField(ptr); f != "" {
		return fmt.Sprintf(" (in %q, at byte %d)", f, off)
	}
	return fmt.Sprintf(" (at byte %d)", off)
}

// knownField returns the first token of ptr when it is a Body member name,
// else "" (a pointer can hold an unknown member's name, i.e. any input).
func knownField(ptr jsontext.Pointer) string {
	first, _, _ := strings.Cut(strings.TrimPrefix(string(ptr), "/"), "/")
	if slices.Contains(fields, first) {
		return first
	}
	return ""
}

// invalidUTF8 returns the offset of the first byte of b that is not part of
// valid UTF-8, or -1.
func invalidUTF8(b []byte) int {
	if utf8.Valid(b) {
		return -1
	}
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n == 1 {
			return i
		}
		i += n
	}
	return -1
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = stdjson.NewEncoder(w).Encode(v) // the answer's encoding is unchanged (v1)
}
