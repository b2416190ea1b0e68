package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// The development issuer: a signing key kept in a local file, shared by
// `tollgate serve --dev` (which trusts its public key) and `tollgate token`
// (which signs with it). It exists for trying Tollgate out; production
// configurations name real OIDC issuers instead.
const (
	devIssuer   = "https://dev.tollgate.invalid/"
	devAudience = "orders-api"
	devKeyEnv   = "TOLLGATE_DEV_KEY"
)

// devKeyPath is where the development key lives: $TOLLGATE_DEV_KEY, else
// tollgate/dev-issuer-key.pem under the user's config directory, else under
// the temporary directory.
func devKeyPath() string {
	if p := os.Getenv(devKeyEnv); p != "" {
		return p
	}
	dir, err := os.UserConfigDir()
	if err != nil {
		dir = os.TempDir()
	}
	return filepath.Join(dir, "tollgate", "dev-issuer-key.pem")
}

// devKey is the development issuer's ES256 key and its key id.
type devKey struct {
	key *ecdsa.PrivateKey
	kid string
}

// loadOrCreateDevKey reads the development key, creating it (mode 0600)
// when the file does not exist.
func loadOrCreateDevKey(path string) (*devKey, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return createDevKey(path)
	}
	if err != nil {
		return nil, fmt.Errorf("read dev issuer key: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("dev issuer key %s: not PEM", path)
	}
	k, err := x509.ParseECPrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("dev issuer key %s: %w", path, err)
	}
	return newDevKey(k)
}

func createDevKey(path string) (*devKey, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate dev issuer key: %w", err)
	}
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("encode dev issuer key: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create dev issuer key: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return loadOrCreateDevKey(path) // created concurrently
	}
	if err != nil {
		return nil, fmt.Errorf("create dev issuer key: %w", err)
	}
	if err := pem.Encode(f, &pem.Block{Type: "EC PRIVATE KEY", Bytes: der}); err != nil {
		f.Close()
		return nil, fmt.Errorf("write dev issuer key: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("write dev issuer key: %w", err)
	}
	return newDevKey(k)
}

func newDevKey(k *ecdsa.PrivateKey) (*devKey, error) {
	jwk := jose.JSONWebKey{Key: k.Public()}
	tp, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("dev issuer key thumbprint: %w", err)
	}
	return &devKey{key: k, kid: base64.RawURLEncoding.EncodeToString(tp)[:16]}, nil
}

// mint signs a token for the development issuer.
func (d *devKey) mint(sub string, aud []string, ttl time.Duration, extra map[string]any, now time.Time) (string, error) {
	signer, err := jose.NewSigner(
		jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: d.key, KeyID: d.kid}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return "", fmt.Errorf("token signer: %w", err)
	}
	std := jwt.Claims{
		Issuer:    devIssuer,
		Subject:   sub,
		Audience:  jwt.Audience(aud),
		IssuedAt:  jwt.NewNumericDate(now),
		NotBefore: jwt.NewNumericDate(now),
		Expiry:    jwt.NewNumericDate(now.Add(ttl)),
	}
	tok, err := jwt.Signed(signer).Claims(std).Claims(extra).Serialize()
	if err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	return tok, nil
}
