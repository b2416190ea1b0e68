package authntest_test

import (
	"crypto/rsa"
	"io"
	"net/http"
	"testing"

	"github.com/tollgate/tollgate/pdp/authn/authntest"
)

func get(t *testing.T, url string, h http.Header) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header = h
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

func TestJWKSETagAndCacheControl(t *testing.T) {
	is := authntest.NewIssuer(t)
	first := get(t, is.JWKSURL(), nil)
	etag := first.Header.Get("ETag")
	if first.StatusCode != 200 || etag == "" || first.Header.Get("Cache-Control") != "" {
		t.Fatalf("first: %s, ETag %q, Cache-Control %q", first.Status, etag, first.Header.Get("Cache-Control"))
	}
	is.SetJWKSCacheControl("max-age=60")
	r := get(t, is.JWKSURL(), http.Header{"If-None-Match": {etag}})
	if r.StatusCode != http.StatusNotModified || r.Header.Get("Cache-Control") != "max-age=60" || is.JWKSNotModified() != 1 {
		t.Fatalf("unchanged: %s, Cache-Control %q, not modified %d", r.Status, r.Header.Get("Cache-Control"), is.JWKSNotModified())
	}
	is.RemoveKey(authntest.KeyIDEC)
	if r := get(t, is.JWKSURL(), http.Header{"If-None-Match": {etag}}); r.StatusCode != 200 || r.Header.Get("ETag") == etag {
		t.Fatalf("changed set: %s, ETag %q", r.Status, r.Header.Get("ETag"))
	}
	if n := is.JWKSFetches(); n != 3 {
		t.Fatalf("JWKSFetches = %d", n)
	}
}

func TestHoldJWKS(t *testing.T) {
	is := authntest.NewIssuer(t)
	hold := is.HoldJWKS()
	done := make(chan int)
	go func() {
		resp, err := http.Get(is.JWKSURL())
		if err != nil {
			done <- 0
			return
		}
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	<-hold.Arrived()
	select {
	case <-done:
		t.Fatal("the request went through a hold")
	default:
	}
	hold.Release()
	if code := <-done; code != 200 {
		t.Fatalf("after release: %d", code)
	}
	hold.Release() // twice is fine
}

func TestDiscoveryResponseAndWeakKeys(t *testing.T) {
	is := authntest.NewIssuer(t)
	is.SetDiscoveryResponse(http.StatusServiceUnavailable, []byte("down"))
	if r := get(t, is.URL()+"/.well-known/openid-configuration", nil); r.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("canned discovery: %s", r.Status)
	}
	is.ResetDiscovery()
	if r := get(t, is.URL()+"/.well-known/openid-configuration", nil); r.StatusCode != 200 {
		t.Fatalf("after reset: %s", r.Status)
	}
	for _, bits := range []int{1024, 3072} {
		k := is.AddRSAKey(bits)
		if got := k.Private.(*rsa.PrivateKey).N.BitLen(); got != bits || is.Key(k.ID) == nil {
			t.Fatalf("AddRSAKey(%d): %d bits, published %v", bits, got, is.Key(k.ID) != nil)
		}
	}
}
