package decision

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
)

// TestAppendJSON: AppendJSON writes the JSON encoding/json writes (the
// same members in the same order, the same values once decoded), for
// every kind of value a decision can hold.
func TestAppendJSON(t *testing.T) {
	for _, d := range []Decision{
		{},
		Deny(403, "no_route"),
		{ID: "0f4c", Allow: true, Status: 200, Reasons: []string{}, Headers: map[string]string{"x-user-id": "alice", "x-auth-kind": "user", "x-auth-issuer": "https://idp.example.com/", "x-customer-number": "42"}, PolicyRevision: "r1"},
		{ID: "i", Status: 401, Reasons: []string{"credential_invalid", "expired"}, Headers: map[string]string{}, PolicyRevision: `rev "quoted" \ back`},
		{Status: -1, Reasons: []string{"<script>&amp;</script>", "\u2028\u2029", "tab\there\nnl\x00nul\x7f", "é日本🙂"}, Headers: map[string]string{"b": "2", "a": "1", "A": "0", "": "empty"}},
		{Reasons: []string{"bad \xff utf-8"}, Headers: map[string]string{"h": "\xc3("}},
		{Headers: map[string]string{"1": "a", "2": "b", "3": "c", "4": "d", "5": "e", "6": "f", "7": "g", "8": "h", "9": "i", "10": "j"}}, // more than the stack buffer
	} {
		want, err := json.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		got := d.AppendJSON([]byte("prefix"))
		if !bytes.HasPrefix(got, []byte("prefix")) {
			t.Fatalf("AppendJSON dropped what b held: %q", got)
		}
		got = got[len("prefix"):]
		var gv, wv map[string]any
		if err := json.Unmarshal(got, &gv); err != nil {
			t.Fatalf("%+v: not JSON: %v\n%s", d, err, got)
		}
		if err := json.Unmarshal(want, &wv); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(gv, wv) {
			t.Errorf("%+v:\n got %s\nwant %s", d, got, want)
		}
		if order := memberOrder(t, got); !reflect.DeepEqual(order, memberOrder(t, want)) {
			t.Errorf("members in the order %q, want encoding/json's", order)
		}
	}
}

func memberOrder(t *testing.T, b []byte) []string {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	if _, err := dec.Token(); err != nil {
		t.Fatal(err)
	}
	var names []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, tok.(string))
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			t.Fatal(err)
		}
	}
	return names
}

func BenchmarkAppendJSON(b *testing.B) {
	d := Decision{ID: "06f9346f57f4dd1402271a909bce94f9", Allow: true, Status: 200, Reasons: []string{},
		Headers:        map[string]string{"x-user-id": "alice", "x-auth-kind": "user", "x-auth-issuer": "https://idp.example.com/", "x-customer-number": "42"},
		PolicyRevision: "default-2026.12.1"}
	b.Run("AppendJSON", func(b *testing.B) {
		b.ReportAllocs()
		buf := make([]byte, 0, 512)
		for b.Loop() {
			buf = d.AppendJSON(buf[:0])
		}
	})
	b.Run("encoding_json", func(b *testing.B) {
		b.ReportAllocs()
		var buf bytes.Buffer
		for b.Loop() {
			buf.Reset()
			_ = json.NewEncoder(&buf).Encode(d)
		}
	})
}
