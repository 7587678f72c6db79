# registry-edge — build, test and release.
#   make            build ./bin/registry-edge and ./bin/deltactl for this machine
#   make test       the test command of README.md (./.ci/test)
#   make release    static binaries for linux/amd64, linux/arm64, linux/arm/v7 in dist/, with SHA256SUMS
#   make image      the container image (needs a Docker engine)
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
LDFLAGS := -s -w -X github.com/registry-edge/registry-edge/internal/version.Version=$(VERSION)
PLATFORMS := linux/amd64 linux/arm64 linux/arm/v7
GO ?= go

.PHONY: build test release image clean
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/ ./cmd/registry-edge ./cmd/deltactl

test:
	./.ci/test

release:
	rm -rf dist && mkdir -p dist
	set -e; for p in $(PLATFORMS); do \
		os=$${p%%/*}; rest=$${p#*/}; arch=$${rest%%/*}; variant=$${rest#*/}; \
		arm=""; suffix="$$os-$$arch"; \
		if [ "$$arch" = arm ]; then arm=$${variant#v}; suffix="$$suffix-v$$arm"; fi; \
		for cmd in registry-edge deltactl; do \
			echo "build $$cmd $$suffix"; \
			CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch GOARM=$$arm $(GO) build -trimpath -ldflags '$(LDFLAGS)' \
				-o dist/$$cmd-$(VERSION)-$$suffix ./cmd/$$cmd; \
		done; \
	done
	cd dist && sha256sum * > SHA256SUMS

image:
	docker build --build-arg VERSION=$(VERSION) -t registry-edge:$(VERSION) .

clean:
	rm -rf bin dist
