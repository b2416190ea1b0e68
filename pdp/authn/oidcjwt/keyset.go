package oidcjwt

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

const (
	// jwksFetchTimeout bounds one JWKS fetch, whatever the HTTP client's timeout.
	jwksFetchTimeout = 10 * time.Second
	// MinRSAKeyBits is the smallest RSA modulus a JWKS key may have (RFC 7518
	// section 3.3); smaller RSA keys are refused and never used.
	MinRSAKeyBits = 2048
	// maxRefusedRemembered bounds the refused keys remembered per issuer so
	// that each is logged once.
	maxRefusedRemembered = 1024
)

// Errors of a key set's VerifySignature that are verdicts on the token.
var (
	errMalformedJWS = errors.New("oidcjwt: malformed JWS")
	errUnknownKey   = errors.New("oidcjwt: no key with this kid")
	errBadSignature = errors.New("oidcjwt: signature does not verify")
)

// ErrNotDiscovered reports that an issuer's OpenID Connect discovery has not
// succeeded yet (it is retried in the background), so its tokens cannot be
// judged.
var ErrNotDiscovered = errors.New("oidcjwt: issuer discovery has not succeeded yet")

// errClosed reports a fetch asked of a closed Authenticator.
var errClosed = errors.New("oidcjwt: authenticator closed")

// FetchError reports that an issuer's key set could not be fetched, so a
// token could not be judged. It is an error, not a rejection.
type FetchError struct {
	Issuer string
	URL    string
	Err    error
}

func (e *FetchError) Error() string {
	return fmt.Sprintf("oidcjwt: fetching JWKS of issuer %q from %s: %v", e.Issuer, redactURL(e.URL), e.Err)
}

func (e *FetchError) Unwrap() error { return e.Err }

// Fetch results, the result label of tollgate_jwks_fetches_total.
const (
	resultSuccess     = "success"
	resultNotModified = "not_modified"
	resultError       = "error"
)

// remoteKeySet holds the keys of an issuer's jwks_uri.
//
// It is refreshed in the background every refresh interval (shortened by a
// Cache-Control max-age), so keys that leave the set stop verifying. A token
// naming an unknown kid also triggers a fetch, at most once per refetch
// interval (so rotation is picked up at once, yet random kids cannot make
// every request fetch: tokens cause at most one fetch per refetch interval,
// the schedule one per refresh interval). Concurrent fetches are collapsed
// into one; a token that finds a fetch under way waits for it. A failed
// fetch keeps the last good keys.
//
// Verifying with a known key never waits: keys are read under a short lock
// that no fetch holds. A caller that needs a fetch waits for it only as long
// as its context allows; the fetch itself runs on the Authenticator's
// lifetime, bounded by jwksFetchTimeout.
type remoteKeySet struct {
	issuer   string
	client   *http.Client
	algs     []jose.SignatureAlgorithm
	refetch  time.Duration // minimum time between fetches caused by unknown kids
	refresh  time.Duration // the background schedule
	now      func() time.Time
	after    func(time.Duration) <-chan time.Time
	log      *slog.Logger
	discover func(context.Context) (string, error)
	counted  func(kind, result string) // metrics; never nil
	changed  func()                    // called when a key left the set; never nil
	life     context.Context           // ends when the Authenticator is closed
	wg       *sync.WaitGroup           // the Authenticator's goroutines

	mu          sync.Mutex
	url         string            // jwks_uri; "" until discovered
	keys        []jose.JSONWebKey // the last good set; replaced whole, never edited
	ids         map[string]bool   // identities of keys (see keyIdentity)
	loaded      bool              // keys came from a successful fetch
	etag        string            // of the response that gave keys
	lastSuccess time.Time         // last fetch that succeeded or was not modified
	refetched   bool
	lastRefetch time.Time // start of the last fetch caused by an unknown kid (injected clock)
	lastErr     error     // outcome of the last fetch or discovery attempt
	epoch       uint64    // incremented when a key leaves the set
	inflight    *inflight
	refused     map[string]bool // thumbprints of refused keys already logged
}

// inflight is one fetch that several callers may wait for.
type inflight struct {
	done   chan struct{}
	keys   []jose.JSONWebKey
	err    error
	maxAge time.Duration // from Cache-Control, 0 when absent
}

// verify checks the signature of jws, parsed once by the caller (with the
// issuer's algorithms), against the issuer's keys. It returns nil, a verdict
// on the token (errUnknownKey, errBadSignature, errMalformedJWS), or an
// error saying it cannot be judged (ErrNotDiscovered, *FetchError, the
// context's error).
func (ks *remoteKeySet) verify(ctx context.Context, jws *jose.JSONWebSignature) error {
	if len(jws.Signatures) != 1 {
		return errMalformedJWS
	}
	h := jws.Signatures[0].Header
	alg := jose.SignatureAlgorithm(h.Algorithm)

	ks.mu.Lock()
	keys, loaded, discovered := ks.keys, ks.loaded, ks.url != ""
	ks.mu.Unlock()
	if !discovered {
		return ErrNotDiscovered
	}
	if loaded {
		if found, err := verifyWith(jws, keys, h.KeyID, alg); found {
			return err
		}
	}

	// No key fits: (re)fetch, if the refetch interval allows.
	keys, err := ks.refetchFor(ctx)
	if err != nil {
		return err
	}
	found, err := verifyWith(jws, keys, h.KeyID, alg)
	switch {
	case found:
		return err
	case h.KeyID == "":
		return errBadSignature
	default:
		return errUnknownKey
	}
}

// verifyWith verifies jws with the keys that fit kid and alg. found is false
// when no key has this kid, or, for a token without kid, when none verifies
// (fresh keys may). A published kid whose keys do not verify (or do not fit
// alg) is a bad signature.
func verifyWith(jws *jose.JSONWebSignature, keys []jose.JSONWebKey, kid string, alg jose.SignatureAlgorithm) (found bool, err error) {
	for i := range keys {
		k := &keys[i]
		if kid != "" && k.KeyID != kid {
			continue
		}
		found = true
		if !keyFits(k, alg) {
			continue
		}
		if _, err := jws.Verify(k); err == nil {
			return true, nil
		}
	}
	if kid == "" || !found {
		return false, nil
	}
	return true, errBadSignature
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
		// parseJWKS already refused short moduli; this is belt and braces.
		return pub.N.BitLen() >= MinRSAKeyBits &&
			(strings.HasPrefix(string(alg), "RS") || strings.HasPrefix(string(alg), "PS"))
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

// refetchFor returns fresh keys for a token that no cached key fits,
// joining the fetch under way, or fetching unless a fetch caused by a token
// started less than the refetch interval ago.
// Then it returns the cached keys, or, if the last fetch failed, a
// *FetchError: without a good key set a token cannot be judged. It waits
// for the fetch no longer than ctx allows.
func (ks *remoteKeySet) refetchFor(ctx context.Context) ([]jose.JSONWebKey, error) {
	ks.mu.Lock()
	fl := ks.inflight
	if fl == nil {
		now := ks.now()
		if ks.refetched && now.Sub(ks.lastRefetch) < ks.refetch {
			keys, lastErr := ks.keys, ks.lastErr
			ks.mu.Unlock()
			if lastErr != nil {
				return nil, &FetchError{Issuer: ks.issuer, URL: ks.url, Err: fmt.Errorf("last fetch failed less than %v ago: %w", ks.refetch, lastErr)}
			}
			return keys, nil
		}
		var err error
		if fl, err = ks.startFetchLocked(); err != nil {
			ks.mu.Unlock()
			return nil, &FetchError{Issuer: ks.issuer, URL: ks.url, Err: err}
		}
		ks.refetched, ks.lastRefetch = true, now
	}
	ks.mu.Unlock()

	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-fl.done:
		return fl.keys, fl.err
	}
}

// startFetchLocked starts a fetch on the Authenticator's lifetime; ks.mu is
// held. The fetch outlives a caller that gives up (others may wait for it).
func (ks *remoteKeySet) startFetchLocked() (*inflight, error) {
	if ks.life.Err() != nil {
		return nil, errClosed
	}
	fl := &inflight{done: make(chan struct{})}
	ks.inflight = fl
	ks.wg.Add(1)
	go ks.fetch(fl)
	return fl, nil
}

// run is the issuer's background loop: discovery, retried with backoff
// until it succeeds, then a JWKS fetch every refresh interval. first is
// called once, after the first discovery attempt failed or the first fetch
// ended. run returns when the Authenticator's lifetime ends.
func (ks *remoteKeySet) run(first func()) {
	defer ks.wg.Done()
	var once sync.Once
	signal := func() { once.Do(first) }
	defer signal()

	bo := backoff{min: time.Second, max: maxDiscoveryBackoff}
	for {
		ctx, cancel := context.WithTimeout(ks.life, jwksFetchTimeout)
		jwksURL, err := ks.discover(ctx)
		cancel()
		if err == nil {
			ks.discovered(jwksURL)
			break
		}
		if ks.life.Err() != nil {
			return
		}
		ks.discoveryFailed(err)
		signal()
		if !ks.sleep(bo.next()) {
			return
		}
	}

	bo = backoff{min: time.Second, max: ks.refresh}
	for {
		fl, ok := ks.scheduledFetch()
		if !ok {
			return
		}
		signal()
		next := ks.refresh
		switch {
		case fl.err != nil:
			next = max(bo.next(), MinJWKSRefreshInterval)
		default:
			bo.reset()
			if fl.maxAge > 0 {
				next = min(max(fl.maxAge, MinJWKSRefreshInterval), ks.refresh)
			}
		}
		if !ks.sleep(next) {
			return
		}
	}
}

// maxDiscoveryBackoff caps the wait between two discovery attempts.
const maxDiscoveryBackoff = 5 * time.Minute

// sleep waits d on the injected clock; false when the lifetime ended.
func (ks *remoteKeySet) sleep(d time.Duration) bool {
	select {
	case <-ks.life.Done():
		return false
	case <-ks.after(d):
		return true
	}
}

// scheduledFetch fetches now (or joins a fetch under way) and waits for it.
func (ks *remoteKeySet) scheduledFetch() (*inflight, bool) {
	ks.mu.Lock()
	fl := ks.inflight
	if fl == nil {
		var err error
		if fl, err = ks.startFetchLocked(); err != nil {
			ks.mu.Unlock()
			return nil, false
		}
	}
	ks.mu.Unlock()
	select {
	case <-ks.life.Done():
		return nil, false
	case <-fl.done:
		return fl, true
	}
}

func (ks *remoteKeySet) discovered(jwksURL string) {
	ks.mu.Lock()
	ks.url, ks.lastErr = jwksURL, nil
	ks.mu.Unlock()
	ks.counted("discovery", resultSuccess)
	ks.log.LogAttrs(ks.life, slog.LevelInfo, "oidc issuer discovered",
		slog.String("issuer", ks.issuer), slog.String("jwks_uri", redactURL(jwksURL)))
}

func (ks *remoteKeySet) discoveryFailed(err error) {
	ks.mu.Lock()
	ks.lastErr = err
	ks.mu.Unlock()
	ks.counted("discovery", resultError)
	ks.log.LogAttrs(ks.life, slog.LevelWarn, "oidc discovery failed; retrying in the background",
		slog.String("issuer", ks.issuer), slog.String("error", publicError(err)))
}

func (ks *remoteKeySet) fetch(fl *inflight) {
	defer ks.wg.Done()
	ctx, cancel := context.WithTimeout(ks.life, jwksFetchTimeout)
	defer cancel()

	ks.mu.Lock()
	jwksURL, etag := ks.url, ""
	if ks.loaded {
		etag = ks.etag
	}
	ks.mu.Unlock()

	res, err := ks.download(ctx, jwksURL, etag)
	if err != nil {
		err = &FetchError{Issuer: ks.issuer, URL: jwksURL, Err: err}
	}

	ks.mu.Lock()
	var added, removed int
	result := resultSuccess
	switch {
	case err != nil:
		result = resultError
	case res.notModified:
		result = resultNotModified
		ks.lastSuccess = ks.now()
	default:
		ids := make(map[string]bool, len(res.keys))
		for i := range res.keys {
			id := keyIdentity(&res.keys[i])
			ids[id] = true
			if !ks.ids[id] {
				added++
			}
		}
		for id := range ks.ids {
			if !ids[id] {
				removed++
			}
		}
		ks.keys, ks.ids, ks.loaded, ks.etag = res.keys, ids, true, res.etag
		ks.lastSuccess = ks.now()
		if removed > 0 {
			ks.epoch++
		}
	}
	ks.lastErr = err
	keys := ks.keys // on failure, keep serving the last good set
	ks.inflight = nil
	ks.mu.Unlock()

	if removed > 0 {
		ks.changed()
	}
	ks.counted("jwks", result)
	switch {
	case err != nil:
		ks.log.LogAttrs(ctx, slog.LevelWarn, "jwks fetch failed; keeping the cached keys",
			slog.String("issuer", ks.issuer), slog.String("error", publicError(err)))
	case added > 0 || removed > 0:
		ks.log.LogAttrs(ctx, slog.LevelInfo, "jwks changed",
			slog.String("issuer", ks.issuer), slog.Int("keys", len(keys)),
			slog.Int("added", added), slog.Int("removed", removed))
	default:
		ks.log.LogAttrs(ctx, slog.LevelDebug, "jwks unchanged",
			slog.String("issuer", ks.issuer), slog.String("result", result))
	}

	fl.keys, fl.err = keys, err
	if err == nil {
		fl.maxAge = res.maxAge
	}
	close(fl.done)
}

// fetched is what one JWKS response gave.
type fetched struct {
	keys        []jose.JSONWebKey
	notModified bool
	etag        string
	maxAge      time.Duration
}

func (ks *remoteKeySet) download(ctx context.Context, jwksURL, etag string) (fetched, error) {
	var res fetched
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, jwksURL, nil)
	if err != nil {
		return res, err
	}
	req.Header.Set("Accept", "application/json, application/jwk-set+json")
	if etag != "" {
		req.Header.Set("If-None-Match", etag)
	}
	resp, err := ks.client.Do(req)
	if err != nil {
		return res, redactErr(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxResponseBytes+1))
	if err != nil {
		return res, redactErr(err)
	}
	if len(body) > MaxResponseBytes {
		return res, ErrResponseTooLarge
	}
	res.maxAge = maxAge(resp.Header)
	switch {
	case resp.StatusCode == http.StatusNotModified && etag != "":
		res.notModified = true
		return res, nil
	case resp.StatusCode != http.StatusOK:
		return res, fmt.Errorf("unexpected status %s", resp.Status)
	}
	res.etag = resp.Header.Get("ETag")
	res.keys, err = parseJWKSWith(body, ks.refusedKey)
	return res, err
}

// refusedKey logs a key parseJWKS refused, once per key (by thumbprint).
func (ks *remoteKeySet) refusedKey(k *jose.JSONWebKey, reason string) {
	tp := thumbprint(k)
	ks.mu.Lock()
	seen := ks.refused[tp]
	if !seen && len(ks.refused) < maxRefusedRemembered {
		if ks.refused == nil {
			ks.refused = map[string]bool{}
		}
		ks.refused[tp] = true
	}
	ks.mu.Unlock()
	if seen {
		return
	}
	ks.log.LogAttrs(ks.life, slog.LevelWarn, "jwks key refused; it will never verify a token",
		slog.String("issuer", ks.issuer), slog.String("kid", k.KeyID),
		slog.String("thumbprint", tp), slog.String("reason", reason))
}

// status is a snapshot of the key set for Authenticator.Status.
func (ks *remoteKeySet) status() IssuerStatus {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	st := IssuerStatus{
		Issuer:      ks.issuer,
		Keys:        len(ks.keys),
		LastSuccess: ks.lastSuccess,
		KeyEpoch:    ks.epoch,
	}
	if ks.lastErr != nil {
		st.LastError = publicError(ks.lastErr)
	}
	switch {
	case ks.url == "":
		st.State = StateDiscovering
	case ks.loaded && ks.lastErr == nil:
		st.State = StateReady
	case ks.loaded:
		st.State = StateStale
	case ks.lastErr != nil:
		st.State = StateError
	default:
		st.State = StateDiscovering // discovered; the first fetch is under way
	}
	return st
}

// parseJWKS reads a JWK set, keeping the public signing keys go-jose
// understands and skipping the others (RFC 7517 section 5: implementations
// should ignore keys they do not understand). A set with no usable key is an
// error, so the previous keys stay in use.
func parseJWKS(body []byte) ([]jose.JSONWebKey, error) {
	return parseJWKSWith(body, func(*jose.JSONWebKey, string) {})
}

// parseJWKSWith is parseJWKS that also reports each key it refuses though
// it understands it (RSA keys under MinRSAKeyBits).
func parseJWKSWith(body []byte, refused func(k *jose.JSONWebKey, reason string)) ([]jose.JSONWebKey, error) {
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, fmt.Errorf("decoding JWKS: %v", err)
	}
	keys := make([]jose.JSONWebKey, 0, len(doc.Keys))
	weak := 0
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
		if pub, ok := k.Key.(*rsa.PublicKey); ok && pub.N.BitLen() < MinRSAKeyBits {
			weak++
			refused(&k, fmt.Sprintf("RSA modulus of %d bits, under %d (RFC 7518 section 3.3)", pub.N.BitLen(), MinRSAKeyBits))
			continue
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		if weak > 0 {
			return nil, fmt.Errorf("JWKS holds no usable signing key (%d RSA keys under %d bits refused)", weak, MinRSAKeyBits)
		}
		return nil, errors.New("JWKS holds no usable signing key")
	}
	return keys, nil
}

// thumbprint is the key's RFC 7638 SHA-256 thumbprint, base64url.
func thumbprint(k *jose.JSONWebKey) string {
	b, err := k.Thumbprint(crypto.SHA256)
	if err != nil {
		return "unknown"
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// keyIdentity names a key with everything that decides what it verifies:
// kid, thumbprint, alg and use. A key whose identity is gone from a new set
// has left it.
func keyIdentity(k *jose.JSONWebKey) string {
	return k.KeyID + "\x00" + thumbprint(k) + "\x00" + k.Algorithm + "\x00" + k.Use
}

// maxAge reads the freshness lifetime of a response: Cache-Control max-age
// less Age (RFC 9111 sections 5.2.2.1 and 5.1). 0 when there is none, or when
// no-store or no-cache asks not to rely on it; then the refresh interval
// applies unchanged.
func maxAge(h http.Header) time.Duration {
	life := time.Duration(-1)
	for _, line := range h.Values("Cache-Control") {
		for _, d := range strings.Split(line, ",") {
			name, val, _ := strings.Cut(strings.TrimSpace(d), "=")
			switch strings.ToLower(strings.TrimSpace(name)) {
			case "no-store", "no-cache":
				return 0
			case "max-age":
				n, err := strconv.ParseInt(strings.Trim(strings.TrimSpace(val), `"`), 10, 64)
				if err != nil || n < 0 {
					return 0 // invalid: treated as absent
				}
				if n > int64(MaxJWKSRefreshInterval/time.Second) {
					n = int64(MaxJWKSRefreshInterval / time.Second)
				}
				if life < 0 { // the first max-age counts
					life = time.Duration(n) * time.Second
				}
			}
		}
	}
	if life <= 0 {
		return 0 // absent, or max-age=0: no hint
	}
	if a, err := strconv.ParseInt(strings.TrimSpace(h.Get("Age")), 10, 64); err == nil && a > 0 {
		life -= time.Duration(min(a, int64(MaxJWKSRefreshInterval/time.Second))) * time.Second
		if life <= 0 {
			return MinJWKSRefreshInterval // already stale: as soon as allowed
		}
	}
	return life
}

// redactURL drops the userinfo, query and fragment of a URL, which may
// carry secrets, for errors, logs and status.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL)"
	}
	u.User, u.RawQuery, u.ForceQuery, u.Fragment, u.RawFragment = nil, "", false, "", ""
	return u.String()
}

// redactErr rewrites the URL of a *url.Error, keeping its chain (timeouts
// stay net.Errors).
func redactErr(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		c := *ue
		c.URL = redactURL(ue.URL)
		return &c
	}
	return err
}

// maxErrorText bounds error text in the status and logs.
const maxErrorText = 300

// publicError is err's text fit for logs and /health/ready: control
// characters replaced, cut at maxErrorText bytes. Errors from this package
// carry no query strings, tokens or header values.
func publicError(err error) string {
	s := strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, err.Error())
	if len(s) > maxErrorText {
		cut := maxErrorText
		for cut > 0 && s[cut]&0xC0 == 0x80 { // not inside a UTF-8 sequence
			cut--
		}
		s = s[:cut] + "…"
	}
	return s
}

// backoff is an exponential backoff with jitter: each wait is drawn from
// [d/2, d], where d doubles from min up to max.
type backoff struct {
	min, max time.Duration
	n        int
}

func (b *backoff) next() time.Duration {
	d := b.min
	for i := 0; i < b.n && d < b.max; i++ {
		d *= 2
	}
	d = min(d, b.max)
	b.n++
	return jitter(d)
}

func (b *backoff) reset() { b.n = 0 }

// jitter draws a wait from [d/2, d], so that replicas restarted together do
// not retry together.
func jitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d-d/2+1)
}
