package native

import (
	"bytes"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
)

// BenchmarkDecode is the decision body as the load harness sends it (a
// kilobyte token, a request id) read and decoded strictly: what a decision
// costs before the pipeline runs.
func BenchmarkDecode(b *testing.B) {
	h := New(nil, Options{})
	tok := "Bearer " + strings.Repeat("eyJhbGciOiJSUzI1NiJ9abcdefghijklmnop", 28)
	body := []byte(`{"method":"GET","path":"/customers/42/orders?page=2","headers":{"authorization":"` + tok + `","x-request-id":"load-1-2-3abc"}}`)
	w := httptest.NewRecorder()
	b.ReportAllocs()
	for b.Loop() {
		if _, code, err := h.decode(io.NopCloser(bytes.NewReader(body)), w); err != nil {
			b.Fatal(code, err)
		}
	}
}
