package policy

import (
	"fmt"
	"math"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/tollgate/tollgate/pdp/decision"
)

// Keys of the decision document.
var (
	keyAllow   = ast.StringTerm("allow")
	keyReasons = ast.StringTerm("reasons")
	// keyStatus and keyHeaders are shared with the input document.
)

// decode checks the decision document a policy produced (DESIGN.md, "Policy
// output") and turns it into a Decision:
//
//	{"allow": bool, "status": 100..599, "reasons": [string], "headers": {token: string}}
//
// All four fields are required; other fields are ignored. reasons may be a
// set as well as an array (a partial set rule is the idiomatic way to collect
// them in Rego). An allow must carry a 2xx status and a deny must not.
// Header names must be HTTP tokens; they are lower-cased, and two names that
// differ only in case are malformed. Header values must not contain control
// characters other than horizontal tab (so no CR, LF or NUL). Any violation
// is an error wrapping ErrMalformedDecision.
func decode(v ast.Value) (decision.Decision, error) {
	obj, ok := v.(ast.Object)
	if !ok {
		return decision.Decision{}, malformed("decision is %s, not an object", ast.ValueName(v))
	}

	allowT := obj.Get(keyAllow)
	if allowT == nil {
		return decision.Decision{}, malformed("allow is missing")
	}
	allow, ok := allowT.Value.(ast.Boolean)
	if !ok {
		return decision.Decision{}, malformed("allow is %s, not a boolean", ast.ValueName(allowT.Value))
	}

	status, err := decodeStatus(obj.Get(keyStatus))
	if err != nil {
		return decision.Decision{}, err
	}
	switch ok2xx := status >= 200 && status <= 299; {
	case bool(allow) && !ok2xx:
		return decision.Decision{}, malformed("allow with status %d: an allow needs a 2xx status", status)
	case !bool(allow) && ok2xx:
		return decision.Decision{}, malformed("deny with status %d: a deny needs a non-2xx status", status)
	}

	reasons, err := decodeReasons(obj.Get(keyReasons))
	if err != nil {
		return decision.Decision{}, err
	}
	headers, err := decodeHeaders(obj.Get(keyHeaders))
	if err != nil {
		return decision.Decision{}, err
	}
	return decision.Decision{Allow: bool(allow), Status: status, Reasons: reasons, Headers: headers}, nil
}

func decodeStatus(t *ast.Term) (int, error) {
	if t == nil {
		return 0, malformed("status is missing")
	}
	n, ok := t.Value.(ast.Number)
	if !ok {
		return 0, malformed("status is %s, not a number", ast.ValueName(t.Value))
	}
	i, ok := n.Int()
	if !ok {
		// Accept an integral number written with a fraction or exponent
		// (403.0, 4.03e2): JSON does not tell them apart from 403.
		f, fok := n.Float64()
		if !fok || f != math.Trunc(f) || f < 100 || f > 599 {
			return 0, malformed("status %s is not an integer in 100..599", n)
		}
		i = int(f)
	}
	if i < 100 || i > 599 {
		return 0, malformed("status %d is not in 100..599", i)
	}
	return i, nil
}

func decodeReasons(t *ast.Term) ([]string, error) {
	if t == nil {
		return nil, malformed("reasons is missing")
	}
	var elems *ast.Array
	switch v := t.Value.(type) {
	case *ast.Array:
		elems = v
	case ast.Set:
		elems = v.Sorted()
	default:
		return nil, malformed("reasons is %s, not an array", ast.ValueName(t.Value))
	}
	reasons := make([]string, elems.Len())
	for i := range reasons {
		s, ok := elems.Elem(i).Value.(ast.String)
		if !ok {
			return nil, malformed("reasons[%d] is %s, not a string", i, ast.ValueName(elems.Elem(i).Value))
		}
		reasons[i] = string(s)
	}
	return reasons, nil
}

func decodeHeaders(t *ast.Term) (map[string]string, error) {
	if t == nil {
		return nil, malformed("headers is missing")
	}
	obj, ok := t.Value.(ast.Object)
	if !ok {
		return nil, malformed("headers is %s, not an object", ast.ValueName(t.Value))
	}
	headers := make(map[string]string, obj.Len())
	err := obj.Iter(func(k, v *ast.Term) error {
		name, ok := k.Value.(ast.String)
		if !ok {
			return malformed("headers has a %s key, not a string", ast.ValueName(k.Value))
		}
		if !isToken(string(name)) {
			return malformed("header name %q is not an HTTP token", string(name))
		}
		value, ok := v.Value.(ast.String)
		if !ok {
			return malformed("header %q is %s, not a string", string(name), ast.ValueName(v.Value))
		}
		if !isFieldValue(string(value)) {
			return malformed("header %q has a control character (CR, LF, NUL, ...) in its value", string(name))
		}
		lower := asciiLower(string(name))
		if _, dup := headers[lower]; dup {
			return malformed("header %q is given twice, in different cases", lower)
		}
		headers[lower] = string(value)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return headers, nil
}

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformedDecision, fmt.Sprintf(format, args...))
}

// isToken reports whether s is an HTTP token (RFC 9110, section 5.6.2), the
// syntax of a field name.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isTchar(s[i]) {
			return false
		}
	}
	return true
}

func isTchar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	switch c {
	case '!', '#', '$', '%', '&', '\'', '*', '+', '-', '.', '^', '_', '`', '|', '~':
		return true
	}
	return false
}

// isFieldValue reports whether s is safe as a field value: no control
// characters except horizontal tab (RFC 9110, section 5.5). This rules out
// CR, LF and NUL, which would let a policy split or smuggle headers.
func isFieldValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < 0x20 && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

func asciiLower(s string) string {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if 'A' <= b[j] && b[j] <= 'Z' {
					b[j] += 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}
