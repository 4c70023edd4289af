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

step "go test -race"
go test -race -count=1 -timeout 20m ./...

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

step "end-to-end tests (pusher-js, pusher)"
mkdir -p test/e2e/.bin
go build -o test/e2e/.bin/soketi ./cmd/soketi
(cd test/e2e && SOKETI_BIN="$PWD/.bin/soketi" npm test)
