package clusternet

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/soketi-go/soketi/internal/testutil"
)

func TestAdvertised(t *testing.T) {
	bound := &net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 7100}
	wild := &net.TCPAddr{IP: net.IPv4zero, Port: 7100}
	for _, tt := range []struct {
		bound *net.TCPAddr
		adv   string
		want  string
		err   bool
	}{
		{bound, "", "127.0.0.1:7100", false},
		{wild, "", "", true},
		{wild, "198.18.0.5", "198.18.0.5:7100", false},
		{wild, "198.18.0.5:0", "198.18.0.5:7100", false},
		{wild, "node-1.soketi:7000", "node-1.soketi:7000", false},
		{wild, "0.0.0.0:7000", "", true},
		{wild, "198.18.0.5:x", "", true},
	} {
		got, err := advertised(tt.bound, tt.adv)
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("advertised(%s, %q) = %q, %v", tt.bound, tt.adv, got, err)
		}
	}
}

func listen(t *testing.T, creds *Credentials) *Port {
	t.Helper()
	p, err := Listen(Config{BindAddr: "127.0.0.1:0", Credentials: creds})
	if err != nil {
		t.Fatal(err)
	}
	p.Start()
	t.Cleanup(p.Close)
	return p
}

func derive(t *testing.T, key, id string) *Credentials {
	t.Helper()
	c, err := DeriveCredentials([]byte(key), id)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

const key1 = "0123456789abcdef0123456789abcdef"

// echo accepts connections of kind on p and echoes what they send,
// prefixed by the id the connection proves.
func echo(t *testing.T, p *Port, kind Kind) {
	ln := p.Listener(kind)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.WriteString(c, "from="+PeerID(c)+";")
				_, _ = io.Copy(c, c)
			}()
		}
	}()
}

func roundTrip(t *testing.T, c net.Conn, msg string) string {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatal(err)
	}
	want := len(msg)
	buf := make([]byte, 0, 64)
	tmp := make([]byte, 64)
	for !strings.HasSuffix(string(buf), msg) || len(buf) < want {
		n, err := c.Read(tmp)
		buf = append(buf, tmp[:n]...)
		if err != nil {
			t.Fatalf("read: %v (got %q)", err, buf)
		}
	}
	return string(buf)
}

func TestPort_MutualTLSWithDerivedCredentials(t *testing.T) {
	a := listen(t, derive(t, key1, "node-a"))
	b := listen(t, derive(t, key1, "node-b"))
	echo(t, a, KindStream)
	ctx := context.Background()
	c, err := b.Dial(ctx, a.Addr(), KindStream, "node-a")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := roundTrip(t, c, "hello"); got != "from=node-b;hello" {
		t.Fatalf("got %q", got)
	}
	if id := PeerID(c); id != "node-a" {
		t.Fatalf("dialer sees %q", id)
	}
	if !a.Secured() || !b.Secured() {
		t.Fatal("ports with credentials must say they are secured")
	}
}

func TestPort_DialChecksThePeersIdentity(t *testing.T) {
	a := listen(t, derive(t, key1, "node-a"))
	b := listen(t, derive(t, key1, "node-b"))
	echo(t, a, KindRPC)
	_, err := b.Dial(context.Background(), a.Addr(), KindRPC, "node-c")
	if err == nil || !strings.Contains(err.Error(), `belongs to node "node-a"`) {
		t.Fatalf("dial expecting node-c at node-a's address: %v", err)
	}
}

// An outsider never gets a byte to a service: without the key, with a
// wrong key, with a certificate of its own making, or in plaintext.
func TestPort_RefusesPeersWithoutTheKey(t *testing.T) {
	a := listen(t, derive(t, key1, "node-a"))
	accepted := make(chan net.Conn, 4)
	for _, k := range []Kind{KindRaft, KindRPC, KindStream} {
		ln := a.Listener(k)
		t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				accepted <- c
			}
		}()
	}
	wrong := listen(t, derive(t, "another key of thirty-two bytes!", "node-a"))
	if _, err := wrong.Dial(context.Background(), a.Addr(), KindRaft, ""); err == nil {
		// TLS 1.3 clients finish before the server checks their
		// certificate: the refusal shows on the first read.
		t.Log("wrong key: handshake finished on the client side")
	}
	plain := listen(t, nil)
	if c, err := plain.Dial(context.Background(), a.Addr(), KindRaft, ""); err == nil {
		_, _ = c.Write([]byte("RequestVote"))
		c.Close()
	}
	// A client with a self-signed certificate naming a real node.
	self := testutil.SelfSignedCert(t, "node-b")
	raw, err := tls.Dial("tcp", a.Addr(), &tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{self}})
	if err == nil {
		_, _ = raw.Write([]byte{byte(KindRPC), 0, 0, 0, 1, 2})
		_ = raw.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := raw.Read(make([]byte, 1)); err == nil {
			t.Fatal("self-signed client read a reply")
		}
		raw.Close()
	}
	select {
	case c := <-accepted:
		t.Fatalf("a connection without the key reached a service: %v", c.RemoteAddr())
	case <-time.After(300 * time.Millisecond):
	}
	if a.Stats().Refused < 3 {
		t.Fatalf("refused %d connections, want ≥ 3", a.Stats().Refused)
	}
}

func TestPort_PlaintextWithoutCredentials(t *testing.T) {
	a := listen(t, nil)
	b := listen(t, nil)
	echo(t, a, KindRaft)
	c, err := b.Dial(context.Background(), a.Addr(), KindRaft, "node-a")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := roundTrip(t, c, "x"); got != "from=;x" {
		t.Fatalf("got %q", got)
	}
	if a.Secured() {
		t.Fatal("a port without credentials is not secured")
	}
}

func TestPort_UnknownKindAndSilentPeersAreDropped(t *testing.T) {
	a := listen(t, nil)
	c, err := net.Dial("tcp", a.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = c.Write([]byte{'Z'})
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("unknown kind: read %v, want the port to close", err)
	}
}

func TestPort_BoundsOpenConnectionsPerKind(t *testing.T) {
	old := MaxConns[KindStream]
	MaxConns[KindStream] = 2
	t.Cleanup(func() { MaxConns[KindStream] = old })
	a := listen(t, nil)
	b := listen(t, nil)
	echo(t, a, KindStream)
	var open []net.Conn
	for range 2 {
		c, err := b.Dial(context.Background(), a.Addr(), KindStream, "")
		if err != nil {
			t.Fatal(err)
		}
		roundTrip(t, c, "ok")
		open = append(open, c)
	}
	c, err := b.Dial(context.Background(), a.Addr(), KindStream, "")
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("third stream connection was served over the bound of 2")
	}
	c.Close()
	// Closing one frees its slot.
	open[0].Close()
	deadline := time.Now().Add(3 * time.Second)
	for {
		c, err := b.Dial(context.Background(), a.Addr(), KindStream, "")
		if err == nil {
			_ = c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
			buf := make([]byte, 6)
			if _, err := io.ReadFull(c, buf); err == nil {
				c.Close()
				break
			}
			c.Close()
		}
		if time.Now().After(deadline) {
			t.Fatal("a freed slot was never reused")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if a.Stats().OverLimit == 0 {
		t.Fatal("over-limit connections are not counted")
	}
}

func TestDeriveCredentials_SameKeySameCA(t *testing.T) {
	a := derive(t, key1, "node-a")
	b := derive(t, key1, "node-b")
	if !a.roots.Equal(b.roots) {
		t.Fatal("two nodes with one key derive different CAs")
	}
	c := derive(t, "another key of thirty-two bytes!", "node-a")
	if a.roots.Equal(c.roots) {
		t.Fatal("different keys derive one CA")
	}
	if _, err := DeriveCredentials([]byte("short"), "x"); err == nil {
		t.Fatal("a short key was accepted")
	}
}

func TestLoadCredentials_OperatorPKI(t *testing.T) {
	dir := t.TempDir()
	caKey, caCert := newCA(t)
	writePEM(t, filepath.Join(dir, "ca.pem"), "CERTIFICATE", caCert.Raw)
	for _, id := range []string{"node-a", "node-b"} {
		der, key := leafFor(t, caCert, caKey, id)
		writePEM(t, filepath.Join(dir, id+".pem"), "CERTIFICATE", der)
		kb, _ := x509.MarshalPKCS8PrivateKey(key)
		writePEM(t, filepath.Join(dir, id+".key"), "PRIVATE KEY", kb)
	}
	load := func(id, want string) *Credentials {
		c, err := LoadCredentials(filepath.Join(dir, "ca.pem"), filepath.Join(dir, id+".pem"), filepath.Join(dir, id+".key"), want)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	a, b := load("node-a", ""), load("node-b", "node-b")
	if a.NodeID() != "node-a" {
		t.Fatalf("node id from the certificate: %q", a.NodeID())
	}
	if _, err := LoadCredentials(filepath.Join(dir, "ca.pem"), filepath.Join(dir, "node-a.pem"), filepath.Join(dir, "node-a.key"), "node-z"); err == nil {
		t.Fatal("a certificate naming another node was accepted")
	}
	pa, pb := listen(t, a), listen(t, b)
	echo(t, pa, KindRPC)
	c, err := pb.Dial(context.Background(), pa.Addr(), KindRPC, "node-a")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := roundTrip(t, c, "pki"); got != "from=node-b;pki" {
		t.Fatalf("got %q", got)
	}
	// A derived-key node is not part of the operator's PKI.
	pd := listen(t, derive(t, key1, "node-d"))
	if c, err := pd.Dial(context.Background(), pa.Addr(), KindRPC, ""); err == nil {
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Fatal("a node outside the PKI was served")
		}
		c.Close()
	}
}

func newCA(t *testing.T) (ed25519.PrivateKey, *x509.Certificate) {
	t.Helper()
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "operator CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, priv)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return priv, cert
}

func leafFor(t *testing.T, ca *x509.Certificate, caKey ed25519.PrivateKey, cn string) ([]byte, ed25519.PrivateKey) {
	t.Helper()
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, pub, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return der, priv
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}
