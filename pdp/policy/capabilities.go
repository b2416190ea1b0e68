package policy

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
)

// pinnedCapabilities is the allow-list of built-in functions a policy may
// call, as an OPA capabilities document (the format of `opa capabilities`).
// It is OPA 1.22's own document without the built-ins that reach outside
// the process or make a decision random:
//
//   - the network: http.send, net.lookup_ip_addr, json.match_schema and
//     json.verify_schema (which load remote $ref schemas), and
//     providers.aws.sign_req (only of use to call another service);
//   - the process environment and configuration: opa.runtime;
//   - randomness: rand.intn, uuid.rfc4122, io.jwt.encode_sign and
//     io.jwt.encode_sign_raw (signing keys have no place in a bundle
//     either).
//
// time.now_ns stays: a policy may depend on the time (office hours, a
// route's end of life). No OPA 1.x built-in reads files.
//
// It is pinned, not computed from the running OPA: a built-in a later OPA
// adds is refused until someone adds it here (copying its entry from
// `opa capabilities --current`). test/run checks the default policy against
// this same file with `opa check --capabilities`.
//
//go:embed capabilities.json
var pinnedCapabilities []byte

// ErrBuiltinNotAllowed is wrapped by Activate's error when a bundle calls a
// built-in function the capabilities do not allow. The message names the
// built-ins.
var ErrBuiltinNotAllowed = errors.New("built-in function not allowed")

// PinnedCapabilities returns the capabilities a policy is compiled with
// when Options.Capabilities is nil: the built-ins Tollgate allows, OPA's
// language features and keywords. Each call returns a new value.
func PinnedCapabilities() (*ast.Capabilities, error) {
	caps, err := ast.LoadCapabilitiesJSON(bytes.NewReader(pinnedCapabilities))
	if err != nil {
		return nil, fmt.Errorf("policy: pinned capabilities: %w", err)
	}
	return caps, nil
}

// ExtendCapabilities returns the pinned capabilities plus the built-ins
// listed in ext, an OPA capabilities document (JSON) of which only
// "builtins" is read. Each entry needs only its "name"
// (`{"builtins": [{"name": "rand.intn"}]}`); the declaration used is the
// running OPA's own, so a name OPA does not implement (a typo, a built-in
// of another version) is an error. This is how an operator allows more
// (policy.capabilities in the configuration); nothing can be removed.
func ExtendCapabilities(ext io.Reader) (*ast.Capabilities, error) {
	extra, err := ast.LoadCapabilitiesJSON(ext)
	if err != nil {
		return nil, fmt.Errorf("policy: capabilities: %w", err)
	}
	caps, err := PinnedCapabilities()
	if err != nil {
		return nil, err
	}
	known := ast.CapabilitiesForThisVersion().Builtins
	var unknown []string
	for _, b := range extra.Builtins {
		if b == nil || b.Name == "" {
			return nil, errors.New("policy: capabilities: a built-in without a name")
		}
		if caps.ContainsBuiltin(b.Name) {
			continue
		}
		i := slices.IndexFunc(known, func(k *ast.Builtin) bool { return k.Name == b.Name })
		if i < 0 {
			unknown = append(unknown, b.Name)
			continue
		}
		caps.Builtins = append(caps.Builtins, known[i])
	}
	if len(unknown) > 0 {
		return nil, fmt.Errorf("policy: capabilities: built-ins not implemented by this OPA: %s", strings.Join(unknown, ", "))
	}
	slices.SortFunc(caps.Builtins, func(a, b *ast.Builtin) int { return strings.Compare(a.Name, b.Name) })
	return caps, nil
}

// LoadCapabilitiesFile is ExtendCapabilities on the document in file.
func LoadCapabilitiesFile(file string) (*ast.Capabilities, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("policy: capabilities: %w", err)
	}
	defer f.Close()
	caps, err := ExtendCapabilities(f)
	if err != nil {
		return nil, fmt.Errorf("%w (in %s)", err, file)
	}
	return caps, nil
}

// capabilities returns the capabilities to compile with.
func (o Options) capabilities() (*ast.Capabilities, error) {
	if o.Capabilities != nil {
		return o.Capabilities, nil
	}
	return PinnedCapabilities()
}

// notAllowed explains a failed compilation: when b calls built-ins that
// this OPA implements but caps does not allow, the error wraps
// ErrBuiltinNotAllowed and names them with where they are called; otherwise
// err is returned as it is. (OPA's own error says only "undefined
// function".)
func notAllowed(b *bundle.Bundle, caps *ast.Capabilities, err error) error {
	known := map[string]bool{}
	for _, k := range ast.CapabilitiesForThisVersion().Builtins {
		known[k.Name] = true
	}
	allowed := map[string]bool{}
	for _, k := range caps.Builtins {
		allowed[k.Name] = true
	}
	var found []string
	note := func(op ast.Ref, loc *ast.Location) {
		name := op.String()
		if !known[name] || allowed[name] {
			return
		}
		where := name
		if loc != nil {
			where = fmt.Sprintf("%s (%s:%d)", name, loc.File, loc.Row)
		}
		if !slices.Contains(found, where) {
			found = append(found, where)
		}
	}
	for _, mf := range b.Modules {
		if mf.Parsed == nil {
			continue
		}
		ast.WalkExprs(mf.Parsed, func(e *ast.Expr) bool {
			if e.IsCall() {
				note(e.Operator(), e.Location)
			}
			return false
		})
		ast.WalkTerms(mf.Parsed, func(t *ast.Term) bool {
			if c, ok := t.Value.(ast.Call); ok && len(c) > 0 {
				if op, ok := c[0].Value.(ast.Ref); ok {
					note(op, t.Location)
				}
			}
			return false
		})
	}
	if len(found) == 0 {
		return err
	}
	slices.Sort(found)
	return fmt.Errorf("%w by the capabilities (policy.capabilities): %s: %w", ErrBuiltinNotAllowed, strings.Join(found, ", "), err)
}
