// Package validate checks the deployment files under deploy/ with the
// libraries and tools made for each format: the Kubernetes API types, the
// Compose loader, BuildKit's Dockerfile parser and systemd-analyze. It is its
// own module so that the server's module does not depend on any of them.
//
//	cd deploy/validate && go test ./...
package validate
