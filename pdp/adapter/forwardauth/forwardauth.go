// Package forwardauth serves the forward-auth endpoint used by NGINX
// (auth_request), Traefik (ForwardAuth), Caddy (forward_auth) and Envoy's
// HTTP ext_authz filter. A request asks about an original request in one of
// two forms, told apart by its own request target, never by its headers:
//
//   - The header form, at exactly the prefix (default /v1/forward-auth,
//     optionally followed by a query, which is ignored: Caddy keeps the
//     original query there): the original method and target are in
//     X-Original-Method / X-Original-URI (NGINX) or X-Forwarded-Method /
//     X-Forwarded-Uri (Traefik, Caddy). When both families are present they
//     must agree, and each header may appear once, else the answer is 403
//     conflicting_forwarded_headers: a gateway overwrites the family it sets
//     but may pass the other one through from the client. The host is
//     X-Forwarded-Host (else Host), the scheme X-Forwarded-Proto.
//   - The prefix form, at the prefix followed by "/" (Envoy's path_prefix):
//     the request's own method is the original method and everything after
//     the prefix, query included, the original target, exactly as sent (only
//     pdp/request normalizes it). Envoy copies client headers to the
//     authorization request (any its allowed_headers match), so a header
//     that names the request line, X-Original-Method, X-Original-URI,
//     X-Original-URL, X-Forwarded-Method, X-Forwarded-Uri or
//     X-Forwarded-Prefix, in any case, once or repeated, is refused with 403
//     conflicting_forwarded_headers: it can only be the client's (or a
//     misconfigured gateway's), and it must never decide, nor be silently
//     dropped while a header-form gateway's request is judged as "/". The
//     host is the request's own Host (Envoy sends the original :authority
//     there); X-Forwarded-Host is not read, because Envoy passes a client's
//     value through. X-Forwarded-Proto is read, because Envoy's connection
//     manager overwrites it with the downstream connection's scheme unless
//     the hop before it is trusted.
//
// Any other target (a look-alike or percent-encoded prefix, an absolute-form
// target) is refused with 403 missing_original_request. The values of
// Forwarded (RFC 7239), X-Original-URL and X-Forwarded-Prefix are never
// read in either form, and no forwarding or hop-by-hop header reaches the
// policy as a request header. X-Forwarded-Host and X-Forwarded-Proto may
// appear once.
//
// Forwarded headers are honoured only from configured trusted proxies. The
// answer is exactly 200 with the policy's identity headers on allow, and the
// decision's status (401 with WWW-Authenticate, 403, …) on deny, with
// X-Decision-Id always.
package forwardauth

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"

	"github.com/tollgate/tollgate/pdp/decision"
	"github.com/tollgate/tollgate/pdp/request"
)

// Decider is what the handler needs from the PDP.
type Decider interface {
	Decide(ctx context.Context, raw request.Raw) decision.Decision
}

// refuser is implemented by a Decider that records requests refused
// before the pipeline runs (pdp.Decider.Refused), so that every refusal
// has its decision-log event and is counted.
type refuser interface {
	Refused(ctx context.Context, dec decision.Decision, transport, peer string)
}

// Reasons this adapter produces without asking the policy.
const (
	// ReasonUntrustedProxy: forwarded headers came from an address that is
	// not a trusted proxy.
	ReasonUntrustedProxy = "untrusted_proxy"
	// ReasonNoOriginalRequest: a trusted proxy did not say which request
	// it asks about, or asked at a target that is neither form.
	ReasonNoOriginalRequest = "missing_original_request"
	// ReasonConflictingHeaders: the X-Forwarded-* and X-Original-* headers
	// name different requests, one of them is repeated, or a prefix-form
	// request carries a header that names a request line.
	ReasonConflictingHeaders = "conflicting_forwarded_headers"
)

// Options configure the handler.
type Options struct {
	// TrustedProxies are the addresses allowed to set forwarded headers.
	// Empty means nobody: every forward-auth request is denied.
	TrustedProxies []netip.Prefix
	// Realm is the realm of the WWW-Authenticate challenge; default "tollgate".
	Realm string
	// PathPrefix is the path this handler is mounted at, default
	// "/v1/forward-auth". A request to exactly PathPrefix (maybe with a
	// query) is the header form; PathPrefix + "/original/path?query" is the
	// prefix form (Envoy's HTTP ext_authz path_prefix), which asks about the
	// original path with the request's own method and refuses headers that
	// name a request line; any other target is refused (see the package
	// doc).
	PathPrefix string
	Logger     *slog.Logger
}

// Handler serves ANY /v1/forward-auth.
type Handler struct {
	decider Decider
	trusted []netip.Prefix
	realm   string
	prefix  string
	log     *slog.Logger
}

// DefaultPathPrefix is where the server mounts the handler.
const DefaultPathPrefix = "/v1/forward-auth"

var _ http.Handler = (*Handler)(nil)

// New returns the forward-auth handler.
func New(d Decider, opts Options) *Handler {
	if opts.Realm == "" {
		opts.Realm = "tollgate"
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.PathPrefix == "" {
		opts.PathPrefix = DefaultPathPrefix
	}
	return &Handler{decider: d, trusted: opts.TrustedProxies, realm: opts.Realm, prefix: strings.TrimSuffix(opts.PathPrefix, "/"), log: opts.Logger}
}

// headerKind sorts the headers of a forward-auth request.
type headerKind int

const (
	// ordinary headers are the original request's own.
	ordinary headerKind = iota
	// requestLine headers name the original method or target.
	requestLine
	// forwarding headers say where the original request came from.
	forwarding
	// hopByHop headers belong to the forward-auth request itself.
	hopByHop
)

// kindOf sorts a header by its canonical name.
func kindOf(canonicalName string) headerKind {
	switch canonicalName {
	case "X-Original-Method", "X-Original-Uri", "X-Original-Url",
		"X-Forwarded-Method", "X-Forwarded-Uri", "X-Forwarded-Prefix":
		return requestLine
	case "X-Forwarded-Host", "X-Forwarded-Proto", "X-Forwarded-For", "X-Forwarded-Port",
		"Forwarded", "X-Real-Ip":
		return forwarding
	case "Connection", "Keep-Alive", "Proxy-Connection", "Te", "Trailer", "Transfer-Encoding",
		"Upgrade", "Content-Length":
		return hopByHop
	}
	return ordinary
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	peer := peerAddr(r.RemoteAddr)
	if !h.isTrusted(peer) {
		dec := h.refuse(r, peer, decision.Deny(http.StatusForbidden, ReasonUntrustedProxy))
		h.write(w, dec)
		h.log.LogAttrs(r.Context(), slog.LevelWarn, "forward-auth request from an untrusted address", slog.String("peer", peer.String()),
			slog.String("decision_id", dec.ID))
		return
	}
	raw, problem := h.original(r, peer)
	if problem != "" {
		dec := h.refuse(r, peer, decision.Deny(http.StatusForbidden, problem))
		h.write(w, dec)
		h.log.LogAttrs(r.Context(), slog.LevelDebug, "forward-auth request refused before the policy", slog.String("reason", problem),
			slog.String("decision_id", dec.ID))
		return
	}
	h.write(w, h.decider.Decide(r.Context(), raw))
}

// form is the shape of a forward-auth request (see the package doc).
type form int

const (
	formNone    form = iota // neither: refused
	formHeaders             // the prefix exactly, maybe with a query
	formPrefix              // the prefix, "/" and the original target
)

// formOf tells the form of a request from its target as sent, and returns
// the original target of the prefix form.
func (h *Handler) formOf(target string) (form, string) {
	rest, ok := strings.CutPrefix(target, h.prefix)
	switch {
	case !ok:
		return formNone, ""
	case rest == "" || rest[0] == '?':
		return formHeaders, ""
	case rest[0] == '/':
		return formPrefix, rest
	}
	return formNone, ""
}

// original rebuilds the original request from the forward-auth request:
// from its forwarding headers in the header form, from its own request line
// in the prefix form. It fails, naming the reason, when they do not say
// which request it is, or say it twice or differently: a client must not be
// able to choose what is judged.
func (h *Handler) original(r *http.Request, peer netip.Addr) (request.Raw, string) {
	target := r.RequestURI
	if target == "" { // a request built in-process rather than read by a server
		target = r.URL.RequestURI()
	}
	fwd := forwardingHeaders(r.Header)
	var raw request.Raw
	switch f, rest := h.formOf(target); f {
	case formPrefix:
		for name := range fwd {
			if kindOf(name) == requestLine {
				return request.Raw{}, ReasonConflictingHeaders
			}
		}
		raw.Method, raw.Target, raw.Host = r.Method, rest, r.Host
	case formHeaders:
		method, ok := agree(fwd, "X-Forwarded-Method", "X-Original-Method")
		if !ok {
			return request.Raw{}, ReasonConflictingHeaders
		}
		uri, ok := agree(fwd, "X-Forwarded-Uri", "X-Original-Uri")
		if !ok {
			return request.Raw{}, ReasonConflictingHeaders
		}
		if method == "" || uri == "" {
			return request.Raw{}, ReasonNoOriginalRequest
		}
		host, ok := single(fwd, "X-Forwarded-Host")
		if !ok {
			return request.Raw{}, ReasonConflictingHeaders
		}
		if host == "" {
			host = r.Host
		}
		raw.Method, raw.Target, raw.Host = method, uri, host
	default:
		return request.Raw{}, ReasonNoOriginalRequest
	}
	scheme, ok := single(fwd, "X-Forwarded-Proto")
	if !ok {
		return request.Raw{}, ReasonConflictingHeaders
	}
	raw.Scheme = strings.ToLower(scheme)
	raw.SourceIP = h.clientIP(fwd["X-Forwarded-For"], peer).String()
	raw.Headers = make(map[string][]string, len(r.Header))
	for name, v := range r.Header {
		if kindOf(http.CanonicalHeaderKey(name)) == ordinary {
			raw.Headers[name] = v
		}
	}
	return raw, ""
}

// forwardingHeaders collects the values of every header that is not
// ordinary, by canonical name, whatever the case of the keys they are
// stored under: a server canonicalizes them, a Go program calling ServeHTTP
// may not have. Keys are taken in byte order, so that values stored under
// several spellings always come out in the same order.
func forwardingHeaders(hdr http.Header) map[string][]string {
	var names []string
	for name := range hdr {
		if kindOf(http.CanonicalHeaderKey(name)) != ordinary {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	fwd := make(map[string][]string, len(names))
	for _, name := range names {
		c := http.CanonicalHeaderKey(name)
		fwd[c] = append(fwd[c], hdr[name]...)
	}
	return fwd
}

// single returns the header's value, without the optional white space
// (SP and HTAB, RFC 9110 §5.5) around it, "" when it is absent, and false
// when it is repeated. Other white space (U+00A0, U+0085, …) is kept, so the
// normalizer refuses it as it does through /v1/decision.
func single(fwd map[string][]string, name string) (string, bool) {
	switch v := fwd[name]; len(v) {
	case 0:
		return "", true
	case 1:
		return strings.Trim(v[0], " \t"), true
	}
	return "", false
}

// agree returns the value of whichever of the two headers is set, and false
// when both are set to different values, or either is repeated.
func agree(fwd map[string][]string, a, b string) (string, bool) {
	x, ok := single(fwd, a)
	if !ok {
		return "", false
	}
	y, ok := single(fwd, b)
	switch {
	case !ok:
		return "", false
	case x == "":
		return y, true
	case y == "" || x == y:
		return x, true
	}
	return "", false
}

// clientIP is the right-most address of X-Forwarded-For that is not a
// trusted proxy, or the peer itself when every hop is trusted or the header
// is absent or malformed.
func (h *Handler) clientIP(xff []string, peer netip.Addr) netip.Addr {
	var hops []string
	for _, line := range xff {
		hops = append(hops, strings.Split(line, ",")...)
	}
	client := peer
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(strings.Trim(hops[i], " \t"))
		if err != nil {
			return client
		}
		client = a.Unmap()
		if !h.isTrusted(client) {
			return client
		}
	}
	return client
}

func (h *Handler) isTrusted(a netip.Addr) bool {
	if !a.IsValid() {
		return false
	}
	for _, p := range h.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// write puts the decision on the wire.
func (h *Handler) write(w http.ResponseWriter, dec decision.Decision) {
	hdr := w.Header()
	hdr.Set("X-Decision-Id", dec.ID)
	hdr.Set("Cache-Control", "no-store")
	if dec.Allow {
		for name, v := range dec.Headers {
			hdr.Set(name, v)
		}
		w.WriteHeader(http.StatusOK)
		return
	}
	// NGINX's auth_request understands only 2xx, 401 and 403: every other
	// client error becomes 403 (the reasons in the body stay exact); server
	// errors stay 5xx, which every gateway treats as a deny.
	status := dec.Status
	if status < 500 && status != http.StatusUnauthorized {
		status = http.StatusForbidden
	}
	if status > 599 {
		status = http.StatusInternalServerError
	}
	if status == http.StatusUnauthorized {
		hdr.Set("WWW-Authenticate", decision.Challenge(h.realm, dec.Reasons))
	}
	hdr.Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(struct {
		ID      string   `json:"decision_id"`
		Reasons []string `json:"reasons"`
	}{dec.ID, dec.Reasons})
}

// refuse gives a refusal its decision id and records it when the decider
// records refusals.
func (h *Handler) refuse(r *http.Request, peer netip.Addr, d decision.Decision) decision.Decision {
	d = withID(d)
	if rf, ok := h.decider.(refuser); ok {
		addr := ""
		if peer.IsValid() {
			addr = peer.String()
		}
		rf.Refused(r.Context(), d, "forward-auth", addr)
	}
	return d
}

func withID(d decision.Decision) decision.Decision {
	d.ID = decision.NewID()
	return d
}

func peerAddr(remote string) netip.Addr {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}
	}
	return a.Unmap()
}
