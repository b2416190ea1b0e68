// Package e2e holds Tollgate's end-to-end tests: the real tollgate binary,
// built once per run, serving a real OpenID Connect test issuer's tokens
// (pdp/authn/authntest over HTTP) and API keys made with `tollgate apikey
// new`, asked through its HTTP API and through a real NGINX (auth_request),
// in front of an upstream that echoes what it received. Nothing is mocked.
//
// Run them with the rest of the project's checks:
//
//	./test/run                 # from the repository root
//	./test/run -run TestE2E -v # only these
//
// or alone with `go test ./test/e2e/`. TOLLGATE_E2E=1 (set by test/run)
// makes a missing nginx a failure; without it the NGINX tests are skipped.
//
// The cases are data: ../cases/routes.yaml (the default route table and every
// outcome) and testdata/paths.yaml (path tricks). TestNGINX runs the shipped
// examples/nginx/nginx.conf (which the README quotes as its recipe), with
// only its three addresses replaced.
package e2e
