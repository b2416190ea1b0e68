// Package decision holds the decision the PDP answers and the stable reason
// codes the pipeline itself produces (policies add their own).
package decision

import (
	"crypto/rand"
	"encoding/hex"
)

// Reasons the pipeline produces before or instead of the policy.
const (
	ReasonPolicyError    = "policy_error"    // policy failed, undefined or malformed output
	ReasonInvalidRequest = "invalid_request" // method, target, host, scheme or headers cannot be normalized safely
	ReasonNoPolicy       = "no_policy"       // no policy is active
)

// Decision is the answer to "may this request through?".
//
// Status is the status the policy chose (the contract's "status"); adapters
// decide how to put it on their wire.
type Decision struct {
	ID             string            `json:"decision_id"`
	Allow          bool              `json:"allow"`
	Status         int               `json:"status"`
	Reasons        []string          `json:"reasons"`
	Headers        map[string]string `json:"headers"`
	PolicyRevision string            `json:"policy_revision"`
}

// Deny builds a deny decision with the given status and reasons.
func Deny(status int, reasons ...string) Decision {
	return Decision{Allow: false, Status: status, Reasons: reasons, Headers: map[string]string{}}
}

// NewID returns a random 128-bit decision identifier in hex.
func NewID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (it crashes the program instead)
	return hex.EncodeToString(b[:])
}
