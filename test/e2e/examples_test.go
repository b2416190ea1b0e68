package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/header_mutation/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/tollgate/tollgate/pdp/decision"
)

// The recipes under examples/ that no test runs a real gateway with.
const examplesDir = "../../examples"

// yamlToJSON reads a YAML file as JSON.
func yamlToJSON(t *testing.T, file string) []byte {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var v any
	if err := yaml.Unmarshal(b, &v); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	j, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return j
}

// TestEnvoyExamples reads both Envoy recipes with Envoy's own protos (no
// unknown field, every typed_config resolved, Envoy's validation rules)
// and checks what the recipes promise: the header_mutation filter removes
// every identity header before ext_authz runs, which fails closed and asks
// Tollgate over gRPC or at /v1/forward-auth.
func TestEnvoyExamples(t *testing.T) {
	for _, tc := range []struct {
		file string
		grpc bool
	}{
		{"envoy/envoy-grpc.yaml", true},
		{"envoy/envoy-http.yaml", false},
	} {
		t.Run(tc.file, func(t *testing.T) {
			var bs bootstrapv3.Bootstrap
			if err := protojson.Unmarshal(yamlToJSON(t, filepath.Join(examplesDir, tc.file)), &bs); err != nil {
				t.Fatalf("not an Envoy bootstrap: %v", err)
			}
			if err := bs.ValidateAll(); err != nil {
				t.Fatalf("Envoy's validation: %v", err)
			}
			found := false
			for _, l := range bs.GetStaticResources().GetListeners() {
				for _, fc := range l.GetFilterChains() {
					for _, f := range fc.GetFilters() {
						var hcm hcmv3.HttpConnectionManager
						if err := f.GetTypedConfig().UnmarshalTo(&hcm); err != nil {
							t.Fatalf("filter %s: %v", f.GetName(), err)
						}
						if err := hcm.ValidateAll(); err != nil {
							t.Fatalf("http_connection_manager: %v", err)
						}
						var order []string
						for _, hf := range hcm.GetHttpFilters() {
							order = append(order, hf.GetName())
							if hf.GetName() != "envoy.filters.http.ext_authz" {
								continue
							}
							found = true
							var ea extauthzv3.ExtAuthz
							if err := hf.GetTypedConfig().UnmarshalTo(&ea); err != nil {
								t.Fatal(err)
							}
							if err := ea.ValidateAll(); err != nil {
								t.Fatalf("ext_authz: %v", err)
							}
							if ea.GetFailureModeAllow() {
								t.Error("failure_mode_allow is true: the recipe would fail open")
							}
							if tc.grpc && ea.GetGrpcService() == nil {
								t.Error("no grpc_service")
							}
							if !tc.grpc && ea.GetHttpService().GetPathPrefix() != "/v1/forward-auth" {
								t.Errorf("path_prefix %q", ea.GetHttpService().GetPathPrefix())
							}
						}
						want := []string{"envoy.filters.http.header_mutation", "envoy.filters.http.ext_authz", "envoy.filters.http.router"}
						if strings.Join(order, ",") != strings.Join(want, ",") {
							t.Errorf("http_filters %q, want %q", order, want)
						}
					}
				}
			}
			if !found {
				t.Fatal("no ext_authz filter")
			}
		})
	}
}

// TestRecipesClearIdentityHeaders: every recipe that can pass a client's
// header on names each identity header (to remove it or to overwrite it),
// and every YAML recipe parses. Istio's relies on Tollgate's
// headers_to_remove, which TestTransports checks.
func TestRecipesClearIdentityHeaders(t *testing.T) {
	for _, file := range []string{
		"caddy/Caddyfile", "traefik/dynamic.yml", "envoy/envoy-grpc.yaml", "envoy/envoy-http.yaml",
		"kong/kong.yaml", "apisix/apisix.yaml",
	} {
		t.Run(file, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join(examplesDir, file))
			if err != nil {
				t.Fatal(err)
			}
			if strings.HasSuffix(file, ".yaml") || strings.HasSuffix(file, ".yml") {
				yamlToJSON(t, filepath.Join(examplesDir, file))
			}
			text := strings.ToLower(string(b))
			for _, h := range decision.IdentityHeaders() {
				if !strings.Contains(text, h) {
					t.Errorf("does not name %s", h)
				}
			}
		})
	}
	yamlToJSON(t, filepath.Join(examplesDir, "istio/istio.yaml"))
	yamlToJSON(t, filepath.Join(examplesDir, "traefik/traefik.yml"))
}
