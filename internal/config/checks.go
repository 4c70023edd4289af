package config

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode"

	"github.com/soketi-go/soketi/internal/text"
	"github.com/soketi-go/soketi/pkg/pusher"
)

// Checks that need more than one option, the file system, or the fields of
// an app.

// Parsers of the default app's variables (SOKETI_DEFAULT_APP_*).

func appString(check func(string) error) func(string) (any, error) {
	return func(raw string) (any, error) {
		if err := check(raw); err != nil {
			return nil, err
		}
		return raw, nil
	}
}

func appBool(raw string) (any, error) { return toBool(parseEnvValue(raw)) }

// appLimit reads a whole number; soketi treats every negative one as no limit.
func appLimit(none string) func(string) (any, error) {
	return func(raw string) (any, error) {
		n, err := toInt(parseEnvValue(raw))
		if err != nil {
			return nil, configError("want a whole number, " + none)
		}
		return float64(n), nil
	}
}

func appWebhooks(raw string) (any, error) {
	v, ok := parseEnvValue(raw).([]any)
	if !ok {
		return nil, configError(`want a JSON array of webhook objects, like [{"url":"https://example.com/hook","event_types":["channel_occupied"]}]`)
	}
	var hooks []pusher.Webhook
	if b, err := json.Marshal(v); err == nil && json.Unmarshal(b, &hooks) == nil {
		if err := checkWebhooks(hooks); err != nil {
			return nil, err
		}
	}
	return v, nil
}

// checkPathSegment refuses what cannot be one segment of the URL path that
// clients put the value in.
func checkPathSegment(route string) func(string) error {
	return func(s string) error {
		for _, r := range s {
			if r == '/' || r == '?' || r == '#' || unicode.IsSpace(r) || unicode.IsControl(r) {
				return configError(fmt.Sprintf("want no /, ?, #, spaces or control characters: clients put it in the URL path %s", route))
			}
		}
		return nil
	}
}

// checkSecret refuses control characters, typically the newline at the end
// of a secret file, which no client signs with.
func checkSecret(s string) error {
	if !text.Printable(s) {
		return configError("want printable text: it has a control character (a newline from a secret file?)")
	}
	return nil
}

var webhookTypes = []string{pusher.WebhookChannelOccupied, pusher.WebhookChannelVacated, pusher.WebhookMemberAdded,
	pusher.WebhookMemberRemoved, pusher.WebhookClientEvent, pusher.WebhookCacheMiss, pusher.WebhookSubscriptionCount}

func checkWebhooks(hooks []pusher.Webhook) error {
	for i, h := range hooks {
		if h.URL != "" {
			u, err := url.Parse(h.URL)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return configError(fmt.Sprintf("webhook %d: url %q: want an absolute http:// or https:// URL", i, h.URL))
			}
		}
		for _, t := range h.EventTypes {
			known := false
			for _, k := range webhookTypes {
				known = known || t == k
			}
			if !known {
				return configError(fmt.Sprintf("webhook %d: event type %q: want one of %s", i, t, strings.Join(webhookTypes, ", ")))
			}
		}
	}
	return nil
}

// checkApp applies the default app's rules to an app from the config file,
// returning the field at fault.
func checkApp(a *pusher.App) (string, error) {
	if err := checkPathSegment("/apps/{id}/...")(a.ID); err != nil {
		return "id", err
	}
	if err := checkPathSegment("/app/{key}")(a.Key); err != nil {
		return "key", err
	}
	if err := checkSecret(a.Secret); err != nil {
		return "secret", err
	}
	if err := checkWebhooks(a.Webhooks); err != nil {
		return "webhooks", err
	}
	return "", nil
}

// Certificate loads the main server's key pair, naming the variable at fault.
func (s SSL) Certificate() (tls.Certificate, error) {
	return loadKeyPair("SOKETI_SSL_CERT", s.CertPath, "SOKETI_SSL_KEY", s.KeyPath)
}

func isCertBlock(b *pem.Block) bool { return b.Type == "CERTIFICATE" }

// CAPool loads SOKETI_DB_REDIS_TLS_CA; nil when it is unset.
func (r Redis) CAPool() (*x509.CertPool, error) {
	if r.TLSCA == "" {
		return nil, nil
	}
	b, err := readPEM("SOKETI_DB_REDIS_TLS_CA", r.TLSCA, isCertBlock, "a PEM file of CA certificates")
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, &Error{Name: "SOKETI_DB_REDIS_TLS_CA", Value: r.TLSCA, Msg: "want a PEM file of CA certificates: none could be parsed"}
	}
	return pool, nil
}

func isKeyBlock(b *pem.Block) bool { return strings.HasSuffix(b.Type, "PRIVATE KEY") }

// readPEM reads a PEM file that must hold at least one block that want
// accepts.
func readPEM(name, path string, want func(*pem.Block) bool, what string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, &Error{Name: name, Value: path, Msg: "want " + what + ": " + err.Error()}
	}
	for rest := b; ; {
		var blk *pem.Block
		if blk, rest = pem.Decode(rest); blk == nil {
			return nil, &Error{Name: name, Value: path, Msg: "want " + what + ": no such PEM block in it"}
		}
		if blk.Type == "ENCRYPTED PRIVATE KEY" || blk.Headers["Proc-Type"] == "4,ENCRYPTED" {
			return nil, &Error{Name: name, Value: path, Msg: "want an unencrypted key: decrypt it (openssl pkey -in enc.pem -out key.pem)"}
		}
		if want(blk) {
			return b, nil
		}
	}
}

func loadKeyPair(certName, certPath, keyName, keyPath string) (tls.Certificate, error) {
	certPEM, err := readPEM(certName, certPath, isCertBlock, "a PEM certificate file")
	if err != nil {
		return tls.Certificate{}, err
	}
	keyPEM, err := readPEM(keyName, keyPath, isKeyBlock, "a PEM private key file")
	if err != nil {
		return tls.Certificate{}, err
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, &Error{Name: keyName, Value: keyPath,
			Msg: "want the private key of " + certName + " (" + certPath + "): " + strings.TrimPrefix(err.Error(), "tls: ")}
	}
	return pair, nil
}

// checkDataDir refuses a data directory that cannot be made: the path, or
// the nearest part of it that exists, is not a directory.
func checkDataDir(dir string) error {
	for p := filepath.Clean(dir); ; {
		fi, err := os.Stat(p)
		switch {
		case err == nil && fi.IsDir():
			return nil
		case err == nil:
			return &Error{Name: "CLUSTER_DATA_DIR", Value: dir, Msg: "want a directory, or a path where one can be made: " + p + " is a file"}
		case !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR): // ENOTDIR: a file on the way, found above
			var pe *fs.PathError
			if errors.As(err, &pe) {
				err = pe.Err
			}
			return &Error{Name: "CLUSTER_DATA_DIR", Value: dir, Msg: "want a usable directory: " + err.Error()}
		}
		parent := filepath.Dir(p)
		if parent == p {
			return nil
		}
		p = parent
	}
}

// listener is one socket the node binds.
type listener struct {
	name, proto, host string
	port              int
}

// checkPorts refuses two sockets of the node on one port, which would fail
// at bind time: the metrics server is always started, the cluster's only
// with the cluster adapter.
func (c *Config) checkPorts() error {
	ls := []listener{
		{"SOKETI_PORT", "tcp", c.Host, c.Port},
		{"SOKETI_METRICS_SERVER_PORT", "tcp", c.Metrics.Host, c.Metrics.Port},
	}
	if cl := c.Cluster; c.AdapterDriver == "cluster" {
		ls = append(ls,
			listener{"CLUSTER_PORT", "udp", cl.Host, cl.Port},
			listener{"CLUSTER_GOSSIP_PORT", "tcp", cl.Host, cl.GossipPort},
			listener{"CLUSTER_GOSSIP_PORT", "udp", cl.Host, cl.GossipPort},
			listener{"CLUSTER_RAFT_PORT", "tcp", cl.Host, cl.RaftPort})
	}
	for i, b := range ls {
		for _, a := range ls[:i] {
			if b.port != 0 && a.name != b.name && a.proto == b.proto && a.port == b.port && sameHost(a.host, b.host) {
				return &Error{Name: b.name, Value: strconv.Itoa(b.port), Msg: "must differ from " + a.name}
			}
		}
	}
	return nil
}

// sameHost reports whether sockets bound to h1 and h2 on one port collide:
// the same address, or either one a wildcard.
func sameHost(h1, h2 string) bool {
	wild := func(h string) bool {
		a, err := netip.ParseAddr(h)
		return h == "" || (err == nil && a.IsUnspecified())
	}
	return h1 == h2 || wild(h1) || wild(h2)
}

func millisString(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', -1, 64)
}
