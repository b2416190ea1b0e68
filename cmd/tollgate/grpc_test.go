package main

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/tollgate/tollgate/pdp/authn"
	"github.com/tollgate/tollgate/pdp/credential"
)

func TestGRPCConfig(t *testing.T) {
	for _, tc := range []struct {
		yaml, err string
	}{
		{"", ""},
		{"grpc: {listen: \"127.0.0.1:9191\"}", ""},
		{"grpc: {}", ""},
		{"grpc: {listen: \"9191\"}", "grpc.listen"},
		{"listen: \"127.0.0.1:9191\"\ngrpc: {listen: \"127.0.0.1:9191\"}", "must differ"},
		{"grpc: {address: \"127.0.0.1:9191\"}", "address"},
	} {
		c, err := parseConfig([]byte(tc.yaml))
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%q: %v", tc.yaml, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%q: error %v, want one naming %q", tc.yaml, err, tc.err)
		case tc.yaml == "" && c.GRPC.Listen != "":
			t.Errorf("gRPC is on by default: %q", c.GRPC.Listen)
		}
	}
}

// oneToken accepts exactly one client token.
type oneToken string

func (o oneToken) Authenticate(_ context.Context, c credential.Credential) (authn.Outcome, error) {
	if subtle.ConstantTimeCompare([]byte(c.Secret.Reveal()), []byte(o)) == 1 {
		return authn.Outcome{Result: authn.Authenticated, Identity: &authn.Identity{Subject: "gateway"}}, nil
	}
	return authn.Reject("invalid"), nil
}

// TestStartGRPC runs the gRPC listener `serve` starts, with the dev
// decider (embedded policy), and calls it with a client built from
// Envoy's protos: the decision, the health service and client tokens.
func TestStartGRPC(t *testing.T) {
	t.Setenv(devKeyEnv, filepath.Join(t.TempDir(), "dev-key.pem"))
	c, err := resolveConfig(serveFlags{dev: true})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	d, err := buildDecider(context.Background(), c, true, log)
	if err != nil {
		t.Fatal(err)
	}
	for _, tokens := range []authn.Authenticator{nil, oneToken("gw-secret")} {
		name := "no client tokens"
		if tokens != nil {
			name = "client tokens"
		}
		t.Run(name, func(t *testing.T) {
			c.GRPC.Listen = freeLoopback(t)
			stop, err := startGRPC(context.Background(), c, d, nil, tokens, log)
			if err != nil {
				t.Fatal(err)
			}
			conn, err := grpc.NewClient(c.GRPC.Listen, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			defer stop()
			ext, health := authv3.NewAuthorizationClient(conn), healthpb.NewHealthClient(conn)

			hr, err := health.Check(context.Background(), &healthpb.HealthCheckRequest{Service: "envoy.service.auth.v3.Authorization"})
			if err != nil || hr.GetStatus() != healthpb.HealthCheckResponse_SERVING {
				t.Fatalf("health %v %v, want SERVING without a client token", hr.GetStatus(), err)
			}
			ask := func(ctx context.Context, path string) (*authv3.CheckResponse, error) {
				return ext.Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
					Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
						SocketAddress: &corev3.SocketAddress{Address: "203.0.113.7"}}}},
					Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
						Method: "GET", Path: path, Host: "api.example.com", Scheme: "https"}},
				}})
			}
			ctx := context.Background()
			if tokens != nil {
				for _, md := range []metadata.MD{nil, metadata.Pairs("tollgate-client-token", "wrong"),
					metadata.Pairs("tollgate-client-token", "gw-secret", "tollgate-client-token", "gw-secret")} {
					_, err := ask(metadata.NewOutgoingContext(ctx, md), "/public/x")
					if status.Code(err) != codes.Unauthenticated {
						t.Errorf("client token %v: %v, want Unauthenticated", md, err)
					}
					if err != nil && strings.Contains(err.Error(), "wrong") {
						t.Errorf("the refusal quotes the token: %v", err)
					}
				}
				ctx = metadata.NewOutgoingContext(ctx, metadata.Pairs("tollgate-client-token", "gw-secret"))
			}
			resp, err := ask(ctx, "/public/x")
			if err != nil || codes.Code(resp.GetStatus().GetCode()) != codes.OK || resp.GetOkResponse() == nil {
				t.Fatalf("public route: %v %v, want OK", resp, err)
			}
			resp, err = ask(ctx, "/customers/42")
			if err != nil || codes.Code(resp.GetStatus().GetCode()) != codes.PermissionDenied || resp.GetDeniedResponse().GetStatus().GetCode() != 401 {
				t.Fatalf("no credential: %v %v, want PERMISSION_DENIED 401", resp, err)
			}
		})
	}
}

func freeLoopback(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// TestStartGRPCClientCertificates: with tls.client_ca_file, the gRPC
// listener speaks TLS and answers Check only to a client with a verified
// certificate; the health service answers without one.
func TestStartGRPCClientCertificates(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(devKeyEnv, filepath.Join(dir, "dev-key.pem"))
	serverCA, clientCA, otherCA := newPKI(t, dir, "server"), newPKI(t, dir, "client"), newPKI(t, dir, "other")
	serverCA.leaf(t, "tollgate", x509.ExtKeyUsageServerAuth)
	good := clientCA.leaf(t, "gateway", x509.ExtKeyUsageClientAuth)
	bad := otherCA.leaf(t, "intruder", x509.ExtKeyUsageClientAuth)

	c, err := resolveConfig(serveFlags{dev: true})
	if err != nil {
		t.Fatal(err)
	}
	c.TLS.CertFile, c.TLS.KeyFile = filepath.Join(dir, "tollgate.crt"), filepath.Join(dir, "tollgate.key")
	c.TLS.ClientCAFile = filepath.Join(dir, "client-ca.pem")
	c.GRPC.Listen = freeLoopback(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	tlsConfig, err := serverTLS(c, log)
	if err != nil {
		t.Fatal(err)
	}
	d, err := buildDecider(context.Background(), c, true, log)
	if err != nil {
		t.Fatal(err)
	}
	stop, err := startGRPC(context.Background(), c, d, tlsConfig, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()

	roots := x509.NewCertPool()
	roots.AddCert(serverCA.cert)
	for _, tc := range []struct {
		name  string
		certs []tls.Certificate
		want  codes.Code
	}{
		{"verified client certificate", []tls.Certificate{good}, codes.OK},
		{"no client certificate", nil, codes.Unauthenticated},
		{"certificate from another CA", []tls.Certificate{bad}, codes.Unauthenticated}, // Go's client sends none the server's CAs did not issue
	} {
		t.Run(tc.name, func(t *testing.T) {
			creds := credentials.NewTLS(&tls.Config{RootCAs: roots, Certificates: tc.certs, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12})
			conn, err := grpc.NewClient(c.GRPC.Listen, grpc.WithTransportCredentials(creds))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err = authv3.NewAuthorizationClient(conn).Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
				Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: "/public/x"}},
			}})
			if status.Code(err) != tc.want {
				t.Errorf("Check: %v, want %v", err, tc.want)
			}
			if tc.certs == nil {
				hr, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
				if err != nil || hr.GetStatus() != healthpb.HealthCheckResponse_SERVING {
					t.Errorf("health without a client certificate: %v %v, want SERVING", hr.GetStatus(), err)
				}
			}
		})
	}
}
