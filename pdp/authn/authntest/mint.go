package authntest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// MintOption changes how Mint signs a token.
type MintOption func(*mintOptions)

type mintOptions struct {
	alg     string
	key     *Key
	kid     *string // nil: the signing key's id; "": no kid header
	headers map[string]any
}

// WithAlg signs with alg (default RS256, or the WithKey key's algorithm).
// Without WithKey, the key is the signing key if made for alg, else the
// first published key made for alg ("ec-1" for ES256, AddKey's keys), else
// for RS*/PS* the RSA signing key (whose JWK says RS256), else an
// unpublished key (call AddKey first for a token that should verify).
func WithAlg(alg string) MintOption { return func(o *mintOptions) { o.alg = alg } }

// WithKey signs with k (published or not).
func WithKey(k *Key) MintOption { return func(o *mintOptions) { o.key = k } }

// WithKid sets the kid header to kid, whatever key signs.
func WithKid(kid string) MintOption { return func(o *mintOptions) { o.kid = &kid } }

// WithoutKid leaves out the kid header.
func WithoutKid() MintOption { return WithKid("") }

// WithType sets the typ header, e.g. "at+jwt".
func WithType(typ string) MintOption { return WithHeader("typ", typ) }

// WithHeader adds a protected header parameter.
func WithHeader(name string, v any) MintOption {
	return func(o *mintOptions) {
		if o.headers == nil {
			o.headers = map[string]any{}
		}
		o.headers[name] = v
	}
}

// Claims returns sane claims for sub: iss is the issuer's URL, aud
// "orders-api", iat and nbf now, exp ten minutes from now (Unix seconds).
func (is *Issuer) Claims(sub string) map[string]any {
	now := is.now()
	return map[string]any{
		"iss": is.URL(),
		"aud": Audience,
		"sub": sub,
		"iat": now.Unix(),
		"nbf": now.Unix(),
		"exp": now.Add(10 * time.Minute).Unix(),
	}
}

// Mint signs claims as a compact JWS (a JWT).
func (is *Issuer) Mint(claims map[string]any, opts ...MintOption) string {
	is.tb.Helper()
	return is.MintRaw(is.marshal(claims), opts...)
}

// MintRaw signs payload as it is, so a test can send JSON that a map cannot
// hold, e.g. duplicate keys.
func (is *Issuer) MintRaw(payload []byte, opts ...MintOption) string {
	is.tb.Helper()
	jws := is.sign(payload, opts)
	tok, err := jws.CompactSerialize()
	if err != nil {
		is.tb.Fatalf("authntest: serializing token: %v", err)
	}
	return tok
}

// MintJSON signs claims like Mint but returns the JWS JSON serialization
// (flattened), which a JWT bearer verifier must refuse.
func (is *Issuer) MintJSON(claims map[string]any, opts ...MintOption) string {
	is.tb.Helper()
	return is.sign(is.marshal(claims), opts).FullSerialize()
}

// MintUnknownKey signs claims with a key the JWKS never publishes. Its kid
// is "unknown-1" unless WithKid sets another.
func (is *Issuer) MintUnknownKey(claims map[string]any, opts ...MintOption) string {
	is.tb.Helper()
	is.mu.Lock()
	k := is.stranger
	is.mu.Unlock()
	if k == nil {
		k = &Key{ID: "unknown-1", Algorithm: "RS256", Private: newRSAKey(is.tb)}
		is.mu.Lock()
		if is.stranger == nil {
			is.stranger = k
		}
		k = is.stranger
		is.mu.Unlock()
	}
	return is.Mint(claims, append([]MintOption{WithKey(k)}, opts...)...)
}

// ForgeNone returns an unsigned token: header {"alg":"none","typ":"JWT"},
// the claims, and an empty signature.
func (is *Issuer) ForgeNone(claims map[string]any) string {
	is.tb.Helper()
	h := is.marshal(map[string]any{"alg": "none", "typ": "JWT"})
	return b64(h) + "." + b64(is.marshal(claims)) + "."
}

// ForgeHMAC signs claims with an HMAC alg (HS256, HS384, HS512) and secret,
// with the signing key's kid: the algorithm-confusion attack, when secret
// is the issuer's public key.
func (is *Issuer) ForgeHMAC(claims map[string]any, alg string, secret []byte) string {
	is.tb.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.SignatureAlgorithm(alg), Key: secret},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", is.SigningKey().ID))
	if err != nil {
		is.tb.Fatalf("authntest: HMAC signer: %v", err)
	}
	jws, err := signer.Sign(is.marshal(claims))
	if err != nil {
		is.tb.Fatalf("authntest: HMAC signing: %v", err)
	}
	tok, err := jws.CompactSerialize()
	if err != nil {
		is.tb.Fatalf("authntest: serializing token: %v", err)
	}
	return tok
}

// ForgeHS256PEM signs claims with HS256 using the RSA signing key's public
// key, PEM encoded (PKIX "PUBLIC KEY"), as the HMAC secret.
func (is *Issuer) ForgeHS256PEM(claims map[string]any) string {
	is.tb.Helper()
	der := is.publicDER()
	return is.ForgeHMAC(claims, "HS256", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

// ForgeHS256DER signs claims with HS256 using the RSA signing key's public
// key, DER encoded (PKIX), as the HMAC secret.
func (is *Issuer) ForgeHS256DER(claims map[string]any) string {
	is.tb.Helper()
	return is.ForgeHMAC(claims, "HS256", is.publicDER())
}

func (is *Issuer) publicDER() []byte {
	is.tb.Helper()
	der, err := x509.MarshalPKIXPublicKey(is.SigningKey().Public())
	if err != nil {
		is.tb.Fatalf("authntest: encoding public key: %v", err)
	}
	return der
}

// Tamper decodes a compact token's payload, lets mutate change the claims,
// and re-encodes the payload while keeping the header and the original
// signature. Numbers survive as json.Number. It panics on a token that is not
// three dot-separated parts with a JSON object payload.
func Tamper(token string, mutate func(claims map[string]any)) string {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		panic("authntest: Tamper: not a compact JWS")
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		panic("authntest: Tamper: payload: " + err.Error())
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var claims map[string]any
	if err := dec.Decode(&claims); err != nil {
		panic("authntest: Tamper: payload: " + err.Error())
	}
	mutate(claims)
	b, err := json.Marshal(claims)
	if err != nil {
		panic("authntest: Tamper: " + err.Error())
	}
	return parts[0] + "." + b64(b) + "." + parts[2]
}

func (is *Issuer) sign(payload []byte, opt []MintOption) *jose.JSONWebSignature {
	is.tb.Helper()
	var o mintOptions
	for _, f := range opt {
		f(&o)
	}
	key := o.key
	alg := o.alg
	if alg == "" {
		alg = "RS256"
		if key != nil {
			alg = key.Algorithm
		}
	}
	if key == nil {
		key = is.keyFor(alg)
	}
	kid := key.ID
	if o.kid != nil {
		kid = *o.kid
	}
	so := &jose.SignerOptions{}
	if kid != "" {
		so.WithHeader("kid", kid)
	}
	for name, v := range o.headers {
		so.WithHeader(jose.HeaderKey(name), v)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.SignatureAlgorithm(alg), Key: key.Private}, so)
	if err != nil {
		is.tb.Fatalf("authntest: signer for %s with key %q: %v", alg, key.ID, err)
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		is.tb.Fatalf("authntest: signing: %v", err)
	}
	return jws
}

// keyFor picks the key Mint uses for alg: the signing key if it is made for
// alg, else the first published key made for alg, else (RS*, PS*) the
// signing key, else the first published key of the right type, else a fresh
// key that is never published (kid "unpublished-<alg>"), so that the token
// can still be sent, e.g. to test an allow-list.
func (is *Issuer) keyFor(alg string) *Key {
	is.tb.Helper()
	if k := is.existingKeyFor(alg); k != nil {
		return k
	}
	priv := newKey(is.tb, alg)
	is.mu.Lock()
	defer is.mu.Unlock()
	if is.unpublished[alg] == nil {
		if is.unpublished == nil {
			is.unpublished = map[string]*Key{}
		}
		is.unpublished[alg] = &Key{ID: "unpublished-" + alg, Algorithm: alg, Private: priv}
	}
	return is.unpublished[alg]
}

func (is *Issuer) existingKeyFor(alg string) *Key {
	is.mu.Lock()
	defer is.mu.Unlock()
	if is.signing.Algorithm == alg {
		return is.signing
	}
	for _, k := range is.keys {
		if k.Algorithm == alg {
			return k
		}
	}
	if strings.HasPrefix(alg, "RS") || strings.HasPrefix(alg, "PS") {
		return is.signing
	}
	for _, k := range is.keys {
		if fits(k, alg) {
			return k
		}
	}
	return is.unpublished[alg]
}

func fits(k *Key, alg string) bool {
	switch p := k.Private.(type) {
	case *ecdsa.PrivateKey:
		return (alg == "ES256" && p.Curve == elliptic.P256()) ||
			(alg == "ES384" && p.Curve == elliptic.P384()) ||
			(alg == "ES512" && p.Curve == elliptic.P521())
	case ed25519.PrivateKey:
		return alg == "EdDSA"
	case *rsa.PrivateKey:
		return strings.HasPrefix(alg, "RS") || strings.HasPrefix(alg, "PS")
	}
	return false
}

func (is *Issuer) marshal(v any) []byte {
	is.tb.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		is.tb.Fatalf("authntest: encoding JSON: %v", err)
	}
	return b
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
