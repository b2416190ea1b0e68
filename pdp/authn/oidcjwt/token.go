package oidcjwt

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"strings"

	"github.com/tollgate/tollgate/pdp/authn"
)

// unverified is what the cheap checks learn from a token before any
// signature is checked. Only iss (to pick the issuer), alg (against the
// allow-list) and typ (compared once the signature holds, which covers the
// header) are used.
type unverified struct {
	alg    string
	kid    string
	typ    string
	hasTyp bool
	iss    string
	hasIss bool
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
	return u, ""
}

// readHeader reads the JOSE header: a JSON object without duplicate
// members, whose alg, kid and typ are strings. Tokens with crit or b64 are
// refused: a JWT needs neither, and b64=false changes what is signed.
func readHeader(b []byte, u *unverified) string {
	err := scanObject(b, func(key string, dec *json.Decoder) (string, error) {
		switch key {
		case "alg":
			return authn.ReasonMalformed, decodeString(dec, &u.alg)
		case "kid":
			return authn.ReasonMalformed, decodeString(dec, &u.kid)
		case "typ":
			u.hasTyp = true
			return authn.ReasonMalformed, decodeString(dec, &u.typ)
		case "crit", "b64":
			return authn.ReasonMalformed, errRefused
		}
		return authn.ReasonMalformed, skipValue(dec)
	})
	return reasonOf(err, authn.ReasonMalformed)
}

// readPayload checks the claims set: a JSON object whose members are
// unique and whose registered claims have no case variants. It reads iss.
func readPayload(b []byte, u *unverified) string {
	err := scanObject(b, func(key string, dec *json.Decoder) (string, error) {
		if isRegisteredVariant(key) {
			return authn.ReasonDuplicateClaim, errRefused
		}
		if key == "iss" {
			u.hasIss = true
			return authn.ReasonMalformed, decodeString(dec, &u.iss)
		}
		return authn.ReasonMalformed, skipValue(dec)
	})
	if errors.Is(err, errDuplicateMember) {
		return authn.ReasonDuplicateClaim
	}
	return reasonOf(err, authn.ReasonMalformed)
}

var (
	errRefused         = errors.New("refused member")
	errDuplicateMember = errors.New("duplicate member")
	errNotObject       = errors.New("not a JSON object")
)

// reasonError carries the rejection reason a member visitor chose.
type reasonError struct {
	reason string
	err    error
}

func (e *reasonError) Error() string { return e.reason + ": " + e.err.Error() }
func (e *reasonError) Unwrap() error { return e.err }

func reasonOf(err error, fallback string) string {
	if err == nil {
		return ""
	}
	var re *reasonError
	if errors.As(err, &re) {
		return re.reason
	}
	return fallback
}

// scanObject walks the members of the JSON object b, exactly one value with
// nothing after it. visit reads (or skips) each member's value and names the
// reason to use if it fails. Member names are compared after unescaping, so
// "\u0061ud" is "aud"; a name seen twice is errDuplicateMember.
func scanObject(b []byte, visit func(key string, dec *json.Decoder) (reason string, err error)) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if t, err := dec.Token(); err != nil {
		return err
	} else if d, ok := t.(json.Delim); !ok || d != '{' {
		return errNotObject
	}
	var seen []string // objects are small: a slice beats a map
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return err
		}
		key, ok := t.(string)
		if !ok {
			return errNotObject
		}
		for _, s := range seen {
			if s == key {
				return errDuplicateMember
			}
		}
		seen = append(seen, key)
		if reason, err := visit(key, dec); err != nil {
			return &reasonError{reason: reason, err: err}
		}
	}
	if _, err := dec.Token(); err != nil { // the closing '}'
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("data after the JSON object")
	}
	return nil
}

// decodeString reads the next value, which must be a JSON string.
func decodeString(dec *json.Decoder, dst *string) error {
	t, err := dec.Token()
	if err != nil {
		return err
	}
	s, ok := t.(string)
	if !ok {
		return errors.New("not a string")
	}
	*dst = s
	return nil
}

// skipValue reads past the next value, however deeply nested.
func skipValue(dec *json.Decoder) error {
	depth := 0
	for {
		t, err := dec.Token()
		if err != nil {
			return err
		}
		if d, ok := t.(json.Delim); ok {
			switch d {
			case '{', '[':
				depth++
			case '}', ']':
				depth--
			}
		}
		if depth == 0 {
			return nil
		}
	}
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
