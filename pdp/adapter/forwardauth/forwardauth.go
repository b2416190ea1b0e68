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
	raw, ok := h.original(r, peer)
	if !ok {
		h.write(w, withID(decision.Deny(http.StatusForbidden, ReasonNoOriginalRequest)))
		return
	}
	h.write(w, h.decider.Decide(r.Context(), raw))
}

// original rebuilds the original request from the forwarding headers.
func (h *Handler) original(r *http.Request, peer netip.Addr) (request.Raw, bool) {
	method := first(r.Header, "X-Forwarded-Method", "X-Original-Method")
	target := first(r.Header, "X-Forwarded-Uri", "X-Original-Uri")
	if target == "" {
		// X-Original-URL carries an absolute URL in some setups.
		if u := r.Header.Get("X-Original-Url"); u != "" {
			if i := strings.Index(u, "://"); i >= 0 {
				if j := strings.IndexByte(u[i+3:], '/'); j >= 0 {
					target = u[i+3+j:]
				} else {
					target = "/"
				}
			}
		}
	}
	if target == "" && method == "" {
		// Envoy's HTTP ext_authz: the original path follows the prefix and
		// the method is the original one.
		if rest, ok := strings.CutPrefix(r.RequestURI, h.prefix); ok && strings.HasPrefix(rest, "/") {
			method, target = r.Method, rest
		}
	}
	if method == "" || target == "" {
		return request.Raw{}, false
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
		ID:       r.Header.Get("X-Request-Id"),
		Method:   method,
		Target:   target,
		Host:     host,
		Scheme:   strings.ToLower(first(r.Header, "X-Forwarded-Proto")),
		Headers:  headers,
		SourceIP: h.clientIP(r.Header.Values("X-Forwarded-For"), peer).String(),
	}, true
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
	status := dec.Status
	if status < 400 || status > 599 {
		status = http.StatusForbidden
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
