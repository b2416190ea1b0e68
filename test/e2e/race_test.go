//go:build race

package e2e

// raceEnabled: the tests run with -race, so the tollgate binary is built with
// -race too and a data race in the server fails the run (exit status 66).
const raceEnabled = true
