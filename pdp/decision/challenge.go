package decision

// IdentityHeaders returns the (lower-case) names of the identity headers the
// default policy may set for the upstream. Adapters remove a client's own
// copies of them, so an upstream never mistakes a header the client forged
// for one Tollgate set.
func IdentityHeaders() []string {
	return []string{"x-user-id", "x-auth-kind", "x-auth-issuer", "x-api-key-id", "x-customer-number"}
}

// Challenge is the RFC 6750 WWW-Authenticate value a 401 carries:
// `Bearer realm="…"`, with `error="invalid_token"` when the credential was
// present but invalid.
func Challenge(realm string, reasons []string) string {
	c := `Bearer realm="` + realm + `"`
	for _, r := range reasons {
		if r == "credential_invalid" {
			return c + `, error="invalid_token"`
		}
	}
	return c
}
