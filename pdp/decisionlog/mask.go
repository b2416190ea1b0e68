package decisionlog

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Masked is the value that replaces a string the built-in rules find
// suspicious (a JWT or an API key anywhere in the input or result).
const Masked = "[masked]"

// Sensitive names the request headers and query parameters the built-in
// rules always erase from an event's input, beside the built-in ones: the
// credential locations Tollgate is configured with. Names are compared
// case-insensitively.
type Sensitive struct {
	Headers []string
	Query   []string
}

// builtinHeaders are erased from input.request.headers whatever the
// configuration says: every header that commonly carries a credential.
var builtinHeaders = []string{
	"authorization", "proxy-authorization", "cookie", "set-cookie",
	"x-api-key", "api-key", "apikey", "x-auth-token", "x-access-token",
	"x-amz-security-token", "x-csrf-token", "x-xsrf-token", "tollgate-client-token",
}

// builtinQuery are erased from input.request.query.
var builtinQuery = []string{
	"access_token", "id_token", "refresh_token", "token", "api_key", "apikey",
	"key", "code", "sig", "signature", "password", "secret", "jwt", "auth",
}

// suspiciousParts erase a header or query parameter whose lower-cased name
// contains one of them: a credential in a place nobody configured.
var suspiciousParts = []string{
	"token", "secret", "passw", "api-key", "api_key", "apikey", "session",
	"credential", "authorization", "cookie", "signature", "private",
}

// secretValue matches a string that holds something shaped like a
// credential: a JWS/JWT (base64url JSON header "eyJ…" and two more
// parts), a Tollgate API key ("tgk_…"), or a Bearer/Basic authorization
// value. Such a string is replaced by Masked wherever it is.
var secretValue = regexp.MustCompile(`eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*\.|tgk_[A-Za-z0-9_-]{8,}|(?i)\b(?:bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}`)

// builtinMasker applies the built-in rule set to an event document.
type builtinMasker struct {
	headers map[string]bool
	query   map[string]bool
}

func newBuiltinMasker(s Sensitive) *builtinMasker {
	m := &builtinMasker{headers: map[string]bool{}, query: map[string]bool{}}
	for _, h := range append(slices.Clone(builtinHeaders), s.Headers...) {
		m.headers[strings.ToLower(h)] = true
	}
	for _, q := range append(slices.Clone(builtinQuery), s.Query...) {
		m.query[strings.ToLower(q)] = true
	}
	return m
}

// sensitiveName reports whether a header or query parameter name must be
// erased.
func (m *builtinMasker) sensitiveName(set map[string]bool, name string) bool {
	n := strings.ToLower(name)
	if set[n] {
		return true
	}
	for _, p := range suspiciousParts {
		if strings.Contains(n, p) {
			return true
		}
	}
	return false
}

// mask erases sensitive headers and query parameters from the input and
// replaces every suspicious string in the input and result, recording
// what it did in ev.Erased and ev.Masked (OPA's fields, as OPA's own mask
// records them).
func (m *builtinMasker) mask(ev *Event) {
	if in, ok := ev.Input.(map[string]any); ok {
		if req, ok := in["request"].(map[string]any); ok {
			m.erase(ev, req, "headers", m.headers)
			m.erase(ev, req, "query", m.query)
		}
	}
	ev.Input = m.scrub(ev, ev.Input, "/input")
	ev.Result = m.scrub(ev, ev.Result, "/result")
}

func (m *builtinMasker) erase(ev *Event, req map[string]any, field string, set map[string]bool) {
	obj, ok := req[field].(map[string]any)
	if !ok {
		return
	}
	names := make([]string, 0, len(obj))
	for name := range obj {
		if m.sensitiveName(set, name) {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	for _, name := range names {
		delete(obj, name)
		ev.Erased = append(ev.Erased, "/input/request/"+field+"/"+url.PathEscape(name))
	}
}

// scrub replaces every string under v that looks like a credential with
// Masked, and every map key that does with a key of its own.
func (m *builtinMasker) scrub(ev *Event, v any, path string) any {
	switch x := v.(type) {
	case string:
		if secretValue.MatchString(x) {
			ev.Masked = append(ev.Masked, path)
			return Masked
		}
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			val := x[k]
			if secretValue.MatchString(k) {
				delete(x, k)
				ev.Erased = append(ev.Erased, path+"/"+Masked)
				continue
			}
			x[k] = m.scrub(ev, val, path+"/"+url.PathEscape(k))
		}
	case []any:
		for i := range x {
			x[i] = m.scrub(ev, x[i], path+"/"+strconv.Itoa(i))
		}
	}
	return v
}

// OPA's mask rules (system.log.mask): a list whose items are either a
// path string ("/input/password", meaning remove) or an object
// {"op": "remove"|"upsert", "path": …, "value": …}. Paths start with
// /input or /result; their parts are URL path-escaped.

var errMaskPath = errors.New("mask path not found")

type maskRule struct {
	op    string
	path  string
	parts []string
	value any
}

// parseMaskRules reads the value of the mask query.
func parseMaskRules(v any) ([]maskRule, error) {
	list, ok := v.([]any)
	if !ok {
		if set, isSet := v.(map[string]any); isSet && len(set) == 0 {
			return nil, nil
		}
		return nil, fmt.Errorf("mask rules: want a list, got %T", v)
	}
	rules := make([]maskRule, 0, len(list))
	for _, item := range list {
		r := maskRule{op: "remove"}
		switch x := item.(type) {
		case string:
			r.path = x
		case map[string]any:
			op, _ := x["op"].(string)
			path, _ := x["path"].(string)
			if op != "" {
				r.op = op
			}
			r.path, r.value = path, x["value"]
		default:
			return nil, fmt.Errorf("mask rule: want a string or an object, got %T", item)
		}
		if r.op != "remove" && r.op != "upsert" {
			return nil, fmt.Errorf("mask rule %q: op %q not supported", r.path, r.op)
		}
		if !strings.HasPrefix(r.path, "/") {
			return nil, fmt.Errorf("mask rule %q: must start with /", r.path)
		}
		parts := strings.Split(r.path[1:], "/")
		if parts[0] != "input" && parts[0] != "result" {
			return nil, fmt.Errorf("mask rule %q: only /input and /result may be masked", r.path)
		}
		for i, p := range parts {
			u, err := url.PathUnescape(p)
			if err != nil {
				return nil, fmt.Errorf("mask rule %q: %w", r.path, err)
			}
			parts[i] = u
		}
		r.parts = parts
		rules = append(rules, r)
	}
	return rules, nil
}

// apply applies one rule to ev; a path that does not exist is not an error
// for remove (as in OPA) and creates objects for upsert.
func (r maskRule) apply(ev *Event) {
	root := &ev.Input
	if r.parts[0] == "result" {
		root = &ev.Result
	}
	if *root == nil {
		return
	}
	if len(r.parts) == 1 {
		if r.op == "remove" {
			*root = nil
			ev.Erased = append(ev.Erased, r.path)
		} else {
			*root = r.value
			ev.Masked = append(ev.Masked, r.path)
		}
		return
	}
	if r.op == "remove" {
		v, err := removeAt(*root, r.parts[1:])
		if err == nil {
			*root = v
			ev.Erased = append(ev.Erased, r.path)
		}
		return
	}
	if err := upsert(*root, r.parts[1:], r.value); err == nil {
		ev.Masked = append(ev.Masked, r.path)
	}
}

// removeAt removes the value at path under node and returns node's new
// value (a list it shortens is a new slice header).
func removeAt(node any, path []string) (any, error) {
	p := path[0]
	switch x := node.(type) {
	case map[string]any:
		child, ok := x[p]
		if !ok {
			return nil, errMaskPath
		}
		if len(path) == 1 {
			delete(x, p)
			return x, nil
		}
		v, err := removeAt(child, path[1:])
		if err != nil {
			return nil, err
		}
		x[p] = v
		return x, nil
	case []any:
		i, err := strconv.Atoi(p)
		if err != nil || i < 0 || i >= len(x) {
			return nil, errMaskPath
		}
		if len(path) == 1 {
			return slices.Delete(x, i, i+1), nil
		}
		v, err := removeAt(x[i], path[1:])
		if err != nil {
			return nil, err
		}
		x[i] = v
		return x, nil
	}
	return nil, errMaskPath
}

func upsert(node any, path []string, value any) error {
	for _, p := range path[:len(path)-1] {
		switch x := node.(type) {
		case map[string]any:
			child, ok := x[p]
			if !ok {
				child = map[string]any{}
				x[p] = child
			}
			node = child
		case []any:
			i, err := strconv.Atoi(p)
			if err != nil || i < 0 || i >= len(x) {
				return errMaskPath
			}
			node = x[i]
		default:
			return errMaskPath
		}
	}
	last := path[len(path)-1]
	switch x := node.(type) {
	case map[string]any:
		x[last] = value
		return nil
	case []any:
		i, err := strconv.Atoi(last)
		if err != nil || i < 0 || i >= len(x) {
			return errMaskPath
		}
		x[i] = value
		return nil
	}
	return errMaskPath
}

// Scrub returns Masked when s holds something shaped like a credential (a
// JWT, a Tollgate API key, a Bearer or Basic authorization value), else s.
func Scrub(s string) string {
	if secretValue.MatchString(s) {
		return Masked
	}
	return s
}
