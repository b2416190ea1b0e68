// Package authntest is a test kit for the authentication verifiers, in the
// spirit of go-oidc's oidctest: a real OpenID Connect issuer served over HTTP
// (discovery document and JWKS), token minting with go-jose, and helpers that
// forge the bad tokens a verifier must reject.
//
// It is for tests only. Its methods report setup failures with t.Fatal, so
// call them from the test's own goroutine. It depends on no verifier, so the
// verifiers' own tests can use it.
package authntest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// Audience is the audience Claims puts in every token.
const Audience = "orders-api"

// Key ids of the keys every issuer starts with.
const (
	KeyIDRSA = "rsa-1"
	KeyIDEC  = "ec-1"
)

// Key is one signing key of an Issuer.
type Key struct {
	ID        string
	Algorithm string        // the algorithm tokens signed with this key use by default
	Private   crypto.Signer // *rsa.PrivateKey, *ecdsa.PrivateKey or ed25519.PrivateKey
}

// Public returns the key's public half.
func (k *Key) Public() crypto.PublicKey { return k.Private.Public() }

// IssuerOption configures NewIssuer.
type IssuerOption func(*issuerOptions)

type issuerOptions struct {
	now  func() time.Time
	algs []string
}

// WithNow sets the clock Claims uses for iat, nbf and exp (default time.Now).
func WithNow(now func() time.Time) IssuerOption {
	return func(o *issuerOptions) { o.now = now }
}

// WithSupportedAlgs sets the discovery document's
// id_token_signing_alg_values_supported (default RS256, ES256).
func WithSupportedAlgs(algs ...string) IssuerOption {
	return func(o *issuerOptions) { o.algs = algs }
}

// Issuer is a test OpenID Connect issuer served by an httptest.Server. It
// serves /.well-known/openid-configuration and /jwks, counts JWKS fetches and
// mints tokens. It is safe for concurrent use, except that the methods that
// may call t.Fatal belong on the test goroutine.
type Issuer struct {
	tb   testing.TB
	srv  *httptest.Server
	now  func() time.Time
	algs []string

	jwksFetches      atomic.Int64
	jwksNotModified  atomic.Int64
	discoveryFetches atomic.Int64

	mu          sync.Mutex
	keys        []*Key          // published in the JWKS, in order
	signing     *Key            // the current RSA signing key
	nextRSA     int             // suffix of the next rotated RSA key id
	nextOther   int             // suffix of the next AddKey key id
	stranger    *Key            // a key never published, for MintUnknownKey
	unpublished map[string]*Key // per alg, for Mint with an alg no published key fits
	override    *cannedResponse
	jwksDelay   time.Duration
	cacheCtl    string    // Cache-Control of JWKS responses; "" for none
	hold        *JWKSHold // when set, JWKS requests wait for its release
	discovery   *cannedResponse
}

// JWKSHold stalls the JWKS endpoint: requests wait until Release (or until
// their client gives up). See HoldJWKS.
type JWKSHold struct {
	arrived     chan struct{}
	arrivedOnce sync.Once
	released    chan struct{}
	releaseOnce sync.Once
}

// Arrived is closed once a JWKS request is waiting on the hold.
func (h *JWKSHold) Arrived() <-chan struct{} { return h.arrived }

// Release lets the waiting and later JWKS requests through. Calling it more
// than once is fine; it is also called when the test ends.
func (h *JWKSHold) Release() { h.releaseOnce.Do(func() { close(h.released) }) }

type cannedResponse struct {
	status int
	body   []byte
}

// NewIssuer starts a test issuer with an RSA 2048 key (kid "rsa-1", the
// signing key) and an EC P-256 key (kid "ec-1"). The server closes when the
// test ends.
func NewIssuer(tb testing.TB, opts ...IssuerOption) *Issuer {
	tb.Helper()
	o := issuerOptions{now: time.Now, algs: []string{"RS256", "ES256"}}
	for _, opt := range opts {
		opt(&o)
	}
	is := &Issuer{tb: tb, now: o.now, algs: o.algs, nextRSA: 2, nextOther: 1}
	rsaKey := &Key{ID: KeyIDRSA, Algorithm: "RS256", Private: newRSAKey(tb)}
	ecKey := &Key{ID: KeyIDEC, Algorithm: "ES256", Private: newECKey(tb, elliptic.P256())}
	is.keys = []*Key{rsaKey, ecKey}
	is.signing = rsaKey

	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", is.serveDiscovery)
	mux.HandleFunc("GET /jwks", is.serveJWKS)
	is.srv = httptest.NewServer(mux)
	tb.Cleanup(is.srv.Close)
	return is
}

// URL is the issuer identifier: the server's base URL, without a trailing slash.
func (is *Issuer) URL() string { return is.srv.URL }

// JWKSURL is the jwks_uri the discovery document announces.
func (is *Issuer) JWKSURL() string { return is.srv.URL + "/jwks" }

// JWKSFetches counts the requests the JWKS endpoint received, failed ones included.
func (is *Issuer) JWKSFetches() int { return int(is.jwksFetches.Load()) }

// DiscoveryFetches counts the requests the discovery endpoint received.
func (is *Issuer) DiscoveryFetches() int { return int(is.discoveryFetches.Load()) }

// Close stops the server now, e.g. to test an unreachable JWKS. It is also
// called when the test ends; calling it twice is fine.
func (is *Issuer) Close() { is.srv.Close() }

// SigningKey is the RSA key Mint uses by default.
func (is *Issuer) SigningKey() *Key {
	is.mu.Lock()
	defer is.mu.Unlock()
	return is.signing
}

// Key returns the published key with this id, or nil.
func (is *Issuer) Key(kid string) *Key {
	is.mu.Lock()
	defer is.mu.Unlock()
	for _, k := range is.keys {
		if k.ID == kid {
			return k
		}
	}
	return nil
}

// PublicKeys returns the published public keys, e.g. for an oidc.StaticKeySet.
func (is *Issuer) PublicKeys() []crypto.PublicKey {
	is.mu.Lock()
	defer is.mu.Unlock()
	out := make([]crypto.PublicKey, 0, len(is.keys))
	for _, k := range is.keys {
		out = append(out, k.Public())
	}
	return out
}

// Rotate creates a new RSA key with a new kid ("rsa-2", "rsa-3", …),
// publishes it and makes it the signing key. The previous keys stay
// published until RemoveKey.
func (is *Issuer) Rotate() *Key {
	is.tb.Helper()
	priv := newRSAKey(is.tb)
	is.mu.Lock()
	defer is.mu.Unlock()
	k := &Key{ID: fmt.Sprintf("rsa-%d", is.nextRSA), Algorithm: "RS256", Private: priv}
	is.nextRSA++
	is.keys = append(is.keys, k)
	is.signing = k
	return k
}

// AddKey creates and publishes a key for alg (RS*, PS*, ES256, ES384,
// ES512 or EdDSA) with kid "<alg>-<n>", without making it the default
// signing key. Mint picks it for alg when no other published key fits.
func (is *Issuer) AddKey(alg string) *Key {
	is.tb.Helper()
	priv := newKey(is.tb, alg)
	is.mu.Lock()
	defer is.mu.Unlock()
	k := &Key{ID: fmt.Sprintf("%s-%d", strings.ToLower(alg), is.nextOther), Algorithm: alg, Private: priv}
	is.nextOther++
	is.keys = append(is.keys, k)
	return k
}

// RemoveKey unpublishes the key with this id. Tokens can still be minted
// with it through WithKey.
func (is *Issuer) RemoveKey(kid string) {
	is.mu.Lock()
	defer is.mu.Unlock()
	kept := is.keys[:0:0]
	for _, k := range is.keys {
		if k.ID != kid {
			kept = append(kept, k)
		}
	}
	is.keys = kept
}

// SetJWKSResponse makes the JWKS endpoint answer status and body instead of
// the key set (a 500, a 200 with an oversized body, …). ResetJWKS undoes it.
func (is *Issuer) SetJWKSResponse(status int, body []byte) {
	is.mu.Lock()
	defer is.mu.Unlock()
	is.override = &cannedResponse{status: status, body: body}
}

// SetJWKSDelay makes the JWKS endpoint wait d (or until the client gives
// up) before answering. Zero removes the delay.
func (is *Issuer) SetJWKSDelay(d time.Duration) {
	is.mu.Lock()
	defer is.mu.Unlock()
	is.jwksDelay = d
}

// ResetJWKS makes the JWKS endpoint serve the key set again, without delay
// or hold (a hold in place is released).
func (is *Issuer) ResetJWKS() {
	is.mu.Lock()
	defer is.mu.Unlock()
	is.override = nil
	is.jwksDelay = 0
	if is.hold != nil {
		is.hold.Release()
		is.hold = nil
	}
}

// HoldJWKS stalls the JWKS endpoint until the returned hold is released: a
// test can then tell when a fetch is under way (Arrived), without sleeping.
func (is *Issuer) HoldJWKS() *JWKSHold {
	h := &JWKSHold{arrived: make(chan struct{}), released: make(chan struct{})}
	is.tb.Cleanup(h.Release)
	is.mu.Lock()
	defer is.mu.Unlock()
	is.hold = h
	return h
}

// SetJWKSCacheControl sets the Cache-Control header of JWKS responses
// (e.g. "public, max-age=60"); "" removes it.
func (is *Issuer) SetJWKSCacheControl(v string) {
	is.mu.Lock()
	defer is.mu.Unlock()
	is.cacheCtl = v
}

// SetDiscoveryResponse makes the discovery endpoint answer status and body
// instead of the discovery document (an outage at startup, …);
// ResetDiscovery undoes it.
func (is *Issuer) SetDiscoveryResponse(status int, body []byte) {
	is.mu.Lock()
	defer is.mu.Unlock()
	is.discovery = &cannedResponse{status: status, body: body}
}

// ResetDiscovery makes the discovery endpoint serve the document again.
func (is *Issuer) ResetDiscovery() {
	is.mu.Lock()
	defer is.mu.Unlock()
	is.discovery = nil
}

// JWKSNotModified counts the JWKS requests answered 304 Not Modified: the
// endpoint sends a strong ETag and honours If-None-Match.
func (is *Issuer) JWKSNotModified() int { return int(is.jwksNotModified.Load()) }

// AddRSAKey creates and publishes an RS256 key with a modulus of bits bits
// (at least 1024; e.g. 1024 for a key a verifier must refuse) and kid
// "rsa<bits>-<n>", without making it the default signing key.
func (is *Issuer) AddRSAKey(bits int) *Key {
	is.tb.Helper()
	priv, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		is.tb.Fatalf("authntest: generating a %d-bit RSA key: %v", bits, err)
	}
	is.mu.Lock()
	defer is.mu.Unlock()
	k := &Key{ID: fmt.Sprintf("rsa%d-%d", bits, is.nextOther), Algorithm: "RS256", Private: priv}
	is.nextOther++
	is.keys = append(is.keys, k)
	return k
}

func (is *Issuer) serveDiscovery(w http.ResponseWriter, _ *http.Request) {
	is.discoveryFetches.Add(1)
	is.mu.Lock()
	canned := is.discovery
	is.mu.Unlock()
	if canned != nil {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(canned.status)
		_, _ = w.Write(canned.body)
		return
	}
	doc := map[string]any{
		"issuer":                                is.srv.URL,
		"jwks_uri":                              is.JWKSURL(),
		"authorization_endpoint":                is.srv.URL + "/authorize",
		"token_endpoint":                        is.srv.URL + "/token",
		"response_types_supported":              []string{"code"},
		"subject_types_supported":               []string{"public"},
		"id_token_signing_alg_values_supported": is.algs,
	}
	writeJSON(w, doc)
}

func (is *Issuer) serveJWKS(w http.ResponseWriter, r *http.Request) {
	is.jwksFetches.Add(1)
	is.mu.Lock()
	delay, override, cacheCtl, hold := is.jwksDelay, is.override, is.cacheCtl, is.hold
	set := jose.JSONWebKeySet{Keys: make([]jose.JSONWebKey, 0, len(is.keys))}
	for _, k := range is.keys {
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: k.Public(), KeyID: k.ID, Algorithm: k.Algorithm, Use: "sig"})
	}
	is.mu.Unlock()

	if hold != nil {
		hold.arrivedOnce.Do(func() { close(hold.arrived) })
		select {
		case <-hold.released:
		case <-r.Context().Done():
			return
		}
	}
	if delay > 0 {
		t := time.NewTimer(delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.Context().Done():
			return
		}
	}
	if cacheCtl != "" {
		w.Header().Set("Cache-Control", cacheCtl)
	}
	if override != nil {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(override.status)
		_, _ = w.Write(override.body)
		return
	}
	b, err := json.Marshal(set)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	sum := sha256.Sum256(b)
	etag := `"` + hex.EncodeToString(sum[:16]) + `"`
	w.Header().Set("ETag", etag)
	if r.Header.Get("If-None-Match") == etag {
		is.jwksNotModified.Add(1)
		w.WriteHeader(http.StatusNotModified)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b)
}

func writeJSON(w http.ResponseWriter, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b)
}

// newKey creates a private key for alg.
func newKey(tb testing.TB, alg string) crypto.Signer {
	tb.Helper()
	switch {
	case strings.HasPrefix(alg, "RS"), strings.HasPrefix(alg, "PS"):
		return newRSAKey(tb)
	case alg == "ES256":
		return newECKey(tb, elliptic.P256())
	case alg == "ES384":
		return newECKey(tb, elliptic.P384())
	case alg == "ES512":
		return newECKey(tb, elliptic.P521())
	case alg == "EdDSA":
		_, p, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			tb.Fatalf("authntest: generating Ed25519 key: %v", err)
		}
		return p
	}
	tb.Fatalf("authntest: no asymmetric key type for alg %q", alg)
	return nil
}

func newRSAKey(tb testing.TB) *rsa.PrivateKey {
	tb.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		tb.Fatalf("authntest: generating RSA key: %v", err)
	}
	return k
}

func newECKey(tb testing.TB, c elliptic.Curve) *ecdsa.PrivateKey {
	tb.Helper()
	k, err := ecdsa.GenerateKey(c, rand.Reader)
	if err != nil {
		tb.Fatalf("authntest: generating EC key: %v", err)
	}
	return k
}
