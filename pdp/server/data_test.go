package server_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/pdp/server"
)

// TestDataAPIIsMounted: OPA's data API answers at /v1/data and under any
// path below it, runs the real pipeline (the test policy allows /public
// only), and answers anything but a POST with OPA's 400.
func TestDataAPIIsMounted(t *testing.T) {
	srv := httptest.NewServer(server.Handler(newDecider(t, true), server.Options{}))
	defer srv.Close()
	for _, tc := range []struct {
		method, path, body string
		status             int
		allow              any // the result's allow, when status is 200
	}{
		{"POST", "/v1/data", `{"input": {"method": "GET", "path": "/public/x"}}`, 200, true},
		{"POST", "/v1/data/tollgate/kong", `{"input": {"request": {"http": {"method": "GET", "path": "/public/x"}}}}`, 200, true},
		{"POST", "/v1/data/a/b%2Fc/../d", `{"input": {"type": "http", "request": {"method": "GET", "path": "/admin"}}}`, 200, false},
		{"GET", "/v1/data/tollgate/kong", ``, 400, nil},
		{"POST", "/v1/data/tollgate/kong", `{"input": {"request": {"http": {"method": "GET"}}}}`, 400, nil},
		{"POST", "/v1/dataX", `{"input": {"method": "GET", "path": "/public/x"}}`, 404, nil},
	} {
		req, err := http.NewRequest(tc.method, srv.URL+tc.path, strings.NewReader(tc.body))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Errorf("%s %s: HTTP %d, want %d: %s", tc.method, tc.path, resp.StatusCode, tc.status, b)
			continue
		}
		var got struct {
			Result map[string]any `json:"result"`
			Code   string         `json:"code"`
		}
		if err := json.Unmarshal(b, &got); err != nil {
			t.Errorf("%s %s: %v: %s", tc.method, tc.path, err, b)
			continue
		}
		switch tc.status {
		case 200:
			if got.Result["allow"] != tc.allow {
				t.Errorf("%s %s: result %v, want allow %v", tc.method, tc.path, got.Result, tc.allow)
			}
		case 400:
			if got.Code != "invalid_parameter" || got.Result != nil {
				t.Errorf("%s %s: %s, want OPA's invalid_parameter error", tc.method, tc.path, b)
			}
		}
	}
}
