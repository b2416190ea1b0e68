// Package forwardauth serves the forward-auth endpoint used by NGINX
// (auth_request), Traefik (ForwardAuth) and Caddy (forward_auth): the gateway
// sends a copy of the original request's headers, and the original method,
// URI, host and scheme in X-Forwarded-* or X-Original-* headers.
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
	"strings"

	"github.com/tollgate/tollgate/pdp/decision"
	"github.com/tollgate/tollgate/pdp/request"
)

// Decider is what the handler needs from the PDP.
type Decider interface {
	Decide(ctx context.Context, raw request.Raw) decision.Decision
}

// Reasons this adapter produces without asking the policy.
const (
	// ReasonUntrustedProxy: forwarded headers came from an address that is
	// not a trusted proxy.
	ReasonUntrustedProxy = "untrusted_proxy"
	// ReasonNoOriginalRequest: a trusted proxy did not say which request
	// it asks about.
	ReasonNoOriginalRequest = "missing_original_request"
	// ReasonConflictingHeaders: the X-Forwarded-* and X-Original-* headers
	// name different requests, or one of them is repeated.
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
	// "/v1/forward-auth". A request to PathPrefix + "/original/path?query"
	// without forwarding headers asks about the original path, with the
	// request's own method: the shape of Envoy's HTTP ext_authz service
	// (path_prefix).
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

// passedOn reports whether a header of the forward-auth request is part of
// the original request. Forwarding headers (read for the original request
// line) and hop-by-hop headers are not.
func passedOn(canonicalName string) bool {
	switch canonicalName {
	case "X-Forwarded-Method", "X-Forwarded-Uri", "X-Forwarded-Host", "X-Forwarded-Proto",
		"X-Forwarded-For", "X-Forwarded-Port", "X-Forwarded-Prefix", "Forwarded",
		"X-Original-Method", "X-Original-Uri", "X-Original-Url", "X-Real-Ip",
		"Connection", "Keep-Alive", "Proxy-Connection", "Te", "Trailer", "Transfer-Encoding", "Upgrade", "Content-Length":
		return false
	}
	return true
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	peer := peerAddr(r.RemoteAddr)
	if !h.isTrusted(peer) {
		h.write(w, withID(decision.Deny(http.StatusForbidden, ReasonUntrustedProxy)))
		h.log.LogAttrs(r.Context(), slog.LevelWarn, "forward-auth request from an untrusted address", slog.String("peer", peer.String()))
		return
	}
	raw, problem := h.original(r)
	if problem != "" {
		h.write(w, withID(decision.Deny(http.StatusForbidden, problem)))
		return
	}
	raw.SourceIP = h.clientIP(r.Header.Values("X-Forwarded-For"), peer).String()
	h.write(w, h.decider.Decide(r.Context(), raw))
}

// original rebuilds the original request from the forwarding headers. It
// fails when they are missing, or when the X-Forwarded-* and X-Original-*
// families disagree: a gateway overwrites the family it sets, but may pass
// the other one through from the client, and a client must not be able to
// choose what is judged.
func (h *Handler) original(r *http.Request) (request.Raw, string) {
	method, ok := agree(r.Header, "X-Forwarded-Method", "X-Original-Method")
	if !ok {
		return request.Raw{}, ReasonConflictingHeaders
	}
	target, ok := agree(r.Header, "X-Forwarded-Uri", "X-Original-Uri")
	if !ok {
		return request.Raw{}, ReasonConflictingHeaders
	}
	if target == "" && method == "" {
		// Envoy's HTTP ext_authz: the original path follows the prefix and
		// the method is the original one.
		if rest, ok := strings.CutPrefix(r.RequestURI, h.prefix); ok && strings.HasPrefix(rest, "/") {
			method, target = r.Method, rest
		}
	}
	if method == "" || target == "" {
		return request.Raw{}, ReasonNoOriginalRequest
	}
	host := first(r.Header, "X-Forwarded-Host")
	if host == "" {
		host = r.Host
	}
	headers := make(map[string][]string, len(r.Header))
	for name, v := range r.Header {
		if passedOn(name) {
			headers[name] = v
		}
	}
	return request.Raw{
		Method:  method,
		Target:  target,
		Host:    host,
		Scheme:  strings.ToLower(first(r.Header, "X-Forwarded-Proto")),
		Headers: headers,
	}, ""
}

// agree returns the value of whichever of the two headers is set, and false
// when both are set (once each) to different values, or either is repeated.
func agree(hdr http.Header, a, b string) (string, bool) {
	va, vb := hdr.Values(a), hdr.Values(b)
	if len(va) > 1 || len(vb) > 1 {
		return "", false
	}
	x, y := first(hdr, a), first(hdr, b)
	switch {
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
		a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
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
		hdr.Set("WWW-Authenticate", challenge(h.realm, dec.Reasons))
	}
	hdr.Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(struct {
		ID      string   `json:"decision_id"`
		Reasons []string `json:"reasons"`
	}{dec.ID, dec.Reasons})
}

// challenge builds an RFC 6750 Bearer challenge.
func challenge(realm string, reasons []string) string {
	c := `Bearer realm="` + realm + `"`
	for _, r := range reasons {
		if r == "credential_invalid" {
			return c + `, error="invalid_token"`
		}
	}
	return c
}

func withID(d decision.Decision) decision.Decision {
	d.ID = decision.NewID()
	return d
}

func first(h http.Header, names ...string) string {
	for _, n := range names {
		if v := strings.TrimSpace(h.Get(n)); v != "" {
			return v
		}
	}
	return ""
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
