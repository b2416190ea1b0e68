package bundletest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"sync"
	"time"
)

// Server is the handler of a bundle server, as OPA's bundle API serves a
// bundle: the tarball it holds at any path, with an ETag, and 304 Not
// Modified to a client that has it. It records when the tarball it holds
// was first sent in full, so that a test can wait for a poll.
type Server struct {
	mu   sync.Mutex
	data []byte
	sent time.Time
}

// Serve replaces the tarball served.
func (s *Server) Serve(data []byte) {
	s.mu.Lock()
	s.data, s.sent = data, time.Time{}
	s.mu.Unlock()
}

// SentAt is when the tarball being served was first sent (zero: not yet).
func (s *Server) SentAt() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sent
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	data := s.data
	s.mu.Unlock()
	sum := sha256.Sum256(data)
	etag := `"` + hex.EncodeToString(sum[:8]) + `"`
	if r.Header.Get("If-None-Match") == etag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	w.Header().Set("ETag", etag)
	w.Header().Set("Content-Type", "application/gzip")
	_, _ = w.Write(data)
	s.mu.Lock()
	if s.sent.IsZero() && bytes.Equal(data, s.data) {
		s.sent = time.Now()
	}
	s.mu.Unlock()
}
