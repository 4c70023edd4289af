package clusternet

import (
	"crypto"
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"os"
	"time"
)

// Credentials are a node's TLS identity on the cluster port and the
// authority it trusts. Every node-to-node connection is mutual TLS 1.3:
// both sides present a certificate issued by the cluster CA, and a peer
// whose certificate does not verify is refused during the handshake,
// before any raft, RPC or stream byte is read.
type Credentials struct {
	nodeID string
	leaf   tls.Certificate
	roots  *x509.CertPool
}

// caInfo names the HKDF output that seeds the derived CA key. Changing it
// changes every derived certificate: bump it only with a protocol version.
const caInfo = "soketi cluster ca v1"

// caValidity spans any plausible life of a cluster: the derived CA is
// rebuilt from the key on every start, so it never needs renewing, and
// fixed dates make every node build the same certificate.
var (
	caNotBefore = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	caNotAfter  = time.Date(2120, 1, 1, 0, 0, 0, 0, time.UTC)
)

// leafValidity is how long a self-issued leaf is valid; a node issues a new
// one at every start.
const leafValidity = 10 * 365 * 24 * time.Hour

// DeriveCredentials builds the cluster CA from key (CLUSTER_KEY): its
// Ed25519 key is seeded by HKDF-SHA256(key), so every holder of the key
// derives the same CA, and nobody without it can issue a certificate the
// cluster accepts. The node then issues itself a leaf with a fresh key and
// its node id as the subject's common name, which peers read as its proven
// identity.
func DeriveCredentials(key []byte, nodeID string) (*Credentials, error) {
	if len(key) < 16 {
		return nil, fmt.Errorf("clusternet: key of %d bytes; want at least 16", len(key))
	}
	if nodeID == "" {
		return nil, errors.New("clusternet: node id is required")
	}
	seed, err := hkdf.Key(sha256.New, key, nil, caInfo, ed25519.SeedSize)
	if err != nil {
		return nil, fmt.Errorf("clusternet: derive CA key: %w", err)
	}
	caKey := ed25519.NewKeyFromSeed(seed)
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "soketi cluster CA", Organization: []string{"soketi"}},
		NotBefore:             caNotBefore,
		NotAfter:              caNotAfter,
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		return nil, fmt.Errorf("clusternet: build CA: %w", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, fmt.Errorf("clusternet: parse CA: %w", err)
	}
	leaf, err := issueLeaf(ca, caKey, nodeID)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	return &Credentials{nodeID: nodeID, leaf: leaf, roots: roots}, nil
}

func issueLeaf(ca *x509.Certificate, caKey crypto.Signer, nodeID string) (tls.Certificate, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("clusternet: leaf key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("clusternet: leaf serial: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: nodeID, Organization: []string{"soketi"}},
		NotBefore:    now.Add(-time.Hour), // tolerate clock skew between nodes
		NotAfter:     now.Add(leafValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, pub, caKey)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("clusternet: issue leaf: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: priv}, nil
}

// LoadCredentials reads an operator's own PKI (CLUSTER_TLS_CA, _CERT,
// _KEY: PEM files). The certificate's common name is the node's identity
// and must be its node id; with nodeID empty the common name becomes it.
// The certificate must allow both server and client authentication, since
// every node dials and accepts.
func LoadCredentials(caFile, certFile, keyFile, nodeID string) (*Credentials, error) {
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("clusternet: CA: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("clusternet: CA %s: no PEM certificate", caFile)
	}
	leaf, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("clusternet: certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(leaf.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("clusternet: certificate: %w", err)
	}
	if nodeID == "" {
		nodeID = cert.Subject.CommonName
	}
	if cert.Subject.CommonName == "" || cert.Subject.CommonName != nodeID {
		return nil, fmt.Errorf("clusternet: certificate %s has common name %q; it must be the node id %q",
			certFile, cert.Subject.CommonName, nodeID)
	}
	inter := x509.NewCertPool()
	for _, der := range leaf.Certificate[1:] {
		if c, err := x509.ParseCertificate(der); err == nil {
			inter.AddCert(c)
		}
	}
	// KeyUsages accepts a chain valid for any one of its entries: check each
	// use on its own, since every node both dials and accepts.
	for _, use := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter,
			KeyUsages: []x509.ExtKeyUsage{use}}); err != nil {
			return nil, fmt.Errorf("clusternet: certificate %s does not verify against %s for both server and client use: %w",
				certFile, caFile, err)
		}
	}
	return &Credentials{nodeID: nodeID, leaf: leaf, roots: roots}, nil
}

// NodeID is the identity this node's certificate proves.
func (c *Credentials) NodeID() string { return c.nodeID }

// serverConfig accepts only clients whose certificate chains to the
// cluster CA.
func (c *Credentials) serverConfig() *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{c.leaf},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    c.roots,
		VerifyConnection: func(cs tls.ConnectionState) error {
			return checkIdentity(cs, "")
		},
	}
}

// clientConfig verifies the server's chain against the cluster CA and, when
// peerID is set, that the certificate is that node's. Host names are not
// checked: nodes are named by id, and their addresses change.
func (c *Credentials) clientConfig(peerID string) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		Certificates:       []tls.Certificate{c.leaf},
		InsecureSkipVerify: true, // the chain is verified in VerifyConnection, without a host name
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("clusternet: peer sent no certificate")
			}
			inter := x509.NewCertPool()
			for _, ic := range cs.PeerCertificates[1:] {
				inter.AddCert(ic)
			}
			if _, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{
				Roots: c.roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			}); err != nil {
				return fmt.Errorf("clusternet: peer certificate: %w", err)
			}
			return checkIdentity(cs, peerID)
		},
	}
}

// checkIdentity requires a named leaf, and the expected name when given.
func checkIdentity(cs tls.ConnectionState, want string) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("clusternet: peer sent no certificate")
	}
	got := cs.PeerCertificates[0].Subject.CommonName
	if got == "" {
		return errors.New("clusternet: peer certificate names no node")
	}
	if want != "" && got != want {
		return fmt.Errorf("clusternet: address belongs to node %q, not %q", got, want)
	}
	return nil
}
