# METADATA
# title: The OPA peer of the load harness
# description: |
#   What an operator would run instead of Tollgate: `opa run --server` with a
#   policy that verifies the caller itself. Same route table as Tollgate's
#   default bundle (data.tollgate.routes, copied from policies/ at run time),
#   same outcomes on the harness's mix. The harness loads it with
#
#     data.loadtest.issuer    the issuer URL (the token's iss)
#     data.loadtest.audience  "orders-api"
#     data.loadtest.jwks      the issuer's JWKS, as a JSON string
#     data.loadtest.api_keys  {sha256 hex of the key: {"owner", "key_id", "scopes"}}
#
#   and OPA's io_jwt cache on (caching.inter_query_builtin_value_cache).
#   Input: {"method", "path" (may carry ?query), "headers": {lower-case name: string}}.
package loadtest.authz

default decision := {"allow": false, "status": 403, "reasons": ["no_route"], "headers": {}}

decision := _decide(data.tollgate.routes[_match[0]], _match[1])

# ---------------------------------------------------------------------------
# The request

_path := split(input.path, "?")[0]

_segments := [s | some s in split(_path, "/"); s != ""]

# ---------------------------------------------------------------------------
# The caller: a bearer JWT verified against the JWKS, or an API key looked up
# by its SHA-256.

_bearer := substring(input.headers.authorization, 7, -1) if startswith(input.headers.authorization, "Bearer ")

_claims := claims if {
	[valid, _, claims] := io.jwt.decode_verify(_bearer, {
		"cert": data.loadtest.jwks,
		"iss": data.loadtest.issuer,
		"aud": data.loadtest.audience,
	})
	valid
}

_key := data.loadtest.api_keys[crypto.sha256(input.headers["x-api-key"])]

_credential := "bearer" if input.headers.authorization

else := "api_key" if input.headers["x-api-key"]

else := "none"

_identity := {
	"kind": "user",
	"subject": _claims.sub,
	"scopes": split(object.get(_claims, "scope", ""), " "),
	"claims": _claims,
} if {
	_credential == "bearer"
} else := {
	"kind": "service",
	"subject": _key.owner,
	"key_id": _key.key_id,
	"scopes": _key.scopes,
	"claims": {},
} if {
	_credential == "api_key"
}

_identity_headers := {
	"x-user-id": _identity.subject,
	"x-auth-kind": _identity.kind,
	"x-auth-issuer": data.loadtest.issuer,
	"x-customer-number": _identity.claims.customer_number,
} if {
	_identity.kind == "user"
} else := {
	"x-user-id": _identity.subject,
	"x-auth-kind": _identity.kind,
	"x-api-key-id": _identity.key_id,
} if {
	_identity.kind == "service"
}

# ---------------------------------------------------------------------------
# Routes: the first route whose methods and one of whose paths match; a
# literal segment matches itself, {name} one non-empty segment, a trailing **
# zero or more segments.

_match := [i, params] if {
	matches := [[i, params] |
		some i, route in data.tollgate.routes
		_method_ok(route.methods)
		some template in route.paths
		params := _bind(template, _segments)
	]
	[i, params] := matches[0]
}

_method_ok(methods) if input.method in methods

_method_ok(methods) if "*" in methods

_bind(template, segs) := params if {
	t := [s | some s in split(template, "/"); s != ""]
	n := count(t)
	_length_ok(t, n, count(segs))
	every i, x in t {
		_segment_ok(x, i, n, segs)
	}
	params := {substring(x, 1, count(x) - 2): segs[i] | some i, x in t; startswith(x, "{")}
}

_length_ok(t, n, have) if {
	t[n - 1] == "**"
	have >= n - 1
}

_length_ok(t, n, have) if {
	t[n - 1] != "**"
	have == n
}

_segment_ok("**", i, n, _) if i == n - 1

_segment_ok(x, i, _, segs) if {
	startswith(x, "{")
	segs[i] != ""
}

_segment_ok(x, i, _, segs) if {
	not startswith(x, "{")
	x != "**"
	x == segs[i]
}

# ---------------------------------------------------------------------------
# The decision, checks in Tollgate's order

_allow := {"allow": true, "status": 200, "reasons": [], "headers": _identity_headers} if _identity

else := {"allow": true, "status": 200, "reasons": [], "headers": {}}

_decide(route, _) := _allow if route.sensitivity == "public"

_decide(route, params) := d if {
	route.sensitivity != "public"
	d := _check(route, params)
}

_check(route, params) := {"allow": false, "status": 403, "reasons": ["api_key_not_allowed_for_sensitive_route"], "headers": {}} if {
	route.sensitivity == "sensitive"
	_credential == "api_key"
} else := {"allow": false, "status": 401, "reasons": ["credential_missing"], "headers": {}} if {
	_credential == "none"
} else := {"allow": false, "status": 401, "reasons": ["credential_invalid"], "headers": {}} if {
	not _identity
} else := {"allow": false, "status": 403, "reasons": ["insufficient_scope"], "headers": {}} if {
	some scope in object.get(route, "scopes", [])
	not scope in _identity.scopes
} else := {"allow": false, "status": 403, "reasons": ["missing_role"], "headers": {}} if {
	some role in object.get(route, "roles", [])
	not role in object.get(_identity.claims, "roles", [])
} else := {"allow": false, "status": 403, "reasons": ["not_owner"], "headers": {}} if {
	route.owner
	_identity.claims[route.owner] != params[route.owner]
} else := {"allow": false, "status": 403, "reasons": ["not_owner"], "headers": {}} if {
	route.owner
	not _identity.claims[route.owner]
} else := _allow
