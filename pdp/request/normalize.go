package request

import (
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/net/http/httpguts"
)

// Limits enforced by Normalize.
const (
	// MaxTargetBytes is the longest request target (path and query) Normalize
	// accepts.
	MaxTargetBytes = 8192
	// MaxMethodBytes is the longest method Normalize accepts.
	MaxMethodBytes = 32
	// MaxQueryParams is the largest number of query parameters Normalize
	// accepts. Empty pieces ("a=1&&b=2") are not counted.
	MaxQueryParams = 100
)

// ErrInvalidRequest is wrapped by every error Normalize returns. The wrapping
// error's message says what is wrong; use errors.Is to recognise the class.
// A request that cannot be normalized must be denied before any policy runs.
//
// The messages never quote the caller's input: a request target can carry a
// credential in its query (or a secret in a path segment), a header value
// can be a token, so an error says what is wrong and at most where (a byte
// offset, a segment number), which is safe to log and to answer.
var ErrInvalidRequest = errors.New("invalid request")

// Normalize validates raw and returns the normalized Request the policy sees.
// It never modifies raw, and the returned Request shares no mutable memory
// with it (header value slices are copied).
//
// Method: upper-cased; it must be a non-empty HTTP token (RFC 9110 tchar)
// of at most MaxMethodBytes bytes, exactly as given: nothing is trimmed, so
// " GET" or "GET\u00a0" is an error, never "GET".
//
// Target: must be in origin form, i.e. start with "/" (asterisk-, absolute-
// and authority-form are rejected), be at most MaxTargetBytes long and carry
// no "#" (a fragment is never sent by a client, so one is an error). The
// query is everything after the first "?".
//
// Path (the part before "?"):
//   - percent-escapes of unreserved characters (ALPHA DIGIT "-" "." "_" "~")
//     are decoded; every other escape is kept, with upper-case hex ("%2f"
//     is an error, "%c3%a9" becomes "%C3%A9");
//   - bytes that may not appear literally in a path (space, `"`, "<", ">",
//     "[", "]", "^", "`", "{", "|", "}" and non-ASCII bytes) are
//     percent-encoded, so "/café" and "/caf%C3%A9" normalize alike;
//   - it is an error when the path holds an invalid escape ("%zz", "%4"), an
//     encoded slash (%2F) or encoded backslash (%5C), a literal backslash, a
//     NUL or any other control character (below 0x20, or 0x7F; literal or
//     encoded), or bytes that are not valid UTF-8 once fully percent-decoded;
//   - repeated slashes are merged and dot segments removed (RFC 3986
//     section 5.2.4); "%2E" counts as ".", so "/a/%2e%2e/b" is "/b". A ".."
//     that would climb above the root is an error, not clamped;
//   - a segment carrying a path parameter (";") whose part before the first
//     ";" is empty, "." or ".." is an error: servers such as Tomcat strip
//     path parameters before resolving dot segments, so "/public/..;/admin"
//     would reach /admin upstream while looking like /public here;
//   - a trailing slash is dropped (except for the root "/"), so "/products/"
//     and "/products" match the same routes.
//
// Segments: the normalized path split on "/" without empty parts, each fully
// percent-decoded ("/a%20b" has the segment "a b"). The root has none.
//
// Query: parsed like net/url.ParseQuery, but any error (invalid escape, ";"
// separator) is returned rather than the parameter dropped, and at most
// MaxQueryParams parameters are accepted. Query is never nil.
//
// Headers: names must be HTTP tokens exactly as given (nothing is trimmed)
// and are lower-cased; the
// values of names that differ only in case are merged, in the byte order of
// the original names. Values are copied as given. Headers is never nil.
// HTTP/2 pseudo-headers (":authority", ":path", …) are not tokens: adapters
// must drop them before calling Normalize.
//
// Host is lower-cased; control characters, spaces, slashes and backslashes
// in it are an error (it is not trimmed). Header values with CR, LF or NUL
// are an error. Scheme is lower-cased; it must be "http" or "https" exactly
// (not trimmed), and is "http" when empty. ID and SourceIP are copied.
//
// Every error wraps ErrInvalidRequest and quotes none of the input (see
// ErrInvalidRequest).
func Normalize(raw Raw) (*Request, error) {
	method, err := normalizeMethod(raw.Method)
	if err != nil {
		return nil, err
	}
	rawPath, rawQuery, err := splitTarget(raw.Target)
	if err != nil {
		return nil, err
	}
	path, segments, err := normalizePath(rawPath)
	if err != nil {
		return nil, err
	}
	query, err := parseQuery(rawQuery)
	if err != nil {
		return nil, err
	}
	scheme, err := normalizeScheme(raw.Scheme)
	if err != nil {
		return nil, err
	}
	headers, err := normalizeHeaders(raw.Headers)
	if err != nil {
		return nil, err
	}
	host, err := normalizeHost(raw.Host)
	if err != nil {
		return nil, err
	}
	return &Request{
		ID:       raw.ID,
		Method:   method,
		Path:     path,
		Segments: segments,
		Host:     host,
		Scheme:   scheme,
		Query:    query,
		Headers:  headers,
		SourceIP: raw.SourceIP,
	}, nil
}

// invalid returns an error wrapping ErrInvalidRequest.
func invalid(msg string) error {
	return fmt.Errorf("%w: %s", ErrInvalidRequest, msg)
}

// invalidAt returns an error wrapping ErrInvalidRequest that says where in
// the request target (a byte offset) the problem is, never what is there.
func invalidAt(msg string, offset int) error {
	return fmt.Errorf("%w: %s at byte %d of the request target", ErrInvalidRequest, msg, offset)
}

// Byte classes, see class.
const (
	cUnreserved = 1 << iota // RFC 3986 unreserved
	cPathChar               // may appear literally in a normalized path segment (pchar without "%")
)

// class maps a byte to its cXxx bits.
var class = func() (t [256]uint8) {
	const alnum = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	for _, c := range []byte(alnum + "-._~") {
		t[c] |= cUnreserved | cPathChar
	}
	for _, c := range []byte("!$&'()*+,;=:@") { // sub-delims, ":" and "@"
		t[c] |= cPathChar
	}
	return t
}()

const upperHex = "0123456789ABCDEF"

// isToken reports whether s is a non-empty RFC 9110 token, exactly as given.
func isToken(s string) bool {
	return httpguts.ValidHeaderFieldName(s) // a field name is a token
}

func normalizeMethod(m string) (string, error) {
	switch {
	case m == "":
		return "", invalid("empty method")
	case len(m) > MaxMethodBytes:
		return "", invalid(fmt.Sprintf("method longer than %d bytes", MaxMethodBytes))
	case !isToken(m):
		return "", invalid("method is not an HTTP token")
	}
	// m is ASCII, so ToUpper is byte-wise and returns m itself when it has no
	// lower-case letter.
	return strings.ToUpper(m), nil
}

func splitTarget(t string) (path, query string, err error) {
	switch {
	case t == "":
		return "", "", invalid("empty request target")
	case len(t) > MaxTargetBytes:
		return "", "", invalid(fmt.Sprintf("request target longer than %d bytes", MaxTargetBytes))
	case t[0] != '/':
		return "", "", invalid("request target is not in origin form (must start with \"/\")")
	}
	if i := strings.IndexByte(t, '#'); i >= 0 {
		return "", "", invalidAt("fragment in request target", i)
	}
	path, query, _ = strings.Cut(t, "?")
	return path, query, nil
}

// segment locates one kept segment of the path being built.
type segment struct {
	start, end int    // the segment's text in the output, without its "/"
	decoded    string // fully decoded text, when it differs from the output text
	escaped    bool   // decoded is set
}

// normalizePath normalizes p, which starts with "/", in one pass: each
// segment is validated, re-encoded canonically and fully decoded as it is
// read, and dot segments are resolved against a stack of kept segments.
func normalizePath(p string) (string, []string, error) {
	// Stack buffers keep the common case to two allocations (the path when
	// it changed, and the segments slice).
	var outBuf [256]byte
	var decBuf [128]byte
	var segBuf [16]segment
	out, segs := outBuf[:0], segBuf[:0]

	for i := 0; i < len(p); {
		if p[i] == '/' {
			i++ // merges repeated slashes
			continue
		}
		segStart, rawStart := len(out), i
		out = append(out, '/')
		dec := decBuf[:0]
		escaped, nonASCII := false, false
		for ; i < len(p) && p[i] != '/'; i++ {
			c := p[i]
			encoded := c == '%'
			if encoded {
				if i+2 >= len(p) || unhex(p[i+1]) > 15 || unhex(p[i+2]) > 15 {
					return "", nil, invalidAt("invalid percent-encoding in path", i)
				}
				c = unhex(p[i+1])<<4 | unhex(p[i+2])
				i += 2
			}
			if c < 0x20 || c == 0x7f || c == '/' || c == '\\' {
				at := i // offset of the byte, or of the "%" of its escape
				if encoded {
					at -= 2
				}
				switch {
				case c == '/':
					return "", nil, invalidAt("encoded slash in path segment", at)
				case c == '\\' && encoded:
					return "", nil, invalidAt("encoded backslash in path", at)
				case c == '\\':
					return "", nil, invalidAt("backslash in path", at)
				case c == 0:
					return "", nil, invalidAt("NUL byte in path", at)
				default:
					return "", nil, invalidAt("control character in path", at)
				}
			}
			if class[c]&cUnreserved != 0 || (!encoded && class[c]&cPathChar != 0) {
				out = append(out, c)
			} else {
				out = append(out, '%', upperHex[c>>4], upperHex[c&0xf])
				escaped = true
			}
			if c >= utf8.RuneSelf {
				nonASCII = true
			}
			dec = append(dec, c)
		}
		if nonASCII && !utf8.Valid(dec) {
			return "", nil, invalidAt("invalid UTF-8 in the path segment starting", rawStart)
		}
		if isDots(dec) {
			out = out[:segStart]
			if len(dec) == 2 { // ".."
				if len(segs) == 0 {
					return "", nil, invalidAt("dot segment climbs above the root", rawStart)
				}
				out = out[:segs[len(segs)-1].start-1]
				segs = segs[:len(segs)-1]
			}
			continue
		}
		for j, c := range dec {
			if c == ';' {
				if isDots(dec[:j]) || j == 0 {
					return "", nil, invalidAt("path parameter on an empty or dot segment", rawStart)
				}
				break
			}
		}
		s := segment{start: segStart + 1, end: len(out)}
		if escaped {
			s.decoded, s.escaped = string(dec), true
		}
		segs = append(segs, s)
	}

	var path string
	switch {
	case len(out) == 0:
		path = "/"
	case string(out) == p: // no allocation for the comparison
		path = p
	default:
		path = string(out)
	}
	segments := make([]string, len(segs))
	for k, s := range segs {
		if s.escaped {
			segments[k] = s.decoded
		} else {
			segments[k] = path[s.start:s.end]
		}
	}
	return path, segments, nil
}

// isDots reports whether b is "." or "..".
func isDots(b []byte) bool {
	return (len(b) == 1 && b[0] == '.') || (len(b) == 2 && b[0] == '.' && b[1] == '.')
}

// unhex returns the value of the hex digit c, or 255 when c is not one.
func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10
	}
	return 255
}

func parseQuery(q string) (map[string][]string, error) {
	if q == "" {
		return map[string][]string{}, nil
	}
	n, start := 0, 0
	for i := 0; i <= len(q); i++ {
		if i == len(q) || q[i] == '&' {
			if i > start {
				n++
			}
			start = i + 1
		}
	}
	if n > MaxQueryParams {
		return nil, invalid(fmt.Sprintf("more than %d query parameters", MaxQueryParams))
	}
	values, err := url.ParseQuery(q)
	if err != nil {
		// url's errors quote the offending escape ("%zz"), which is part of
		// the query and so possibly of a credential: say only what is wrong.
		if _, ok := errors.AsType[url.EscapeError](err); ok {
			return nil, invalid("invalid query: invalid percent-encoding")
		}
		return nil, invalid("invalid query: \";\" is not a separator, or another syntax error")
	}
	return values, nil
}

func normalizeScheme(s string) (string, error) {
	switch {
	case s == "":
		return "http", nil
	case strings.EqualFold(s, "http"):
		return "http", nil
	case strings.EqualFold(s, "https"):
		return "https", nil
	}
	return "", invalid("unsupported scheme (want http or https)")
}

func headerName(name string) (string, error) {
	n := name
	if !isToken(n) {
		return "", invalid("invalid header name (not an HTTP token)")
	}
	if lower, ok := commonHeaders[n]; ok {
		return lower, nil
	}
	return strings.ToLower(n), nil // ASCII: no allocation when already lower case
}

// commonHeaders maps the canonical (net/http) form of frequent header names to
// their lower-case form, sparing an allocation per header on most requests.
var commonHeaders = func() map[string]string {
	names := []string{
		"accept", "accept-encoding", "accept-language", "authorization",
		"cache-control", "connection", "content-length", "content-type",
		"cookie", "host", "if-none-match", "origin", "referer", "te",
		"traceparent", "user-agent", "via", "x-api-key", "x-forwarded-for",
		"x-forwarded-host", "x-forwarded-port", "x-forwarded-proto",
		"x-real-ip", "x-request-id",
	}
	m := make(map[string]string, len(names))
	for _, lower := range names {
		b := []byte(lower)
		upper := true
		for i, c := range b {
			if upper && 'a' <= c && c <= 'z' {
				b[i] = c - ('a' - 'A')
			}
			upper = c == '-'
		}
		m[string(b)] = lower
	}
	return m
}()

func normalizeHeaders(h map[string][]string) (map[string][]string, error) {
	out := make(map[string][]string, len(h))
	total := 0
	for _, vals := range h {
		for _, v := range vals {
			// CR, LF and NUL can never be part of a header value on the
			// wire; in a value handed over as JSON they could only be an
			// attempt to smuggle a header line past the policy.
			// Three IndexByte scans (vectorized) rather than one
			// ContainsAny, which goes byte by byte: a value may be a
			// token of a kilobyte or more.
			if strings.IndexByte(v, '\r') >= 0 || strings.IndexByte(v, '\n') >= 0 || strings.IndexByte(v, 0) >= 0 {
				return nil, invalid("CR, LF or NUL in a header value")
			}
		}
		total += len(vals)
	}
	// One backing array for every value; each header gets a full slice
	// expression so an append by one consumer never overwrites another.
	backing := make([]string, total)
	for name, vals := range h {
		key, err := headerName(name)
		if err != nil {
			return nil, err
		}
		if _, dup := out[key]; dup {
			return mergeHeaders(h)
		}
		n := copy(backing, vals)
		out[key] = backing[:n:n]
		backing = backing[n:]
	}
	return out, nil
}

// mergeHeaders handles names that differ only in case: their values are
// concatenated in the byte order of the original names, so the result does
// not depend on map iteration order.
func mergeHeaders(h map[string][]string) (map[string][]string, error) {
	names := make([]string, 0, len(h))
	for name := range h {
		names = append(names, name)
	}
	slices.Sort(names)
	out := make(map[string][]string, len(h))
	for _, name := range names {
		key, err := headerName(name)
		if err != nil {
			return nil, err
		}
		vals := out[key]
		if vals == nil {
			vals = make([]string, 0, len(h[name]))
		}
		out[key] = append(vals, h[name]...)
	}
	return out, nil
}

// normalizeHost lower-cases the host and refuses bytes that cannot be part
// of host[:port], white space (ASCII or Unicode) included: it is not trimmed.
func normalizeHost(h string) (string, error) {
	if !utf8.ValidString(h) {
		return "", invalid("invalid UTF-8 in host")
	}
	nonASCII := false
	for i := 0; i < len(h); i++ {
		if c := h[i]; c <= ' ' || c == 0x7f || c == '/' || c == '\\' {
			return "", invalid(fmt.Sprintf("invalid character in host at byte %d", i))
		} else if c >= utf8.RuneSelf {
			nonASCII = true
		}
	}
	if nonASCII { // Unicode white space and control characters (U+0085, U+00A0, U+3000, …)
		for i, r := range h {
			if unicode.IsSpace(r) || unicode.IsControl(r) {
				return "", invalid(fmt.Sprintf("invalid character in host at byte %d", i))
			}
		}
	}
	return strings.ToLower(h), nil
}
