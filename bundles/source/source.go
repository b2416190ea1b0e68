// Package source feeds a bundle's life cycle (package bundles/lifecycle)
// from where its revisions come from: a directory watched for changes, a
// bundle file watched for changes, or a bundle server polled with OPA's own
// downloader (package download: ETag, long polling, OCI registries), with
// OPA's signature verification.
//
// Each source reads and verifies a candidate and hands it to a Sink; the
// sink compiles, checks and activates it, or refuses it.
package source

import (
	"context"

	"github.com/tollgate/tollgate/bundles/lifecycle"
)

// Sink receives what a source reads: lifecycle.Bundle.
type Sink interface {
	// Offer hands over a candidate read and verified by the source.
	Offer(ctx context.Context, c lifecycle.Candidate) error
	// Refuse records a candidate that could not be read or verified.
	Refuse(ctx context.Context, revision, source string, err error)
	// Confirm records that the source still serves what is active.
	Confirm()
}

var _ Sink = (*lifecycle.Bundle)(nil)
