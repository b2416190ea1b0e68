package oidcjwt

import (
	"bytes"
	"encoding/json"
	"io"
	"reflect"
	"testing"

	"github.com/tollgate/tollgate/pdp/authn"
)

// decodeStd is how the claims were decoded before readPayload: encoding/json,
// numbers as json.Number.
func decodeStd(b []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errNotOneValue
	}
	return m, nil
}

var errNotOneValue = jsonError("more than one JSON value")

type jsonError string

func (e jsonError) Error() string { return string(e) }

var payloadSeeds = []string{
	`{"iss":"https://idp","sub":"a","aud":["x","y"],"exp":1700000000,"scope":"a b"}`,
	`{"a":{"x":1,"x":2},"b":[{"y":1},[],{}],"c":null,"d":true,"e":false}`,
	`{"n":123456789012345678901234567890,"f":-0.5e-7,"z":0}`,
	`{"u":"caf\u00e9 \ud83d\ude00","lone":"\ud800","bad":"` + "\xff\xfe" + `","mixed":"a` + "\xc3" + `b"}`,
	`{"esc":"\"\\\/\b\f\n\r\t","\u0061ud":"x"}`,
	` {"ws" : [ 1 , 2 ] } `,
	`{"a":1,"a":2}`,
	`{"AUD":"x"}`,
	`{"iss":1}`,
	`{"a":1}{}`,
	`{"a":1} x`,
	`{"a":01}`,
	`{"a":"x",}`,
	`[1]`,
	`null`,
	``,
}

// TestReadPayloadMatchesEncodingJSON: the one decode of the payload gives
// exactly the claims encoding/json gave, and refuses exactly what it
// refused (plus the duplicate and case-variant registered claims).
func TestReadPayloadMatchesEncodingJSON(t *testing.T) {
	for _, s := range payloadSeeds {
		checkPayloadDecode(t, []byte(s))
	}
}

func FuzzReadPayloadMatchesEncodingJSON(f *testing.F) {
	for _, s := range payloadSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > DefaultMaxTokenBytes {
			return
		}
		checkPayloadDecode(t, b)
	})
}

func checkPayloadDecode(t *testing.T, b []byte) {
	t.Helper()
	var u unverified
	reason := readPayload(b, &u)
	want, err := decodeStd(b)
	switch {
	case reason == authn.ReasonDuplicateClaim:
		// Refused on purpose; encoding/json would have let the last one win.
	case reason == "":
		if err != nil {
			t.Fatalf("%q: accepted, encoding/json refused it: %v", b, err)
		}
		if !reflect.DeepEqual(u.claims, want) {
			t.Fatalf("%q: claims = %#v\nencoding/json: %#v", b, u.claims, want)
		}
		if iss, ok := want["iss"].(string); ok != u.hasIss || iss != u.iss {
			t.Fatalf("%q: iss = %q, %v", b, u.iss, u.hasIss)
		}
	case reason == authn.ReasonMalformed:
		// Refused where encoding/json refused, or gave no object, or the
		// iss claim is not a string.
		if iss, present := want["iss"]; err == nil && want != nil && (!present || isString(iss)) {
			t.Fatalf("%q: refused, encoding/json decoded %#v", b, want)
		}
	default:
		t.Fatalf("%q: unexpected reason %q", b, reason)
	}
}

func isString(v any) bool { _, ok := v.(string); return ok }
