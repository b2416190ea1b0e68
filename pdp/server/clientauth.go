package server

import (
	"log/slog"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate/tollgate/pdp/authn"
	"github.com/tollgate/tollgate/pdp/credential"
)

// ClientTokenHeader carries a gateway's client token on every request it
// sends to Tollgate. It is not Authorization: in forward auth that header
// carries the end user's credential, which the policy judges. The header is
// removed from every request before any endpoint sees it, whether client
// tokens are configured or not, so it never reaches the policy input, the
// credential finder or the decision log.
const ClientTokenHeader = "Tollgate-Client-Token"

// Client authentication failure reasons, the label of
// tollgate_client_auth_failures_total. They are logged and counted, never
// sent: every failure answers the same 401.
const (
	clientFailNoCert   = "certificate_missing"
	clientFailNoToken  = "token_missing"
	clientFailMultiple = "token_multiple"
	clientFailError    = "verifier_error"
)

// exempt reports whether a request is for an endpoint that answers without
// client authentication: the health checks, which orchestrators probe
// without credentials and which reveal nothing but liveness and readiness.
// The escaped path is compared, as the router matches it.
func exempt(r *http.Request) bool {
	p := r.URL.EscapedPath()
	return p == "/health/live" || p == "/health/ready"
}

// clientAuth removes ClientTokenHeader from every request and, for every
// endpoint but the health checks, requires what opts configure: a verified
// TLS client certificate (RequireClientCert) and a valid client token
// (ClientTokens). Both must pass when both are configured. A failure
// answers 401 with a body that says nothing about why.
func clientAuth(next http.Handler, opts Options, failures *prometheus.CounterVec) http.Handler {
	log := opts.Logger
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tokens := r.Header.Values(ClientTokenHeader)
		r.Header.Del(ClientTokenHeader)
		if exempt(r) || (!opts.RequireClientCert && opts.ClientTokens == nil) {
			next.ServeHTTP(w, r)
			return
		}
		if opts.RequireClientCert && (r.TLS == nil || len(r.TLS.VerifiedChains) == 0) {
			refuseClient(w, r, log, failures, clientFailNoCert)
			return
		}
		if opts.ClientTokens != nil {
			if reason := verifyClientToken(r, opts.ClientTokens, tokens); reason != "" {
				refuseClient(w, r, log, failures, reason)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// verifyClientToken checks the token values sent and returns "" when
// exactly one was sent and the verifier accepts it, else the reason.
func verifyClientToken(r *http.Request, v authn.Authenticator, tokens []string) string {
	switch {
	case len(tokens) == 0 || (len(tokens) == 1 && tokens[0] == ""):
		return clientFailNoToken
	case len(tokens) > 1:
		return clientFailMultiple
	}
	out, err := v.Authenticate(r.Context(), credential.Credential{
		Type:      credential.TypeAPIKey,
		Placement: credential.PlacementHeader,
		Name:      "tollgate-client-token",
		Secret:    credential.NewSecret(tokens[0]),
	})
	switch {
	case err != nil:
		return clientFailError
	case out.Result == authn.Authenticated:
		return ""
	case out.Reason != "":
		return "token_" + out.Reason
	default:
		return "token_invalid"
	}
}

func refuseClient(w http.ResponseWriter, r *http.Request, log *slog.Logger, failures *prometheus.CounterVec, reason string) {
	failures.WithLabelValues(reason).Inc()
	log.Warn("client authentication failed", "reason", reason, "remote_addr", r.RemoteAddr)
	writeStatus(w, http.StatusUnauthorized, "unauthorized")
}
