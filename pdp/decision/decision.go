// Package decision holds the decision the PDP answers and the stable reason
// codes the pipeline itself produces (policies add their own).
package decision

import (
	"crypto/rand"
	"encoding/hex"
	"slices"
	"strconv"

	"github.com/go-json-experiment/json/jsontext"
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

// AppendJSON appends d as JSON to b: the members encoding/json writes, in
// its order, headers sorted by name, a nil list or map as null. Strings
// are quoted by jsontext.AppendQuote (unlike encoding/json, it leaves <, >
// and & as they are, which is the same JSON). It is how the decision API
// writes a decision: about three times faster than encoding/json, and no
// allocation (BenchmarkAppendJSON).
func (d Decision) AppendJSON(b []byte) []byte {
	b = append(b, `{"decision_id":`...)
	b, _ = jsontext.AppendQuote(b, d.ID)
	b = append(b, `,"allow":`...)
	b = strconv.AppendBool(b, d.Allow)
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(d.Status), 10)
	b = append(b, `,"reasons":`...)
	if d.Reasons == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i, r := range d.Reasons {
			if i > 0 {
				b = append(b, ',')
			}
			b, _ = jsontext.AppendQuote(b, r)
		}
		b = append(b, ']')
	}
	b = append(b, `,"headers":`...)
	if d.Headers == nil {
		b = append(b, "null"...)
	} else {
		var buf [8]string
		names := buf[:0]
		for n := range d.Headers {
			names = append(names, n)
		}
		slices.Sort(names)
		b = append(b, '{')
		for i, n := range names {
			if i > 0 {
				b = append(b, ',')
			}
			b, _ = jsontext.AppendQuote(b, n)
			b = append(b, ':')
			b, _ = jsontext.AppendQuote(b, d.Headers[n])
		}
		b = append(b, '}')
	}
	b = append(b, `,"policy_revision":`...)
	b, _ = jsontext.AppendQuote(b, d.PolicyRevision)
	return append(b, '}')
}
