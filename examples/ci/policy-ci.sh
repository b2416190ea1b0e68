#!/bin/sh
# policy-ci.sh: the policy's CI gate, for any CI system (and your laptop).
# It sits at the root of a policy repository as 'tollgate init' lays one out
# (policy/, cases/, decisions/) and runs from there wherever it is called.
# Every step must pass; the first failure stops the run with its exit status
# (1: could not run, 2: a check failed).
#
#   TOLLGATE            the tollgate binary (default: tollgate on PATH)
#   POLICY              the bundle directory (default: policy)
#   CASES               the decision tables (default: cases/*.yaml)
#   DECISIONS           recorded decisions to replay (default: decisions/*.jsonl)
#   EXPECTED_FLIPS      the flips this change intends (default: expected-flips.yaml if present)
#   COVERAGE_THRESHOLD  minimum line coverage of the Rego tests (default: 95)
set -eu
cd "$(dirname "$0")"

tollgate=${TOLLGATE:-tollgate}
policy=${POLICY:-policy}
cases=${CASES:-cases/*.yaml}
decisions=${DECISIONS:-decisions/*.jsonl}
threshold=${COVERAGE_THRESHOLD:-95}
expect=${EXPECTED_FLIPS:-}
if [ -z "$expect" ] && [ -f expected-flips.yaml ]; then
	expect=expected-flips.yaml
fi

echo "==> fmt"
"$tollgate" fmt --check "$policy"
echo "==> lint"
"$tollgate" lint "$policy"
echo "==> test (coverage threshold $threshold%)"
"$tollgate" test --bundle "$policy" --coverage --threshold "$threshold"
echo "==> check"
# shellcheck disable=SC2086 # the glob is meant to expand
"$tollgate" check --bundle "$policy" $cases
echo "==> replay"
# shellcheck disable=SC2086
"$tollgate" replay --bundle "$policy" ${expect:+--expect "$expect"} $decisions
echo "==> policy CI passed"
