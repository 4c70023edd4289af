package stream

import (
	"bufio"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"time"
)

// The handshake, origin (dialer) → destination (listener):
//
//	hello     origin id, target id, incarnation, stream epoch, nonce
//	challenge destination id, incarnation, nonce, HMAC over both (with a key)
//	auth      base seq, HMAC over everything so far (with a key)
//	accept    first record: the destination's last delivered seq of this stream
//
// With a SecretKey both sides prove the key before any data flows and every
// record after the handshake is sealed under per-direction keys derived from
// the transcript. The base tells a destination that does not know the
// stream where it starts; the accept tells the origin where to resume.

// errRefused reports a destination that declined the handshake.
var errRefused = errors.New("stream: handshake refused")

// session is an established connection with its record layer.
type session struct {
	conn net.Conn
	w    *recordWriter
	r    *recordReader
}

type handshakeResult struct {
	sess      *session
	remoteInc uint64
	last      uint64
}

// clientHandshake runs the origin side. prepare is called once the
// destination's incarnation is known and returns the base sequence.
func clientHandshake(conn net.Conn, cfg *Config, target string, epoch uint64, prepare func(remoteInc uint64) uint64) (handshakeResult, error) {
	if err := conn.SetDeadline(time.Now().Add(cfg.PeerTimeout)); err != nil {
		return handshakeResult{}, err
	}
	br := bufio.NewReaderSize(conn, ioBuffer)
	h := hello{version: protocolVersion, origin: cfg.NodeID, target: target, inc: cfg.Incarnation, epoch: epoch}
	if cfg.SecretKey != nil {
		h.flags |= flagAuth
	}
	_, _ = rand.Read(h.nonce[:])
	hb := h.encode()
	if err := writeHandshake(conn, hb); err != nil {
		return handshakeResult{}, fmt.Errorf("send hello: %w", err)
	}
	cb, err := readHandshake(br)
	if err != nil {
		return handshakeResult{}, fmt.Errorf("read challenge: %w", err)
	}
	ch, unsigned, err := decodeChallenge(cb)
	if err != nil {
		return handshakeResult{}, fmt.Errorf("read challenge: %w", err)
	}
	switch ch.status {
	case statusOK:
	case statusWrongTarget:
		return handshakeResult{}, fmt.Errorf("%w: address belongs to node %q", errRefused, ch.node)
	case statusAuthMode:
		return handshakeResult{}, fmt.Errorf("%w: secret key configured on one side only", errRefused)
	case statusVersion:
		return handshakeResult{}, fmt.Errorf("%w: protocol version", errRefused)
	default:
		return handshakeResult{}, fmt.Errorf("%w: status %d", errRefused, ch.status)
	}
	if ch.node != target {
		return handshakeResult{}, fmt.Errorf("%w: address belongs to node %q", errRefused, ch.node)
	}
	if cfg.SecretKey != nil {
		if !hmac.Equal(ch.mac, transcriptMAC(cfg.SecretKey, "server", hb, unsigned)) {
			return handshakeResult{}, fmt.Errorf("%w: destination does not know the key", errAuth)
		}
	} else if len(ch.mac) != 0 {
		return handshakeResult{}, fmt.Errorf("%w: secret key configured on one side only", errRefused)
	}

	ab := binary.BigEndian.AppendUint64(make([]byte, 0, 8+macLen), prepare(ch.inc))
	if cfg.SecretKey != nil {
		ab = append(ab, transcriptMAC(cfg.SecretKey, "client", hb, cb, ab)...)
	}
	if err := writeHandshake(conn, ab); err != nil {
		return handshakeResult{}, fmt.Errorf("send auth: %w", err)
	}
	send, recv, err := sessionKeys(cfg.SecretKey, hb, cb, ab)
	if err != nil {
		return handshakeResult{}, err
	}
	r := &recordReader{conn: conn, br: br, aead: recv, timeout: cfg.PeerTimeout}
	body, err := r.next()
	if err != nil {
		return handshakeResult{}, fmt.Errorf("read accept: %w", err)
	}
	var last uint64
	accepted := false
	err = parseFrames(body, func(typ byte, seq uint64, _ []byte) error {
		if typ != frameAccept || accepted {
			return fmt.Errorf("%w: unexpected frame %d in accept", errMalformed, typ)
		}
		last, accepted = seq, true
		return nil
	})
	if err == nil && !accepted {
		err = fmt.Errorf("%w: empty accept", errMalformed)
	}
	if err != nil {
		return handshakeResult{}, fmt.Errorf("read accept: %w", err)
	}
	sess := &session{conn: conn, w: newRecordWriter(conn, send, cfg.PeerTimeout), r: r}
	return handshakeResult{sess: sess, remoteInc: ch.inc, last: last}, nil
}

// serverHandshake runs the destination side up to, not including, the
// accept, which needs the stream state that the hello names.
func serverHandshake(conn net.Conn, cfg *Config) (hello, uint64, *session, error) {
	if err := conn.SetDeadline(time.Now().Add(cfg.PeerTimeout)); err != nil {
		return hello{}, 0, nil, err
	}
	br := bufio.NewReaderSize(conn, ioBuffer)
	hb, err := readHandshake(br)
	if err != nil {
		return hello{}, 0, nil, fmt.Errorf("read hello: %w", err)
	}
	h, err := decodeHello(hb)
	if err != nil {
		return hello{}, 0, nil, fmt.Errorf("read hello: %w", err)
	}
	ch := challenge{node: cfg.NodeID, inc: cfg.Incarnation}
	_, _ = rand.Read(ch.nonce[:])
	var refusal error
	switch {
	case h.version != protocolVersion:
		ch.status, refusal = statusVersion, fmt.Errorf("%w: protocol version %d", errRefused, h.version)
	case h.target != cfg.NodeID:
		ch.status, refusal = statusWrongTarget, fmt.Errorf("%w: origin dialled node %q", errRefused, h.target)
	case (h.flags&flagAuth != 0) != (cfg.SecretKey != nil):
		ch.status, refusal = statusAuthMode, fmt.Errorf("%w: secret key configured on one side only", errAuth)
	}
	if refusal == nil && cfg.SecretKey != nil {
		unsigned, _ := ch.encode()
		ch.mac = transcriptMAC(cfg.SecretKey, "server", hb, unsigned)
	}
	_, cb := ch.encode()
	if err := writeHandshake(conn, cb); err != nil {
		return h, 0, nil, fmt.Errorf("send challenge: %w", err)
	}
	if refusal != nil {
		return h, 0, nil, refusal
	}
	ab, err := readHandshake(br)
	if err != nil {
		return h, 0, nil, fmt.Errorf("read auth: %w", err)
	}
	want := 8
	if cfg.SecretKey != nil {
		want += macLen
	}
	if len(ab) != want {
		return h, 0, nil, fmt.Errorf("%w: auth of %d bytes", errMalformed, len(ab))
	}
	if cfg.SecretKey != nil && !hmac.Equal(ab[8:], transcriptMAC(cfg.SecretKey, "client", hb, cb, ab[:8])) {
		return h, 0, nil, fmt.Errorf("%w: origin does not know the key", errAuth)
	}
	recv, send, err := sessionKeys(cfg.SecretKey, hb, cb, ab)
	if err != nil {
		return h, 0, nil, err
	}
	sess := &session{
		conn: conn,
		w:    newRecordWriter(conn, send, cfg.PeerTimeout),
		r:    &recordReader{conn: conn, br: br, aead: recv, timeout: cfg.PeerTimeout},
	}
	return h, binary.BigEndian.Uint64(ab), sess, nil
}

// sessionKeys returns the origin→destination and destination→origin AEADs,
// both nil without a key.
func sessionKeys(key []byte, transcript ...[]byte) (c2s, s2c cipher.AEAD, err error) {
	if key == nil {
		return nil, nil, nil
	}
	if c2s, err = sessionAEAD(key, "c2s", transcript...); err != nil {
		return nil, nil, err
	}
	if s2c, err = sessionAEAD(key, "s2c", transcript...); err != nil {
		return nil, nil, err
	}
	return c2s, s2c, nil
}
