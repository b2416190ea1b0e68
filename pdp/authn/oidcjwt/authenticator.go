// Package oidcjwt verifies OpenID Connect JWT bearer tokens.
//
// Per token, cheapest first: the size cap; compact serialization only, every
// part canonical unpadded base64url; the header (a JSON object without
// duplicate members, alg, kid and typ strings, no crit or b64) and its alg
// against the issuer's allow-list; the payload, decoded once (numbers as
// json.Number) and refused with duplicate or case-variant registered claims;
// the unverified iss, used only to pick one of the configured issuers (an
// unknown issuer is rejected without fetching anything). Then the JWS is
// parsed once, by go-jose (ParseSignedCompact, limited to the issuer's
// algorithms), and its signature checked with the issuer's keys: a key
// whose kid matches (any key for a token without kid), whose use is sig or
// absent, whose alg is the token's or absent, and whose type and curve fit
// the algorithm (RSA keys of at least MinRSAKeyBits). The errors of that
// check are typed, so a bad signature, an unknown kid and an unreachable
// JWKS stay apart. Then the claims, which the signature now covers:
//
//   - what go-oidc's verifier checked when it ran here: iss equal to the
//     configured issuer exactly; sub, nonce and at_hash strings when
//     present; aud a string or a list of strings; exp, nbf and iat numbers;
//     _claim_names and _claim_sources well formed (a token failing these
//     is invalid, whatever else is wrong with it);
//   - exp required; exp, nbf and iat against one clock skew;
//   - the audience (any of the configured ones);
//   - the typ header, when the issuer requires one;
//   - a non-empty sub.
//
// go-oidc remains for discovery (Provider, and the discovery document's
// issuer check) and for configured key sets (IssuerConfig.KeySet): an
// oidc.StaticKeySet's keys verify the parsed token directly, any other
// oidc.KeySet is handed the compact token (and must return its payload).
// Its IDTokenVerifier is not used: it parses the token again, decodes the
// payload again, and flattens the key set's error into a string.
//
// The identity carries the claims twice over from that one decode: as
// authn.Identity.Claims, and converted once to an OPA AST object
// (authn.Identity.ClaimsValue) that the policy package uses as it is,
// instead of converting the claims on every evaluation.
//
// A bad token is an authn.Rejected outcome with a stable reason. An error
// means the token could not be judged (the issuer's JWKS is unreachable or
// too large, the context ended); it comes with a Rejected outcome
// (authn.ReasonUnavailable) so that a caller ignoring it still fails closed.
//
// Keys come from the issuer's jwks_uri, found by discovery. Each issuer has
// a background loop: discovery, retried with exponential backoff and jitter
// until it succeeds (meanwhile the issuer's tokens get
// authn.ReasonUnavailable with ErrNotDiscovered), then a JWKS fetch every
// IssuerConfig.JWKSRefreshInterval (shortened by the response's
// Cache-Control max-age, never below MinJWKSRefreshInterval). Keys that
// leave the set stop verifying at the next refresh; a failed refresh keeps
// the cached keys. A token naming an unknown kid also triggers a fetch, at
// most once per Config.RefetchInterval per issuer; it waits for that fetch
// only as long as its context allows, and tokens with known keys never wait
// behind a fetch. RSA keys under MinRSAKeyBits are refused (logged once per
// key). Status reports each issuer's state, KeyEpoch tells a cache of
// verified tokens that a key was withdrawn, Close stops the loops.
package oidcjwt

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"

	"github.com/tollgate/tollgate/pdp/authn"
	"github.com/tollgate/tollgate/pdp/credential"
)

// Authenticator verifies JWT bearer tokens of the configured issuers. It is
// safe for concurrent use. Its background loops (discovery, JWKS refresh)
// run until the context given to New ends or Close is called.
type Authenticator struct {
	issuers  map[string]*issuer
	order    []*issuer // as configured, for Status
	skew     time.Duration
	maxBytes int
	now      func() time.Time
	log      *slog.Logger
	client   *http.Client

	epoch     atomic.Uint64 // see KeyEpoch
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
	metrics   *metrics // nil without a Registerer
}

var _ authn.Authenticator = (*Authenticator)(nil)

// issuer is one configured issuer, ready to verify.
type issuer struct {
	name        string
	audiences   []string
	algs        []string
	requireType string
	// envoyPayload is IssuerConfig.TrustEnvoyPayloadInMetadata.
	envoyPayload string
	joseAlgs     []jose.SignatureAlgorithm // algs, for go-jose
	keys         *remoteKeySet             // nil for a configured KeySet
	keySet       oidc.KeySet               // IssuerConfig.KeySet; nil when keys is set
}

// Issuer states reported by Status.
const (
	// StateDiscovering: discovery has not succeeded yet (LastError says
	// why, when an attempt failed), or the first JWKS fetch is under way.
	// The issuer's tokens get authn.ReasonUnavailable.
	StateDiscovering = "discovering"
	// StateReady: the last JWKS fetch succeeded; tokens are verified.
	StateReady = "ready"
	// StateStale: the last refresh failed (LastError); tokens are verified
	// with the keys of the last good fetch.
	StateStale = "stale"
	// StateError: discovered, but no usable key set was fetched yet; tokens
	// get authn.ReasonUnavailable.
	StateError = "error"
)

// IssuerStatus is the state of one issuer, for health endpoints and
// metrics. It holds no secret: LastError is cut short and quotes no query
// string, token or header value.
type IssuerStatus struct {
	Issuer string `json:"issuer"`
	State  string `json:"state"`
	// Static: the keys were configured (IssuerConfig.KeySet), never fetched.
	Static bool `json:"static,omitempty"`
	// Keys is the number of usable keys held.
	Keys int `json:"keys"`
	// LastSuccess is the end of the last JWKS fetch that succeeded (or
	// found the keys not modified); zero before the first.
	LastSuccess time.Time `json:"last_success,omitzero"`
	LastError   string    `json:"last_error,omitempty"`
	// KeyEpoch counts the refreshes of this issuer that withdrew a key.
	KeyEpoch uint64 `json:"key_epoch"`
}

// New validates cfg and starts each issuer without a KeySet: a background
// loop that runs OpenID Connect discovery through cfg.HTTPClient (retried
// with backoff until it succeeds), then fetches the JWKS and refreshes it on
// schedule. New waits for each issuer's first attempt (or for ctx to end),
// so that tokens verify as soon as it returns when the issuers are up, but
// an issuer that is down does not make it fail: its tokens get
// authn.ReasonUnavailable until it recovers. New fails for an invalid
// config, a metrics registration that fails, or a ctx that ended.
//
// The loops stop when ctx ends or Close is called.
func New(ctx context.Context, cfg Config) (*Authenticator, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	life, cancel := context.WithCancel(ctx)
	a := &Authenticator{
		issuers:  make(map[string]*issuer, len(cfg.Issuers)),
		skew:     cfg.ClockSkew,
		maxBytes: cfg.MaxTokenBytes,
		now:      cfg.Now,
		log:      cfg.Logger,
		client:   cfg.HTTPClient,
		cancel:   cancel,
	}
	for _, ic := range cfg.Issuers {
		algs := ic.Algorithms
		if len(algs) == 0 {
			algs = defaultAlgorithms()
		}
		algs = append([]string(nil), algs...)

		iss := &issuer{
			name:        ic.Issuer,
			audiences:   append([]string(nil), ic.Audiences...),
			algs:        algs,
			requireType: ic.RequireType,

			envoyPayload: ic.TrustEnvoyPayloadInMetadata,
			joseAlgs:     joseAlgorithms(algs),
			keySet:       ic.KeySet,
		}
		if iss.keySet == nil {
			iss.keys = a.newRemoteKeySet(life, cfg, ic, iss.joseAlgs)
		}
		a.issuers[ic.Issuer] = iss
		a.order = append(a.order, iss)
	}
	if cfg.Registerer != nil {
		m, err := newMetrics(cfg.Registerer, a)
		if err != nil {
			cancel()
			return nil, err
		}
		a.metrics = m
	}

	// Start every issuer's loop, then wait for each one's first attempt.
	var first sync.WaitGroup
	for _, iss := range a.order {
		if iss.keys == nil {
			continue
		}
		first.Add(1)
		a.wg.Add(1)
		go iss.keys.run(first.Done)
	}
	started := make(chan struct{})
	go func() { first.Wait(); close(started) }()
	select {
	case <-started:
	case <-ctx.Done():
	}
	if err := ctx.Err(); err != nil {
		a.Close()
		return nil, fmt.Errorf("oidcjwt: starting the issuers: %w", err)
	}
	return a, nil
}

func joseAlgorithms(algs []string) []jose.SignatureAlgorithm {
	ja := make([]jose.SignatureAlgorithm, len(algs))
	for i, alg := range algs {
		ja[i] = jose.SignatureAlgorithm(alg)
	}
	return ja
}

func (a *Authenticator) newRemoteKeySet(life context.Context, cfg Config, ic IssuerConfig, algs []jose.SignatureAlgorithm) *remoteKeySet {
	name, client := ic.Issuer, cfg.HTTPClient
	return &remoteKeySet{
		issuer:   name,
		client:   client,
		algs:     algs,
		refetch:  cfg.RefetchInterval,
		refresh:  ic.JWKSRefreshInterval,
		now:      cfg.Now,
		after:    cfg.After,
		log:      cfg.Logger,
		discover: func(ctx context.Context) (string, error) { return discover(ctx, client, name) },
		counted: func(kind, result string) {
			if a.metrics != nil {
				a.metrics.count(kind, name, result)
			}
		},
		changed: func() { a.epoch.Add(1) },
		life:    life,
		wg:      &a.wg,
	}
}

// Close stops the background loops and waits for them and for any fetch
// under way, then unregisters the metrics. Tokens of issuers that were not
// ready get authn.ReasonUnavailable afterwards; cached keys keep verifying.
// Calling it more than once is fine.
func (a *Authenticator) Close() {
	a.closeOnce.Do(func() {
		a.cancel()
		a.wg.Wait()
		a.client.CloseIdleConnections()
		if a.metrics != nil {
			a.metrics.unregister()
		}
	})
}

// Status returns the state of each issuer, in configuration order. It is
// cheap (no I/O) and safe to call on a nil Authenticator (no issuers).
func (a *Authenticator) Status() []IssuerStatus {
	if a == nil {
		return nil
	}
	out := make([]IssuerStatus, 0, len(a.order))
	for _, iss := range a.order {
		if iss.keys == nil {
			out = append(out, IssuerStatus{Issuer: iss.name, State: StateReady, Static: true})
			continue
		}
		out = append(out, iss.keys.status())
	}
	return out
}

// KeyEpoch changes each time a refresh withdraws a key from any issuer's
// key set (a key that left the set, or whose kid, alg or use changed); it
// never changes otherwise (keys added, a refresh that failed or found the
// set unchanged). A cache of verified tokens records it with each entry and
// treats an entry made under another epoch as stale, so a token signed by a
// withdrawn key is verified again, and refused (see tokencache.Epocher). It
// is one atomic load.
func (a *Authenticator) KeyEpoch() uint64 { return a.epoch.Load() }

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

// Peek implements authn.Peeker: any credential but a bearer token is not
// this authenticator's, which it can say at once; a bearer token needs
// Authenticate.
func (a *Authenticator) Peek(cred credential.Credential) (authn.Outcome, bool) {
	if cred.Type != credential.TypeBearer {
		return authn.Outcome{Result: authn.NotApplicable}, true
	}
	return authn.Outcome{}, false
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

	// The one parse of the JWS: go-jose, limited to the issuer's algorithms.
	jws, err := jose.ParseSignedCompact(raw, iss.joseAlgs)
	if err != nil || len(jws.Signatures) != 1 {
		return a.reject(ctx, cred, iss.name, authn.ReasonMalformed), nil
	}
	if err := iss.verify(ctx, raw, jws, tok.payload); err != nil {
		reason, ferr := classifyKeySetError(err)
		if ferr != nil {
			return authn.Reject(authn.ReasonUnavailable), fmt.Errorf("oidcjwt: issuer %q: %w", iss.name, ferr)
		}
		return a.reject(ctx, cred, iss.name, reason), nil
	}
	id, reason := a.check(iss, tok, tok.payload)
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

// verify checks the signature of the parsed jws (raw is its compact form,
// payload its decoded payload) with the issuer's keys. The error is typed:
// errUnknownKey, errBadSignature or errMalformedJWS for a bad token;
// *FetchError, ErrNotDiscovered or a context error when the token cannot
// be judged; a configured KeySet's own error otherwise.
func (iss *issuer) verify(ctx context.Context, raw string, jws *jose.JSONWebSignature, payload []byte) error {
	if iss.keys != nil {
		return iss.keys.verify(ctx, jws)
	}
	if static, ok := iss.keySet.(*oidc.StaticKeySet); ok {
		// What StaticKeySet.VerifySignature does, on the parsed token.
		for _, pub := range static.PublicKeys {
			switch pub.(type) {
			case *rsa.PublicKey, *ecdsa.PublicKey, ed25519.PublicKey:
			default:
				return fmt.Errorf("oidcjwt: configured key of unsupported type %T", pub)
			}
			if _, err := jws.Verify(pub); err == nil {
				return nil
			}
		}
		return errBadSignature
	}
	// Another KeySet only takes the compact form, and parses it again.
	got, err := iss.keySet.VerifySignature(ctx, raw)
	if err != nil {
		return err
	}
	if !bytes.Equal(got, payload) {
		return errBadSignature
	}
	return nil
}

// classifyKeySetError turns a verify error into a rejection reason, or
// into an error when the token could not be judged.
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
		errors.Is(err, ErrNotDiscovered),
		errors.Is(err, context.Canceled),
		errors.Is(err, context.DeadlineExceeded),
		errors.As(err, &ne): // a configured KeySet that fetches
		return "", err
	default:
		// A configured KeySet (e.g. oidc.StaticKeySet) found no key that verifies.
		return authn.ReasonBadSignature, nil
	}
}
