//go:build linux

package uring

import (
	"errors"
	"net"
	"syscall"
	"testing"
	"time"
)

// pairs returns n connected loopback TCP sockets: the server ends' raw
// descriptors (non-blocking, as an event loop holds them) and the clients.
func pairs(t testing.TB, n int) (fds []int, clients []*net.TCPConn) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for range n {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		s, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		f, err := s.(*net.TCPConn).File() // a blocking dup; made non-blocking below
		s.Close()
		if err != nil {
			t.Fatal(err)
		}
		fd, err := syscall.Dup(int(f.Fd()))
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		if err := syscall.SetNonblock(fd, true); err != nil {
			t.Fatal(err)
		}
		fds = append(fds, fd)
		clients = append(clients, c.(*net.TCPConn))
	}
	t.Cleanup(func() {
		for i := range fds {
			syscall.Close(fds[i])
			clients[i].Close()
		}
	})
	return fds, clients
}

func newRing(t testing.TB, entries uint32) *Ring {
	r, err := New(entries)
	if errors.Is(err, ErrUnavailable) {
		t.Fatalf("io_uring is needed on this machine: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func TestSendReachesEachSocketInOrder(t *testing.T) {
	const n = 50
	fds, clients := pairs(t, n)
	r := newRing(t, 64)
	msgs := make([][]byte, n)
	for i := range n {
		msgs[i] = []byte{byte(i), 'a', 'b', byte(i)}
		if !r.Send(fds[i], msgs[i], uint64(1000+i)) {
			t.Fatalf("send %d not staged", i)
		}
	}
	if _, err := r.Submit(); err != nil {
		t.Fatal(err)
	}
	got := map[uint64]int32{}
	for tries := 0; len(got) < n && tries < 100; tries++ {
		r.Reap(func(tag uint64, res int32) { got[tag] = res })
		if len(got) < n {
			if err := r.Wait(10e6); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i := range n {
		if res, ok := got[uint64(1000+i)]; !ok || res != 4 {
			t.Fatalf("send %d: completion %d, %v", i, res, ok)
		}
		buf := make([]byte, 8)
		m, err := clients[i].Read(buf)
		if err != nil || string(buf[:m]) != string(msgs[i]) {
			t.Fatalf("client %d read %q, %v", i, buf[:m], err)
		}
	}
	if r.Inflight() != 0 {
		t.Fatalf("%d in flight after all were reaped", r.Inflight())
	}
}

// A socket that is full takes part of a send, then none, at once: the
// kernel never holds a send waiting for room.
func TestSendToFullSocketReportsAtOnce(t *testing.T) {
	fds, clients := pairs(t, 1)
	_ = syscall.SetsockoptInt(fds[0], syscall.SOL_SOCKET, syscall.SO_SNDBUF, 4096)
	_ = clients[0].SetReadBuffer(4096)
	r := newRing(t, 8)
	big := make([]byte, 4<<20)
	sawShort, sawAgain := false, false
	for round := 0; round < 64 && !sawAgain; round++ {
		if !r.Send(fds[0], big, 7) {
			t.Fatal("not staged")
		}
		if _, err := r.Submit(); err != nil {
			t.Fatal(err)
		}
		var res int32
		if r.Reap(func(_ uint64, v int32) { res = v }) != 1 {
			t.Fatal("a send to a full socket did not complete within the submission")
		}
		switch {
		case res == -int32(syscall.EAGAIN):
			sawAgain = true
		case res >= 0 && int(res) < len(big):
			sawShort = true
		default:
			t.Fatalf("completion %d", res)
		}
	}
	if !sawShort || !sawAgain {
		t.Fatalf("short send seen %v, EAGAIN seen %v", sawShort, sawAgain)
	}
}

func TestSendBounds(t *testing.T) {
	fds, _ := pairs(t, 1)
	r := newRing(t, 2)
	if r.Send(fds[0], nil, 1) {
		t.Fatal("an empty send was staged")
	}
	for i := range r.Entries() {
		if !r.Send(fds[0], []byte("x"), uint64(i)) {
			t.Fatalf("send %d of %d not staged", i, r.Entries())
		}
	}
	if r.Send(fds[0], []byte("x"), 9) {
		t.Fatal("a send beyond the ring's entries was staged")
	}
	if _, err := r.Submit(); err != nil {
		t.Fatal(err)
	}
	// Until reaped, completions hold their slots.
	if r.Send(fds[0], []byte("x"), 9) {
		t.Fatal("a send was staged while every slot awaits reaping")
	}
	r.Reap(func(uint64, int32) {})
	if !r.Send(fds[0], []byte("x"), 9) {
		t.Fatal("no room after reaping")
	}
	if _, err := New(0); err == nil {
		t.Fatal("a ring of 0 entries")
	}
}

func TestSendToClosedDescriptorFails(t *testing.T) {
	r := newRing(t, 4)
	fd, err := syscall.Open("/dev/null", syscall.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	syscall.Close(fd)
	r.Send(fd, []byte("x"), 1)
	if _, err := r.Submit(); err != nil {
		t.Fatal(err)
	}
	var res int32
	r.Reap(func(_ uint64, v int32) { res = v })
	if res != -int32(syscall.EBADF) {
		t.Fatalf("completion %d, want -EBADF", res)
	}
}

// BenchmarkSend compares one write(2) per socket with one io_uring_enter
// for all of them, 100 bytes to each of 1,000 loopback sockets per op.
func BenchmarkSend(b *testing.B) {
	const n = 1000
	fds, clients := pairs(b, n)
	msg := make([]byte, 100)
	drain := func() {
		buf := make([]byte, 64<<10)
		for _, c := range clients {
			for {
				c.SetReadDeadline(time.Now().Add(time.Millisecond))
				m, _ := c.Read(buf)
				if m < len(buf) {
					break
				}
			}
		}
	}
	b.Run("write", func(b *testing.B) {
		for i := range b.N {
			for _, fd := range fds {
				if _, err := syscall.Write(fd, msg); err != nil {
					b.Fatal(err)
				}
			}
			if i%32 == 31 {
				b.StopTimer()
				drain()
				b.StartTimer()
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/send")
	})
	b.Run("uring", func(b *testing.B) {
		r := newRing(b, n)
		for i := range b.N {
			for j, fd := range fds {
				r.Send(fd, msg, uint64(j))
			}
			if _, err := r.Submit(); err != nil {
				b.Fatal(err)
			}
			if got := r.Reap(func(_ uint64, res int32) {
				if res != 100 {
					b.Fatalf("res %d", res)
				}
			}); got != n {
				b.Fatalf("%d completions", got)
			}
			if i%32 == 31 {
				b.StopTimer()
				drain()
				b.StartTimer()
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/send")
	})
}
