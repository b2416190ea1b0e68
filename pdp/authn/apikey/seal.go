package apikey

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
)

// Errors about a key file's seal. Match them with errors.Is.
var (
	// ErrNoSeal reports a key file whose last line is not a seal: an empty
	// file, a file cut short, a file written by a Tollgate from before
	// seals, or one edited by hand. Nothing in it is loaded.
	ErrNoSeal = errors.New("key file has no seal line")
	// ErrBadSeal reports a key file whose seal does not match its contents:
	// records changed, added or removed after sealing, a wrong record count,
	// or a malformed or cut seal line. Nothing in it is loaded.
	ErrBadSeal = errors.New("key file does not match its seal")
)

// sealPrefix starts the seal line, the last line of every key file.
const sealPrefix = "# tollgate-seal v1 "

// sealLine renders the seal of body, a key file's contents before its seal
// line, which holds the given number of records.
func sealLine(body []byte, records int) []byte {
	sum := sha256.Sum256(body)
	return fmt.Appendf(nil, "%srecords=%d sha256=%s\n", sealPrefix, records, hex.EncodeToString(sum[:]))
}

// seal appends the seal line to body.
func seal(body []byte, records int) []byte {
	return append(body, sealLine(body, records)...)
}

// unseal checks data's seal and returns the body it covers and the record
// count it states. The seal must be the file's last line, newline
// included, spelled exactly as sealLine spells it, and its digest must be
// SHA-256 over every byte before it. The caller checks the count against
// the records it decodes from the body.
func unseal(data []byte) (body []byte, records int, err error) {
	if len(data) == 0 {
		return nil, 0, fmt.Errorf("%w: the file is empty", ErrNoSeal)
	}
	// The last line, without its newline; a file that does not end with a
	// newline was cut inside its last line.
	content, terminated := bytes.CutSuffix(data, []byte("\n"))
	start := bytes.LastIndexByte(content, '\n') + 1
	last := content[start:]
	if !bytes.HasPrefix(last, []byte(sealPrefix)) {
		// A cut inside the seal line's prefix still reads as a seal that
		// was cut: report it as such.
		if len(last) > 0 && bytes.HasPrefix([]byte(sealPrefix), last) {
			return nil, 0, fmt.Errorf("%w: the seal line is cut short", ErrBadSeal)
		}
		return nil, 0, fmt.Errorf("%w: the last line is not %q…", ErrNoSeal, sealPrefix)
	}
	if !terminated {
		return nil, 0, fmt.Errorf("%w: the seal line is cut short (no final newline)", ErrBadSeal)
	}
	body = data[:start]
	n, digest, ok := parseSeal(last)
	if !ok {
		return nil, 0, fmt.Errorf("%w: the seal line is malformed or cut short", ErrBadSeal)
	}
	sum := sha256.Sum256(body)
	if sum != digest {
		return nil, 0, fmt.Errorf("%w: the contents above the seal line changed since it was written", ErrBadSeal)
	}
	return body, n, nil
}

// parseSeal reads "<sealPrefix>records=N sha256=HEX" with N a decimal
// number without leading zeros and HEX 64 lower-case hex digits. Any other
// spelling is refused, so a seal has exactly one form.
func parseSeal(line []byte) (records int, digest [sha256.Size]byte, ok bool) {
	rest, _ := bytes.CutPrefix(line, []byte(sealPrefix))
	rest, found := bytes.CutPrefix(rest, []byte("records="))
	if !found {
		return 0, digest, false
	}
	num, hx, found := bytes.Cut(rest, []byte(" sha256="))
	if !found || len(num) == 0 || len(num) > 9 || (len(num) > 1 && num[0] == '0') {
		return 0, digest, false
	}
	for _, c := range num {
		if c < '0' || c > '9' {
			return 0, digest, false
		}
	}
	n, err := strconv.Atoi(string(num))
	if err != nil {
		return 0, digest, false
	}
	if len(hx) != 2*sha256.Size {
		return 0, digest, false
	}
	for _, c := range hx {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return 0, digest, false
		}
	}
	if _, err := hex.Decode(digest[:], hx); err != nil {
		return 0, digest, false
	}
	return n, digest, true
}
