// Package decisionlog records one event per decision in the shape of OPA's
// decision logs (github.com/open-policy-agent/opa/v1/plugins/logs EventV1),
// masks it so that no credential ever leaves the process, and delivers it,
// off the request path, to the console and to an OPA-compatible collector
// (gzip-compressed JSON arrays POSTed to {service url}{resource}).
//
// The request path only hands a Record to Logger.Log: a non-blocking send on
// a bounded queue. Everything else, building the event's JSON, the built-in
// and policy masks, OPA's drop query, encoding, buffering (bounded in events
// and bytes) and uploading with retries, backoff and jitter, happens on the
// logger's own goroutines. When the collector is slow or down, decisions go
// on at full speed; an event that cannot be delivered is counted as
// dropped, never silently lost.
//
// Why not OPA's own plugin (v1/plugins/logs) behind a plugins.Manager: its
// Log runs the mask and drop queries and the JSON encoding on the caller's
// goroutine; its buffers drop whole chunks and count them as OPA metrics,
// not events (so "dropped equals lost" cannot be shown); its default byte
// buffer is unbounded; and it needs a Manager holding the policy in a store
// and compiler of its own. Tollgate keeps OPA's wire format (the EventV1
// fields and names, gzip JSON arrays POSTed to {url}{resource}), OPA's
// configuration keys and mask/drop semantics, and OPA's REST client for the
// service (plugins/rest: credentials, TLS), with a bounded, counted buffer
// of its own. The tests decode what is uploaded with OPA's EventV1.
package decisionlog

import (
	"time"

	"github.com/tollgate/tollgate/pdp/credential"
	"github.com/tollgate/tollgate/pdp/decision"
	"github.com/tollgate/tollgate/pdp/policy"
)

// Record is what the Decider hands the logger for one decision: values it
// already has, nothing copied, nothing encoded. The logger reads it on its
// own goroutine, after Decide has returned, so nothing in it may be
// modified once handed over (the Decider never does).
type Record struct {
	// Decision is the answer, with its ID and policy revision.
	Decision decision.Decision
	// Time is when the decision was asked for.
	Time time.Time
	// Input is the policy input (credentials already stripped, only a
	// fingerprint left); nil when the request was refused before it could
	// be normalized (see Refusal).
	Input *policy.Input
	// Credential is the credential found, when Input is nil but one is
	// known; otherwise Input.Credential is used.
	Credential *credential.Credential
	// Stages are the time each stage took (zero when it did not run).
	Stages Stages
	// Refusal names who refused the request before the policy ran and why;
	// empty for decisions the policy made.
	Refusal string
	// Error says what was wrong with a refused request, in words that
	// quote no input (request.Normalize's errors); optional.
	Error string
	// Transport is the adapter that asked ("decision", "forward-auth",
	// "ext_authz", "data-api", "go"); optional.
	Transport string
	// RequestedBy is the address of the peer that asked (a gateway).
	RequestedBy string
	// RequestID is the request's x-request-id, when it has one.
	RequestID string
	// TraceID and SpanID are the decision span's, when traces are on.
	TraceID, SpanID string
}

// Stages are the durations of the pipeline's stages.
type Stages struct {
	Normalize, Authn, Eval time.Duration
}

// Event is one decision-log event: OPA's EventV1 fields with OPA's JSON
// names, so that an OPA decision-log collector reads it unchanged, plus
// the "tollgate" object.
type Event struct {
	Labels      map[string]string     `json:"labels"`
	DecisionID  string                `json:"decision_id"`
	TraceID     string                `json:"trace_id,omitempty"`
	SpanID      string                `json:"span_id,omitempty"`
	Bundles     map[string]BundleInfo `json:"bundles,omitempty"`
	Path        string                `json:"path,omitempty"`
	Input       any                   `json:"input,omitempty"`
	Result      any                   `json:"result,omitempty"`
	Erased      []string              `json:"erased,omitempty"`
	Masked      []string              `json:"masked,omitempty"`
	RequestedBy string                `json:"requested_by,omitempty"`
	Timestamp   time.Time             `json:"timestamp"`
	Metrics     map[string]any        `json:"metrics,omitempty"`
	Tollgate    Tollgate              `json:"tollgate"`
}

// BundleInfo is OPA's BundleInfoV1: the revision of a bundle.
type BundleInfo struct {
	Revision string `json:"revision,omitempty"`
}

// Tollgate is what Tollgate adds to OPA's event.
type Tollgate struct {
	Credential CredentialInfo `json:"credential"`
	// Route is the template of the route that matched, "" when none did
	// or the bundle has no route table.
	Route  string      `json:"route"`
	Stages StageTimes  `json:"stages"`
	Refuse *RefuseInfo `json:"refused,omitempty"`
	// Transport is the adapter that asked.
	Transport string `json:"transport,omitempty"`
	// RequestID is the request's x-request-id.
	RequestID string `json:"request_id,omitempty"`
}

// CredentialInfo describes the credential without revealing it.
type CredentialInfo struct {
	Type        string `json:"type"`
	Placement   string `json:"placement"`
	Status      string `json:"status"`
	Error       string `json:"error"`
	Fingerprint string `json:"fingerprint"`
}

// StageTimes are Stages in nanoseconds.
type StageTimes struct {
	NormalizeNS int64 `json:"normalize_ns"`
	AuthnNS     int64 `json:"authn_ns"`
	EvalNS      int64 `json:"eval_ns"`
}

// RefuseInfo marks a request refused before the policy ran.
type RefuseInfo struct {
	Reason string `json:"reason"`
	// Error is what was wrong, quoting no input.
	Error string `json:"error,omitempty"`
}

// credentialInfo builds the event's credential summary.
func credentialInfo(rec *Record) CredentialInfo {
	var c credential.Credential
	status, errCode := "", ""
	switch {
	case rec.Input != nil:
		c, status, errCode = rec.Input.Credential, rec.Input.Status, rec.Input.Error
	case rec.Credential != nil:
		c = *rec.Credential
	default:
		c = credential.None()
	}
	if errCode == "" {
		errCode = c.Problem
	}
	if status == "" {
		status = policy.StatusAbsent
		if c.Type != "" && c.Type != credential.TypeNone {
			status = policy.StatusInvalid
		}
	}
	info := CredentialInfo{
		Type:      string(c.Type),
		Placement: string(c.Placement),
		Status:    status,
		Error:     errCode,
	}
	if info.Type == "" {
		info.Type = string(credential.TypeNone)
	}
	if info.Placement == "" {
		info.Placement = string(credential.PlacementNone)
	}
	if !c.Secret.Empty() {
		info.Fingerprint = c.Secret.Fingerprint()
	}
	return info
}
