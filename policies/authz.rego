# METADATA
# title: Tollgate default authorization policy
# description: |
#   Decides whether an API request may go through, from the route table in
#   data.tollgate.routes and the verified caller in input.identity.
#   The query is data.tollgate.authz.decision; it is always defined.
package tollgate.authz

# ---------------------------------------------------------------------------
# Decision
#
# decision is always an object
#
#   {"allow": bool, "status": number, "reasons": [string], "headers": {string: string}}
#
# Outcomes, in the order they are checked (the first that applies decides;
# exactly one reason each, except credential_invalid, see below):
#
#   no route matches method and path                   403 ["no_route"]
#   the matched route is malformed (see route_errors)  500 ["route_invalid"]
#   public route                                       200 allow (any credential)
#   sensitive route, credential in a query parameter   403 ["credential_in_query"]
#   sensitive route, API key (valid or not)            403 ["api_key_not_allowed_for_sensitive_route"]
#   credential absent                                  401 ["credential_missing"]
#   credential invalid                                 401 ["credential_invalid"]
#                                                      or  ["credential_invalid", <credential.error>]
#   sensitive route, not a user JWT in header/cookie   403 ["user_token_required"]
#   a required scope is missing                        403 ["insufficient_scope"]
#   a required role is missing                         403 ["missing_role"]
#   owner claim absent or not equal to the path param  403 ["not_owner"]
#   otherwise                                          200 allow
#
# credential_invalid: when input.credential.error is a non-empty string (the
# authenticator's stable rejection code, e.g. "expired" or
# "multiple_credentials") it is the second reason, verbatim.
#
# Deny decisions carry no headers. An allow carries the identity headers
# (see _identity_headers) when the credential is valid, else none.
# The gateway adds WWW-Authenticate to a 401; the policy does not.
# ---------------------------------------------------------------------------

# Unreachable by construction (the _outcome chain ends in a plain else), kept
# so that the decision fails closed should the chain ever be left undefined.
default decision := {"allow": false, "status": 500, "reasons": ["policy_error"], "headers": {}}

decision := _outcome

_outcome := _deny(403, ["no_route"]) if {
	not _match
} else := _deny(500, ["route_invalid"]) if {
	some check in _decision_checks
	some _ in _check(check, _route)
} else := _allow if {
	_route.sensitivity == "public"
} else := _deny(403, ["credential_in_query"]) if {
	_route.sensitivity == "sensitive"
	input.credential.placement == "query"
} else := _deny(403, ["api_key_not_allowed_for_sensitive_route"]) if {
	_route.sensitivity == "sensitive"
	input.credential.type == "api_key"
} else := _deny(401, ["credential_missing"]) if {
	_credential_state == "absent"
} else := _deny(401, _invalid_reasons) if {
	_credential_state == "invalid"
} else := _deny(403, ["user_token_required"]) if {
	_route.sensitivity == "sensitive"
	not _user_token
} else := _deny(403, ["insufficient_scope"]) if {
	some scope in object.get(_route, "scopes", [])
	not scope in _scopes
} else := _deny(403, ["missing_role"]) if {
	some role in object.get(_route, "roles", [])
	not role in _roles
} else := _deny(403, ["not_owner"]) if {
	_route.owner
	not _owner_ok
} else := _allow

_deny(status, reasons) := {"allow": false, "status": status, "reasons": reasons, "headers": {}}

_allow := {"allow": true, "status": 200, "reasons": [], "headers": _headers}

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
# "{name}" matches exactly one segment and binds it to name, and a trailing
# "**" matches zero or more segments ("/public/**" matches "/public" and
# "/public/a/b"). "**" anywhere else, "*" and stray braces are invalid.
#
# A route that breaks these rules is reported by route_errors and, when it
# is the first match for a request, denies it with 500 ["route_invalid"]
# rather than letting a later, possibly weaker, route decide.
# ---------------------------------------------------------------------------

_routes := data.tollgate.routes if is_array(data.tollgate.routes)

else := []

_segments := input.request.segments if is_array(input.request.segments)

else := [s | some s in split(input.request.path, "/"); s != ""] if is_string(input.request.path)

# matched_route describes the route that decides this request:
# {"index": n, "id": "..." (when the route has one), "template": "...", "params": {...}}.
# Undefined when no route matches.
matched_route := object.union(
	{"index": _match.index, "template": _match.template, "params": _match.params},
	{"id": _route.id | _route.id},
)

_route := _match.route

_match := {"index": i, "route": _routes[i], "template": _as_list(_routes[i].paths)[j], "params": params} if {
	[i, j, params] := sort(_candidates)[0]
}

_candidates contains [i, j, params] if {
	some i, route in _routes
	_method_matches(route, input.request.method)
	some j, template in _as_list(route.paths)
	params := template_params(template, _segments)
}

_method_matches(route, _) if "*" in _as_list(route.methods)

_method_matches(route, method) if {
	some m in _as_list(route.methods)
	is_string(m)
	upper(m) == method
}

# template_params is the object of parameters template binds when it matches
# segments, and undefined when it does not match.
template_params(template, segments) := params if {
	is_string(template)
	is_array(segments)
	tsegs := _template_segments(template)
	n := count(tsegs)
	_length_fits(tsegs, n, count(segments))
	every i, t in tsegs {
		_segment_fits(t, i, n, segments)
	}
	bindings := {[_param_name(t), segments[i]] | some i, t in tsegs; _is_param(t)}
	count({name | some [name, _] in bindings}) == count(bindings)
	params := {name: value | some [name, value] in bindings}
}

_template_segments(template) := [s | some s in split(template, "/"); s != ""]

# A template ending in "**" needs at least its other segments; any other
# template needs exactly its segments.
_length_fits(tsegs, n, have) if {
	tsegs[n - 1] == "**"
	have >= n - 1
}

_length_fits(tsegs, n, have) if {
	not tsegs[n - 1] == "**"
	have == n
}

# Segment i of a template with n segments fits the request's segments.
# "**" fits only as the last segment, where it takes the rest.
_segment_fits("**", i, n, _) if i == n - 1

_segment_fits(t, i, _, segments) if {
	_is_param(t)
	s := segments[i]
	is_string(s)
	s != ""
}

_segment_fits(t, i, _, segments) if {
	t != "**"
	t == segments[i]
}

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
# route_errors is the set of problems in data.tollgate.routes, as
# human-readable strings; the embedded table has none (see the tests).
# ---------------------------------------------------------------------------

route_errors contains "data.tollgate.routes must be an array" if not _routes_defined

_routes_defined if is_array(data.tollgate.routes)

route_errors contains sprintf("data.tollgate.routes[%d]: %s", [i, msg]) if {
	some i, route in _routes
	some msg in _route_problems(route)
}

# _route_problems is the set of problems of one route, empty when it is valid.
_route_problems(route) := {msg | some check in _checks; some msg in _check(check, route)}

_checks := _decision_checks | {"id", "methods", "paths", "templates", "owner_params"}

# A decision re-checks only the route that matched, and only for the problems
# that could make it weaker than its author meant (a scope list written as a
# string, a misspelt sensitivity, ...). The others cannot loosen a decision:
# a malformed template or method list matches less, and an owner that is not
# a parameter of the matched path is a "not_owner" deny.
_decision_checks := {"object", "sensitivity", "scopes", "roles", "owner", "public"}

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
# parsed them. Only when the authenticator left them out (absent or null) are
# they read from the claims: "scope" (space separated) and "scp" (a list or a
# space-separated string); roles from the "roles" claim.
_scopes := _string_set(input.identity.scopes) if is_array(input.identity.scopes)

else := _string_set(object.get(_claims, "scope", null)) | _string_set(object.get(_claims, "scp", null))

_roles := _string_set(input.identity.roles) if is_array(input.identity.roles)

else := _string_set(object.get(_claims, "roles", null))

_string_set(x) := {s | some s in split(x, " "); s != ""} if is_string(x)

else := {s | some s in x; _non_empty_string(s)} if is_array(x)

else := set()

_claims := input.identity.claims if is_object(input.identity.claims)

else := {}

# The owner check compares as strings, so a numeric claim 42 equals the path
# segment "42". Non-integer numbers and other types never match.
_owner_ok if _claim_string(_route.owner) == _match.params[_route.owner]

_claim_string(name) := v if {
	v := _claims[name]
	is_string(v)
} else := format_int(v, 10) if {
	v := _claims[name]
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
# Only non-empty strings without control characters are sent, so a claim can
# never inject a header line.
# ---------------------------------------------------------------------------

_headers := _identity_headers if _credential_state == "valid"

else := {}

_identity_headers := {name: value |
	some name, value in _header_values
	_non_empty_string(value)
	not regex.match(`[\x00-\x1f\x7f]`, value)
}

_header_values["x-user-id"] := input.identity.subject

_header_values["x-auth-kind"] := input.identity.kind

_header_values["x-auth-issuer"] := input.identity.issuer if input.identity.kind == "user"

_header_values["x-api-key-id"] := input.identity.key_id if input.identity.kind == "service"

_header_values["x-customer-number"] := _claim_string("customer_number")
