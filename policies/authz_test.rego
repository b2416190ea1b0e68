package tollgate.authz_test

import data.tollgate.authz

# ---------------------------------------------------------------------------
# Input builders
# ---------------------------------------------------------------------------

_request(method, path) := {
	"id": "0f4c",
	"method": method,
	"path": path,
	"segments": [s | some s in split(path, "/"); s != ""],
	"host": "api.example.com",
	"scheme": "https",
	"query": {},
	"headers": {"user-agent": ["curl/8.5"]},
	"source_ip": "203.0.113.7",
}

_no_credential := {"type": "none", "placement": "none", "name": "", "status": "absent", "error": "", "fingerprint": ""}

_bearer_header := {
	"type": "bearer", "placement": "header", "name": "authorization",
	"status": "valid", "error": "", "fingerprint": "sha256:3b1f9c0e6a2d",
}

_bearer_cookie := _set(_bearer_header, {"placement": "cookie", "name": "session"})

_bearer_query := _set(_bearer_header, {"placement": "query", "name": "access_token"})

_api_key_header := {
	"type": "api_key", "placement": "header", "name": "x-api-key",
	"status": "valid", "error": "", "fingerprint": "sha256:9a0b1c2d3e4f",
}

_api_key_query := _set(_api_key_header, {"placement": "query", "name": "api_key"})

# _set replaces the given top-level fields (object.union would merge nested
# objects such as claims).
_set(obj, fields) := object.union(object.remove(obj, object.keys(fields)), fields)

_invalid(credential, err) := _set(credential, {"status": "invalid", "error": err})

_alice(scopes) := {
	"kind": "user",
	"subject": "alice",
	"issuer": "https://idp.example.com/",
	"claims": {"email": "alice@example.com", "customer_number": "42", "scope": concat(" ", scopes)},
	"scopes": scopes,
	"roles": [],
}

_admin := _set(_alice([]), {"subject": "root", "roles": ["admin"], "claims": {"roles": ["admin"]}})

_billing(scopes) := {
	"kind": "service",
	"subject": "billing",
	"key_id": "key_7f3a",
	"claims": null,
	"scopes": scopes,
	"roles": [],
}

# _in builds an input; identity is left out unless the credential is valid,
# as the contract says.
_in(method, path, credential, identity) := {"request": _request(method, path), "credential": credential, "identity": identity} if {
	credential.status == "valid"
} else := {"request": _request(method, path), "credential": credential}

_anonymous(method, path) := _in(method, path, _no_credential, null)

_user(method, path, scopes) := _in(method, path, _bearer_header, _alice(scopes))

_service(method, path, scopes) := _in(method, path, _api_key_header, _billing(scopes))

_alice_headers := {
	"x-user-id": "alice",
	"x-auth-kind": "user",
	"x-auth-issuer": "https://idp.example.com/",
	"x-customer-number": "42",
}

_root_headers := {"x-user-id": "root", "x-auth-kind": "user", "x-auth-issuer": "https://idp.example.com/"}

_billing_headers := {"x-user-id": "billing", "x-auth-kind": "service", "x-api-key-id": "key_7f3a"}

# ---------------------------------------------------------------------------
# Assertions
# ---------------------------------------------------------------------------

_allowed(d, headers) if d == {"allow": true, "status": 200, "reasons": [], "headers": headers}

_denied(d, status, reasons) if d == {"allow": false, "status": status, "reasons": reasons, "headers": {}}

_decide(inp) := d if {
	d := authz.decision with input as inp
}

_decide_with(inp, routes) := d if {
	d := authz.decision with input as inp with data.tollgate.routes as routes
}

# ---------------------------------------------------------------------------
# The embedded route table
# ---------------------------------------------------------------------------

test_embedded_route_table_is_valid if {
	count(authz.route_errors) == 0
	count(authz.bundle_errors) == 0
	count(data.tollgate.routes) == 5
}

test_embedded_route_ids if {
	[r.id | some r in data.tollgate.routes] == ["public", "products-read", "customers-read", "customers-write", "admin"]
}

# Row: GET /public/** — public ---------------------------------------------

test_public_allows_anonymous[path] if {
	some path in ["/public", "/public/docs", "/public/docs/a/b/c.html"]
	_allowed(_decide(_anonymous("GET", path)), {})
}

test_public_allows_invalid_credential_without_headers if {
	_allowed(_decide(_in("GET", "/public/x", _invalid(_bearer_header, "expired"), null)), {})
}

test_public_allows_credential_in_query if {
	_allowed(_decide(_in("GET", "/public/x", _api_key_query, _billing([]))), _billing_headers)
}

test_public_adds_identity_headers_for_valid_credential if {
	_allowed(_decide(_user("GET", "/public/x", [])), _alice_headers)
}

test_public_other_method_is_no_route[method] if {
	some method in ["POST", "PUT", "DELETE", "HEAD", "OPTIONS"]
	_denied(_decide(_anonymous(method, "/public/x")), 403, ["no_route"])
}

# Row: GET /products, /products/{id} — internal, scope products:read -------

test_products_allows_api_key_with_scope[path] if {
	some path in ["/products", "/products/7"]
	_allowed(_decide(_service("GET", path, ["products:read"])), _billing_headers)
}

test_products_allows_api_key_in_query if {
	_allowed(_decide(_in("GET", "/products/7", _api_key_query, _billing(["products:read"]))), _billing_headers)
}

test_products_allows_user_jwt_with_scope if {
	_allowed(_decide(_user("GET", "/products/7", ["products:read"])), _alice_headers)
}

test_products_requires_credential if {
	_denied(_decide(_anonymous("GET", "/products")), 401, ["credential_missing"])
}

test_products_rejects_invalid_credential if {
	_denied(_decide(_in("GET", "/products", _invalid(_api_key_header, "unknown_key"), null)), 401, ["credential_invalid", "unknown_key"])
}

test_products_requires_scope if {
	_denied(_decide(_service("GET", "/products/7", ["orders:read"])), 403, ["insufficient_scope"])
	_denied(_decide(_user("GET", "/products/7", [])), 403, ["insufficient_scope"])
}

test_products_other_method_or_path_is_no_route[note] if {
	some note, tc in {
		"POST /products": ["POST", "/products"],
		"DELETE /products/7": ["DELETE", "/products/7"],
		"GET /products/7/reviews": ["GET", "/products/7/reviews"],
		"GET /productsX": ["GET", "/productsX"],
	}
	_denied(_decide(_service(tc[0], tc[1], ["products:read"])), 403, ["no_route"])
}

# Row: GET /customers/{customer_number}[/**] — sensitive, customers:read, owner

test_customers_read_allows_owner[path] if {
	some path in ["/customers/42", "/customers/42/orders", "/customers/42/orders/7"]
	_allowed(_decide(_user("GET", path, ["customers:read"])), _alice_headers)
}

test_customers_read_allows_session_cookie if {
	_allowed(_decide(_in("GET", "/customers/42", _bearer_cookie, _alice(["customers:read"]))), _alice_headers)
}

test_customers_read_denies_other_customer[path] if {
	some path in ["/customers/43", "/customers/43/orders/7", "/customers/420"]
	_denied(_decide(_user("GET", path, ["customers:read"])), 403, ["not_owner"])
}

test_customers_read_requires_scope if {
	_denied(_decide(_user("GET", "/customers/42", ["customers:write", "products:read"])), 403, ["insufficient_scope"])
}

test_customers_read_rejects_api_key if {
	_denied(_decide(_service("GET", "/customers/42", ["customers:read"])), 403, ["api_key_not_allowed_for_sensitive_route"])
}

test_customers_read_rejects_token_in_query if {
	_denied(_decide(_in("GET", "/customers/42", _bearer_query, _alice(["customers:read"]))), 403, ["credential_in_query"])
}

test_customers_read_requires_credential if {
	_denied(_decide(_anonymous("GET", "/customers/42")), 401, ["credential_missing"])
}

test_customers_read_rejects_invalid_token if {
	_denied(_decide(_in("GET", "/customers/42/orders", _invalid(_bearer_header, "bad_signature"), null)), 401, ["credential_invalid", "bad_signature"])
}

test_customers_collection_is_no_route[note] if {
	some note, tc in {
		"GET /customers": ["GET", "/customers"],
		"GET /customersX/42": ["GET", "/customersX/42"],
		"GET /customers42": ["GET", "/customers42"],
		"POST /customers/42": ["POST", "/customers/42"],
		"DELETE /customers/42": ["DELETE", "/customers/42"],
	}
	_denied(_decide(_user(tc[0], tc[1], ["customers:read", "customers:write"])), 403, ["no_route"])
}

# Row: PUT, PATCH /customers/{customer_number}[/**] — sensitive, customers:write, owner

test_customers_write_allows_owner[note] if {
	some method in ["PUT", "PATCH"]
	some path in ["/customers/42", "/customers/42/address"]
	note := concat(" ", [method, path])
	_allowed(_decide(_user(method, path, ["customers:write"])), _alice_headers)
}

test_customers_write_requires_write_scope[method] if {
	some method in ["PUT", "PATCH"]
	_denied(_decide(_user(method, "/customers/42", ["customers:read"])), 403, ["insufficient_scope"])
}

test_customers_write_denies_other_customer[method] if {
	some method in ["PUT", "PATCH"]
	_denied(_decide(_user(method, "/customers/7", ["customers:write"])), 403, ["not_owner"])
}

test_customers_write_rejects_api_key[method] if {
	some method in ["PUT", "PATCH"]
	_denied(_decide(_service(method, "/customers/42", ["customers:write"])), 403, ["api_key_not_allowed_for_sensitive_route"])
}

test_customers_write_rejects_token_in_query if {
	_denied(_decide(_in("PATCH", "/customers/42", _bearer_query, _alice(["customers:write"]))), 403, ["credential_in_query"])
}

test_customers_write_requires_credential if {
	_denied(_decide(_anonymous("PUT", "/customers/42")), 401, ["credential_missing"])
}

# Row: any method /admin/** — sensitive, role admin -------------------------

test_admin_allows_admin_role[note] if {
	some method in ["GET", "POST", "PUT", "PATCH", "DELETE", "PURGE"]
	some path in ["/admin", "/admin/users/1"]
	note := concat(" ", [method, path])
	_allowed(_decide(_in(method, path, _bearer_header, _admin)), _root_headers)
}

test_admin_requires_role if {
	_denied(_decide(_user("DELETE", "/admin/users/1", ["customers:read"])), 403, ["missing_role"])
}

test_admin_rejects_api_key_even_with_role if {
	_denied(_decide(_in("GET", "/admin", _api_key_header, _set(_billing([]), {"roles": ["admin"]}))), 403, ["api_key_not_allowed_for_sensitive_route"])
}

test_admin_rejects_token_in_query if {
	_denied(_decide(_in("GET", "/admin", _bearer_query, _admin)), 403, ["credential_in_query"])
}

test_admin_requires_credential if {
	_denied(_decide(_anonymous("POST", "/admin/users")), 401, ["credential_missing"])
}

test_admin_prefix_is_literal if {
	_denied(_decide(_in("GET", "/administrator", _bearer_header, _admin)), 403, ["no_route"])
}

# ---------------------------------------------------------------------------
# Outcomes and their order
# ---------------------------------------------------------------------------

test_no_route_for_unknown_paths[path] if {
	some path in ["/", "/orders", "/Products", "/PUBLIC/x"]
	_denied(_decide(_user("GET", path, ["products:read"])), 403, ["no_route"])
}

test_credential_in_query_wins_over_everything_on_sensitive_routes[note] if {
	some note, credential in {
		"valid token": _bearer_query,
		"invalid token": _invalid(_bearer_query, "expired"),
		"api key": _api_key_query,
		"invalid api key": _invalid(_api_key_query, "unknown_key"),
	}
	_denied(_decide(_in("GET", "/customers/42", credential, _alice(["customers:read"]))), 403, ["credential_in_query"])
}

test_api_key_on_sensitive_route_even_if_invalid if {
	_denied(_decide(_in("GET", "/customers/42", _invalid(_api_key_header, "revoked"), null)), 403, ["api_key_not_allowed_for_sensitive_route"])
}

test_credential_invalid_reasons[note] if {
	some note, tc in {
		"with error": {"error": "expired", "reasons": ["credential_invalid", "expired"]},
		"multiple credentials": {"error": "multiple_credentials", "reasons": ["credential_invalid", "multiple_credentials"]},
		"empty error": {"error": "", "reasons": ["credential_invalid"]},
		"non-string error": {"error": 7, "reasons": ["credential_invalid"]},
	}
	_denied(_decide(_in("GET", "/customers/42", _invalid(_bearer_header, tc.error), null)), 401, tc.reasons)
}

# A credential that could not be judged (JWKS down, decision deadline) is
# a 503, on every kind of route that needs a credential, and never an allow.
test_verifier_unavailable_is_503[path] if {
	some path in ["/products", "/customers/42/orders", "/admin/users"]
	_denied(_decide(_in("GET", path, _invalid(_bearer_header, "verifier_unavailable"), null)), 503, ["credential_invalid", "verifier_unavailable"])
}

test_verifier_unavailable_on_public_route_allows_without_identity if {
	d := _decide(_in("GET", "/public/docs", _invalid(_bearer_header, "verifier_unavailable"), null))
	d.allow
	d.headers == {}
}

test_credential_invalid_without_error_field if {
	credential := object.remove(_invalid(_bearer_header, ""), ["error"])
	_denied(_decide(_in("GET", "/products", credential, null)), 401, ["credential_invalid"])
}

test_valid_status_without_identity_is_invalid if {
	inp := {"request": _request("GET", "/products"), "credential": _api_key_header}
	_denied(_decide(inp), 401, ["credential_invalid"])
}

test_unknown_credential_status_is_invalid if {
	credential := _set(_bearer_header, {"status": "maybe"})
	_denied(_decide(_in("GET", "/products", credential, null)), 401, ["credential_invalid"])
}

test_missing_credential_is_invalid if {
	_denied(_decide({"request": _request("GET", "/products")}), 401, ["credential_invalid"])
}

test_sensitive_route_requires_user_token[note] if {
	some note, tc in {
		"service identity from a bearer token": [_bearer_header, _billing(["customers:read"])],
		"unknown placement": [_set(_bearer_header, {"placement": "body"}), _alice(["customers:read"])],
		"unknown credential type": [_set(_bearer_header, {"type": "mtls"}), _alice(["customers:read"])],
	}
	_denied(_decide(_in("GET", "/customers/42", tc[0], tc[1])), 403, ["user_token_required"])
}

test_internal_route_accepts_token_in_query if {
	_allowed(_decide(_in("GET", "/products", _bearer_query, _alice(["products:read"]))), _alice_headers)
}

# Checks on a valid credential run scope, then role, then owner.
_strict_routes := [{
	"methods": ["GET"],
	"paths": ["/accounts/{customer_number}"],
	"sensitivity": "sensitive",
	"scopes": ["accounts:read", "accounts:audit"],
	"roles": ["auditor", "staff"],
	"owner": "customer_number",
}]

_strict(scopes, roles, customer_number) := decision if {
	identity := _set(_alice(scopes), {"roles": roles, "claims": {"customer_number": customer_number}})
	decision := authz.decision with input as _in("GET", "/accounts/42", _bearer_header, identity)
		with data.tollgate.routes as _strict_routes
}

test_check_order_scope_role_owner[note] if {
	some note, tc in {
		"nothing": [[], [], "7", 403, ["insufficient_scope"]],
		"one of two scopes": [["accounts:read"], ["auditor", "staff"], "42", 403, ["insufficient_scope"]],
		"scopes, no roles": [["accounts:read", "accounts:audit"], [], "7", 403, ["missing_role"]],
		"scopes, one of two roles": [["accounts:read", "accounts:audit"], ["staff"], "42", 403, ["missing_role"]],
		"scopes, roles, not owner": [["accounts:read", "accounts:audit"], ["auditor", "staff"], "7", 403, ["not_owner"]],
	}
	_denied(_strict(tc[0], tc[1], tc[2]), tc[3], tc[4])
}

test_all_scopes_roles_and_owner_allow if {
	d := _strict(["accounts:audit", "accounts:read", "other"], ["staff", "auditor"], "42")
	_allowed(d, {"x-user-id": "alice", "x-auth-kind": "user", "x-auth-issuer": "https://idp.example.com/", "x-customer-number": "42"})
}

# An internal route may require an owner too; API keys may use it.
_owned_internal := [{
	"methods": ["GET"],
	"paths": ["/accounts/{customer_number}"],
	"sensitivity": "internal",
	"scopes": ["accounts:read"],
	"roles": ["clerk"],
	"owner": "customer_number",
}]

_clerk(customer_number) := _set(_billing(["accounts:read"]), {"roles": ["clerk"], "claims": {"customer_number": customer_number}})

test_internal_route_with_owner[note] if {
	some note, tc in {
		"owner": ["42", 200, []],
		"numeric owner claim": [42, 200, []],
		"other customer": ["7", 403, ["not_owner"]],
	}
	d := _decide_with(_in("GET", "/accounts/42", _api_key_header, _clerk(tc[0])), _owned_internal)
	d.status == tc[1]
	d.reasons == tc[2]
}

test_internal_route_with_owner_headers if {
	d := _decide_with(_in("GET", "/accounts/42", _api_key_header, _clerk("42")), _owned_internal)
	_allowed(d, object.union(_billing_headers, {"x-customer-number": "42"}))
}

test_internal_route_with_owner_checks_role_first if {
	identity := _set(_clerk("42"), {"roles": []})
	_denied(_decide_with(_in("GET", "/accounts/42", _api_key_header, identity), _owned_internal), 403, ["missing_role"])
}

# ---------------------------------------------------------------------------
# Owner comparison
# ---------------------------------------------------------------------------

_owner_claims(claims) := _in("GET", "/customers/42", _bearer_header, _set(_alice(["customers:read"]), {"claims": claims}))

test_owner_claim_compares_as_string[note] if {
	some note, claim in {"string": "42", "integer": 42, "integral float": 42.0}
	d := _decide(_owner_claims({"customer_number": claim}))
	d.allow
	d.headers["x-customer-number"] == "42"
}

test_owner_claim_mismatch[note] if {
	some note, claims in {
		"absent": {},
		"other string": {"customer_number": "43"},
		"leading zero": {"customer_number": "042"},
		"fraction": {"customer_number": 42.5},
		"boolean": {"customer_number": true},
		"list": {"customer_number": ["42"]},
		"null": {"customer_number": null},
		"empty": {"customer_number": ""},
	}
	_denied(_decide(_owner_claims(claims)), 403, ["not_owner"])
}

test_owner_without_claims_object if {
	_denied(_decide(_owner_claims(null)), 403, ["not_owner"])
}

# ---------------------------------------------------------------------------
# Scopes and roles: identity fields first, claims only when those are absent
# ---------------------------------------------------------------------------

_bare_user(claims) := {"kind": "user", "subject": "alice", "issuer": "https://idp.example.com/", "claims": claims}

test_scopes_from_claims_when_identity_has_none[note] if {
	some note, claims in {
		"scope string": {"customer_number": "42", "scope": "openid  customers:read"},
		"scp list": {"customer_number": "42", "scp": ["openid", "customers:read"]},
		"scp string": {"customer_number": "42", "scp": "openid customers:read"},
	}
	_decide(_in("GET", "/customers/42", _bearer_header, _bare_user(claims))).allow
}

test_null_identity_scopes_fall_back_to_claims if {
	identity := _set(_bare_user({"customer_number": "42", "scope": "customers:read"}), {"scopes": null})
	_decide(_in("GET", "/customers/42", _bearer_header, identity)).allow
}

test_identity_scopes_are_authoritative if {
	identity := _set(_bare_user({"customer_number": "42", "scope": "customers:read"}), {"scopes": []})
	_denied(_decide(_in("GET", "/customers/42", _bearer_header, identity)), 403, ["insufficient_scope"])
}

test_scopes_ignore_non_strings if {
	identity := _set(_bare_user({"customer_number": "42"}), {"scopes": [1, null, "", {"customers:read": true}]})
	_denied(_decide(_in("GET", "/customers/42", _bearer_header, identity)), 403, ["insufficient_scope"])
}

test_scopes_absent_everywhere if {
	_denied(_decide(_in("GET", "/customers/42", _bearer_header, _bare_user({"customer_number": "42"}))), 403, ["insufficient_scope"])
}

test_roles_from_claims_when_identity_has_none if {
	_decide(_in("GET", "/admin", _bearer_header, _bare_user({"roles": ["admin"]}))).allow
}

test_identity_roles_are_authoritative if {
	identity := _set(_bare_user({"roles": ["admin"]}), {"roles": ["viewer"]})
	_denied(_decide(_in("GET", "/admin", _bearer_header, identity)), 403, ["missing_role"])
}

# ---------------------------------------------------------------------------
# Identity headers
# ---------------------------------------------------------------------------

test_user_headers_omit_api_key_id if {
	identity := _set(_alice(["products:read"]), {"key_id": "key_x"})
	_allowed(_decide(_in("GET", "/products", _bearer_header, identity)), _alice_headers)
}

test_service_headers_omit_issuer if {
	identity := _set(_billing(["products:read"]), {"issuer": "https://idp.example.com/"})
	_allowed(_decide(_in("GET", "/products", _api_key_header, identity)), _billing_headers)
}

test_headers_without_customer_number if {
	identity := _set(_alice([]), {"claims": {"email": "alice@example.com"}})
	_allowed(_decide(_in("GET", "/public/x", _bearer_header, identity)), {
		"x-user-id": "alice",
		"x-auth-kind": "user",
		"x-auth-issuer": "https://idp.example.com/",
	})
}

# Tollgate hands the policy "" for a subject, issuer or key id with a
# control character (pdp/policy: TestInputIdentityFieldsAreHeaderSafe); a
# claim is checked here.
test_headers_drop_empty_unsafe_and_non_string_values if {
	identity := _set(_alice([]), {
		"subject": "",
		"issuer": 17,
		"claims": {"customer_number": "42\u0000"},
	})
	_allowed(_decide(_in("GET", "/public/x", _bearer_header, identity)), {"x-auth-kind": "user"})
}

test_headers_drop_customer_number_with_control_characters[note] if {
	some note, value in {"NUL": "42\u0000", "CR LF": "42\r\nx-admin: true", "tab": "4\t2", "DEL": "42\u007f"}
	identity := _set(_alice([]), {"claims": {"customer_number": value}})
	d := _decide(_in("GET", "/public/x", _bearer_header, identity))
	d.allow
	not d.headers["x-customer-number"]
}

test_headers_numeric_customer_number if {
	identity := _set(_alice([]), {"claims": {"customer_number": 42}})
	_decide(_in("GET", "/public/x", _bearer_header, identity)).headers["x-customer-number"] == "42"
}

test_headers_for_other_identity_kinds if {
	identity := {"kind": "device", "subject": "r2", "issuer": "https://idp.example.com/", "key_id": "k1", "claims": {"customer_number": "42"}}
	_allowed(_decide(_in("GET", "/public/x", _bearer_header, identity)), {"x-user-id": "r2", "x-auth-kind": "device", "x-customer-number": "42"})
}

test_headers_without_kind if {
	identity := {"subject": "r2", "issuer": "https://idp.example.com/", "claims": {}}
	_allowed(_decide(_in("GET", "/public/x", _bearer_header, identity)), {"x-user-id": "r2"})
}

test_deny_has_no_headers if {
	d := _decide(_user("GET", "/customers/43", ["customers:read"]))
	d.headers == {}
	not d.allow
}

# ---------------------------------------------------------------------------
# Path templates
# ---------------------------------------------------------------------------

# Templates of valid route tables (invalid ones are bundle errors, see
# test_route_errors), matched by the Rego reference, matched_route.
_template_matches := {
	"param matches one segment": ["/customers/{customer_number}", ["customers", "42"], {"customer_number": "42"}],
	"tail matches more": ["/customers/{customer_number}/**", ["customers", "42", "orders", "7"], {"customer_number": "42"}],
	"tail matches zero": ["/customers/{customer_number}/**", ["customers", "42"], {"customer_number": "42"}],
	"public root": ["/public/**", ["public"], {}],
	"public tail": ["/public/**", ["public", "a", "b"], {}],
	"root": ["/", [], {}],
	"everything": ["/**", ["a", "b"], {}],
	"everything includes root": ["/**", [], {}],
	"two params": ["/a/{x}/b/{y}", ["a", "1", "b", "2"], {"x": "1", "y": "2"}],
	"param takes any characters": ["/a/{x}", ["a", "{y}*"], {"x": "{y}*"}],
	"repeated slashes are ignored": ["//customers//{c}", ["customers", "42"], {"c": "42"}],
}

_template_mismatches := {
	"param does not match two": ["/customers/{customer_number}", ["customers", "42", "orders", "7"]],
	"param does not match zero": ["/customers/{customer_number}", ["customers"]],
	"tail needs the fixed part": ["/customers/{customer_number}/**", ["customers"]],
	"literal is exact": ["/customers/{customer_number}", ["customersX", "42"]],
	"literal is case-sensitive": ["/products", ["Products"]],
	"literal prefix is not a match": ["/public/**", ["publicity"]],
	"public needs public": ["/public/**", []],
	"root is exact": ["/", ["a"]],
	"param needs a non-empty segment": ["/a/{x}", ["a", ""]],
	"param needs a string segment": ["/a/{x}", ["a", 7]],
	"literal needs a string segment": ["/a/7", ["a", 7]],
}

_match_template(template, segments) := m if {
	m := authz.matched_route with input as {"request": {"method": "GET", "segments": segments}}
		with data.tollgate.routes as [{"methods": ["GET"], "paths": [template], "sensitivity": "public"}]
}

test_template_params[note] if {
	some note, tc in _template_matches
	m := _match_template(tc[0], tc[1])
	m.template == tc[0]
	m.params == tc[2]
}

test_template_does_not_match[note] if {
	some note, tc in _template_mismatches
	not _match_template(tc[0], tc[1])
}

test_segments_fall_back_to_path if {
	inp := {"request": {"method": "GET", "path": "/public/a"}, "credential": _no_credential}
	_allowed(_decide(inp), {})
}

test_empty_input_is_no_route if {
	_denied(_decide({}), 403, ["no_route"])
}

test_matched_route if {
	m := authz.matched_route with input as _user("GET", "/customers/42/orders", [])
	m == {
		"matched": true, "index": 2, "id": "customers-read",
		"template": "/customers/{customer_number}/**", "params": {"customer_number": "42"},
		"methods": ["GET"], "sensitivity": "sensitive", "scopes": ["customers:read"], "owner": "customer_number",
		"caller_is_owner": true,
	}
}

test_matched_route_caller_is_owner[note] if {
	some note, tc in {
		"string claim": [{"customer_number": "42"}, "/customers/42", true],
		"other string": [{"customer_number": "43"}, "/customers/42", false],
		"integer claim": [{"customer_number": 42}, "/customers/42", true],
		"integral float claim": [{"customer_number": 42.0}, "/customers/42", true],
		"negative integer": [{"customer_number": -7}, "/customers/-7", true],
		"zero": [{"customer_number": 0}, "/customers/0", true],
		"fraction": [{"customer_number": 42.5}, "/customers/42", false],
		"leading zero": [{"customer_number": 42}, "/customers/042", false],
		"plus sign": [{"customer_number": 42}, "/customers/+42", false],
		"exponent": [{"customer_number": 40}, "/customers/4e1", false],
		"minus zero": [{"customer_number": 0}, "/customers/-0", false],
		"15 digits": [{"customer_number": 123456789012345}, "/customers/123456789012345", true],
		"16 digits": [{"customer_number": 1234567890123456}, "/customers/1234567890123456", false],
		"16 digits as a string": [{"customer_number": "1234567890123456"}, "/customers/1234567890123456", true],
		"string claim, numeric compare never": [{"customer_number": "42.0"}, "/customers/42", false],
		"boolean": [{"customer_number": true}, "/customers/true", false],
		"absent": [{}, "/customers/42", false],
		"other claim": [{"email": "42"}, "/customers/42", false],
	}
	inp := _in("GET", tc[1], _bearer_header, _set(_alice(["customers:read"]), {"claims": tc[0]}))
	m := authz.matched_route with input as inp
	m.caller_is_owner == tc[2]
}

test_matched_route_caller_is_owner_without_identity if {
	m := authz.matched_route with input as _anonymous("GET", "/customers/42")
	m.caller_is_owner == false
}

test_matched_route_without_owner_has_no_caller_is_owner if {
	m := authz.matched_route with input as _user("GET", "/products/42", [])
	not "caller_is_owner" in object.keys(m)
}

test_matched_route_without_id if {
	m := authz.matched_route with input as _anonymous("GET", "/x") with data.tollgate.routes as [{"methods": ["*"], "paths": ["/**"], "sensitivity": "public", "note": "not copied"}]
	m == {"matched": true, "index": 0, "template": "/**", "params": {}, "methods": ["*"], "sensitivity": "public"}
}

# _summary is the part of a match that says which route and template
# matched and what they bind.
_summary(m) := object.filter(m, {"index", "id", "template", "params"})

test_matched_route_undefined_without_match if {
	not authz.matched_route with input as _anonymous("GET", "/nowhere")
}

# ---------------------------------------------------------------------------
# Route table semantics
# ---------------------------------------------------------------------------

# Valid templates with repeated or trailing slashes, or a trailing "**"
# after a slash, match like their plain forms.
test_unusual_valid_templates[note] if {
	routes := [
		{"id": "a", "methods": ["GET"], "paths": ["//a//{id}"], "sensitivity": "public"},
		{"id": "b", "methods": ["GET"], "paths": ["/b/"], "sensitivity": "public"},
		{"id": "c", "methods": ["GET"], "paths": ["/c/**/"], "sensitivity": "public"},
		{"id": "root", "methods": ["GET"], "paths": ["/"], "sensitivity": "public"},
		{"id": "d", "methods": ["GET"], "paths": ["/d.json", "/d+/{x}"], "sensitivity": "internal", "scopes": ["d"]},
	]
	count(authz.bundle_errors) == 0 with data.tollgate.routes as routes
	some note, tc in {
		"doubled slashes": ["/a/7", {"index": 0, "id": "a", "template": "//a//{id}", "params": {"id": "7"}}],
		"trailing slash": ["/b", {"index": 1, "id": "b", "template": "/b/", "params": {}}],
		"tail with trailing slash, none": ["/c", {"index": 2, "id": "c", "template": "/c/**/", "params": {}}],
		"tail with trailing slash, more": ["/c/x/y", {"index": 2, "id": "c", "template": "/c/**/", "params": {}}],
		"root": ["/", {"index": 3, "id": "root", "template": "/", "params": {}}],
		"dot is literal": ["/d.json", {"index": 4, "id": "d", "template": "/d.json", "params": {}}],
		"plus is literal": ["/d+/1", {"index": 4, "id": "d", "template": "/d+/{x}", "params": {"x": "1"}}],
	}
	_summary(authz.matched_route) == tc[1] with input as _anonymous("GET", tc[0]) with data.tollgate.routes as routes
}

test_unusual_valid_templates_mismatch[path] if {
	routes := [
		{"methods": ["GET"], "paths": ["//a//{id}", "/b/", "/c/**/", "/d.json", "/d+/{x}"], "sensitivity": "public"},
	]
	some path in ["/a", "/a/7/8", "/b/x", "/cc", "/dxjson", "/dd/1"]
	not authz.matched_route with input as _anonymous("GET", path) with data.tollgate.routes as routes
}

test_first_matching_route_decides if {
	routes := [
		{"methods": ["GET"], "paths": ["/docs/**"], "sensitivity": "public"},
		{"methods": ["GET"], "paths": ["/docs/secret"], "sensitivity": "sensitive"},
	]
	_allowed(_decide_with(_anonymous("GET", "/docs/secret"), routes), {})
	reversed := [routes[1], routes[0]]
	_denied(_decide_with(_anonymous("GET", "/docs/secret"), reversed), 401, ["credential_missing"])
}

test_method_matching[note] if {
	some note, tc in {
		"wildcard": [["*"], "DELETE", true],
		"lower case in data": [["get"], "GET", true],
		"listed": [["PUT", "PATCH"], "PATCH", true],
		"not listed": [["PUT", "PATCH"], "POST", false],
		"HEAD is not GET": [["GET"], "HEAD", false],
	}
	routes := [{"methods": tc[0], "paths": ["/x"], "sensitivity": "public"}]
	_decide_with(_anonymous(tc[1], "/x"), routes).allow == tc[2]
}

test_missing_route_table_denies_everything if {
	_denied(_decide_with(_anonymous("GET", "/public/x"), null), 403, ["no_route"])
	"data.tollgate.routes must be an array" in authz.route_errors with data.tollgate.routes as null
}

# A malformed route no longer decides requests: it makes the bundle unfit
# (bundle_errors), and Tollgate refuses to activate it, keeping the previous
# bundle (pdp/policy: TestActivateRefusesBundleWithCheckErrors).
test_malformed_route_is_a_bundle_error if {
	routes := [
		{"methods": ["GET"], "paths": ["/customers/{customer_number}"], "sensitivity": "sensitive", "scopes": "customers:read"},
		{"methods": ["GET"], "paths": ["/**"], "sensitivity": "public"},
	]
	errors := authz.bundle_errors with data.tollgate.routes as routes
	errors == {"data.tollgate.routes[0]: scopes must be an array of non-empty strings"}
}

test_route_errors[note] if {
	some note, tc in {
		"not an object": ["GET /x", "must be an object"],
		"bad id": [{"id": "", "methods": ["GET"], "paths": ["/x"], "sensitivity": "public"}, "id must be a non-empty string"],
		"no methods": [{"methods": [], "paths": ["/x"], "sensitivity": "public"}, "methods must be a non-empty array of non-empty strings"],
		"methods string": [{"methods": "GET", "paths": ["/x"], "sensitivity": "public"}, "methods must be a non-empty array of non-empty strings"],
		"no paths": [{"methods": ["GET"], "sensitivity": "public"}, "paths must be a non-empty array of non-empty strings"],
		"relative path": [{"methods": ["GET"], "paths": ["x"], "sensitivity": "public"}, `path "x" is not a valid template`],
		"inner tail": [{"methods": ["GET"], "paths": ["/a/**/b"], "sensitivity": "public"}, `path "/a/**/b" is not a valid template`],
		"single star": [{"methods": ["GET"], "paths": ["/a/*"], "sensitivity": "public"}, `path "/a/*" is not a valid template`],
		"bad param name": [{"methods": ["GET"], "paths": ["/a/{1x}"], "sensitivity": "public"}, `path "/a/{1x}" is not a valid template`],
		"stray brace": [{"methods": ["GET"], "paths": ["/a/x{y}"], "sensitivity": "public"}, `path "/a/x{y}" is not a valid template`],
		"repeated param": [{"methods": ["GET"], "paths": ["/a/{x}/{x}"], "sensitivity": "public"}, `path "/a/{x}/{x}" is not a valid template`],
		"unknown sensitivity": [{"methods": ["GET"], "paths": ["/x"], "sensitivity": "secret"}, "sensitivity must be one of public, internal, sensitive"],
		"scopes string": [{"methods": ["GET"], "paths": ["/x"], "sensitivity": "internal", "scopes": "a"}, "scopes must be an array of non-empty strings"],
		"roles with empty": [{"methods": ["GET"], "paths": ["/x"], "sensitivity": "internal", "roles": [""]}, "roles must be an array of non-empty strings"],
		"owner not a string": [{"methods": ["GET"], "paths": ["/x/{id}"], "sensitivity": "sensitive", "owner": 1}, "owner must be a non-empty string"],
		"owner not a param": [{"methods": ["GET"], "paths": ["/x/{id}", "/y"], "sensitivity": "sensitive", "owner": "id"}, `owner "id" is not a parameter of path "/y"`],
		"public with scopes": [{"methods": ["GET"], "paths": ["/x"], "sensitivity": "public", "scopes": ["a"]}, "a public route cannot require scopes, roles or an owner"],
		"public with roles": [{"methods": ["GET"], "paths": ["/x"], "sensitivity": "public", "roles": ["a"]}, "a public route cannot require scopes, roles or an owner"],
		"public with owner": [{"methods": ["GET"], "paths": ["/x/{id}"], "sensitivity": "public", "owner": "id"}, "a public route cannot require scopes, roles or an owner"],
	}
	errors := authz.route_errors with data.tollgate.routes as [tc[0]]
	sprintf("data.tollgate.routes[0]: %s", [tc[1]]) in errors
}

test_valid_routes_have_no_errors if {
	routes := [
		{"methods": ["*"], "paths": ["/", "/**"], "sensitivity": "public", "scopes": [], "roles": []},
		{"id": "x", "methods": ["GET"], "paths": ["/a/{x}/b/{y_2}"], "sensitivity": "internal", "scopes": ["s"], "roles": ["r"], "owner": "x", "note": "extra keys are fine"},
	]
	count(authz.route_errors) == 0 with data.tollgate.routes as routes
}

test_string_methods_and_paths_are_bundle_errors if {
	routes := [{"methods": "GET", "paths": "/x", "sensitivity": "public"}]
	authz.bundle_errors == {
		"data.tollgate.routes[0]: methods must be a non-empty array of non-empty strings",
		"data.tollgate.routes[0]: paths must be a non-empty array of non-empty strings",
	} with data.tollgate.routes as routes
}

# Malformed input never makes the decision undefined or an error; the Go
# test runs these with builtin errors raised. (Input from Tollgate itself
# always has the documented shape, see pdp/policy/input.go.)
test_malformed_input_fails_closed[note] if {
	some note, tc in {
		# outside the input contract: a parameter takes only a non-empty
		# string segment
		"numeric segments": [{"request": {"method": "GET", "segments": ["customers", 42]}}, 403],
		"empty segment": [{"request": {"method": "GET", "segments": ["customers", ""]}}, 403],
		"numeric path": [{"request": {"method": "GET", "path": 42}}, 403],
		"numeric method": [{"request": {"method": 1, "path": "/public"}}, 403],
		"identity a string": [_set(_user("GET", "/products", []), {"identity": "alice"}), 401],
		"claims a string": [_in("GET", "/customers/42", _bearer_header, _set(_alice(["customers:read"]), {"claims": "x"})), 403],
	}
	d := _decide(tc[0])
	d.status == tc[1]
	is_boolean(d.allow)
	is_array(d.reasons)
	is_object(d.headers)
}

# Should an unknown sensitivity ever get past the bundle check, the decision
# is the default: a fail-closed policy_error.
test_unknown_sensitivity_is_policy_error[note] if {
	some note, route in {
		"no requirements": {"methods": ["GET"], "paths": ["/x/{id}"], "sensitivity": "secret"},
		"with requirements": {"methods": ["GET"], "paths": ["/x/{id}"], "sensitivity": "secret", "scopes": ["a"], "roles": ["b"], "owner": "id"},
	}
	_denied(_decide_with(_anonymous("GET", "/x/1"), [route]), 500, ["policy_error"])
	_denied(_decide_with(_user("GET", "/x/1", ["a"]), [route]), 500, ["policy_error"])
}

test_route_without_sensitivity_is_policy_error if {
	_denied(_decide_with(_anonymous("GET", "/x"), [{"methods": ["GET"], "paths": ["/x"]}]), 500, ["policy_error"])
}

# Should the decision rules ever leave it undefined (here: no violation
# recorded for an unknown sensitivity), it is the fail-closed default.
test_undefined_decision_is_policy_error if {
	d := authz.decision with input as _anonymous("GET", "/x")
		with data.tollgate.routes as [{"methods": ["GET"], "paths": ["/x"], "sensitivity": "secret"}]
		with authz._violations as set()
	_denied(d, 500, ["policy_error"])
}

# Malformed route tables are not decided on: each is a bundle error, so the
# bundle is never activated. route_errors itself never fails on them.
test_malformed_route_tables_are_bundle_errors[note] if {
	some note, routes in {
		"number in paths": [{"methods": ["GET"], "paths": [7, "/x"], "sensitivity": "public"}],
		"number in methods": [{"methods": [7, "GET"], "paths": ["/x"], "sensitivity": "public"}],
		"scopes a number": [{"methods": ["GET"], "paths": ["/x"], "sensitivity": "internal", "scopes": 7}],
		"public scopes a number": [{"methods": ["GET"], "paths": ["/x"], "sensitivity": "public", "scopes": 7}],
		"roles an object": [{"methods": ["GET"], "paths": ["/x"], "sensitivity": "sensitive", "roles": {"admin": true}}],
		"owner a number": [{"methods": ["GET"], "paths": ["/x/{id}"], "sensitivity": "sensitive", "owner": 7}],
		"route a string": ["/x", {"methods": ["GET"], "paths": ["/x"], "sensitivity": "public"}],
		"route an object without fields": [{}, {"methods": ["GET"], "paths": ["/x"], "sensitivity": "public"}],
		"no sensitivity": [{"methods": ["GET"], "paths": ["/x"]}],
		"an object": {"a": {"methods": ["GET"], "paths": ["/x"], "sensitivity": "public"}},
		"a string": "/x",
	}
	count(authz.bundle_errors) > 0 with data.tollgate.routes as routes
}

# ---------------------------------------------------------------------------
# input.route: the match Tollgate hands the policy
# ---------------------------------------------------------------------------

# _with_route(inp) is inp as Tollgate builds it when it matched the route
# itself: the reference match as input.route, or {"matched": false}.
_with_route(inp) := object.union(inp, {"route": m}) if {
	m := authz.matched_route with input as inp
} else := object.union(inp, {"route": {"matched": false}})

# Every decision of the suites above is the same whether the policy matches
# the route itself or Tollgate hands it the match.
test_decision_same_with_input_route[note] if {
	some note, inp in {
		"public anonymous": _anonymous("GET", "/public/a/b"),
		"public user": _user("GET", "/public", []),
		"products api key": _service("GET", "/products/7", ["products:read"]),
		"products no scope": _service("GET", "/products", []),
		"products anonymous": _anonymous("GET", "/products"),
		"owner": _user("GET", "/customers/42/orders", ["customers:read"]),
		"not owner": _user("GET", "/customers/43", ["customers:read"]),
		"write owner": _user("PATCH", "/customers/42", ["customers:write"]),
		"api key sensitive": _service("GET", "/customers/42", ["customers:read"]),
		"token in query": _in("GET", "/customers/42", _bearer_query, _alice(["customers:read"])),
		"invalid token": _in("GET", "/customers/42", _invalid(_bearer_header, "expired"), null),
		"admin": _in("DELETE", "/admin/x", _bearer_header, _admin),
		"admin no role": _user("DELETE", "/admin/x", []),
		"no route": _user("GET", "/nowhere", []),
		"no method": _user("DELETE", "/customers/42", ["customers:write"]),
	}
	want := _decide(inp)
	_decide(_with_route(inp)) == want
}

# input.route decides, not the table: a policy trusts Tollgate's match.
test_input_route_decides[note] if {
	some note, tc in {
		"matched false is no route": [{"matched": false}, 403, ["no_route"]],
		"another route": [{"matched": true, "index": 4, "template": "/admin/**", "params": {}, "methods": ["*"], "sensitivity": "sensitive", "roles": ["admin"]}, 403, ["missing_role"]],
		"a public route": [{"matched": true, "index": 0, "template": "/public/**", "params": {}, "methods": ["GET"], "sensitivity": "public"}, 200, []],
	}
	inp := object.union(_user("GET", "/customers/42", ["customers:read"]), {"route": tc[0]})
	d := _decide(inp)
	d.status == tc[1]
	d.reasons == tc[2]
}

# input.route.caller_is_owner decides ownership, not the parameters: the
# policy trusts Tollgate's comparison.
test_input_route_caller_is_owner_decides_ownership[note] if {
	some note, tc in {
		"not the owner": [false, 403, ["not_owner"]],
		"the owner": [true, 200, []],
		"field missing": [null, 403, ["not_owner"]],
	}
	inp := _user("GET", "/customers/42", ["customers:read"])
	m := authz.matched_route with input as inp
	d := _decide(object.union(inp, {"route": _with_caller_is_owner(m, tc[0])}))
	d.status == tc[1]
	d.reasons == tc[2]
}

# _with_caller_is_owner is route m with caller_is_owner x, or without the
# field when x is null.
_with_caller_is_owner(m, x) := object.remove(m, {"caller_is_owner"}) if x == null

else := object.union(m, {"caller_is_owner": x})

# Anything but matched == true, or input.route absent, is not a match.
test_input_route_must_say_matched[note] if {
	some note, r in {"matched missing": {"index": 0}, "matched a string": {"matched": "true"}, "a string": "public", "null": null}
	inp := object.union(_user("GET", "/public/x", []), {"route": r})
	not authz.route with input as inp
	_denied(_decide(inp), 403, ["no_route"])
}
