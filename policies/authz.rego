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
# Outcomes, in the order they are checked (the first that applies decides;
# exactly one reason each, except credential_invalid, see below):
#
#   no route matches method and path                   403 ["no_route"]
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
#
# The route table must be valid (bundle_errors is empty): Tollgate refuses
# to activate a bundle whose table is not, so a malformed route never
# decides a request. Rules below rely on that and do not re-check the table.
#
# Performance: this runs on every request. The rules below are written so
# that a decision evaluates few expressions: the common allow paths are
# checked first, in one body each, and the ordered checks above only run to
# find the reason of a deny (_deny). Keep it that way; measure with
# `go test -run '^$' -bench 'Decide|PeerOPAEval' -benchmem ./test/bench/`.
# ---------------------------------------------------------------------------

# Unreachable with a valid route table (a matched route has a known
# sensitivity), kept so that the decision fails closed should it ever be
# left undefined.
default decision := {"allow": false, "status": 500, "reasons": ["policy_error"], "headers": {}}

decision := d if {
	hit := _hit
	route := data.tollgate.routes[hit[0]]
	d := _decide(route.sensitivity, route, hit)
} else := {"allow": false, "status": 403, "reasons": ["no_route"], "headers": {}} if {
	not _hit
}

# _decide(sensitivity, route, hit) is the decision on a matched route. Each
# sensitivity has one body for its usual allow; anything else goes through
# _deny, which checks the outcomes in the order of the table above.
_decide("public", _, _) := {"allow": true, "status": 200, "reasons": [], "headers": _headers}

_decide("internal", route, hit) := {"allow": true, "status": 200, "reasons": [], "headers": _identity_headers} if {
	not route.owner
	input.credential.status == "valid"
	is_object(input.identity)
	every scope in object.get(route, "scopes", []) {
		scope in input.identity.scopes
	}
	every role in object.get(route, "roles", []) {
		role in input.identity.roles
	}
} else := {"allow": true, "status": 200, "reasons": [], "headers": _identity_headers} if {
	input.credential.status == "valid"
	is_object(input.identity)
	every scope in object.get(route, "scopes", []) {
		scope in input.identity.scopes
	}
	every role in object.get(route, "roles", []) {
		role in input.identity.roles
	}
	input.identity.claims[route.owner] == _owner_param(route, hit)
} else := _deny(route, hit)

_decide("sensitive", route, hit) := {"allow": true, "status": 200, "reasons": [], "headers": _identity_headers} if {
	not route.owner
	input.credential.type == "bearer"
	input.credential.status == "valid"
	input.credential.placement in {"header", "cookie"}
	input.identity.kind == "user"
	every scope in object.get(route, "scopes", []) {
		scope in input.identity.scopes
	}
	every role in object.get(route, "roles", []) {
		role in input.identity.roles
	}
} else := {"allow": true, "status": 200, "reasons": [], "headers": _identity_headers} if {
	input.credential.type == "bearer"
	input.credential.status == "valid"
	input.credential.placement in {"header", "cookie"}
	input.identity.kind == "user"
	every scope in object.get(route, "scopes", []) {
		scope in input.identity.scopes
	}
	every role in object.get(route, "roles", []) {
		role in input.identity.roles
	}
	input.identity.claims[route.owner] == _owner_param(route, hit)
} else := _deny(route, hit)

# _deny is the outcome of a non-public route when its usual allow did not
# apply: the first check of the table above that fails (or, when they all
# pass after all, e.g. a numeric owner claim, the allow).
_deny(route, hit) := {"allow": false, "status": 403, "reasons": ["credential_in_query"], "headers": {}} if {
	route.sensitivity == "sensitive"
	input.credential.placement == "query"
} else := {"allow": false, "status": 403, "reasons": ["api_key_not_allowed_for_sensitive_route"], "headers": {}} if {
	route.sensitivity == "sensitive"
	input.credential.type == "api_key"
} else := {"allow": false, "status": 401, "reasons": ["credential_missing"], "headers": {}} if {
	_credential_state == "absent"
} else := {"allow": false, "status": 401, "reasons": _invalid_reasons, "headers": {}} if {
	_credential_state == "invalid"
} else := {"allow": false, "status": 403, "reasons": ["user_token_required"], "headers": {}} if {
	route.sensitivity == "sensitive"
	not _user_token
} else := {"allow": false, "status": 403, "reasons": ["insufficient_scope"], "headers": {}} if {
	some scope in route.scopes
	not scope in _scopes
} else := {"allow": false, "status": 403, "reasons": ["missing_role"], "headers": {}} if {
	some role in route.roles
	not role in _roles
} else := {"allow": false, "status": 403, "reasons": ["not_owner"], "headers": {}} if {
	route.owner
	not _owner_ok(route, hit)
} else := {"allow": true, "status": 200, "reasons": [], "headers": _identity_headers}

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
# "/public/a/b"). "**" anywhere else, "*" and stray braces are invalid:
# route_errors reports them, and a bundle with such a route is not activated.
# ---------------------------------------------------------------------------

_segments := input.request.segments if is_array(input.request.segments)

else := [s | some s in split(input.request.path, "/"); s != ""] if is_string(input.request.path)

# matched_route describes the route that decides this request:
# {"index": n, "id": "..." (when the route has one), "template": "...", "params": {...}}.
# Undefined when no route matches.
matched_route := object.union(
	{"index": _hit[0], "template": template, "params": template_params(template, _segments)},
	{"id": route.id | route.id},
) if {
	route := data.tollgate.routes[_hit[0]]
	template := route.paths[_hit[1]]
}

# _hit is [i, j, tsegs] for the first route i and its first path j that match
# the request, tsegs being that path's segments without the trailing "**".
#
# It is one pass over the route table. A route is considered only when one
# of its paths can match the first segment (it starts with "/" and that
# segment, or with a parameter, "**" or a doubled slash); then its methods
# are checked; then its paths are compared segment by segment. This relies
# on the table being valid: a segment of a valid template that starts with
# "{" is a parameter, and "*" only appears in a last segment "**".
_hit := hits[0] if {
	segs := _segments
	k := count(segs)
	prefixes := array.concat([sprintf("/%s", [concat("/", array.slice(segs, 0, 1))])], ["/{", "/*", "//"])
	methods := array.concat([input.request.method], ["*"])
	hits := [[i, j, tsegs] |
		some i, route in data.tollgate.routes
		strings.any_prefix_match(route.paths, prefixes)
		some method in route.methods
		upper(method) in methods
		some j, template in route.paths
		tsegs := regex.find_n(`[^/*]+`, template, -1)
		fixed := count(tsegs)

		# as many segments as the template, or more when it ends in "**"
		k >= fixed
		object.get({true: true}, contains(template, "**"), k == fixed)

		# every literal segment is equal to the request's
		[x | some x, t in tsegs; t != segs[x]; not startswith(t, "{")] == []
	]
}

# _owner_param is the request segment bound to the route's owner parameter by
# the matched path.
_owner_param(route, [_, _, tsegs]) := _segments[x] if {
	tsegs[x] == sprintf("{%s}", [route.owner])
}

# template_params is the object of parameters template binds when it matches
# segments, and undefined when it does not match. Unlike the matching above
# it takes any template, valid or not.
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
# parsed them. Only when the authenticator left them out (absent or null) are
# they read from the claims: "scope" (space separated) and "scp" (a list or a
# space-separated string); roles from the "roles" claim. (The usual allow
# paths above test the identity's arrays directly; these are for _deny.)
_scopes := _string_set(input.identity.scopes) if is_array(input.identity.scopes)

else := _string_set(object.get(input.identity, ["claims", "scope"], null)) | _string_set(object.get(input.identity, ["claims", "scp"], null))

_roles := _string_set(input.identity.roles) if is_array(input.identity.roles)

else := _string_set(object.get(input.identity, ["claims", "roles"], null))

_string_set(x) := {s | some s in split(x, " "); s != ""} if is_string(x)

else := {s | some s in x; _non_empty_string(s)} if is_array(x)

else := set()

# The owner check compares as strings, so a numeric claim 42 equals the path
# segment "42". Non-integer numbers and other types never match.
_owner_ok(route, hit) if _claim_string(route.owner) == _owner_param(route, hit)

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
# Only non-empty strings without control characters are sent, so a claim can
# never inject a header line.
# ---------------------------------------------------------------------------

_headers := _identity_headers if _credential_state == "valid"

else := {}

_identity_headers := object.union(
	{header: value |
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
		regex.match(`^[^\x00-\x1f\x7f]+$`, value)
	},
	{"x-customer-number": value |
		value := _claim_string("customer_number")
		regex.match(`^[^\x00-\x1f\x7f]+$`, value)
	},
)
