package oidcjwt

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"slices"
	"strings"

	"github.com/go-json-experiment/json/jsontext"

	"github.com/tollgate/tollgate/pdp/authn"
)

// unverified is what the cheap checks learn from a token before any
// signature is checked: iss (to pick the issuer), alg (against the
// allow-list), and typ and the claims (used once the signature, which
// covers header and payload, holds).
type unverified struct {
	alg    string
	kid    string
	typ    string
	hasTyp bool
	iss    string
	hasIss bool
	// payload is the payload segment, strictly decoded, and claims its
	// one JSON decode (numbers as json.Number). Once the signature, which
	// covers the segment, holds, both are verified.
	payload []byte
	claims  map[string]any
}

// isRegisteredVariant reports whether key is a case variant ("AUD", "Exp")
// of a registered claim but not the claim itself. Such members are refused:
// encoding/json matches struct fields case-insensitively, so a variant could
// stand in for the real claim in one parser and not in another.
func isRegisteredVariant(key string) bool {
	if len(key) < 3 || len(key) > 6 { // "ſub" is 4 bytes; keep the loop off long names
		return false
	}
	for _, rc := range [...]string{"iss", "sub", "aud", "exp", "nbf", "iat", "jti"} {
		if key != rc && strings.EqualFold(key, rc) {
			return true
		}
	}
	return false
}

// strictB64 decodes unpadded base64url and refuses non-canonical encodings.
var strictB64 = base64.RawURLEncoding.Strict()

// precheck runs the checks that need no key, cheapest first. It returns a
// rejection reason, or "" when the token may go on to verification.
func precheck(raw string, maxBytes int) (unverified, string) {
	var u unverified
	if raw == "" {
		return u, authn.ReasonMalformed
	}
	if len(raw) > maxBytes {
		return u, authn.ReasonTooLarge
	}
	// Compact serialization only: exactly three base64url parts (no padding,
	// no whitespace). go-oidc would also take the JWS JSON serialization and
	// strip whitespace.
	dots := 0
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		switch {
		case c == '.':
			dots++
		case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '_':
		default:
			return u, authn.ReasonMalformed
		}
	}
	if dots != 2 {
		return u, authn.ReasonMalformed
	}
	h, rest, _ := strings.Cut(raw, ".")
	p, s, _ := strings.Cut(rest, ".")
	if h == "" || p == "" {
		return u, authn.ReasonMalformed
	}
	// Every part must be canonical base64url: the unused low bits of the
	// last character zero, so that one token has one spelling. go-jose,
	// which decodes the signature again, would accept any value there.
	header, err := strictB64.DecodeString(h)
	if err != nil {
		return u, authn.ReasonMalformed
	}
	payload, err := strictB64.DecodeString(p)
	if err != nil {
		return u, authn.ReasonMalformed
	}
	if _, err := strictB64.DecodeString(s); err != nil {
		return u, authn.ReasonMalformed
	}
	// (An empty signature is refused by go-jose, or earlier for "none" by
	// the algorithm check. A high-S ECDSA signature verifies, as RFC 7518
	// allows and as half of all ECDSA signers produce; the credential's
	// fingerprint and digest are computed over the low-S form, so both
	// spellings are one token there.)

	if reason := readHeader(header, &u); reason != "" {
		return u, reason
	}
	if u.alg == "" {
		return u, authn.ReasonMalformed
	}
	if !isSupportedAlg(u.alg) { // "none", HS*, anything unknown
		return u, authn.ReasonAlgorithm
	}
	if reason := readPayload(payload, &u); reason != "" {
		return u, reason
	}
	u.payload = payload
	return u, ""
}

// readHeader reads the JOSE header: a JSON object without duplicate
// members, whose alg, kid and typ are strings. Tokens with crit or b64 are
// refused: a JWT needs neither, and b64=false changes what is signed.
func readHeader(b []byte, u *unverified) string {
	dec := newJSONDecoder(b)
	if t, err := dec.ReadToken(); err != nil || t.Kind() != '{' {
		return authn.ReasonMalformed
	}
	var seen [8]string // headers are small: an array beats a map
	names := seen[:0]
	for dec.PeekKind() != '}' {
		t, err := dec.ReadToken()
		if err != nil {
			return authn.ReasonMalformed
		}
		key := t.String()
		if slices.Contains(names, key) {
			return authn.ReasonMalformed
		}
		names = append(names, key)
		switch key {
		case "alg":
			err = readString(dec, &u.alg)
		case "kid":
			err = readString(dec, &u.kid)
		case "typ":
			u.hasTyp = true
			err = readString(dec, &u.typ)
		case "crit", "b64":
			return authn.ReasonMalformed
		default:
			err = dec.SkipValue()
		}
		if err != nil {
			return authn.ReasonMalformed
		}
	}
	if !endOfObject(dec) {
		return authn.ReasonMalformed
	}
	return ""
}

// readPayload decodes the claims set, the one decode of the payload: a JSON
// object whose members are unique and whose registered claims have no case
// variants. It sets u.claims, and u.iss when there is one (a string). Member
// names are compared after unescaping, so "\u0061ud" is "aud". Duplicates
// inside nested objects are not refused: the last one counts, as with
// encoding/json.
func readPayload(b []byte, u *unverified) string {
	dec := newJSONDecoder(b)
	if t, err := dec.ReadToken(); err != nil || t.Kind() != '{' {
		return authn.ReasonMalformed
	}
	claims := make(map[string]any, 16)
	for dec.PeekKind() != '}' {
		t, err := dec.ReadToken()
		if err != nil {
			return authn.ReasonMalformed
		}
		key := t.String()
		if _, dup := claims[key]; dup || isRegisteredVariant(key) {
			return authn.ReasonDuplicateClaim
		}
		v, err := readValue(dec)
		if err != nil {
			return authn.ReasonMalformed
		}
		if key == "iss" {
			s, ok := v.(string)
			if !ok {
				return authn.ReasonMalformed
			}
			u.iss, u.hasIss = s, true
		}
		claims[key] = v
	}
	if !endOfObject(dec) {
		return authn.ReasonMalformed
	}
	u.claims = claims
	return ""
}

// decodeClaims decodes a claims set that needs no precheck (tests, and
// payloads verified elsewhere): readPayload's rules, numbers as json.Number.
func decodeClaims(payload []byte) (map[string]any, bool) {
	var u unverified
	if readPayload(payload, &u) != "" {
		return nil, false
	}
	return u.claims, true
}

// newJSONDecoder reads b as JSON the way encoding/json did before: names
// may repeat (readHeader and readPayload refuse repeats at the top level
// themselves) and invalid UTF-8 becomes U+FFFD.
func newJSONDecoder(b []byte) *jsontext.Decoder {
	return jsontext.NewDecoder(bytes.NewReader(b),
		jsontext.AllowDuplicateNames(true), jsontext.AllowInvalidUTF8(true))
}

// readValue reads the next JSON value as encoding/json with UseNumber
// would: objects as map[string]any (the last of repeated names wins),
// arrays as []any, numbers as json.Number, strings, bools and nil.
// jsontext bounds the nesting depth.
func readValue(dec *jsontext.Decoder) (any, error) {
	t, err := dec.ReadToken()
	if err != nil {
		return nil, err
	}
	switch t.Kind() {
	case '"':
		return t.String(), nil
	case '0':
		return json.Number(t.String()), nil
	case 't':
		return true, nil
	case 'f':
		return false, nil
	case 'n':
		return nil, nil
	case '[':
		list := []any{}
		for dec.PeekKind() != ']' {
			v, err := readValue(dec)
			if err != nil {
				return nil, err
			}
			list = append(list, v)
		}
		_, err := dec.ReadToken()
		return list, err
	case '{':
		obj := map[string]any{}
		for dec.PeekKind() != '}' {
			k, err := dec.ReadToken()
			if err != nil {
				return nil, err
			}
			name := k.String() // before the next read voids k
			v, err := readValue(dec)
			if err != nil {
				return nil, err
			}
			obj[name] = v
		}
		_, err := dec.ReadToken()
		return obj, err
	}
	return nil, errors.New("unexpected JSON token")
}

// readString reads the next value, which must be a JSON string.
func readString(dec *jsontext.Decoder, dst *string) error {
	t, err := dec.ReadToken()
	if err != nil {
		return err
	}
	if t.Kind() != '"' {
		return errors.New("not a string")
	}
	*dst = t.String()
	return nil
}

// endOfObject reads the closing brace of the top-level object and reports
// whether nothing but whitespace follows it.
func endOfObject(dec *jsontext.Decoder) bool {
	if _, err := dec.ReadToken(); err != nil {
		return false
	}
	_, err := dec.ReadToken()
	return err == io.EOF
}

// typeMatches compares a typ header with the required type, ignoring case
// and an "application/" prefix on either side (RFC 7515 section 4.1.9).
func typeMatches(got, want string) bool {
	return strings.EqualFold(trimApplication(got), trimApplication(want))
}

func trimApplication(s string) string {
	const prefix = "application/"
	if len(s) > len(prefix) && strings.EqualFold(s[:len(prefix)], prefix) {
		return s[len(prefix):]
	}
	return s
}
