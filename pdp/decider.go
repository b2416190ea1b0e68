// Package pdp is Tollgate's embeddable policy decision point.
//
// A Decider runs the pipeline for one request, top to bottom:
//
//	normalize (pdp/request) → find the credential (pdp/credential) →
//	authenticate (pdp/authn/...) → evaluate the policy (pdp/policy) → decision
//
// Gateway adapters (pdp/adapter/...) and the HTTP server (pdp/server) turn a
// wire request into a request.Raw and the decision.Decision back into their
// wire format. A Go program can call Decide directly.
package pdp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/tollgate/tollgate/pdp/authn"
	"github.com/tollgate/tollgate/pdp/credential"
	"github.com/tollgate/tollgate/pdp/decision"
	"github.com/tollgate/tollgate/pdp/decisionlog"
	"github.com/tollgate/tollgate/pdp/policy"
	"github.com/tollgate/tollgate/pdp/request"
	"github.com/tollgate/tollgate/pdp/telemetry"
)

// Config is what a Decider is built from. Engine is required; the rest has
// safe defaults (no authenticators means every credential is invalid).
type Config struct {
	// Engine evaluates the active policy. Required.
	Engine *policy.Engine
	// Credentials says where credentials are looked for; the zero value
	// means credential.DefaultLocations().
	Credentials *credential.Locations
	// Authenticators are tried in order; the first that does not answer
	// NotApplicable decides.
	Authenticators []authn.Authenticator
	// Logger receives operational logs (verifier failures, policy errors).
	// Nil discards them.
	Logger *slog.Logger
	// DecisionLog, when non-nil, receives one entry per decision. Entries
	// never hold a raw credential, only its fingerprint.
	DecisionLog *slog.Logger
	// DecisionTimeout bounds each decision; 0 means DefaultDecisionTimeout.
	// Credential verification (which can wait for a JWKS download) may use
	// all of it but a reserve for the policy (a tenth, at least 50ms, at
	// most half): when that passes, the credential is invalid with error
	// authn.ReasonUnavailable ("verifier_unavailable") and the policy
	// decides on that. A policy evaluation that does not finish by the
	// deadline fails closed (policy_error).
	// It must be positive and at most MaxDecisionTimeout.
	DecisionTimeout time.Duration
	// Shadow, when set, is handed every policy decision (the policy input
	// and the answer) once it is made, to evaluate a candidate policy on
	// the side (package pdp/shadow). Observe must not block.
	Shadow Observer
	// PolicyStale, when set, is asked before every evaluation: while it
	// returns an error (the active policy is older than max_bundle_age),
	// every decision fails closed (500, policy_error) and names the
	// active revision. It must be cheap and must not block.
	PolicyStale func() error
	// Recorders each receive one record per decision (see Recorder).
	Recorders []Recorder
	// Tracer, when set, makes a span per decision and per stage (see
	// telemetry.Tracer); nil makes none, at no cost.
	Tracer *telemetry.Tracer
}

// Recorder receives one record per decision, policy decisions and
// refusals alike (see Decider.Refused): the decision log
// (pdp/decisionlog.Logger) and the decision metrics (pdp/telemetry).
// Record is called on the request path after the decision is made: it
// must not block, and must not modify what the record points to.
type Recorder interface {
	Record(rec decisionlog.Record)
}

// Observer sees every policy decision after it is made; see Config.Shadow.
type Observer interface {
	Observe(in policy.Input, dec decision.Decision)
}

// Bounds of Config.DecisionTimeout.
const (
	// DefaultDecisionTimeout is well under common gateway timeouts for an
	// authorization call (Envoy ext_authz 200ms-1s, NGINX and Traefik
	// several seconds), so the PDP answers before the gateway gives up.
	DefaultDecisionTimeout = 500 * time.Millisecond
	// MaxDecisionTimeout is the longest DecisionTimeout New accepts.
	MaxDecisionTimeout = 60 * time.Second
)

// Decider answers "may this request through?". It is safe for concurrent use.
type Decider struct {
	engine *policy.Engine
	finder credential.Finder
	authns []authn.Authenticator
	log    *slog.Logger
	declog *slog.Logger
	shadow Observer
	stale  func() error
	// recorders receive a record of each decision.
	recorders []Recorder
	tracer    *telemetry.Tracer
	// timeout bounds a decision, authnTimeout its credential verification.
	timeout, authnTimeout time.Duration
}

// New validates cfg and builds a Decider. It has no side effects.
func New(cfg Config) (*Decider, error) {
	if cfg.Engine == nil {
		return nil, errors.New("pdp: config: Engine is required")
	}
	timeout := cfg.DecisionTimeout
	switch {
	case timeout == 0:
		timeout = DefaultDecisionTimeout
	case timeout < time.Millisecond || timeout > MaxDecisionTimeout:
		return nil, fmt.Errorf("pdp: config: DecisionTimeout %s: want between 1ms and %s", timeout, MaxDecisionTimeout)
	}
	loc := credential.DefaultLocations()
	if cfg.Credentials != nil {
		loc = *cfg.Credentials
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Decider{
		engine: cfg.Engine,
		finder: credential.NewFinder(loc),
		authns: cfg.Authenticators,
		log:    log,
		declog: cfg.DecisionLog,
		shadow: cfg.Shadow,
		stale:  cfg.PolicyStale,

		recorders: cfg.Recorders,
		tracer:    cfg.Tracer,

		timeout:      timeout,
		authnTimeout: timeout - min(timeout/2, max(timeout/10, 50*time.Millisecond)),
	}, nil
}

// Ready reports whether a policy is active, i.e. whether decisions can allow.
func (d *Decider) Ready() bool { return d.engine.Ready() }

// Decide runs the pipeline for one request and returns its decision. It
// never fails: every error becomes a deny with a reason (fail closed), and
// the decision always carries an ID and the policy revision. It returns
// within Config.DecisionTimeout (see there), or sooner when ctx ends.
func (d *Decider) Decide(ctx context.Context, raw request.Raw) decision.Decision {
	// The deadline bounds what can block: a verifier that fetches keys, a
	// policy evaluation. The fast path (a verified credential and a decision
	// both in their caches) never blocks and sets no timer.
	deadline := time.Now().Add(d.timeout)
	if raw.ID == "" {
		raw.ID = decision.NewID()
	}
	var span trace.Span
	if d.tracer != nil {
		ctx, span = d.tracer.Start(ctx, raw.Headers)
	}
	start := time.Now()
	req, err := request.Normalize(raw)
	normalized := time.Now()
	if err != nil {
		dec := decision.Deny(400, decision.ReasonInvalidRequest)
		dec.ID, dec.PolicyRevision = raw.ID, d.engine.Revision()
		d.record(ctx, dec, nil, credential.None(), "", slog.String("error", err.Error()))
		if len(d.recorders) > 0 || span != nil {
			d.emit(ctx, span, decisionlog.Record{Decision: dec, Time: start, Refusal: decision.ReasonInvalidRequest, Error: err.Error(),
				Stages: decisionlog.Stages{Normalize: normalized.Sub(start)}})
		}
		return dec
	}

	cred := d.finder.Find(req)
	if cred.Type == credential.TypeBearer {
		// What a trusted gateway verified travels with the token the
		// request carries, never in place of it (see oidcjwt.EnvoyJWTAuthn).
		cred.Verified = raw.Verified
	}
	in := policy.Input{Request: req, Credential: cred}
	in.Status, in.Error, in.Identity = d.authenticate(ctx, deadline, req, cred)
	authenticated := time.Now()

	dec, hit, err := d.cached(in)
	if !hit {
		// Off the fast path: log lines carry the decision and request ids.
		ctx = telemetry.WithDecisionIDs(ctx, req.ID, requestID(req))
		ectx, cancel := context.WithDeadline(ctx, deadline)
		dec, err = d.evaluate(ectx, in)
		cancel()
	}
	if len(d.recorders) > 0 || span != nil {
		evaluated := time.Now()
		dec.ID = req.ID
		recIn := in // only this copy escapes, and only when recording
		d.emit(ctx, span, decisionlog.Record{Decision: dec, Time: start, Input: &recIn, RequestID: requestID(req),
			Stages: decisionlog.Stages{Normalize: normalized.Sub(start), Authn: authenticated.Sub(normalized), Eval: evaluated.Sub(authenticated)}})
	}
	if err != nil {
		d.log.LogAttrs(ctx, slog.LevelError, "policy evaluation failed; denying",
			slog.String("decision_id", req.ID), slog.String("policy_revision", dec.PolicyRevision), slog.Any("error", err))
	}
	dec.ID = req.ID
	if d.declog != nil {
		d.record(ctx, dec, req, cred, in.Status, identityAttrs(in.Identity)...)
	}
	if d.shadow != nil {
		d.shadow.Observe(in, dec)
	}
	return dec
}

// emit hands rec to every recorder and ends the decision's span, if any.
func (d *Decider) emit(ctx context.Context, span trace.Span, rec decisionlog.Record) {
	if span != nil {
		rec.TraceID, rec.SpanID = telemetry.IDs(span)
	}
	for _, r := range d.recorders {
		r.Record(rec)
	}
	if span != nil {
		d.tracer.End(ctx, span, &rec)
	}
}

// Refused records a request an adapter refused before the pipeline ran
// (an untrusted proxy, a forward-auth request that does not say which
// request it asks about, a malformed body or check request), so that
// every decision, refusals included, has its decision-log event and is
// counted. dec must be the deny the adapter answers, with its ID; an empty
// PolicyRevision is set to the active one. transport names the adapter,
// peer the address that asked.
func (d *Decider) Refused(_ context.Context, dec decision.Decision, transport, peer string) {
	if len(d.recorders) == 0 {
		return
	}
	if dec.PolicyRevision == "" {
		dec.PolicyRevision = d.engine.Revision()
	}
	reason := ""
	if len(dec.Reasons) > 0 {
		reason = dec.Reasons[0]
	}
	d.emit(context.Background(), nil, decisionlog.Record{Decision: dec, Time: time.Now(), Refusal: reason, Transport: transport, RequestedBy: peer})
}

// requestID is the request's x-request-id (its first value), "" when none.
func requestID(req *request.Request) string {
	if v := req.Headers["x-request-id"]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// evaluate asks the engine, unless the policy is stale (Config.PolicyStale):
// then it fails closed.
func (d *Decider) evaluate(ctx context.Context, in policy.Input) (decision.Decision, error) {
	if d.stale != nil {
		if err := d.stale(); err != nil {
			dec := decision.Deny(500, decision.ReasonPolicyError)
			dec.PolicyRevision = d.engine.Revision()
			return dec, err
		}
	}
	return d.engine.Evaluate(ctx, in)
}

// cached is the decision the engine's cache holds for in, when the policy
// is not stale (evaluate's answer then); hit is false when the policy must
// be evaluated.
func (d *Decider) cached(in policy.Input) (dec decision.Decision, hit bool, err error) {
	if d.stale != nil {
		if err := d.stale(); err != nil {
			dec := decision.Deny(500, decision.ReasonPolicyError)
			dec.PolicyRevision = d.engine.Revision()
			return dec, true, err
		}
	}
	dec, hit = d.engine.Cached(in)
	return dec, hit, nil
}

// authenticate turns the credential into a status, an error code and, when
// valid, an identity. It gives the authenticators d.authnTimeout: an
// outcome that comes after it is not used (verifier_unavailable), even a
// valid one, so a slow verifier never decides late.
func (d *Decider) authenticate(ctx context.Context, deadline time.Time, req *request.Request, cred credential.Credential) (string, string, *authn.Identity) {
	switch {
	case cred.Type == credential.TypeNone:
		return policy.StatusAbsent, "", nil
	case cred.Problem != "":
		return policy.StatusInvalid, cred.Problem, nil
	}
	// Authenticators that can answer at once (caches, in-memory stores) are
	// asked first, in chain order, without a deadline; the first one that
	// cannot answer, and every one after it, is asked under the deadline.
	for i, a := range d.authns {
		p, ok := a.(authn.Peeker)
		if !ok {
			return d.authenticateSlow(telemetry.WithDecisionIDs(ctx, req.ID, requestID(req)), deadline, cred, d.authns[i:])
		}
		out, known := p.Peek(cred)
		if !known {
			return d.authenticateSlow(telemetry.WithDecisionIDs(ctx, req.ID, requestID(req)), deadline, cred, d.authns[i:])
		}
		if out.Result != authn.NotApplicable {
			return outcome(out)
		}
	}
	return policy.StatusInvalid, "no_authenticator", nil
}

// outcome turns an authenticator's outcome into a status, an error code
// and, when valid, an identity.
func outcome(out authn.Outcome) (string, string, *authn.Identity) {
	switch out.Result {
	case authn.Authenticated:
		if out.Identity == nil {
			return policy.StatusInvalid, authn.ReasonInvalid, nil
		}
		return policy.StatusValid, "", out.Identity
	case authn.Rejected:
		return policy.StatusInvalid, out.Reason, nil
	}
	return policy.StatusInvalid, "no_authenticator", nil
}

// authenticateSlow asks authns in order, under the part of the decision's
// deadline authentication may use (d.authnTimeout).
func (d *Decider) authenticateSlow(ctx context.Context, deadline time.Time, cred credential.Credential, authns []authn.Authenticator) (string, string, *authn.Identity) {
	ctx, cancel := context.WithDeadline(ctx, deadline.Add(d.authnTimeout-d.timeout))
	defer cancel()
	for _, a := range authns {
		out, err := a.Authenticate(ctx, cred)
		if ctxErr := ctx.Err(); ctxErr != nil {
			msg := "credential verification did not finish within the decision deadline; denying"
			if errors.Is(ctxErr, context.Canceled) {
				msg = "credential verification cancelled (the caller went away); denying"
			}
			d.log.LogAttrs(ctx, slog.LevelWarn, msg,
				slog.String("credential_type", string(cred.Type)), slog.String("fingerprint", cred.Secret.Fingerprint()),
				slog.Duration("decision_timeout", d.timeout))
			return policy.StatusInvalid, authn.ReasonUnavailable, nil
		}
		if err != nil {
			d.log.LogAttrs(ctx, slog.LevelError, "credential verification failed; denying",
				slog.String("credential_type", string(cred.Type)), slog.String("fingerprint", cred.Secret.Fingerprint()), slog.Any("error", err))
			return policy.StatusInvalid, authn.ReasonUnavailable, nil
		}
		if out.Result != authn.NotApplicable {
			return outcome(out)
		}
	}
	return policy.StatusInvalid, "no_authenticator", nil
}

// record writes the decision log entry, if the decision log is on.
func (d *Decider) record(ctx context.Context, dec decision.Decision, req *request.Request, cred credential.Credential, status string, extra ...slog.Attr) {
	if d.declog == nil || !d.declog.Enabled(ctx, slog.LevelInfo) {
		return
	}
	attrs := []slog.Attr{
		slog.String("decision_id", dec.ID),
		slog.Bool("allow", dec.Allow),
		slog.Int("status", dec.Status),
		slog.Any("reasons", dec.Reasons),
		slog.String("policy_revision", dec.PolicyRevision),
	}
	if req != nil {
		attrs = append(attrs,
			slog.String("method", req.Method),
			slog.String("path", req.Path),
			slog.String("source_ip", req.SourceIP))
	}
	attrs = append(attrs, slog.Group("credential",
		slog.String("type", string(cred.Type)),
		slog.String("placement", string(cred.Placement)),
		slog.String("name", cred.Name),
		slog.String("status", status),
		slog.String("fingerprint", cred.Secret.Fingerprint())))
	attrs = append(attrs, extra...)
	d.declog.LogAttrs(ctx, slog.LevelInfo, "decision", attrs...)
}

func identityAttrs(id *authn.Identity) []slog.Attr {
	if id == nil {
		return nil
	}
	return []slog.Attr{slog.Group("identity",
		slog.String("kind", string(id.Kind)),
		slog.String("subject", id.Subject),
		slog.String("issuer", id.Issuer),
		slog.String("key_id", id.KeyID))}
}

// Revision is the active policy's revision, "" when none is active.
func (d *Decider) Revision() string { return d.engine.Revision() }
