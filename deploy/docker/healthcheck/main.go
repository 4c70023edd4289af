// Command healthcheck exits 0 when the soketi node in the same container
// answers GET /ready with 200, else 1. It exists because the scratch image has
// no shell or curl for a container HEALTHCHECK. It reads the node's
// SOKETI_PORT, SOKETI_PATH_PREFIX and SOKETI_SSL_CERT.
package main

import (
	"cmp"
	"crypto/tls"
	"net/http"
	"os"
	"strings"
	"time"
)

func main() {
	if !ready(os.Getenv) {
		os.Exit(1)
	}
}

func ready(getenv func(string) string) bool {
	scheme := "http"
	if getenv("SOKETI_SSL_CERT") != "" {
		scheme = "https"
	}
	url := scheme + "://127.0.0.1:" + cmp.Or(getenv("SOKETI_PORT"), "6001") +
		strings.TrimRight(getenv("SOKETI_PATH_PREFIX"), "/") + "/ready"
	client := &http.Client{
		Timeout: 2 * time.Second,
		// Loopback only: the certificate names the public host, not 127.0.0.1.
		Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}},
	}
	resp, err := client.Get(url)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}
