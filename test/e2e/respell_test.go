package e2e

import "strings"

// respell returns tok with one of its three parts (0 header, 1 payload, 2
// signature) spelled differently but decoding, leniently, to the same
// bytes: the unused low bit of its last character set when it has one,
// else base64 padding. The verifier must refuse either as malformed.
func respell(tok string, part int) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	parts := strings.Split(tok, ".")
	p := parts[part]
	switch len(p) % 4 {
	case 2, 3:
		i := strings.IndexByte(alphabet, p[len(p)-1])
		parts[part] = p[:len(p)-1] + string(alphabet[i^1])
	default:
		parts[part] = p + "=="
	}
	return strings.Join(parts, ".")
}
