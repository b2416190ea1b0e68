package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/tollgate/tollgate/pdp"
	"github.com/tollgate/tollgate/pdp/adapter/extauthz"
	"github.com/tollgate/tollgate/pdp/authn"
	"github.com/tollgate/tollgate/pdp/credential"
	"github.com/tollgate/tollgate/pdp/server"
)

// Bounds of the gRPC listener.
const (
	grpcMaxRecvBytes     = 1 << 20 // a CheckRequest: Envoy's headers are bounded far below this
	grpcMaxStreams       = 1024
	grpcHealthInterval   = time.Second
	grpcConnTimeout      = 5 * time.Second
	grpcHealthServicePfx = "/grpc.health.v1.Health/"
)

// grpcClientTokenKey is server.ClientTokenHeader as gRPC metadata (lower
// case): Envoy sends it with grpc_service.initial_metadata.
var grpcClientTokenKey = strings.ToLower(server.ClientTokenHeader)

// startGRPC listens on grpc.listen, when set, and serves Envoy's ext_authz
// v3 service and the gRPC health service there until stop is called. It
// uses the HTTP listener's TLS configuration and client authentication
// (client certificates, client tokens as the tollgate-client-token
// metadata), except for the health service. stop stops gracefully, for up
// to the shutdown timeout, then hard. With no grpc.listen, stop does
// nothing.
func startGRPC(ctx context.Context, c *config, d *pdp.Decider, tlsConfig *tls.Config, tokens authn.Authenticator, log *slog.Logger) (stop func(), err error) {
	if c.GRPC.Listen == "" {
		return func() {}, nil
	}
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", c.GRPC.Listen)
	if err != nil {
		return nil, fmt.Errorf("grpc listen: %w", err)
	}
	requireCert := tlsConfig != nil && tlsConfig.ClientCAs != nil
	auth := grpcClientAuth{requireCert: requireCert, tokens: tokens, log: log}
	opts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(grpcMaxRecvBytes),
		grpc.MaxConcurrentStreams(grpcMaxStreams),
		grpc.ConnectionTimeout(grpcConnTimeout),
		grpc.UnaryInterceptor(auth.unary),
		grpc.StreamInterceptor(auth.stream),
	}
	if tlsConfig != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(tlsConfig.Clone())))
	}
	g := grpc.NewServer(opts...)
	svc := extauthz.New(d, extauthz.Options{Logger: log, JWTAuthnPayloads: c.jwtAuthnPayloads()})
	svc.Register(g)
	wctx, cancel := context.WithCancel(ctx)
	go svc.WatchReadiness(wctx, grpcHealthInterval)
	done := make(chan error, 1)
	go func() { done <- g.Serve(ln) }()
	log.Info("tollgate gRPC listening (Envoy ext_authz v3, gRPC health)", "addr", ln.Addr().String(),
		"tls", tlsConfig != nil, "client_certificates", requireCert, "client_tokens", tokens != nil)
	warnIfOpen(log, ln.Addr(), tlsConfig, tokens != nil)

	shutdown := c.Timeouts.Shutdown
	if shutdown <= 0 {
		shutdown = server.DefaultShutdownTimeout
	}
	return func() {
		cancel()
		graceful := make(chan struct{})
		go func() { g.GracefulStop(); close(graceful) }()
		select {
		case <-graceful:
		case <-time.After(shutdown):
			g.Stop()
		}
		if err := <-done; err != nil {
			log.Warn("gRPC server stopped", "error", err)
		}
	}, nil
}

// grpcClientAuth requires of every call but the health service what the
// HTTP listener requires (see server.Options): a verified client
// certificate and a valid client token, as configured. A failure is
// UNAUTHENTICATED with a message that says nothing about why.
type grpcClientAuth struct {
	requireCert bool
	tokens      authn.Authenticator
	log         *slog.Logger
}

var errGRPCUnauthenticated = status.Error(codes.Unauthenticated, "unauthenticated")

func (a grpcClientAuth) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if err := a.check(ctx, info.FullMethod); err != nil {
		return nil, err
	}
	return h(ctx, req)
}

func (a grpcClientAuth) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if err := a.check(ss.Context(), info.FullMethod); err != nil {
		return err
	}
	return h(srv, ss)
}

func (a grpcClientAuth) check(ctx context.Context, method string) error {
	if strings.HasPrefix(method, grpcHealthServicePfx) || (!a.requireCert && a.tokens == nil) {
		return nil
	}
	if a.requireCert {
		p, ok := peer.FromContext(ctx)
		ti, isTLS := p.AuthInfo.(credentials.TLSInfo)
		if !ok || !isTLS || len(ti.State.VerifiedChains) == 0 {
			return a.refuse("certificate_missing")
		}
	}
	if a.tokens != nil {
		md, _ := metadata.FromIncomingContext(ctx)
		vals := md.Get(grpcClientTokenKey)
		switch {
		case len(vals) == 0 || vals[0] == "":
			return a.refuse("token_missing")
		case len(vals) > 1:
			return a.refuse("token_multiple")
		}
		out, err := a.tokens.Authenticate(ctx, credential.Credential{
			Type:      credential.TypeAPIKey,
			Placement: credential.PlacementHeader,
			Name:      grpcClientTokenKey,
			Secret:    credential.NewSecret(vals[0]),
		})
		if err != nil || out.Result != authn.Authenticated {
			return a.refuse("token_invalid")
		}
	}
	return nil
}

func (a grpcClientAuth) refuse(reason string) error {
	a.log.Warn("gRPC client authentication failed", "reason", reason)
	return errGRPCUnauthenticated
}
