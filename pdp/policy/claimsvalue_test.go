package policy

import (
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
)

// claimsOf returns input.identity.claims of the document in builds.
func claimsOf(t testing.TB, in Input) ast.Value {
	t.Helper()
	v, err := in.value(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := v.Find(ast.MustParseRef("x.identity.claims")[1:])
	if err != nil {
		t.Fatalf("no identity.claims: %v", err)
	}
	return got
}

// TestInputUsesPrecomputedClaims: an identity's ClaimsValue (an ast.Object)
// is the claims document as it is, never converted again; anything else
// there is ignored and Claims is converted.
func TestInputUsesPrecomputedClaims(t *testing.T) {
	conv := func(id func() map[string]any) ast.Value {
		v, err := ast.InterfaceToValue(id())
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	fromClaims := conv(func() map[string]any { return userIdentity().Claims })
	// A marker object that Claims cannot produce: seeing it proves the
	// precomputed value was used.
	marker := ast.NewObject(ast.Item(ast.StringTerm("precomputed"), ast.BooleanTerm(true)))
	cases := []struct {
		name  string
		value any
		want  ast.Value
	}{
		{"ast.Object used as it is", marker, marker},
		{"nil: converted", nil, fromClaims},
		{"ast.String: converted", ast.String("x"), fromClaims},
		{"a Go map: converted", map[string]any{"precomputed": true}, fromClaims},
		{"a JSON string: converted", `{"precomputed":true}`, fromClaims},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			id := userIdentity()
			id.ClaimsValue = tc.value
			in := Input{Request: ordersRequest(), Status: StatusValid, Identity: id}
			if got := claimsOf(t, in); got.Compare(tc.want) != 0 {
				t.Fatalf("claims = %v, want %v", got, tc.want)
			}
		})
	}

	// No claims: an empty object, whatever ClaimsValue says.
	id := userIdentity()
	id.Claims, id.ClaimsValue = nil, marker
	if got := claimsOf(t, Input{Request: ordersRequest(), Status: StatusValid, Identity: id}); got.Compare(ast.NewObject()) != 0 {
		t.Fatalf("claims = %v, want {}", got)
	}
	// Not valid: no identity at all.
	id = userIdentity()
	id.ClaimsValue = marker
	v, err := Input{Request: ordersRequest(), Status: StatusInvalid, Identity: id}.value(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Find(ast.MustParseRef("x.identity")[1:]); err == nil {
		t.Fatalf("identity present in an invalid credential's input: %v", v)
	}
}

// BenchmarkInputValueClaimsPrecomputed is BenchmarkInputValue with the
// claims converted by the verifier (authn.Identity.ClaimsValue), as the
// JWT verifier hands them over.
func BenchmarkInputValueClaimsPrecomputed(b *testing.B) {
	in := benchInput()
	v, err := ast.InterfaceToValue(in.Identity.Claims)
	if err != nil {
		b.Fatal(err)
	}
	in.Identity.ClaimsValue = v
	b.ReportAllocs()
	for b.Loop() {
		_ = in.Value()
	}
}
