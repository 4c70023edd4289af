package wstransport

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/soketi-go/soketi/pkg/pusher"
)

// tcpPair returns both ends of a real loopback TCP connection.
func tcpPair(t testing.TB) (server, client net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { server.Close(); client.Close() })
	return server, client
}

var deliveryFrame = pusher.TextFrame([]byte(`{"event":"update","channel":"hot","data":"{\"seq\":1}"}`))

func TestSocket_TryWriteDoesNotAllocate(t *testing.T) {
	srv, cli := tcpPair(t)
	go func() { _, _ = io.Copy(io.Discard, cli) }()
	s := newSocket(srv)
	if s.raw == nil {
		t.Fatal("no raw conn on a TCP socket")
	}
	allocs := testing.AllocsPerRun(1000, func() {
		if n, err := s.TryWrite(deliveryFrame); err != nil || n == 0 {
			t.Fatalf("TryWrite = %d, %v", n, err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per TryWrite, want 0", allocs)
	}
}

// A queued write's deadline does not outlive it: a direct write after the
// deadline would have passed still goes through (it used to fail with an
// i/o timeout, dropping idle sockets that had once had frames queued).
func TestSocket_WriteDeadlineEndsWithTheWrite(t *testing.T) {
	srv, cli := tcpPair(t)
	go func() { _, _ = io.Copy(io.Discard, cli) }()
	s := newSocket(srv)
	s.timeout = 50 * time.Millisecond
	bufs := net.Buffers{deliveryFrame, deliveryFrame}
	if err := s.WriteBuffers(&bufs); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * s.timeout)
	if n, err := s.TryWrite(deliveryFrame); err != nil || n != len(deliveryFrame) {
		t.Fatalf("TryWrite after a queued write = %d, %v", n, err)
	}
}

// With nobody reading, TryWrite fills the socket and then returns 0 at once.
func TestSocket_TryWriteNeverBlocks(t *testing.T) {
	srv, _ := tcpPair(t)
	s := newSocket(srv)
	big := make([]byte, 1<<20)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		n, err := s.TryWrite(big)
		if err != nil {
			t.Fatal(err)
		}
		if n < len(big) {
			return // partial or nothing: the kernel is full and we did not wait
		}
	}
	t.Fatal("the socket never filled")
}

// BenchmarkSocketTryWrite writes one delivery to a real loopback socket:
// go test -run '^$' -bench SocketTryWrite -benchmem ./pkg/wstransport/
func BenchmarkSocketTryWrite(b *testing.B) {
	srv, cli := tcpPair(b)
	go func() { _, _ = io.Copy(io.Discard, cli) }()
	s := newSocket(srv)
	b.SetBytes(int64(len(deliveryFrame)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.TryWrite(deliveryFrame); err != nil {
			b.Fatal(err)
		}
	}
}
