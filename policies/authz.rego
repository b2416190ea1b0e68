# METADATA
# title: Tollgate default authorization policy
# description: |
#   Decides whether an API request may go through, from the route table in
#   data.tollgate.routes and the verified caller in input.identity.
#   The query is data.tollgate.authz.decision; it is always defined.
#   The route table is checked once, when the bundle is activated (see
#   bundle_errors), not on every request.
package tollgate.authz

# ---------------------------------------------------------------------------
# Decision
#
# decision is always an object
#
#   {"allow": bool, "status": number, "reasons": [string], "headers": {string: string}}
#
# A request is allowed when it breaks none of the checks below (the
# violations); otherwise the violation with the lowest precedence decides,
# with exactly one reason (credential_invalid may carry a second, see
# below):
#
#   0  the route's sensitivity is unknown                 500 ["policy_error"]
#   1  no route matches method and path                   403 ["no_route"]
#   2  sensitive route, credential in a query parameter   403 ["credential_in_query"]
#   3  sensitive route, API key (valid or not)            403 ["api_key_not_allowed_for_sensitive_route"]
#   4  non-public route, credential absent                401 ["credential_missing"]
#   5  non-public route, credential invalid               401 ["credential_invalid"]
#                                                         or  ["credential_invalid", <credential.error>]
#                                                         503 when the error is "verifier_unavailable":
#                                                         the credential could not be judged (JWKS
#                                                         down, decision deadline), retry later
#   6  sensitive route, not a user JWT in header/cookie   403 ["user_token_required"]
#   7  a scope the route requires is missing             403 ["insufficient_scope"]
#   8  a role the route requires is missing              403 ["missing_role"]
#   9  owner claim absent or not equal to the path param  403 ["not_owner"]
#      otherwise                                          200 allow
#
# Which of checks 2-6 apply is a property of the route's sensitivity, kept
# as data in _needs. A public route needs nothing and allows any
# caller, with any credential or none.
#
# credential_invalid: when input.credential.error is a non-empty string (the
# authenticator's stable rejection code, e.g. "expired" or
# "multiple_credentials") it is the second reason, verbatim.
#
# Deny decisions carry no headers. An allow carries the identity headers
# (see _identity_headers) when the credential is valid, else none.
# The gateway adds WWW-Authenticate to a 401; the policy does not.
#
# The route table must be valid (bundle_errors is empty): Tollgate refuses
# to activate a bundle whose table is not, so a malformed route never
# decides a request. Rules below rely on that and do not re-check the table.
# ---------------------------------------------------------------------------

# Check 0 cannot fail with a valid route table, nor can decision be
# undefined; should either ever happen, the decision fails closed.
default decision := {"allow": false, "status": 500, "reasons": ["policy_error"], "headers": {}}

decision := {"allow": false, "status": status, "reasons": reasons, "headers": {}} if {
	[_, status, reasons] := min(_violations)
} else := {"allow": true, "status": 200, "reasons": [], "headers": _headers} if {
	_needs
}

# _violations are the checks the request breaks, each as
# [precedence, status, reasons]: min picks the one that decides.
_violations contains [0, 500, ["policy_error"]] if {
	route
	not _needs
}

_violations contains [1, 403, ["no_route"]] if not route

_violations contains [2, 403, ["credential_in_query"]] if {
	_needs.no_query_credential
	input.credential.placement == "query"
}

_violations contains [3, 403, ["api_key_not_allowed_for_sensitive_route"]] if {
	_needs.no_api_key
	input.credential.type == "api_key"
}

_violations contains [4, 401, ["credential_missing"]] if {
	_needs.credential
	_credential_state == "absent"
}

_violations contains [5, _invalid_status, _invalid_reasons] if {
	_needs.credential
	_credential_state == "invalid"
}

_violations contains [6, 403, ["user_token_required"]] if {
	_needs.user_token
	not _user_token
}

_violations contains [7, 403, ["insufficient_scope"]] if _lacks(route.scopes, _scopes)

_violations contains [8, 403, ["missing_role"]] if _lacks(route.roles, _roles)

_violations contains [9, 403, ["not_owner"]] if {
	route.owner
	not route.caller_is_owner
}

# _needs is what the route's sensitivity requires of the caller (checks
# 2-6); undefined for an unknown sensitivity.
_needs := {
	"public": {"credential": false, "no_query_credential": false, "no_api_key": false, "user_token": false},
	"internal": {"credential": true, "no_query_credential": false, "no_api_key": false, "user_token": false},
	"sensitive": {"credential": true, "no_query_credential": true, "no_api_key": true, "user_token": true},
}[route.sensitivity]

# _lacks holds when one of the required values is not held: the one check
# for a route's scopes and for its roles.
_lacks(required, held) if {
	some x in required
	not x in held
}

# A credential that could not be judged is not a bad credential: 503, so
# that a client retries instead of asking its user to sign in again.
_invalid_status := 503 if input.credential.error == "verifier_unavailable"

else := 401

_invalid_reasons := ["credential_invalid", err] if {
	err := input.credential.error
	is_string(err)
	err != ""
} else := ["credential_invalid"]

# ---------------------------------------------------------------------------
# Routes
#
# data.tollgate.routes is an array of routes; the first route (in array
# order) whose methods and one of whose paths match the request decides.
# Within a route, the first matching path binds the parameters. A route is
#
#   {
#     "id":          "customers-read",       optional, for people and logs
#     "methods":     ["GET", "HEAD"],        any case; ["*"] is any method (GET does not imply HEAD)
#     "paths":       ["/customers/{customer_number}", "/customers/{customer_number}/**"],
#     "sensitivity": "public" | "internal" | "sensitive",
#     "scopes":      ["customers:read"],     optional; all are required
#     "roles":       ["admin"],              optional; all are required
#     "owner":       "customer_number"       optional; a parameter of every path
#   }
#
# Path templates are matched segment by segment against
# input.request.segments: a literal segment matches itself (case-sensitive),
# "{name}" matches exactly one non-empty segment and binds it to name, and a
# trailing "**" matches zero or more segments ("/public/**" matches "/public"
# and "/public/a/b"). "**" anywhere else, "*" and stray braces are invalid:
# route_errors reports them, and a bundle with such a route is not activated.
#
# Tollgate compiles the table when it activates the bundle and hands the
# match to the policy as input.route (see route). matched_route is the same
# matching written in Rego: the reference the native matcher is tested
# against, and what decides when the policy runs without Tollgate (opa
# test, opa eval, opa run --server).
# ---------------------------------------------------------------------------

# METADATA
# description: |
#   The route that decides the request, undefined when none matches:
#   input.route when Tollgate supplied it ({"matched": false} when no route
#   matches), else matched_route. Its fields are those of the route in the
#   table (id, methods, sensitivity, scopes, roles, owner, when present)
#   and matched (true), index, template and params, and for a route with
#   an owner, caller_is_owner (see _ownership).
route := input.route if {
	input.route.matched == true
} else := matched_route if {
	not input.route
}

# METADATA
# description: |
#   The Rego reference of route matching: the route that matches the
#   request, in the shape of input.route; undefined when none matches.
matched_route := object.union_n([
	object.filter(data.tollgate.routes[i], {"id", "methods", "sensitivity", "scopes", "roles", "owner"}),
	{"matched": true, "index": i, "template": template, "params": params},
	_ownership(data.tollgate.routes[i], params),
]) if {
	[i, template, tsegs] := _matches[0]
	params := {_param_name(t): _segments[x] | some x, t in tsegs; startswith(t, "{")}
}

# _ownership is the caller_is_owner field of a route that has an owner:
# whether the caller's claim named by the owner equals the path parameter
# of that name. A string claim is compared as it is. A numeric claim (42,
# 42.0) equals a parameter that is an integer in canonical form ("42",
# "-7", not "042", "+42" or "4e1") of at most 15 digits, when they are the
# same number. Tollgate computes the same field natively for input.route
# (pdp/policy, callerIsOwner); the tests hold the two equal.
_ownership(r, params) := {"caller_is_owner": _caller_is_owner(r.owner, params)} if "owner" in object.keys(r)

else := {}

_caller_is_owner(name, params) if {
	v := input.identity.claims[name]
	is_string(v)
	v == params[name]
}

_caller_is_owner(name, params) if {
	v := input.identity.claims[name]
	is_number(v)
	p := params[name]
	regex.match(`^(0|-?[1-9][0-9]{0,14})$`, p)
	v == to_number(p)
}

default _caller_is_owner(_, _) := false

# _matches are [route index, template, template segments] for every
# template that matches, in table order, the segments without a trailing
# "**". A route is considered only when one of its paths can match the
# first segment (it starts with "/" and that segment, or with a parameter,
# "**" or a doubled slash); then its methods are checked; then its paths
# are compared segment by segment. This relies on the table being valid: a
# segment of a valid template that starts with "{" is a parameter, and "*"
# only appears in a last segment "**".
_matches := [[i, template, tsegs] |
	some i, r in data.tollgate.routes
	strings.any_prefix_match(r.paths, prefixes)
	some m in r.methods
	upper(m) in methods
	some template in r.paths
	tsegs := regex.find_n(`[^/*]+`, template, -1)
	fixed := count(tsegs)

	# as many segments as the template, or more when it ends in "**"
	k >= fixed
	object.get({true: true}, contains(template, "**"), k == fixed)

	# every literal segment is equal to the request's, every parameter has one
	[x | some x, t in tsegs; t != segs[x]; not _param_fits(t, segs[x])] == []
] if {
	segs := _segments
	k := count(segs)
	prefixes := array.concat([sprintf("/%s", [concat("/", array.slice(segs, 0, 1))])], ["/{", "/*", "//"])
	methods := {input.request.method, "*"}
}

_segments := input.request.segments if is_array(input.request.segments)

else := [s | some s in split(input.request.path, "/"); s != ""] if is_string(input.request.path)

_param_fits(t, s) if {
	startswith(t, "{")
	is_string(s)
	s != ""
}

_template_segments(template) := [s | some s in split(template, "/"); s != ""]

_is_param(t) if {
	startswith(t, "{")
	endswith(t, "}")
	count(t) > 2
}

_param_name(t) := substring(t, 1, count(t) - 2)

_as_list(x) := x if is_array(x)

else := [x] if is_string(x)

# ---------------------------------------------------------------------------
# Route table validation
#
# bundle_errors is the set of problems that make the bundle unfit to decide
# anything. Tollgate evaluates it once when it activates a bundle (the
# policy engine's check query) and refuses the bundle, keeping the previous
# one active, when it is not empty. It is the route table's problems:
# route_errors, human-readable strings; the embedded table has none (see the
# tests).
# ---------------------------------------------------------------------------

bundle_errors := route_errors

route_errors contains "data.tollgate.routes must be an array" if not is_array(data.tollgate.routes)

route_errors contains sprintf("data.tollgate.routes[%d]: %s", [i, msg]) if {
	some i, route in data.tollgate.routes
	is_array(data.tollgate.routes)
	some check in _checks
	some msg in _check(check, route)
}

_checks := {"object", "id", "methods", "paths", "templates", "sensitivity", "scopes", "roles", "owner", "owner_params", "public"}

_check("object", route) := {"must be an object"} if not is_object(route)

_check("id", route) := {"id must be a non-empty string"} if {
	_has(route, "id")
	not _non_empty_string(route.id)
}

_check("methods", route) := {"methods must be a non-empty array of non-empty strings"} if {
	not _non_empty_string_list(_field(route, "methods"))
}

_check("paths", route) := {"paths must be a non-empty array of non-empty strings"} if {
	not _non_empty_string_list(_field(route, "paths"))
}

_check("templates", route) := {sprintf("path %q is not a valid template", [path]) |
	some path in _as_list(route.paths)
	is_string(path)
	not _valid_template(path)
}

_check("sensitivity", route) := {"sensitivity must be one of public, internal, sensitive"} if {
	not _field(route, "sensitivity") in {"public", "internal", "sensitive"}
}

_check("scopes", route) := {"scopes must be an array of non-empty strings"} if {
	_has(route, "scopes")
	not _string_list(route.scopes)
}

_check("roles", route) := {"roles must be an array of non-empty strings"} if {
	_has(route, "roles")
	not _string_list(route.roles)
}

_check("owner", route) := {"owner must be a non-empty string"} if {
	_has(route, "owner")
	not _non_empty_string(route.owner)
}

_check("owner_params", route) := {sprintf("owner %q is not a parameter of path %q", [route.owner, path]) |
	_non_empty_string(route.owner)
	some path in _as_list(route.paths)
	is_string(path)
	not route.owner in _template_param_names(path)
}

_check("public", route) := {"a public route cannot require scopes, roles or an owner"} if {
	route.sensitivity == "public"
	_requires_something(route)
}

_requires_something(route) if route.scopes != []

_requires_something(route) if route.roles != []

_requires_something(route) if _has(route, "owner")

_valid_template(path) if {
	startswith(path, "/")
	tsegs := _template_segments(path)
	every i, t in tsegs {
		_valid_segment(t, i, count(tsegs))
	}
	names := [_param_name(t) | some t in _template_segments(path); _is_param(t)]
	count(names) == count({n | some n in names})
}

_valid_segment("**", i, n) if i == n - 1

_valid_segment(t, _, _) if {
	_is_param(t)
	regex.match(`^[A-Za-z_][A-Za-z0-9_]*$`, _param_name(t))
}

_valid_segment(t, _, _) if {
	not regex.match(`[{}*]`, t)
}

_template_param_names(path) := {_param_name(t) | some t in _template_segments(path); _is_param(t)}

# _field is x[key], or null when x has no such field (x need not be an object).
# Use it under "not": "not f(x.missing)" is undefined, not true.
_field(x, key) := v if {
	v := x[key]
} else := null

_has(obj, key) if {
	is_object(obj)
	key in object.keys(obj)
}

_non_empty_string(x) if {
	is_string(x)
	x != ""
}

_string_list(x) if {
	is_array(x)
	every v in x {
		_non_empty_string(v)
	}
}

_non_empty_string_list(x) if {
	_string_list(x)
	count(x) > 0
}

# ---------------------------------------------------------------------------
# The caller
# ---------------------------------------------------------------------------

# _credential_state is "valid" (a verified identity is present), "absent", or
# "invalid" (anything else, including a "valid" status without an identity).
_credential_state := "valid" if {
	input.credential.status == "valid"
	is_object(input.identity)
} else := "absent" if {
	input.credential.status == "absent"
} else := "invalid"

# Sensitive routes take only an OIDC JWT with a user identity, in a header or
# a session cookie.
_user_token if {
	input.credential.type == "bearer"
	input.credential.placement in {"header", "cookie"}
	input.identity.kind == "user"
}

# Scopes and roles: input.identity.scopes / .roles as the authenticator
# parsed them (a required scope, a non-empty string, is in the list or not;
# other items never match). Only when the authenticator left them out
# (absent or null) are they read from the claims: "scope" (space
# separated) and "scp" (a list or a space-separated string); roles from the
# "roles" claim.
_scopes := input.identity.scopes if is_array(input.identity.scopes)

else := _string_set(object.get(input.identity, ["claims", "scope"], null)) | _string_set(object.get(input.identity, ["claims", "scp"], null)) if {
	is_object(input.identity)
} else := set()

_roles := input.identity.roles if is_array(input.identity.roles)

else := _string_set(object.get(input.identity, ["claims", "roles"], null)) if is_object(input.identity)

else := set()

_string_set(x) := {s | some s in split(x, " "); s != ""} if is_string(x)

else := {s | some s in x; _non_empty_string(s)} if is_array(x)

else := set()

# _claim_string is a claim as a header value: a string as it is, an
# integer number in decimal.
_claim_string(name) := v if {
	v := input.identity.claims[name]
	is_string(v)
} else := format_int(v, 10) if {
	v := input.identity.claims[name]
	is_number(v)
	v == floor(v)
}

# ---------------------------------------------------------------------------
# Identity headers (allow decisions with a valid credential only)
#
#   x-user-id          identity.subject
#   x-auth-kind        identity.kind ("user" or "service")
#   x-auth-issuer      identity.issuer (users)
#   x-api-key-id       identity.key_id (services)
#   x-customer-number  the customer_number claim, when present (string or integer)
#
# Only non-empty strings are sent. Tollgate never gives the policy a kind,
# subject, issuer or key_id with a control character (pdp/policy input:
# such a value is ""), so those need no check here; a claim is the token
# issuer's, so the customer number is sent only without control
# characters. Either way a claim can never inject a header line.
# ---------------------------------------------------------------------------

_headers := _identity_headers if _credential_state == "valid"

else := {}

_identity_headers := object.union(
	{header: value |
		# the identity field each header carries, by identity kind
		some header, field in object.get(
			{
				"user": {"x-user-id": "subject", "x-auth-kind": "kind", "x-auth-issuer": "issuer"},
				"service": {"x-user-id": "subject", "x-auth-kind": "kind", "x-api-key-id": "key_id"},
			},
			object.get(input.identity, "kind", null),
			{"x-user-id": "subject", "x-auth-kind": "kind"},
		)
		value := input.identity[field]
		is_string(value)
		value != ""
	},
	{"x-customer-number": value |
		value := _claim_string("customer_number")
		regex.match(`^[^\x00-\x1f\x7f]+$`, value)
	},
)
