package oidcjwt

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"
)

// jwksFetchTimeout bounds one JWKS fetch, whatever the HTTP client's timeout.
const jwksFetchTimeout = 10 * time.Second

// Errors of a key set's VerifySignature that are verdicts on the token.
var (
	errMalformedJWS = errors.New("oidcjwt: malformed JWS")
	errUnknownKey   = errors.New("oidcjwt: no key with this kid")
	errBadSignature = errors.New("oidcjwt: signature does not verify")
)

// FetchError reports that an issuer's key set could not be fetched, so a
// token could not be judged. It is an error, not a rejection.
type FetchError struct {
	Issuer string
	URL    string
	Err    error
}

func (e *FetchError) Error() string {
	return fmt.Sprintf("oidcjwt: fetching JWKS of issuer %q from %s: %v", e.Issuer, e.URL, e.Err)
}

func (e *FetchError) Unwrap() error { return e.Err }

// remoteKeySet is an oidc.KeySet over an issuer's jwks_uri. It caches the
// keys and refetches them when a token names an unknown kid, at most once
// per interval (so rotation is picked up, yet random kids cannot make every
// request fetch). Concurrent fetches are collapsed into one.
type remoteKeySet struct {
	issuer   string
	url      string
	client   *http.Client
	algs     []jose.SignatureAlgorithm
	interval time.Duration
	now      func() time.Time
	log      *slog.Logger

	mu          sync.Mutex
	keys        []jose.JSONWebKey // the last good set; replaced whole, never edited
	loaded      bool              // keys came from a successful fetch
	attempted   bool
	lastAttempt time.Time // start of the last fetch (by the injected clock)
	lastErr     error     // outcome of the last fetch
	inflight    *inflight
}

var _ oidc.KeySet = (*remoteKeySet)(nil)

// inflight is one fetch that several callers may wait for.
type inflight struct {
	done chan struct{}
	keys []jose.JSONWebKey
	err  error
}

func newRemoteKeySet(issuer, url string, client *http.Client, algs []string, interval time.Duration, now func() time.Time, log *slog.Logger) *remoteKeySet {
	ja := make([]jose.SignatureAlgorithm, len(algs))
	for i, a := range algs {
		ja[i] = jose.SignatureAlgorithm(a)
	}
	return &remoteKeySet{issuer: issuer, url: url, client: client, algs: ja, interval: interval, now: now, log: log}
}

// VerifySignature implements oidc.KeySet: it verifies a compact JWS against
// the issuer's keys and returns the payload.
func (ks *remoteKeySet) VerifySignature(ctx context.Context, raw string) ([]byte, error) {
	jws, err := jose.ParseSignedCompact(raw, ks.algs)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errMalformedJWS, err)
	}
	if len(jws.Signatures) != 1 {
		return nil, errMalformedJWS
	}
	h := jws.Signatures[0].Header
	alg := jose.SignatureAlgorithm(h.Algorithm)

	ks.mu.Lock()
	keys, loaded := ks.keys, ks.loaded
	ks.mu.Unlock()
	if loaded {
		if payload, found, err := verifyWith(jws, keys, h.KeyID, alg); found {
			return payload, err
		}
	}

	// No key fits: (re)fetch, if the interval allows.
	keys, err = ks.refresh(ctx)
	if err != nil {
		return nil, err
	}
	payload, found, err := verifyWith(jws, keys, h.KeyID, alg)
	switch {
	case found:
		return payload, err
	case h.KeyID == "":
		return nil, errBadSignature
	default:
		return nil, errUnknownKey
	}
}

// verifyWith verifies jws with the keys that fit kid and alg. found is false
// when no key has this kid, or, for a token without kid, when none verifies
// (fresh keys may). A published kid whose keys do not verify (or do not fit
// alg) is a bad signature.
func verifyWith(jws *jose.JSONWebSignature, keys []jose.JSONWebKey, kid string, alg jose.SignatureAlgorithm) (payload []byte, found bool, err error) {
	for i := range keys {
		k := &keys[i]
		if kid != "" && k.KeyID != kid {
			continue
		}
		found = true
		if !keyFits(k, alg) {
			continue
		}
		if payload, err := jws.Verify(k); err == nil {
			return payload, true, nil
		}
	}
	if kid == "" || !found {
		return nil, false, nil
	}
	return nil, true, errBadSignature
}

// keyFits reports whether k may verify a signature made with alg.
func keyFits(k *jose.JSONWebKey, alg jose.SignatureAlgorithm) bool {
	if k.Use != "" && k.Use != "sig" {
		return false
	}
	if k.Algorithm != "" && k.Algorithm != string(alg) {
		return false
	}
	switch pub := k.Key.(type) {
	case *rsa.PublicKey:
		return strings.HasPrefix(string(alg), "RS") || strings.HasPrefix(string(alg), "PS")
	case *ecdsa.PublicKey:
		switch alg {
		case jose.ES256:
			return pub.Curve == elliptic.P256()
		case jose.ES384:
			return pub.Curve == elliptic.P384()
		case jose.ES512:
			return pub.Curve == elliptic.P521()
		}
	case ed25519.PublicKey:
		return alg == jose.EdDSA
	}
	return false
}

// refresh returns fresh keys, fetching them unless a fetch started less than
// interval ago. Then it returns the cached keys, or, if the last fetch
// failed, a *FetchError: without a good key set a token cannot be judged.
func (ks *remoteKeySet) refresh(ctx context.Context) ([]jose.JSONWebKey, error) {
	ks.mu.Lock()
	fl := ks.inflight
	if fl == nil {
		now := ks.now()
		if ks.attempted && now.Sub(ks.lastAttempt) < ks.interval {
			keys, lastErr := ks.keys, ks.lastErr
			ks.mu.Unlock()
			if lastErr != nil {
				return nil, &FetchError{Issuer: ks.issuer, URL: ks.url, Err: fmt.Errorf("last fetch failed less than %v ago: %w", ks.interval, lastErr)}
			}
			return keys, nil
		}
		ks.attempted, ks.lastAttempt = true, now
		fl = &inflight{done: make(chan struct{})}
		ks.inflight = fl
		// The fetch outlives a caller that gives up (others may wait for
		// it); it keeps the context's values, not its cancellation.
		go ks.fetch(context.WithoutCancel(ctx), fl)
	}
	ks.mu.Unlock()

	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-fl.done:
		return fl.keys, fl.err
	}
}

func (ks *remoteKeySet) fetch(ctx context.Context, fl *inflight) {
	ctx, cancel := context.WithTimeout(ctx, jwksFetchTimeout)
	defer cancel()
	keys, err := ks.download(ctx)
	if err != nil {
		err = &FetchError{Issuer: ks.issuer, URL: ks.url, Err: err}
		ks.log.LogAttrs(ctx, slog.LevelWarn, "jwks fetch failed", slog.String("issuer", ks.issuer), slog.String("error", err.Error()))
	} else {
		ks.log.LogAttrs(ctx, slog.LevelInfo, "jwks fetched", slog.String("issuer", ks.issuer), slog.Int("keys", len(keys)))
	}

	ks.mu.Lock()
	if err == nil {
		ks.keys, ks.loaded = keys, true
	} else {
		keys = ks.keys // keep serving the last good set
	}
	ks.lastErr = err
	ks.inflight = nil
	ks.mu.Unlock()

	fl.keys, fl.err = keys, err
	close(fl.done)
}

func (ks *remoteKeySet) download(ctx context.Context) ([]jose.JSONWebKey, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, ks.url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json, application/jwk-set+json")
	resp, err := ks.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxResponseBytes+1))
	if err != nil {
		return nil, err
	}
	if len(body) > MaxResponseBytes {
		return nil, ErrResponseTooLarge
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("unexpected status %s", resp.Status)
	}
	return parseJWKS(body)
}

// parseJWKS reads a JWK set, keeping the public signing keys go-jose
// understands and skipping the others (RFC 7517 section 5: implementations
// should ignore keys they do not understand). A set with no usable key is an
// error, so the previous keys stay in use.
func parseJWKS(body []byte) ([]jose.JSONWebKey, error) {
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, fmt.Errorf("decoding JWKS: %v", err)
	}
	keys := make([]jose.JSONWebKey, 0, len(doc.Keys))
	for _, rk := range doc.Keys {
		var k jose.JSONWebKey
		if err := k.UnmarshalJSON(rk); err != nil {
			continue
		}
		if !k.Valid() || (k.Use != "" && k.Use != "sig") {
			continue
		}
		k = k.Public() // never hold private material, even if published by mistake
		if !k.Valid() {
			continue
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, errors.New("JWKS holds no usable signing key")
	}
	return keys, nil
}
