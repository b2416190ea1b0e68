package bundles

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/keys"
)

// Verification returns the verification config for one public key (or HMAC
// secret): the bundle must carry a signature by keyID (DefaultKeyID when
// empty) with alg (DefaultSigningAlgorithm when empty), and the given scope
// when not empty. key is a PEM public key, a secret, or a file holding one.
func Verification(key, alg, keyID, scope string) (*bundle.VerificationConfig, error) {
	if alg == "" {
		alg = DefaultSigningAlgorithm
	}
	if keyID == "" {
		keyID = DefaultKeyID
	}
	if !keys.IsSupportedAlgorithm(alg) {
		return nil, fmt.Errorf("unsupported signing algorithm %q", alg)
	}
	kc, err := keys.NewKeyConfig(key, alg, scope)
	if err != nil {
		return nil, fmt.Errorf("verification key: %w", err)
	}
	return bundle.NewVerificationConfig(map[string]*bundle.KeyConfig{keyID: kc}, keyID, scope, nil), nil
}

// Info describes a bundle tarball, for `tollgate bundle inspect`.
type Info struct {
	Revision   string      `json:"revision"`
	Digest     string      `json:"digest"`
	Size       int         `json:"size"`
	Roots      []string    `json:"roots"`
	Modules    []string    `json:"modules"`
	DataRoots  []string    `json:"data"`
	Signatures []Signature `json:"signatures"`
}

// Signature is what a bundle's signature says about itself, NOT verified:
// use `tollgate bundle verify` for that.
type Signature struct {
	Algorithm string `json:"algorithm"`
	KeyID     string `json:"keyid"`
	Scope     string `json:"scope,omitempty"`
	Files     int    `json:"files"`
}

// Inspect describes b, read from data, without verifying its signature.
func Inspect(b *bundle.Bundle, data []byte) Info {
	info := Info{
		Revision: b.Manifest.Revision, Digest: Digest(data), Size: len(data),
		Modules: []string{}, DataRoots: []string{}, Signatures: []Signature{},
	}
	if b.Manifest.Roots != nil {
		info.Roots = slices.Clone(*b.Manifest.Roots)
	}
	for _, m := range b.Modules {
		info.Modules = append(info.Modules, strings.TrimPrefix(m.Path, "/"))
	}
	for k := range b.Data {
		info.DataRoots = append(info.DataRoots, k)
	}
	slices.Sort(info.Modules)
	slices.Sort(info.DataRoots)
	for _, tok := range signatureTokens(data) {
		info.Signatures = append(info.Signatures, describeToken(tok))
	}
	return info
}

// signatureTokens returns the JWTs in a bundle tarball's .signatures.json.
func signatureTokens(data []byte) []string {
	loader := bundle.NewTarballLoader(bytes.NewReader(data)).WithSizeLimitBytes(DefaultMaxBundleBytes)
	for {
		f, err := loader.NextFile()
		if err != nil {
			return nil
		}
		if !bundle.IsSignaturesFile(f.Path()) {
			continue
		}
		var sc bundle.SignaturesConfig
		var raw bytes.Buffer
		if _, err := f.Read(&raw, DefaultMaxBundleBytes); (err != nil && !errors.Is(err, io.EOF)) || json.Unmarshal(raw.Bytes(), &sc) != nil {
			return nil
		}
		return sc.Signatures
	}
}

// describeToken reads a signature JWT's header and claims without
// verifying it.
func describeToken(tok string) Signature {
	var s Signature
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return s
	}
	var hdr struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
	}
	if b, err := base64.RawURLEncoding.DecodeString(parts[0]); err == nil {
		_ = json.Unmarshal(b, &hdr)
	}
	var claims struct {
		Files []json.RawMessage `json:"files"`
		KeyID string            `json:"keyid"`
		Scope string            `json:"scope"`
	}
	if b, err := base64.RawURLEncoding.DecodeString(parts[1]); err == nil {
		_ = json.Unmarshal(b, &claims)
	}
	s.Algorithm, s.KeyID, s.Scope, s.Files = hdr.Alg, hdr.Kid, claims.Scope, len(claims.Files)
	if s.KeyID == "" {
		s.KeyID = claims.KeyID
	}
	return s
}
