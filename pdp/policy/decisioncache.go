package policy

import (
	"encoding/binary"
	"slices"
	"strings"
	"sync"
	"unsafe"

	"github.com/maypok86/otter/v2"
	"github.com/maypok86/otter/v2/stats"
	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/tollgate/tollgate/pdp/credential"
	"github.com/tollgate/tollgate/pdp/decision"
)

// Defaults of the decision cache (Options.DecisionCacheEntries,
// Options.DecisionCacheBytes).
const (
	DefaultDecisionCacheEntries = 100_000
	DefaultDecisionCacheBytes   = 64 << 20
)

// A decision cache remembers the decisions of one program (one revision of
// one bundle) and answers a request whose input agrees with an earlier one
// on every part the policy can read. It is sound because:
//
//   - the parts are found in the compiled policy itself (reads): every
//     reference to input in every rule that can run in production (test
//     files and test rules excepted), to the field it names; a reference
//     the analysis cannot pin down (input whole, input[x], `with input`)
//     turns the cache off for the revision;
//   - a policy that calls a non-deterministic built-in (time.now_ns,
//     rand.intn, http.send, …) has no cache: the same input may not give
//     the same answer;
//   - the key holds the values of those parts exactly (length-prefixed,
//     never a hash of them), except the identity, which is represented by
//     its verifier's content key (authn.Identity.ContentKey: equal keys mean
//     equal identities) or, for identities without claims, by its fields;
//   - data is fixed for a revision, and each activation starts a new cache.
//
// It is bounded by entries and bytes, like the token cache.
type decisionCache struct {
	reads reads
	// routes, byRoute and unmatched narrow the key by route when the
	// policy reads input.route (see routeReads): the reads of each route's
	// shape, and of a request no route matches. byRoute is nil when the
	// whole-policy reads decide every key.
	routes    *routeTable
	byRoute   []*routeReads
	unmatched *routeReads
	cache     *otter.Cache[string, decision.Decision]
	bufs      sync.Pool
	// stats counts hits and misses (decisions evaluated and stored); it is
	// the engine's, shared by every revision's cache.
	stats *stats.Counter
}

// reads is the set of input parts a policy can read.
type reads struct {
	method, path, host, scheme, query, headers, sourceIP, requestID bool
	credType, placement, name, status, credError, fingerprint       bool
	identity, route                                                 bool
}

// analyzeReads finds the input parts the policy compiled by c can read
// when query is evaluated. known is false when it cannot say (the policy
// reads input as a whole or by a computed key); cacheable is false when
// the decisions must not be cached even so (a non-deterministic built-in,
// the request id); why says which.
func analyzeReads(c *ast.Compiler, query ast.Body) (r reads, known, cacheable bool, why string) {
	known, cacheable = true, true
	visit := func(x any) {
		ast.WalkRefs(x, func(ref ast.Ref) bool {
			if known && ref.HasPrefix(ast.InputRootRef) && !r.add(ref) {
				known, why = false, "the policy reads input as a whole or by a computed key: "+ref.String()
			}
			return false
		})
		nondeterministic := func(name string) {
			if bi, found := ast.BuiltinMap[name]; found && bi.Nondeterministic && cacheable {
				cacheable, why = false, "the policy calls the non-deterministic built-in "+bi.Name
			}
		}
		ast.WalkTerms(x, func(t *ast.Term) bool {
			if call, isCall := t.Value.(ast.Call); isCall {
				nondeterministic(call[0].String())
			}
			return false
		})
		ast.WalkExprs(x, func(e *ast.Expr) bool {
			if e.IsCall() {
				nondeterministic(e.Operator().String())
			}
			return false
		})
	}
	visit(query)
	for name, m := range c.Modules {
		if strings.HasSuffix(name, "_test.rego") {
			continue
		}
		for _, rule := range m.Rules {
			if strings.HasPrefix(rule.Head.Name.String(), "test_") {
				continue
			}
			visit(rule)
		}
	}
	switch {
	case !known:
		cacheable = false
	case cacheable && r.requestID:
		// Every request has its own id: no decision would be reused.
		cacheable, why = false, "the policy reads the request id"
	}
	return r, known, cacheable, why
}

// add records what ref reads, and reports false when it cannot say.
func (r *reads) add(ref ast.Ref) bool {
	if len(ref) < 2 {
		return false // input as a whole
	}
	top, isStr := ref[1].Value.(ast.String)
	if !isStr {
		return false
	}
	field := func() (string, bool) { // the field under top, "" for all of them
		if len(ref) < 3 {
			return "", true
		}
		s, isStr := ref[2].Value.(ast.String)
		return string(s), isStr
	}
	switch top {
	case "request":
		f, known := field()
		all := !known || f == ""
		r.requestID = r.requestID || all || f == "id"
		r.method = r.method || all || f == "method"
		r.path = r.path || all || f == "path" || f == "segments"
		r.host = r.host || all || f == "host"
		r.scheme = r.scheme || all || f == "scheme"
		r.query = r.query || all || f == "query"
		r.headers = r.headers || all || f == "headers"
		r.sourceIP = r.sourceIP || all || f == "source_ip"
	case "credential":
		f, known := field()
		all := !known || f == ""
		r.credType = r.credType || all || f == "type"
		r.placement = r.placement || all || f == "placement"
		r.name = r.name || all || f == "name"
		r.status = r.status || all || f == "status"
		r.credError = r.credError || all || f == "error"
		r.fingerprint = r.fingerprint || all || f == "fingerprint"
	case "identity":
		r.identity = true
	case "route":
		r.route = true
	}
	// Any other top-level name is not part of the input: always undefined.
	return true
}

func newDecisionCache(r reads, maxEntries int, maxBytes int64, counts *stats.Counter) (*decisionCache, error) {
	if counts == nil {
		counts = stats.NewCounter()
	}
	if maxEntries == 0 {
		maxEntries = DefaultDecisionCacheEntries
	}
	if maxBytes == 0 {
		maxBytes = DefaultDecisionCacheBytes
	}
	floor := max(uint64(maxBytes)/uint64(maxEntries), 1)
	c, err := otter.New(&otter.Options[string, decision.Decision]{
		MaximumWeight: uint64(maxBytes),
		Weigher: func(k string, d decision.Decision) uint32 {
			return uint32(min(max(decisionWeight(k, d), floor), 1<<31))
		},
	})
	if err != nil {
		return nil, err
	}
	return &decisionCache{reads: r, cache: c, stats: counts, bufs: sync.Pool{New: func() any { b := make([]byte, 0, 256); return &b }}}, nil
}

// decisionWeight estimates the heap an entry takes, calibrated on the heap
// (TestDecisionWeightFollowsTheHeap): about 256 bytes for the cache's node
// and the decision, its key, each reason, and a map of headers (a group of
// 8 slots once it has one, then each name and value).
func decisionWeight(k string, d decision.Decision) uint64 {
	w := uint64(256 + len(k))
	for _, s := range d.Reasons {
		w += 32 + uint64(len(s))
	}
	if len(d.Headers) > 0 {
		w += 288
	}
	for n, v := range d.Headers {
		w += 32 + uint64(len(n)+len(v))
	}
	return w
}

// lookup returns the cached decision for in, or the key to store its
// decision under (key is "" when this input cannot be cached).
func (c *decisionCache) lookup(in Input) (d decision.Decision, hit bool, key string) {
	bp := c.bufs.Get().(*[]byte)
	defer c.bufs.Put(bp)
	b, ok := c.key((*bp)[:0], in)
	*bp = b
	if !ok {
		return decision.Decision{}, false, ""
	}
	// The lookup borrows the buffer's bytes as its key: the cache only
	// hashes and compares a key it is asked for, and b is not changed
	// before GetIfPresent returns. The key stored on a miss is a copy.
	if d, hit = c.cache.GetIfPresent(unsafe.String(unsafe.SliceData(b), len(b))); hit {
		c.stats.RecordHits(1)
		return d, true, ""
	}
	return decision.Decision{}, false, string(b)
}

func (c *decisionCache) store(key string, d decision.Decision) {
	if key != "" {
		c.stats.RecordMisses(1)
		c.cache.Set(key, d)
	}
}

// key appends the cache key of in to b: by route when the cache has the
// reads of each route, else by the whole policy's reads.
func (c *decisionCache) key(b []byte, in Input) (_ []byte, ok bool) {
	req := in.Request
	if c.byRoute == nil || req == nil {
		return c.reads.key(b, in)
	}
	// The same match Evaluate's input.route is built from.
	m, matched := c.routes.table.Match(req.Method, req.Segments)
	if !matched {
		return c.unmatched.key(append(b, 'U'), in)
	}
	rr := c.byRoute[m.Route]
	b = append(b, 'R')
	b = binary.AppendUvarint(b, uint64(m.Route))
	if rr.template {
		b = append(b, 'T')
		b = binary.AppendUvarint(b, uint64(m.Path))
	}
	if rr.params {
		b = append(b, 'P')
		b = binary.AppendUvarint(b, uint64(len(m.Params)))
		for _, p := range m.Params {
			b = field(b, 'N', p.Name)
			b = field(b, 'V', req.Segments[p.Segment])
		}
	}
	if rr.owner && c.routes.owners[m.Route] != nil {
		// The one input field that depends on the claims: its value, so
		// that a caller's requests for other customers' records share a
		// key whatever the record.
		claims, err := in.claims()
		if err != nil {
			return b, false
		}
		b = append(b, 'O', '0')
		if c.routes.callerIsOwner(m, req.Segments, claims) {
			b[len(b)-1] = '1'
		}
	}
	return rr.reads.key(b, in)
}

// key appends the cache key of in to b. ok is false when in cannot be
// cached (a request id is read, or an identity without a content key has
// claims).
func (r reads) key(b []byte, in Input) (_ []byte, ok bool) {
	req := in.Request
	if req == nil || r.requestID {
		return b, false
	}
	if r.method || r.route {
		b = field(b, 'm', req.Method)
	}
	if r.path || r.route {
		b = field(b, 'p', req.Path)
	}
	if r.host {
		b = field(b, 'h', req.Host)
	}
	if r.scheme {
		b = field(b, 's', req.Scheme)
	}
	if r.query {
		b = multimap(b, 'q', req.Query)
	}
	if r.headers {
		b = multimap(b, 'H', req.Headers)
	}
	if r.sourceIP {
		b = field(b, 'i', req.SourceIP)
	}
	c := in.Credential
	if r.credType {
		b = field(b, 't', orNone(string(c.Type), string(credential.TypeNone)))
	}
	if r.placement {
		b = field(b, 'l', orNone(string(c.Placement), string(credential.PlacementNone)))
	}
	if r.name {
		b = field(b, 'n', c.Name)
	}
	if r.status {
		b = field(b, 'S', in.Status)
	}
	if r.credError {
		problem := in.Error
		if problem == "" {
			problem = c.Problem
		}
		b = field(b, 'e', problem)
	}
	if r.fingerprint {
		if c.Secret.Empty() {
			b = field(b, 'f', "")
		} else {
			sum := c.Secret.Digest()
			b = field(b, 'f', string(sum[:6]))
		}
	}
	// input.route.caller_is_owner depends on the claims: a policy that
	// reads input.route reads the identity too.
	if r.identity || r.route {
		id := in.identity()
		switch {
		case id == nil:
			b = field(b, 'I', "")
		case id.ContentKey != "":
			b = field(b, 'I', "k")
			b = field(b, 'k', id.ContentKey)
		case len(id.Claims) == 0:
			b = field(b, 'I', "f")
			b = field(b, 'K', string(id.Kind))
			b = field(b, 'u', id.Subject)
			b = field(b, 'o', id.Issuer)
			b = field(b, 'y', id.KeyID)
			b = list(b, 'c', id.Scopes)
			b = list(b, 'r', id.Roles)
		default:
			return b, false
		}
	}
	return b, true
}

func orNone(s, none string) string {
	if s == "" {
		return none
	}
	return s
}

// field appends a tagged, length-prefixed string: no two different
// sequences of fields have the same encoding.
func field(b []byte, tag byte, s string) []byte {
	b = append(b, tag)
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func list(b []byte, tag byte, l []string) []byte {
	b = append(b, tag)
	b = binary.AppendUvarint(b, uint64(len(l)))
	for _, s := range l {
		b = field(b, 'v', s)
	}
	return b
}

func multimap(b []byte, tag byte, m map[string][]string) []byte {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	slices.Sort(names)
	b = append(b, tag)
	b = binary.AppendUvarint(b, uint64(len(names)))
	for _, n := range names {
		b = field(b, 'N', n)
		b = list(b, 'V', m[n])
	}
	return b
}
