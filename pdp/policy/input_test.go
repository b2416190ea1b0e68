package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/tollgate/tollgate/pdp/authn"
	"github.com/tollgate/tollgate/pdp/credential"
	"github.com/tollgate/tollgate/pdp/request"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// Raw secrets of the test inputs. None may ever appear in a policy input.
const (
	jwtSecret    = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXNlY3JldA"
	apiKeySecret = "tg_live_8f2b1c9e0d7a4b6f"
)

func ordersRequest() *request.Request {
	return &request.Request{
		ID:       "0f4c2a",
		Method:   "GET",
		Path:     "/customers/42/orders",
		Segments: []string{"customers", "42", "orders"},
		Host:     "api.example.com",
		Scheme:   "https",
		Query:    map[string][]string{"page": {"2"}, "tag": {"a", "b"}},
		Headers:  map[string][]string{"user-agent": {"curl/8.5"}, "accept": {"application/json"}},
		SourceIP: "203.0.113.7",
	}
}

func userIdentity() *authn.Identity {
	return &authn.Identity{
		Kind:    authn.KindUser,
		Subject: "alice",
		Issuer:  "https://idp.example.com/",
		Claims: map[string]any{
			"email":           "alice@example.com",
			"customer_number": "42",
			"scope":           "orders:read",
			"exp":             json.Number("1767225600"),
			"ratio":           0.5,
			"email_verified":  true,
			"groups":          []any{"staff", nil},
			"address":         map[string]any{"country": "NL"},
		},
		Scopes: []string{"orders:read"},
	}
}

// inputCases are the policy input contract, one golden file each in
// testdata/input/.
var inputCases = []struct {
	name   string
	in     Input
	secret string
}{
	{
		name: "jwt_valid",
		in: Input{
			Request:    ordersRequest(),
			Credential: credential.Credential{Type: credential.TypeBearer, Placement: credential.PlacementHeader, Name: "authorization", Secret: credential.NewSecret(jwtSecret)},
			Status:     StatusValid,
			Identity:   userIdentity(),
		},
		secret: jwtSecret,
	},
	{
		name: "api_key_valid",
		in: Input{
			Request:    ordersRequest(),
			Credential: credential.Credential{Type: credential.TypeAPIKey, Placement: credential.PlacementHeader, Name: "x-api-key", Secret: credential.NewSecret(apiKeySecret)},
			Status:     StatusValid,
			Identity:   &authn.Identity{Kind: authn.KindService, Subject: "billing-service", KeyID: "k_7Hq2", Scopes: []string{"products:read"}},
		},
		secret: apiKeySecret,
	},
	{
		// The identity must not leak into the input of an invalid credential.
		name: "jwt_invalid_in_query",
		in: Input{
			Request:    ordersRequest(),
			Credential: credential.Credential{Type: credential.TypeBearer, Placement: credential.PlacementQuery, Name: "access_token", Secret: credential.NewSecret(jwtSecret)},
			Status:     StatusInvalid,
			Error:      authn.ReasonExpired,
			Identity:   userIdentity(),
		},
		secret: jwtSecret,
	},
	{
		name: "multiple_credentials",
		in: Input{
			Request:    ordersRequest(),
			Credential: credential.Credential{Type: credential.TypeBearer, Placement: credential.PlacementHeader, Name: "authorization", Secret: credential.NewSecret(jwtSecret), Problem: credential.ErrMultipleCredentials},
			Status:     StatusInvalid,
		},
		secret: jwtSecret,
	},
	{
		// Nil lists and maps are empty arrays and objects; a zero credential is "none".
		name: "absent_empty_request",
		in: Input{
			Request: &request.Request{ID: "1", Method: "GET", Path: "/", Scheme: "http"},
			Status:  StatusAbsent,
		},
	},
}

func TestInputValueGolden(t *testing.T) {
	for _, tc := range inputCases {
		t.Run(tc.name, func(t *testing.T) {
			v := tc.in.Value()
			strict, err := tc.in.value(nil, nil)
			if err != nil {
				t.Fatalf("value() = %v", err)
			}
			if strict.Compare(v) != 0 {
				t.Errorf("value() and Value() differ:\n%v\n%v", strict, v)
			}

			got := marshalValue(t, v)
			if tc.secret != "" && bytes.Contains(got, []byte(tc.secret)) {
				t.Fatalf("the raw secret appears in the policy input:\n%s", got)
			}

			file := filepath.Join("testdata", "input", tc.name+".json")
			if *update {
				if err := os.WriteFile(file, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			golden, err := os.ReadFile(file)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if !bytes.Equal(got, golden) {
				t.Errorf("input differs from %s:\ngot:\n%s\nwant:\n%s", file, got, golden)
			}

			// The AST Value builds must be exactly the AST of the JSON document.
			want, err := ast.ValueFromReader(bytes.NewReader(golden))
			if err != nil {
				t.Fatal(err)
			}
			if v.Compare(want) != 0 {
				t.Errorf("Value() != ast.InterfaceToValue(%s):\n%v\n%v", file, v, want)
			}
		})
	}
}

// marshalValue serializes v as indented JSON with sorted keys.
func marshalValue(t *testing.T, v ast.Value) []byte {
	t.Helper()
	doc, err := ast.JSON(v)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return append(b, '\n')
}

func TestInputValueIdentityOnlyWhenValid(t *testing.T) {
	for _, status := range []string{StatusInvalid, StatusAbsent} {
		in := Input{Request: ordersRequest(), Status: status, Identity: userIdentity()}
		obj := in.Value().(ast.Object)
		if obj.Get(keyIdentity) != nil {
			t.Errorf("status %q: identity present in input", status)
		}
	}
	in := Input{Request: ordersRequest(), Status: StatusValid, Identity: userIdentity()}
	if in.Value().(ast.Object).Get(keyIdentity) == nil {
		t.Error("status valid: identity missing from input")
	}
}

func TestInputValueRejectsInvalid(t *testing.T) {
	badClaims := userIdentity()
	badClaims.Claims = map[string]any{"exp": json.Number("not-a-number")}
	cases := []struct {
		name string
		in   Input
	}{
		{"unknown status", Input{Request: ordersRequest(), Status: "ok"}},
		{"empty status", Input{Request: ordersRequest()}},
		{"valid without identity", Input{Request: ordersRequest(), Status: StatusValid}},
		{"no request", Input{Status: StatusAbsent}},
		{"claim not JSON", Input{Request: ordersRequest(), Status: StatusValid, Identity: badClaims}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := tc.in.value(nil, nil); !errors.Is(err, ErrInvalidInput) {
				t.Errorf("value() error = %v, want ErrInvalidInput", err)
			}
			_ = tc.in.Value() // tolerated, never panics
		})
	}

	// Value reports unrepresentable claims as an empty object.
	in := Input{Request: ordersRequest(), Status: StatusValid, Identity: badClaims}
	if s := string(marshalValue(t, in.Value())); !strings.Contains(s, `"claims": {}`) {
		t.Errorf("claims not emptied:\n%s", s)
	}
}

func BenchmarkInputValue(b *testing.B) {
	in := benchInput()
	b.ReportAllocs()
	for b.Loop() {
		_ = in.Value()
	}
}
