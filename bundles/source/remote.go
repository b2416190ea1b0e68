package source

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/download"
	"github.com/open-policy-agent/opa/v1/logging"
	"github.com/open-policy-agent/opa/v1/plugins/rest"

	"github.com/tollgate/tollgate/bundles"
	"github.com/tollgate/tollgate/bundles/lifecycle"
)

// Remote polls a bundle server (OPA's bundle service API: GET the
// resource, ETag, long polling when the server supports it) or an OCI
// registry (a service with `type: oci`) with OPA's downloader, and offers
// every new bundle to Sink. A bundle without a valid signature from a
// configured key, when Verification is set, is refused by OPA's reader.
type Remote struct {
	// Name is the bundle's name, for logs.
	Name string
	// Client is the service's REST client (rest.New from the `services`
	// section).
	Client rest.Client
	// Resource is the bundle's path on the service.
	Resource string
	// Config is the polling configuration (defaults injected by
	// ValidateAndInjectDefaults).
	Config download.Config
	// Verification, when set, requires a signature.
	Verification *bundle.VerificationConfig
	// OCIStore is where OCI layers are kept (type: oci); a temporary
	// directory when empty.
	OCIStore string
	// MaxBytes bounds a bundle (bundles.DefaultMaxBundleBytes when zero).
	MaxBytes int64
	Sink     Sink
	Logger   *slog.Logger
}

// downloader is what download.Downloader and download.OCIDownloader share.
type downloader interface {
	Start(ctx context.Context)
	Stop(ctx context.Context)
}

// Describe names the source for history entries and logs.
func (r Remote) Describe() string {
	return fmt.Sprintf("service %s: %s", r.Client.Service(), r.Resource)
}

// Start starts polling in the background; it stops when ctx ends. It
// returns at once.
func (r Remote) Start(ctx context.Context) {
	max := r.MaxBytes
	if max <= 0 {
		max = bundles.DefaultMaxBundleBytes
	}
	parser := ast.ParserOptions{RegoVersion: ast.RegoV1, ProcessAnnotation: true}
	var d downloader
	if r.Client.Config().Type == "oci" {
		d = download.NewOCI(r.Config, r.Client, r.Resource, r.OCIStore).
			WithCallback(r.update).
			WithBundleVerificationConfig(r.Verification).
			WithSizeLimitBytes(max).
			WithBundlePersistence(true).
			WithBundleParserOpts(parser)
	} else {
		d = download.New(r.Config, r.Client, r.Resource).
			WithCallback(r.update).
			WithBundleVerificationConfig(r.Verification).
			WithSizeLimitBytes(max).
			WithBundlePersistence(true). // hands back the raw tarball, for history
			WithBundleName(r.Name).
			WithBundleParserOpts(parser)
	}
	d.Start(ctx)
	go func() {
		<-ctx.Done()
		d.Stop(context.Background())
	}()
}

// update is the downloader's callback.
func (r Remote) update(ctx context.Context, u download.Update) error {
	src := r.Describe()
	switch {
	case u.Error != nil && unreachable(u.Error):
		r.log().LogAttrs(ctx, slog.LevelWarn, "policy bundle download failed; the active revision keeps answering",
			slog.String("bundle", r.Name), slog.String("source", src), slog.Any("error", u.Error))
		return nil
	case u.Error != nil:
		r.Sink.Refuse(ctx, "", src, u.Error)
		return nil
	case u.Bundle == nil:
		r.Sink.Confirm() // 304 Not Modified
		return nil
	}
	b, err := bundles.Prepare(src, u.Bundle)
	if err != nil {
		r.Sink.Refuse(ctx, u.Bundle.Manifest.Revision, src, err)
		return nil
	}
	var raw []byte
	if u.Raw != nil {
		if raw, err = io.ReadAll(u.Raw); err != nil {
			return err
		}
	}
	if len(raw) == 0 {
		raw = nil // OCI hands no raw tarball: written from the bundle
	}
	// A refusal is recorded by the sink; the downloader keeps polling.
	_ = r.Sink.Offer(ctx, lifecycle.Candidate{Bundle: b, Raw: raw, Source: src})
	return nil
}

func (r Remote) log() *slog.Logger {
	if r.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return r.Logger
}

// unreachable reports whether err is about reaching the server (a network
// error or an HTTP error status), not about the bundle it served.
func unreachable(err error) bool {
	var he download.HTTPError
	var ue *url.Error
	return errors.As(err, &he) || errors.As(err, &ue)
}

// OPALogger adapts log to the logger OPA's REST client and downloader
// take, at level warn and above.
func OPALogger(log *slog.Logger) logging.Logger {
	return logging.NewLoggerFromSlogHandler(log.Handler(), logging.Warn)
}
