# Tests of the OPA peer (authz.rego) with the route table of policies/:
# TestOPAPeerPolicy (load_test.go) runs them with `opa test` on the bundle
# the harness writes.
package loadtest.authz_test

import data.loadtest.authz

_key := {"use": "sig", "kty": "EC", "kid": "test-ec", "crv": "P-256", "alg": "ES256", "x": "9pZIWuIwV7lGCpsnKkZc8N_nVUTQY5jS31ZfZSOTHzg", "y": "VFID36pNa-pWiNaR0P-YHrZVSJ73I1Izi6SyrZN5dHs", "d": "caF3eIA5lxi2Y8PHh8YM0GX8sZCSVazsyNehHSbqI1w"}

_stranger := {"kty": "EC", "kid": "test-ec", "crv": "P-256", "alg": "ES256", "x": "T_EwCM8uT05j0pTUyk6fgPYswMNMPjnoRXZYFAxR0q4", "y": "dtONMAnvZ5VV-ZX1hg34I9AqzWUXqOHsb5Yp-FjxFDs", "d": "89a1JCOLeI9xiS1eVJV-cZyyZWcUiVauEZcgtTF-6Gw"}

_jwks := `{"keys":[{"use":"sig","kty":"EC","kid":"test-ec","crv":"P-256","alg":"ES256","x":"9pZIWuIwV7lGCpsnKkZc8N_nVUTQY5jS31ZfZSOTHzg","y":"VFID36pNa-pWiNaR0P-YHrZVSJ73I1Izi6SyrZN5dHs"}]}`

_api_key := "tgk_testid_secret"

_data := {
	"issuer": "https://issuer.test",
	"audience": "orders-api",
	"jwks": _jwks,
	"api_keys": {crypto.sha256(_api_key): {"owner": "catalog", "key_id": "testid", "scopes": ["products:read"]}},
}

_claims(overrides) := object.union(
	{
		"iss": "https://issuer.test",
		"aud": "orders-api",
		"sub": "user-1",
		"customer_number": "100001",
		"scope": "customers:read products:read",
		"iat": _now,
		"nbf": _now,
		"exp": _now + 600,
	},
	overrides,
)

_now := floor(time.now_ns() / 1000000000)

_token(overrides) := io.jwt.encode_sign({"alg": "ES256", "kid": "test-ec", "typ": "JWT"}, _claims(overrides), _key)

_bearer(overrides) := {"authorization": concat(" ", ["Bearer", _token(overrides)])}

_decide(method, path, headers) := d if {
	d := authz.decision with input as {"method": method, "path": path, "headers": headers}
		with data.loadtest.issuer as _data.issuer
		with data.loadtest.audience as _data.audience
		with data.loadtest.jwks as _data.jwks
		with data.loadtest.api_keys as _data.api_keys
}

_denied(d, status, reason) if {
	d.allow == false
	d.status == status
	d.reasons == [reason]
	d.headers == {}
}

test_own_orders_allowed if {
	d := _decide("GET", "/customers/100001/orders?status=open&page=2", _bearer({}))
	d.allow
	d.status == 200
	d.headers["x-user-id"] == "user-1"
	d.headers["x-customer-number"] == "100001"
}

test_own_record_and_deep_paths_allowed if {
	every path in ["/customers/100001", "/customers/100001/orders/7/lines", "/customers/100001?x=1"] {
		_decide("GET", path, _bearer({})).allow
	}
}

test_someone_elses_record_not_owner if {
	_denied(_decide("GET", "/customers/100002", _bearer({})), 403, "not_owner")
	_denied(_decide("GET", "/customers/100002", _bearer({"customer_number": 100002})), 403, "not_owner")
	_denied(_decide("GET", "/customers/100001", _bearer({"customer_number": null})), 403, "not_owner")
}

test_public_anonymous_allowed if {
	d := _decide("GET", "/public/docs/1.html", {})
	d.allow
	d.headers == {}
	_decide("GET", "/public", {}).allow
}

test_products_with_key_or_token if {
	k := _decide("GET", "/products/7", {"x-api-key": _api_key})
	k.allow
	k.headers["x-user-id"] == "catalog"
	k.headers["x-api-key-id"] == "testid"
	t := _decide("GET", "/products", _bearer({}))
	t.allow
	t.headers["x-user-id"] == "user-1"
}

test_api_key_on_sensitive_route if {
	_denied(_decide("GET", "/customers/100001", {"x-api-key": _api_key}), 403, "api_key_not_allowed_for_sensitive_route")
}

test_missing_credential if {
	_denied(_decide("GET", "/products", {}), 401, "credential_missing")
	_denied(_decide("GET", "/customers/100001", {}), 401, "credential_missing")
}

test_invalid_credentials if {
	every headers in [
		{"authorization": concat(" ", ["Bearer", io.jwt.encode_sign({"alg": "ES256", "kid": "test-ec"}, _claims({}), _stranger)])},
		_bearer({"exp": _now - 60}),
		_bearer({"nbf": _now + 600}),
		_bearer({"aud": "another-api"}),
		_bearer({"iss": "https://elsewhere.test"}),
		{"authorization": "Bearer not.a.jwt"},
		{"authorization": concat(" ", ["Bearer", io.jwt.encode_sign({"alg": "HS256"}, _claims({}), {"kty": "oct", "k": "c2VjcmV0"})])},
		{"x-api-key": "tgk_testid_wrong"},
	] {
		_denied(_decide("GET", "/products", headers), 401, "credential_invalid")
	}
}

test_scopes_and_roles if {
	_denied(_decide("GET", "/products", _bearer({"scope": "customers:read"})), 403, "insufficient_scope")
	_denied(_decide("GET", "/customers/100001", _bearer({"scope": "products:read"})), 403, "insufficient_scope")
	_denied(_decide("GET", "/admin/users", _bearer({})), 403, "missing_role")
	_decide("DELETE", "/admin/users", _bearer({"roles": ["admin"]})).allow
}

test_no_route if {
	every req in [["GET", "/nope"], ["POST", "/products"], ["GET", "/customers"], ["GET", "/customers/"], ["DELETE", "/customers/100001"], ["GET", "/products/7/8"]] {
		_denied(_decide(req[0], req[1], _bearer({})), 403, "no_route")
	}
}

test_writes_need_write_scope if {
	_denied(_decide("PUT", "/customers/100001", _bearer({})), 403, "insufficient_scope")
	_decide("PATCH", "/customers/100001", _bearer({"scope": "customers:write"})).allow
}
