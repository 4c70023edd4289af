package wstransport

import (
	"net"
	"sync"
	"syscall"
	"time"
)

// socket is the pusher.Transport over an upgraded connection: the outbox
// hands it complete frames, written straight to the file descriptor.
type socket struct {
	nc        net.Conn
	raw       syscall.RawConn // nil for TLS: writes go through the flusher
	closeOnce sync.Once
	timeout   time.Duration // per queued write: writeTimeout

	// TryWrite's argument and results. The outbox makes one TryWrite at a
	// time, so they can live here and the write callback, bound once, need
	// not be a closure allocated per call.
	wb      []byte
	wn      int
	werr    error
	writeFn func(fd uintptr) bool
}

// writeTimeout bounds one write to a client; a client that cannot take its
// frames within it is disconnected rather than allowed to hold memory.
const writeTimeout = 10 * time.Second

// closeReplyWait is how long a closed connection waits for the client's close frame.
const closeReplyWait = 2 * time.Second

func newSocket(nc net.Conn) *socket {
	t := &socket{nc: nc, timeout: writeTimeout}
	if sc, ok := nc.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			t.raw = raw
			t.writeFn = t.writeFd
		}
	}
	return t
}

// TryWrite makes one non-blocking write(2): the callback reports done even
// when the socket is full, so the runtime never parks this goroutine.
func (t *socket) TryWrite(b []byte) (int, error) {
	if t.raw == nil {
		return 0, nil
	}
	t.wb = b
	err := t.raw.Write(t.writeFn)
	n, werr := t.wn, t.werr
	t.wb, t.werr = nil, nil
	if err != nil {
		return 0, err
	}
	if werr == syscall.EAGAIN || werr == syscall.EINTR {
		return 0, nil
	}
	return max(n, 0), werr
}

func (t *socket) writeFd(fd uintptr) bool {
	t.wn, t.werr = syscall.Write(int(fd), t.wb)
	return true
}

func (t *socket) WriteBuffers(b *net.Buffers) error {
	_ = t.nc.SetWriteDeadline(time.Now().Add(t.timeout))
	_, err := b.WriteTo(t.nc)
	if err == nil {
		// The deadline bounds this write only: left set, it would fail the
		// next TryWrite (RawConn.Write honours it) long after this one.
		_ = t.nc.SetWriteDeadline(time.Time{})
	}
	return err
}

func (t *socket) CloseAfterFlush() {
	// The read loop sees the client's close reply or this deadline, then closes.
	_ = t.nc.SetReadDeadline(time.Now().Add(closeReplyWait))
	time.AfterFunc(closeReplyWait+time.Second, func() { _ = t.Close() })
}

func (t *socket) Close() error {
	var err error
	t.closeOnce.Do(func() { err = t.nc.Close() })
	return err
}

func (t *socket) RemoteAddr() string { return t.nc.RemoteAddr().String() }
