// Package policy is the Go↔Rego contract and the engine that runs it.
//
// Input is what a policy sees as `input` (DESIGN.md, "Policy input"): the
// normalized request, the credential's type, placement, status and
// fingerprint (never the secret) and, for a valid credential only, the
// verified identity. Input.Value builds that document directly as an OPA AST
// value, so evaluation needs no JSON round trip.
//
// Engine compiles a bundle and prepares the decision query once, on
// Activate, and swaps the prepared program in atomically; Evaluate reads one
// snapshot of the active program per call, so a decision never sees a
// half-swapped policy. The decision document the query yields (DESIGN.md,
// "Policy output") is checked strictly: anything missing, undefined,
// ambiguous or malformed fails closed as a deny with status 500 and reason
// decision.ReasonPolicyError, and Evaluate also returns an error that says
// what went wrong, so the caller can log a broken policy apart from an
// ordinary deny.
package policy
