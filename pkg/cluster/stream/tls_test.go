package stream

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"sync"
	"testing"
	"time"
)

// testPKI is a throwaway ed25519 CA issuing one leaf per node id, standing
// in for the cluster port's mutual TLS 1.3.
type testPKI struct {
	ca    *x509.Certificate
	key   ed25519.PrivateKey
	pool  *x509.CertPool
	mu    sync.Mutex
	leafs map[string]tls.Certificate
}

var (
	pkiOnce sync.Once
	pki     *testPKI
	pkiErr  error
)

// sharedPKI returns the package's test CA, made on first use.
func sharedPKI(t testing.TB) *testPKI {
	t.Helper()
	pkiOnce.Do(func() { pki, pkiErr = newPKI() })
	if pkiErr != nil {
		t.Fatal(pkiErr)
	}
	return pki
}

func newPKI() (*testPKI, error) {
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "soketi test cluster CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, key)
	if err != nil {
		return nil, err
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return &testPKI{ca: ca, key: key, pool: pool, leafs: make(map[string]tls.Certificate)}, nil
}

// leaf returns a client-and-server certificate naming node id.
func (p *testPKI) leaf(t testing.TB, id string) tls.Certificate {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.leafs[id]; ok {
		return c
	}
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: id},
		DNSNames:     []string{id},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, pub, p.key)
	if err != nil {
		t.Fatal(err)
	}
	c := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	p.leafs[id] = c
	return c
}

// withTLS runs the node's streams over mutual TLS 1.3 with the certificate
// of certID (normally its own id): the listener requires and verifies a
// client certificate, Dial verifies that the address holds peerID's
// certificate, and PeerID reads the verified client certificate.
func withTLS(t testing.TB, certID string) func(*Config) {
	p := sharedPKI(t)
	cert := p.leaf(t, certID)
	return func(c *Config) {
		c.Listener = tls.NewListener(c.Listener, &tls.Config{
			MinVersion:   tls.VersionTLS13,
			Certificates: []tls.Certificate{cert},
			ClientCAs:    p.pool,
			ClientAuth:   tls.RequireAndVerifyClientCert,
		})
		c.Dial = func(ctx context.Context, addr, peerID string) (net.Conn, error) {
			d := tls.Dialer{Config: &tls.Config{
				MinVersion:   tls.VersionTLS13,
				Certificates: []tls.Certificate{cert},
				RootCAs:      p.pool,
				ServerName:   peerID,
			}}
			return d.DialContext(ctx, "tcp", addr)
		}
		c.PeerID = tlsPeerID
	}
}

// tlsPeerID is the verified peer certificate's common name. It fails
// closed: a connection whose handshake has not finished proves a name no
// node has.
func tlsPeerID(conn net.Conn) string {
	tc, ok := conn.(*tls.Conn)
	if !ok {
		return ""
	}
	st := tc.ConnectionState()
	if !st.HandshakeComplete || len(st.PeerCertificates) == 0 {
		return "\x00unverified"
	}
	return st.PeerCertificates[0].Subject.CommonName
}

// transports runs a test over plain TCP and over mutual TLS.
func transports(t *testing.T, f func(t *testing.T, tr func(id string) func(*Config))) {
	t.Run("tcp", func(t *testing.T) { f(t, func(string) func(*Config) { return nil }) })
	t.Run("tls", func(t *testing.T) { f(t, func(id string) func(*Config) { return withTLS(t, id) }) })
}
