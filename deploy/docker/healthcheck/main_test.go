package main

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
)

func TestReady(t *testing.T) {
	status := http.StatusOK
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/ws/ready" {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(status)
	})
	for _, tlsOn := range []bool{false, true} {
		srv := httptest.NewUnstartedServer(h)
		cert := ""
		if tlsOn {
			srv.StartTLS()
			cert = "/etc/soketi/cert.pem"
		} else {
			srv.Start()
		}
		u, _ := url.Parse(srv.URL)
		env := map[string]string{"SOKETI_PORT": u.Port(), "SOKETI_PATH_PREFIX": "/ws/", "SOKETI_SSL_CERT": cert}
		getenv := func(k string) string { return env[k] }

		status = http.StatusOK
		if !ready(getenv) {
			t.Errorf("tls=%v: 200 from /ws/ready reported not ready", tlsOn)
		}
		status = http.StatusInternalServerError
		if ready(getenv) {
			t.Errorf("tls=%v: 500 (shutting down) reported ready", tlsOn)
		}
		srv.Close()
		if ready(getenv) {
			t.Errorf("tls=%v: closed port reported ready", tlsOn)
		}
	}
}
