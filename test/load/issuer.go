package main

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// audience is the audience of every token, the one Tollgate and the OPA
// peer are configured with.
const audience = "orders-api"

// issuer is a real OpenID Connect issuer served over HTTP on loopback:
// discovery document and JWKS with one RS256 key. (pdp/authn/authntest has
// the same for tests, but needs a testing.TB; the harness is a program.)
type issuer struct {
	url    string
	key    *rsa.PrivateKey
	kid    string
	jwks   []byte
	signer jose.Signer
	srv    *http.Server
}

func newIssuer() (*issuer, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("issuer key: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("issuer listener: %w", err)
	}
	is := &issuer{url: "http://" + ln.Addr().String(), key: key, kid: "load-rsa-1"}
	is.jwks, err = json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{
		{Key: key.Public(), KeyID: is.kid, Algorithm: "RS256", Use: "sig"},
	}})
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("jwks: %w", err)
	}
	is.signer, err = jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: key},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", is.kid))
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("signer: %w", err)
	}
	discovery, err := json.Marshal(map[string]any{
		"issuer":                                is.url,
		"jwks_uri":                              is.url + "/jwks",
		"authorization_endpoint":                is.url + "/authorize",
		"token_endpoint":                        is.url + "/token",
		"response_types_supported":              []string{"code"},
		"subject_types_supported":               []string{"public"},
		"id_token_signing_alg_values_supported": []string{"RS256"},
	})
	if err != nil {
		ln.Close()
		return nil, err
	}
	mux := http.NewServeMux()
	serve := func(body []byte) http.HandlerFunc {
		return func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(body)
		}
	}
	mux.Handle("GET /.well-known/openid-configuration", serve(discovery))
	mux.Handle("GET /jwks", serve(is.jwks))
	is.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := is.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fmt.Fprintln(os.Stderr, "issuer:", err)
		}
	}()
	return is, nil
}

func (is *issuer) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = is.srv.Shutdown(ctx)
}

// mint signs a token for a user that lives for ttl.
func (is *issuer) mint(subject, customer string, ttl time.Duration) (string, error) {
	now := time.Now()
	payload, err := json.Marshal(map[string]any{
		"iss":             is.url,
		"aud":             audience,
		"sub":             subject,
		"iat":             now.Unix(),
		"nbf":             now.Unix(),
		"exp":             now.Add(ttl).Unix(),
		"customer_number": customer,
		"scope":           "customers:read products:read",
	})
	if err != nil {
		return "", err
	}
	jws, err := is.signer.Sign(payload)
	if err != nil {
		return "", fmt.Errorf("sign: %w", err)
	}
	return jws.CompactSerialize()
}

// users mints n users with distinct subjects and customer numbers.
func (is *issuer) users(n int, ttl time.Duration) ([]user, error) {
	out := make([]user, n)
	for i := range out {
		u := &out[i]
		u.subject = "user-" + strconv.Itoa(i)
		u.customer = strconv.Itoa(100_000 + i)
		var err error
		if u.token, err = is.mint(u.subject, u.customer, ttl); err != nil {
			return nil, err
		}
		if err := checkJSONSafe("a token", u.token); err != nil {
			return nil, err
		}
	}
	return out, nil
}
