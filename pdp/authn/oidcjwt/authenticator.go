// Package oidcjwt verifies OpenID Connect JWT bearer tokens with go-oidc.
//
// Per token, cheapest first: the size cap; compact serialization only; the
// header's alg against the issuer's allow-list; duplicate and case-variant
// claims; the unverified iss, used only to pick one of the configured
// issuers (an unknown issuer is rejected without fetching anything). Then
// go-oidc checks the signature against the issuer's keys and the issuer, and
// this package checks what go-oidc leaves open: exp required, exp, nbf and
// iat with one clock skew, the audience, the typ header.
//
// A bad token is an authn.Rejected outcome with a stable reason. An error
// means the token could not be judged (the issuer's JWKS is unreachable or
// too large, the context ended); it comes with a Rejected outcome
// (authn.ReasonUnavailable) so that a caller ignoring it still fails closed.
//
// Keys come from the issuer's jwks_uri, found by discovery when New runs.
// They are cached, and refetched when a token names an unknown kid, at most
// once per Config.JWKSRefreshInterval per issuer.
package oidcjwt

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"

	"github.com/tollgate/tollgate/pdp/authn"
	"github.com/tollgate/tollgate/pdp/credential"
)

// Authenticator verifies JWT bearer tokens of the configured issuers. It is
// safe for concurrent use.
type Authenticator struct {
	issuers  map[string]*issuer
	skew     time.Duration
	maxBytes int
	now      func() time.Time
	log      *slog.Logger
}

var _ authn.Authenticator = (*Authenticator)(nil)

// issuer is one configured issuer, ready to verify.
type issuer struct {
	name        string
	audiences   []string
	algs        []string
	requireType string
	verifier    *oidc.IDTokenVerifier
}

// New validates cfg, then runs OpenID Connect discovery for every issuer
// without a KeySet, through cfg.HTTPClient. It fails if the config is invalid
// or any discovery fails. JWKS are fetched on first use.
func New(ctx context.Context, cfg Config) (*Authenticator, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	a := &Authenticator{
		issuers:  make(map[string]*issuer, len(cfg.Issuers)),
		skew:     cfg.ClockSkew,
		maxBytes: cfg.MaxTokenBytes,
		now:      cfg.Now,
		log:      cfg.Logger,
	}
	for _, ic := range cfg.Issuers {
		algs := ic.Algorithms
		if len(algs) == 0 {
			algs = defaultAlgorithms()
		}
		algs = append([]string(nil), algs...)

		keySet := ic.KeySet
		if keySet == nil {
			jwksURL, err := discover(ctx, cfg.HTTPClient, ic.Issuer)
			if err != nil {
				return nil, err
			}
			keySet = newRemoteKeySet(ic.Issuer, jwksURL, cfg.HTTPClient, algs, cfg.JWKSRefreshInterval, cfg.Now, cfg.Logger)
			cfg.Logger.LogAttrs(ctx, slog.LevelInfo, "oidc issuer discovered",
				slog.String("issuer", ic.Issuer), slog.String("jwks_uri", jwksURL))
		}
		a.issuers[ic.Issuer] = &issuer{
			name:        ic.Issuer,
			audiences:   append([]string(nil), ic.Audiences...),
			algs:        algs,
			requireType: ic.RequireType,
			verifier: oidc.NewVerifier(ic.Issuer, recordingKeySet{keySet}, &oidc.Config{
				SkipClientIDCheck:    true, // the audience check below allows several audiences
				SkipExpiryCheck:      true, // exp, nbf, iat are checked below, with one skew
				SupportedSigningAlgs: algs,
				Now:                  cfg.Now,
			}),
		}
	}
	return a, nil
}

// discover fetches the issuer's discovery document and returns its jwks_uri.
func discover(ctx context.Context, client *http.Client, iss string) (string, error) {
	p, err := oidc.NewProvider(oidc.ClientContext(ctx, client), iss)
	if err != nil {
		return "", fmt.Errorf("oidcjwt: discovery for issuer %q: %w", iss, err)
	}
	var doc struct {
		JWKSURI string `json:"jwks_uri"`
	}
	if err := p.Claims(&doc); err != nil {
		return "", fmt.Errorf("oidcjwt: discovery for issuer %q: %w", iss, err)
	}
	if err := checkJWKSURL(iss, doc.JWKSURI); err != nil {
		return "", fmt.Errorf("oidcjwt: discovery for issuer %q: jwks_uri: %v", iss, err)
	}
	return doc.JWKSURI, nil
}

// checkJWKSURL requires an absolute http(s) URL, and https when the issuer
// uses https (no downgrade for the keys).
func checkJWKSURL(iss, jwks string) error {
	u, err := url.Parse(jwks)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return fmt.Errorf("%q is not an absolute http(s) URL", jwks)
	}
	if strings.HasPrefix(iss, "https://") && u.Scheme != "https" {
		return fmt.Errorf("%q is not https, though the issuer is", jwks)
	}
	return nil
}

// Authenticate verifies a bearer token. It returns NotApplicable for any
// other credential type, Rejected with a reason for a bad token, and an error
// (with a Rejected ReasonUnavailable outcome) when the token cannot be judged.
func (a *Authenticator) Authenticate(ctx context.Context, cred credential.Credential) (authn.Outcome, error) {
	if cred.Type != credential.TypeBearer {
		return authn.Outcome{Result: authn.NotApplicable}, nil
	}
	raw := cred.Secret.Reveal()

	tok, reason := precheck(raw, a.maxBytes)
	if reason != "" {
		return a.reject(ctx, cred, "", reason), nil
	}
	iss, ok := a.issuers[tok.iss]
	if !tok.hasIss || !ok {
		return a.reject(ctx, cred, "", authn.ReasonUnknownIssuer), nil
	}
	if !iss.allows(tok.alg) {
		return a.reject(ctx, cred, iss.name, authn.ReasonAlgorithm), nil
	}

	rec := &sigRecord{}
	idt, err := iss.verifier.Verify(context.WithValue(ctx, sigRecordKey{}, rec), raw)
	if err != nil {
		reason, ferr := classify(err, rec)
		if ferr != nil {
			return authn.Reject(authn.ReasonUnavailable), fmt.Errorf("oidcjwt: issuer %q: %w", iss.name, ferr)
		}
		return a.reject(ctx, cred, iss.name, reason), nil
	}

	var payload json.RawMessage
	if err := idt.Claims(&payload); err != nil {
		return a.reject(ctx, cred, iss.name, authn.ReasonInvalid), nil
	}
	id, reason := a.check(iss, tok, payload)
	if reason != "" {
		return a.reject(ctx, cred, iss.name, reason), nil
	}
	return authn.Accept(id), nil
}

func (iss *issuer) allows(alg string) bool {
	for _, a := range iss.algs {
		if a == alg {
			return true
		}
	}
	return false
}

func (a *Authenticator) reject(ctx context.Context, cred credential.Credential, iss, reason string) authn.Outcome {
	if a.log.Enabled(ctx, slog.LevelDebug) {
		a.log.LogAttrs(ctx, slog.LevelDebug, "jwt rejected",
			slog.String("reason", reason),
			slog.String("issuer", iss),
			slog.String("fingerprint", cred.Secret.Fingerprint()))
	}
	return authn.Reject(reason)
}

// sigRecord receives, per call, what the key set said. go-oidc flattens the
// key set's error into a string (%v), so this is how a bad signature, an
// unknown kid and an unreachable JWKS stay apart.
type sigRecord struct {
	called bool
	err    error
}

type sigRecordKey struct{}

// recordingKeySet passes VerifySignature through and records its result.
type recordingKeySet struct{ oidc.KeySet }

func (r recordingKeySet) VerifySignature(ctx context.Context, jwt string) ([]byte, error) {
	payload, err := r.KeySet.VerifySignature(ctx, jwt)
	if rec, ok := ctx.Value(sigRecordKey{}).(*sigRecord); ok {
		rec.called, rec.err = true, err
	}
	return payload, err
}

// classify turns a go-oidc verification failure into a rejection reason, or
// into an error when the token could not be judged.
func classify(err error, rec *sigRecord) (reason string, fatal error) {
	var expired *oidc.TokenExpiredError
	switch {
	case rec.err != nil:
		return classifyKeySetError(rec.err)
	case !rec.called:
		// go-jose refused to parse what precheck let through.
		return authn.ReasonMalformed, nil
	case errors.As(err, &expired):
		return authn.ReasonExpired, nil
	default:
		// The signature held; the claims did not decode or the issuer differs.
		return authn.ReasonInvalid, nil
	}
}

func classifyKeySetError(err error) (reason string, fatal error) {
	var fe *FetchError
	var ne net.Error
	switch {
	case errors.Is(err, errUnknownKey):
		return authn.ReasonUnknownKey, nil
	case errors.Is(err, errBadSignature):
		return authn.ReasonBadSignature, nil
	case errors.Is(err, errMalformedJWS):
		return authn.ReasonMalformed, nil
	case errors.As(err, &fe),
		errors.Is(err, context.Canceled),
		errors.Is(err, context.DeadlineExceeded),
		errors.As(err, &ne): // a configured KeySet that fetches
		return "", err
	default:
		// A configured KeySet (e.g. oidc.StaticKeySet) found no key that verifies.
		return authn.ReasonBadSignature, nil
	}
}
