package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// certCheckInterval is how often, at most, the certificate files are
// checked for changes (on a TLS handshake).
const certCheckInterval = 10 * time.Second

// serverTLS builds the listener's TLS configuration from c.TLS, or returns
// nil when no certificate is configured. TLS 1.2 is the minimum; cipher
// suites and curves are Go's defaults. With client_ca_file, a client
// certificate is verified against those CAs when one is presented; the
// server then requires one on every endpoint but the health checks
// (server.Options.RequireClientCert), so orchestrator probes still answer.
func serverTLS(c *config, log *slog.Logger) (*tls.Config, error) {
	if c.TLS.CertFile == "" {
		return nil, nil
	}
	certs, err := newCertReloader(c.TLS.CertFile, c.TLS.KeyFile, log)
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: certs.getCertificate,
	}
	if c.TLS.ClientCAFile != "" {
		pem, err := os.ReadFile(c.TLS.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("tls.client_ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls.client_ca_file %s: no PEM certificate found", c.TLS.ClientCAFile)
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
	}
	return cfg, nil
}

// certReloader serves the certificate in a pair of PEM files and loads it
// again when either file changes, so a renewed certificate (cert-manager,
// certbot) is used without a restart. A pair that fails to load is logged
// and the previous certificate stays in use.
type certReloader struct {
	certFile, keyFile string
	log               *slog.Logger

	mu      sync.Mutex
	cert    *tls.Certificate
	stamps  [2]stamp
	checked time.Time
}

func newCertReloader(certFile, keyFile string, log *slog.Logger) (*certReloader, error) {
	r := &certReloader{certFile: certFile, keyFile: keyFile, log: log}
	if err := r.load(); err != nil {
		return nil, err
	}
	r.checked = time.Now()
	return r, nil
}

// load reads the pair and, if valid, makes it current. Call with mu held
// or before the reloader is shared.
func (r *certReloader) load() error {
	stamps := [2]stamp{fileStamp(r.certFile), fileStamp(r.keyFile)}
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		// LoadX509KeyPair's errors name no key material.
		return fmt.Errorf("tls: load %s and %s: %w", r.certFile, r.keyFile, err)
	}
	if cert.Leaf != nil && time.Now().After(cert.Leaf.NotAfter) {
		r.log.Warn("tls certificate has expired", "file", r.certFile, "not_after", cert.Leaf.NotAfter)
	}
	r.cert, r.stamps = &cert, stamps
	return nil
}

// getCertificate implements tls.Config.GetCertificate.
func (r *certReloader) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if now := time.Now(); now.Sub(r.checked) >= certCheckInterval {
		r.checked = now
		if s := [2]stamp{fileStamp(r.certFile), fileStamp(r.keyFile)}; s[0].changed(r.stamps[0]) || s[1].changed(r.stamps[1]) {
			if err := r.load(); err != nil {
				r.stamps = s // log once per change, not once per handshake
				r.log.Error("tls certificate not reloaded; the previous one stays in use", "error", err)
			} else {
				r.log.Info("tls certificate reloaded", "file", r.certFile)
			}
		}
	}
	if r.cert == nil {
		return nil, errors.New("tls: no certificate")
	}
	return r.cert, nil
}
