#!/usr/bin/env bash
# Runs every test of the project: vet, Go unit and integration tests with the
# race detector, the network-namespace cluster tests (root), and the
# end-to-end tests that drive the real binary with pusher-js and pusher.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "npm packages for the tests"
for dir in test/e2e test/webhook-npm; do
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
done

step "go vet"
go vet ./...
go vet -tags netns ./...
go vet -tags 'netns chaos' ./test/netns/

step "go test -race"
# One package at a time: on a small machine the timing-bound cluster tests
# (rate-limit windows, elections) must not share the CPUs with chromium, a
# Redis Cluster and the race detector of another package.
go test -race -p 1 -count=1 -timeout 30m ./...

step "deployment manifests (deploy/validate)"
(cd deploy/validate && go vet ./... && go test -count=1 ./...)

step "network-namespace tests"
if [ "$(id -u)" -eq 0 ]; then
  go test -tags netns -count=1 -timeout 20m ./internal/netns/ ./test/netns/
elif [ -n "${CI:-}" ]; then
  echo "the namespace tests need root, and CI must run them" >&2
  exit 1
else
  echo "skipped: the namespace tests need root (run: sudo $0)"
fi

step "chaos tests: seeded SIGKILL, SIGTERM and cuts under churn and publishes (netns)"
if [ "$(id -u)" -eq 0 ]; then
  # Each seed is about 70 s of faults plus checks; CHAOS_SEEDS=a,b,... to try others.
  chaos_log=$(mktemp)
  if ! CHAOS_SEEDS="${CHAOS_SEEDS:-1,20240917,3}" \
    go test -tags 'netns chaos' -count=1 -timeout 30m -run TestChaos -v ./test/netns/ >"$chaos_log" 2>&1; then
    tail -c 300000 "$chaos_log"
    exit 1
  fi
  # The summary of every run, then go test's verdicts.
  grep -E 'CHAOS SUMMARY|^ {8}(faults applied|publishes sent|  delivered / lost|  duplicated|ghosts|missing|watchers wrong|leader after|violations)' "$chaos_log" || true
  grep -E '^(--- |ok )' "$chaos_log"
  rm -f "$chaos_log"
elif [ -n "${CI:-}" ]; then
  echo "the chaos tests need root, and CI must run them" >&2
  exit 1
else
  echo "skipped: the chaos tests need root (run: sudo $0)"
fi

step "end-to-end tests (pusher-js, pusher)"
mkdir -p test/e2e/.bin
go build -o test/e2e/.bin/soketi ./cmd/soketi
for transport in eventloop eventloop-write goroutine; do
  echo "-- WebSocket transport: $transport"
  (cd test/e2e && E2E_WS_TRANSPORT=$transport SOKETI_BIN="$PWD/.bin/soketi" npm test)
done
