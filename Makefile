# Release builds: static binaries for linux/amd64 and linux/arm64 in dist/,
# with the version (VERSION=..., default `git describe`) stamped into
# `soketi --version`, and a SHA256SUMS file beside them.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
PLATFORMS := linux/amd64 linux/arm64
LDFLAGS := -s -w -X main.version=$(VERSION)

.PHONY: release test clean
release:
	@mkdir -p dist
	@for p in $(PLATFORMS); do \
		os=$${p%/*}; arch=$${p#*/}; out=dist/soketi-$(VERSION)-$$os-$$arch; \
		echo "building $$out"; \
		CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch go build -trimpath -ldflags "$(LDFLAGS)" -o $$out ./cmd/soketi || exit 1; \
	done
	@cd dist && sha256sum soketi-$(VERSION)-* > SHA256SUMS && cat SHA256SUMS

test:
	scripts/test.sh

clean:
	rm -rf dist
