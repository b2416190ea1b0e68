// Package admin is Tollgate's admin API, served on its own listener
// (admin.listen), never on the decision listener:
//
//	GET  /v1/bundles                    every bundle's active revision, pin, history and last error
//	POST /v1/bundles/{name}/activate    {"revision": "r1"}: roll back (or forward) to a revision in history, and pin it
//	POST /v1/bundles/{name}/unpin       follow the bundle's source again
//
// Every request needs an admin key: an API key (Authorization: Bearer KEY
// or X-API-Key: KEY) whose scopes include Scope. No key, or a key that does
// not verify, is 401; a valid key without the scope is 403.
package admin

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/tollgate/tollgate/pdp/authn"
	"github.com/tollgate/tollgate/pdp/credential"
)

// Scope is the scope an admin key must have.
const Scope = "tollgate:admin"

// maxBodyBytes bounds a request body.
const maxBodyBytes = 4 << 10

// Errors a Bundles implementation wraps, for the status they map to.
var (
	// ErrNotFound: no such bundle, or no such revision in its history
	// (404).
	ErrNotFound = errors.New("not found")
	// ErrRefused: the revision did not activate (409); the active one
	// stays.
	ErrRefused = errors.New("activation refused")
)

// Bundles is what the admin API manages.
type Bundles interface {
	// Status returns the state of every bundle by name, JSON-encodable.
	Status() map[string]any
	// Activate activates revision of bundle name from its history and
	// pins it.
	Activate(ctx context.Context, name, revision string) error
	// Unpin makes bundle name follow its source again.
	Unpin(ctx context.Context, name string) error
}

// Options configure the handler. Keys and Bundles are required.
type Options struct {
	// Keys verifies admin keys (an API key store, pdp/authn/apikey).
	Keys    authn.Authenticator
	Bundles Bundles
	Logger  *slog.Logger
	// Timeout bounds one request (10s when zero).
	Timeout time.Duration
	// Handlers are further endpoints by ServeMux pattern (POST
	// /v1/explain, /debug/pprof/), behind the same admin key but not
	// Timeout: a CPU profile takes as long as it is asked to.
	Handlers map[string]http.Handler
}

// Handler returns the admin API.
func Handler(opts Options) http.Handler {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/bundles", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"bundles": opts.Bundles.Status()})
	})
	mux.HandleFunc("POST /v1/bundles/{name}/activate", func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Revision string `json:"revision"`
		}
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBodyBytes))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&body); err != nil || body.Revision == "" {
			writeError(w, http.StatusBadRequest, `want a body {"revision": "..."}`)
			return
		}
		name := r.PathValue("name")
		if err := opts.Bundles.Activate(r.Context(), name, body.Revision); err != nil {
			fail(w, r, log, err)
			return
		}
		log.LogAttrs(r.Context(), slog.LevelWarn, "admin: bundle revision activated and pinned",
			slog.String("bundle", name), slog.String("revision", body.Revision), slog.String("key_id", keyID(r)))
		writeJSON(w, http.StatusOK, map[string]any{"bundles": opts.Bundles.Status()})
	})
	mux.HandleFunc("POST /v1/bundles/{name}/unpin", func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		if err := opts.Bundles.Unpin(r.Context(), name); err != nil {
			fail(w, r, log, err)
			return
		}
		log.LogAttrs(r.Context(), slog.LevelWarn, "admin: bundle unpinned", slog.String("bundle", name), slog.String("key_id", keyID(r)))
		writeJSON(w, http.StatusOK, map[string]any{"bundles": opts.Bundles.Status()})
	})
	var h http.Handler = http.TimeoutHandler(mux, timeout, `{"error":"timeout"}`)
	if len(opts.Handlers) > 0 {
		outer := http.NewServeMux()
		outer.Handle("/", h)
		for pattern, eh := range opts.Handlers {
			outer.Handle(pattern, eh)
		}
		h = outer
	}
	return authenticate(h, opts.Keys, log)
}

type keyIDKey struct{}

func keyID(r *http.Request) string {
	s, _ := r.Context().Value(keyIDKey{}).(string)
	return s
}

// authenticate lets a request through only with one admin key that
// carries Scope.
func authenticate(next http.Handler, keys authn.Authenticator, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, ok := adminKey(r)
		if !ok {
			refuse(w, r, log, http.StatusUnauthorized, "key_missing")
			return
		}
		out, err := keys.Authenticate(r.Context(), credential.Credential{
			Type: credential.TypeAPIKey, Placement: credential.PlacementHeader, Name: "admin",
			Secret: credential.NewSecret(raw),
		})
		switch {
		case err != nil:
			refuse(w, r, log, http.StatusUnauthorized, "verifier_error")
			return
		case out.Result != authn.Authenticated || out.Identity == nil:
			refuse(w, r, log, http.StatusUnauthorized, "key_invalid")
			return
		}
		has := false
		for _, s := range out.Identity.Scopes {
			has = has || s == Scope
		}
		if !has {
			refuse(w, r, log, http.StatusForbidden, "scope_missing")
			return
		}
		ctx := context.WithValue(r.Context(), keyIDKey{}, out.Identity.KeyID)
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// adminKey returns the one key the request carries, from Authorization:
// Bearer or X-API-Key; two keys, or a header given twice, is no key.
func adminKey(r *http.Request) (string, bool) {
	var keys []string
	for _, v := range r.Header.Values("Authorization") {
		scheme, token, found := strings.Cut(v, " ")
		if !found || !strings.EqualFold(scheme, "Bearer") {
			return "", false
		}
		keys = append(keys, strings.TrimSpace(token))
	}
	keys = append(keys, r.Header.Values("X-API-Key")...)
	if len(keys) != 1 || keys[0] == "" {
		return "", false
	}
	return keys[0], true
}

func refuse(w http.ResponseWriter, r *http.Request, log *slog.Logger, code int, reason string) {
	log.LogAttrs(r.Context(), slog.LevelWarn, "admin: request refused",
		slog.String("reason", reason), slog.String("remote_addr", r.RemoteAddr), slog.String("method", r.Method))
	if code == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="tollgate-admin"`)
	}
	writeError(w, code, http.StatusText(code))
}

func fail(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	code := http.StatusInternalServerError
	switch {
	case errors.Is(err, ErrNotFound):
		code = http.StatusNotFound
	case errors.Is(err, ErrRefused):
		code = http.StatusConflict
	}
	log.LogAttrs(r.Context(), slog.LevelWarn, "admin: request failed", slog.Int("status", code), slog.Any("error", err))
	writeError(w, code, err.Error())
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}

func writeJSON(w http.ResponseWriter, code int, body any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(body)
}
