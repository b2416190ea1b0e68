// Package opadata serves OPA's data API, POST /v1/data/{path} with
// {"input": …}, so that gateways that call OPA (Kong's OPA plugin, APISIX's
// opa plugin) and OPA's client libraries can call Tollgate unchanged.
//
// The input is a description of a gateway request, never a claimed
// identity: Tollgate runs its whole pipeline (normalization, credential
// placement, verification, the active policy) on the request the input
// describes, exactly as for POST /v1/decision. Three input shapes are
// recognised, by their members (see Shape), and the answer's result has the
// shape the caller expects:
//
//   - Kong (input.request.http.{method, scheme, host, port, path,
//     querystring, headers, tls} and input.client_ip): result
//     {"allow", "status", "headers", "message"}, the object form of Kong's
//     plugin;
//   - APISIX (input.type "http", input.request.{scheme, method, host, port,
//     path, headers, query} and input.var.{remote_addr, …}): result
//     {"allow", "status_code", "headers", "reason"};
//   - Tollgate (input is a POST /v1/decision body): result is the decision
//     itself, as /v1/decision answers it.
//
// The {path} of the URL is not interpreted: Tollgate has one decision, so
// whatever policy path a plugin is configured with reaches it, and the
// answer's shape follows the input alone. An input that is missing, not one
// of the shapes, or malformed is a 400 with OPA's error body
// ({"code": "invalid_parameter", "message": …}), and so is any method but
// POST: never an allow. Error messages never quote the input.
package opadata

import (
	"bytes"
	"context"
	stdjson "encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
	"github.com/open-policy-agent/opa/v1/server/types"

	"github.com/tollgate/tollgate/pdp/decision"
	"github.com/tollgate/tollgate/pdp/request"
)

// refuser is implemented by a Decider that records requests refused
// before the pipeline runs (pdp.Decider.Refused), so that every refusal
// has its decision-log event and is counted.
type refuser interface {
	Refused(ctx context.Context, dec decision.Decision, transport, peer string)
}

// Decider is what the handler needs from the PDP.
type Decider interface {
	Decide(ctx context.Context, raw request.Raw) decision.Decision
}

// DefaultMaxBodyBytes bounds the request body when Options.MaxBodyBytes is
// 0. Kong and APISIX send every request header, so it is larger than
// /v1/decision's default.
const DefaultMaxBodyBytes = 256 << 10

// Options configure the handler. The zero value is safe.
type Options struct {
	MaxBodyBytes int64
	// Realm is the realm of the WWW-Authenticate challenge; default "tollgate".
	Realm  string
	Logger *slog.Logger
}

// Handler serves POST /v1/data and POST /v1/data/{path}.
type Handler struct {
	decider Decider
	max     int64
	realm   string
	log     *slog.Logger
}

var _ http.Handler = (*Handler)(nil)

// New returns the data API handler.
func New(d Decider, opts Options) *Handler {
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if opts.Realm == "" {
		opts.Realm = "tollgate"
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Handler{decider: d, max: opts.MaxBodyBytes, realm: opts.Realm, log: opts.Logger}
}

// Shape is the kind of input recognised.
type Shape string

// The input shapes.
const (
	ShapeKong     Shape = "kong"
	ShapeAPISIX   Shape = "apisix"
	ShapeTollgate Shape = "tollgate"
)

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		h.refuse(w, r, http.StatusBadRequest)
		writeError(w, http.StatusBadRequest, "the data API answers POST with {\"input\": …} only")
		return
	}
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.max))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			h.refuse(w, r, http.StatusRequestEntityTooLarge)
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body over %d bytes", h.max))
			return
		}
		h.refuse(w, r, http.StatusBadRequest)
		writeError(w, http.StatusBadRequest, "request body could not be read")
		return
	}
	shape, req, err := Parse(raw)
	if err != nil {
		h.refuse(w, r, http.StatusBadRequest)
		h.log.Debug("data API input refused", "error", err)
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	dec := h.decider.Decide(r.Context(), req)
	var result any
	switch shape {
	case ShapeKong:
		result = h.kongResult(dec)
	case ShapeAPISIX:
		result = h.apisixResult(dec)
	default:
		result = dec
	}
	writeJSON(w, http.StatusOK, types.DataResponseV1{DecisionID: dec.ID, Result: &result})
}

// refuse records a request refused before the pipeline ran, when the
// decider records refusals, and names its decision id in X-Decision-Id.
func (h *Handler) refuse(w http.ResponseWriter, r *http.Request, status int) {
	rf, ok := h.decider.(refuser)
	if !ok {
		return
	}
	dec := decision.Deny(status, decision.ReasonInvalidRequest)
	dec.ID = decision.NewID()
	rf.Refused(r.Context(), dec, "data-api", r.RemoteAddr)
	w.Header().Set("X-Decision-Id", dec.ID)
}

// decodeOptions make the decoder strict: exact member names, no unknown or
// duplicate members, valid UTF-8 only (see pdp/adapter/native).
var decodeOptions = json.JoinOptions(
	json.RejectUnknownMembers(true),
	json.MatchCaseInsensitiveNames(false),
	jsontext.AllowDuplicateNames(false),
	jsontext.AllowInvalidUTF8(false),
)

// envelope is the body of a data API request. Other top-level members are
// ignored, as OPA ignores them.
type envelope struct {
	Input jsontext.Value `json:"input"`
}

// Parse reads a data API request body and returns the shape of its input
// and the request it describes. Its errors quote no input.
func Parse(body []byte) (Shape, request.Raw, error) {
	if len(bytes.TrimSpace(body)) == 0 {
		return "", request.Raw{}, errors.New(`missing input: the body must be {"input": …}`)
	}
	var env envelope
	dec := jsontext.NewDecoder(bytes.NewReader(body), decodeOptions)
	if err := json.UnmarshalDecode(dec, &env, json.RejectUnknownMembers(false)); err != nil {
		return "", request.Raw{}, describe("request body", err)
	}
	if _, err := dec.ReadToken(); !errors.Is(err, io.EOF) {
		return "", request.Raw{}, errors.New("request body must hold exactly one JSON object")
	}
	if len(env.Input) == 0 || env.Input.Kind() == 'n' {
		return "", request.Raw{}, errors.New(`missing input: the body must be {"input": …}`)
	}
	if env.Input.Kind() != '{' {
		return "", request.Raw{}, errors.New("input must be an object describing a gateway request")
	}
	var probe struct {
		Type    jsontext.Value `json:"type"`
		Request jsontext.Value `json:"request"`
		Method  jsontext.Value `json:"method"`
	}
	if err := json.Unmarshal(env.Input, &probe); err != nil {
		return "", request.Raw{}, describe("input", err)
	}
	switch {
	case len(probe.Type) > 0:
		raw, err := parseAPISIX(env.Input)
		return ShapeAPISIX, raw, err
	case len(probe.Request) > 0:
		raw, err := parseKong(env.Input)
		return ShapeKong, raw, err
	case len(probe.Method) > 0:
		raw, err := parseTollgate(env.Input)
		return ShapeTollgate, raw, err
	}
	return "", request.Raw{}, errors.New("input is not a gateway request Tollgate knows: want Kong's (request.http), APISIX's (type, request, var) or Tollgate's (method, path)")
}

// describe turns a decoding error into a message that quotes no input: the
// JSON decoder's own messages can quote a string's bytes or an unknown
// member's name, which may be a credential.
func describe(what string, err error) error {
	if serr, ok := errors.AsType[*jsontext.SyntacticError](err); ok {
		switch {
		case errors.Is(err, jsontext.ErrDuplicateName):
			return fmt.Errorf("%s has a duplicate member name (at byte %d)", what, serr.ByteOffset)
		case errors.Is(err, io.ErrUnexpectedEOF):
			return fmt.Errorf("%s is not valid JSON: it ends early", what)
		}
		return fmt.Errorf("%s is not valid JSON (at byte %d)", what, serr.ByteOffset)
	}
	if serr, ok := errors.AsType[*json.SemanticError](err); ok {
		switch {
		case errors.Is(err, json.ErrUnknownName):
			return fmt.Errorf("%s has an unknown member (names are case-sensitive)", what)
		case errors.As(err, new(fixedError)):
			return fmt.Errorf("%s: %w", what, errors.Unwrap(serr))
		}
		return fmt.Errorf("%s has a member of the wrong type (at byte %d)", what, serr.ByteOffset)
	}
	if errors.As(err, new(fixedError)) {
		return fmt.Errorf("%s: %w", what, err)
	}
	return fmt.Errorf("%s could not be decoded", what)
}

// fixedError is one of this package's own error texts, which quote no
// input.
type fixedError string

func (e fixedError) Error() string { return string(e) }

func fixed(msg string) error { return fixedError(msg) }

// writeError answers with OPA's error body.
func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, types.ErrorV1{Code: types.CodeInvalidParameter, Message: msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = stdjson.NewEncoder(w).Encode(v)
}

// denyBody is the message (Kong) or reason (APISIX) of a deny: what
// /v1/forward-auth answers in its body.
type denyBody struct {
	DecisionID string   `json:"decision_id"`
	Reasons    []string `json:"reasons"`
}

// denyHeaders are the response headers of a deny: the decision id, and
// the Bearer challenge on a 401.
func (h *Handler) denyHeaders(dec decision.Decision) map[string]string {
	hdrs := map[string]string{"X-Decision-Id": dec.ID}
	if dec.Status == http.StatusUnauthorized {
		hdrs["WWW-Authenticate"] = decision.Challenge(h.realm, dec.Reasons)
	}
	return hdrs
}

// allowHeaders are the headers set on the upstream request on an allow:
// the decision's (identity) headers and the decision id.
func allowHeaders(dec decision.Decision) map[string]string {
	hdrs := make(map[string]string, len(dec.Headers)+1)
	for k, v := range dec.Headers {
		hdrs[strings.ToLower(k)] = v
	}
	hdrs["x-decision-id"] = dec.ID
	return hdrs
}

// denyStatus is the status a gateway answers a deny with: the decision's
// when it is a client or server error, else 403 (a deny is never a 2xx).
func denyStatus(s int) int {
	if s >= 400 && s <= 599 {
		return s
	}
	return http.StatusForbidden
}
