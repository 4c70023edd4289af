package stream

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/soketi-go/soketi/internal/testutil"
)

func TestStreams_OrderedDelivery(t *testing.T) {
	transports(t, func(t *testing.T, tr func(string) func(*Config)) {
		a, b := newNode(t, "a", tr("a")), newNode(t, "b", tr("b"))
		mesh(a, b)
		const n = 10_000
		sendAll(t, a.Streams, "b", 1, n, 200)
		testutil.WaitFor(t, 20*time.Second, "b to receive everything", func() bool { return b.rec.count("a") >= n })
		checkRange(t, b.rec.seqs("a"), 1, n)
		testutil.WaitFor(t, 5*time.Second, "acknowledgement", func() bool { return a.peerStats("b").Unacked == 0 })

		as, bs := a.Stats(), b.Stats()
		if as.Sent != n || as.Enqueued != n || as.Dropped != 0 {
			t.Errorf("sender stats %+v", as.Counters)
		}
		if bs.Delivered != n || bs.Duplicates != 0 || bs.Lost != 0 {
			t.Errorf("receiver stats delivered=%d duplicates=%d lost=%d", bs.Delivered, bs.Duplicates, bs.Lost)
		}
	})
}

func TestStreams_MessageFieldsSurvive(t *testing.T) {
	var mu sync.Mutex
	var got []Message
	b, err := New(Config{NodeID: "b", Listener: listen(t, "127.0.0.1:0"), Logger: testLogger(t)}, func(from string, m Message) {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, m)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	a := newNode(t, "a", nil)
	a.SetPeers(map[string]Peer{"b": {Addr: b.ln.Addr().String()}})
	want := []Message{
		{Kind: KindPublish, App: "app", Channel: "private-c", Except: "1.2", Payload: []byte("frame")},
		{Kind: KindToUser, App: "app", Channel: "user-7", Payload: []byte("hi")},
		{Kind: KindTerminateUser, App: "app", Channel: "user-7"},
		{Kind: KindControl, Channel: "socket_counts", Payload: []byte(`{"app":3}`)},
		{Kind: 200, Payload: []byte{0}},
	}
	for _, m := range want {
		if err := a.Send(context.Background(), "b", m); err != nil {
			t.Fatal(err)
		}
	}
	testutil.WaitFor(t, 10*time.Second, "all kinds", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == len(want) })
	mu.Lock()
	defer mu.Unlock()
	for i := range want {
		if !messagesEqual(got[i], want[i]) {
			t.Errorf("message %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestStreams_AllToAll(t *testing.T) {
	nodes := []*node{newNode(t, "n1", nil), newNode(t, "n2", nil), newNode(t, "n3", nil)}
	mesh(nodes...)
	const n = 3000
	var wg sync.WaitGroup
	for _, src := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := uint64(1); i <= n; i++ {
				for {
					err := src.Broadcast(context.Background(), numbered(i, 200), nil)
					if err == nil {
						break
					}
					if !errors.Is(err, ErrBackpressure) {
						t.Errorf("Broadcast: %v", err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	for _, dst := range nodes {
		for _, src := range nodes {
			if src == dst {
				continue
			}
			testutil.WaitFor(t, 20*time.Second, dst.id+" to receive from "+src.id, func() bool { return dst.rec.count(src.id) >= n })
			checkRange(t, dst.rec.seqs(src.id), 1, n)
		}
	}
}

func TestStreams_BroadcastRetriesOnBackpressure(t *testing.T) {
	// A Broadcast that failed for one peer because of back-pressure must
	// not have been queued for it: retrying then keeps that peer's order.
	a, b := newNode(t, "a", nil), newNode(t, "b", nil)
	mesh(a, b)
	if err := a.Broadcast(context.Background(), numbered(1, 8), []string{"b", "a", "nobody"}); !errors.Is(err, ErrUnknownPeer) {
		t.Fatalf("Broadcast to an unknown peer: %v", err)
	}
	testutil.WaitFor(t, 5*time.Second, "delivery to the known peer", func() bool { return b.rec.count("a") == 1 })
}

func TestStreams_ConnectionKilledMidStream(t *testing.T) {
	transports(t, func(t *testing.T, tr func(string) func(*Config)) {
		a, b := newNode(t, "a", tr("a")), newNode(t, "b", tr("b"))
		mesh(a, b)
		const n = 20_000
		done := make(chan struct{})
		go func() {
			defer close(done)
			sendAll(t, a.Streams, "b", 1, n, 200)
		}()
		kills := 0
		for kills < 8 && b.rec.count("a") < n {
			at, reconnects := b.rec.count("a"), a.Stats().Reconnects
			testutil.WaitFor(t, 10*time.Second, "connection and progress", func() bool {
				return a.peerStats("b").Connected && (b.rec.count("a") > at || at >= n)
			})
			var killed bool
			if kills%2 == 0 {
				killed = a.killOutbound("b")
			} else {
				killed = b.killInbound() > 0
			}
			if !killed {
				continue
			}
			kills++
			testutil.WaitFor(t, 10*time.Second, "reconnect", func() bool { return a.Stats().Reconnects > reconnects })
		}
		<-done
		testutil.WaitFor(t, 30*time.Second, "every message after the kills", func() bool { return b.rec.last("a") == n })
		checkRange(t, b.rec.seqs("a"), 1, n)
		st := a.Stats()
		if st.Reconnects < uint64(kills) {
			t.Errorf("%d kills but %d reconnects", kills, st.Reconnects)
		}
		if st.Dropped != 0 || b.Stats().Lost != 0 {
			t.Errorf("dropped=%d lost=%d, want none", st.Dropped, b.Stats().Lost)
		}
		t.Logf("kills=%d reconnects=%d retransmitted=%d duplicates=%d",
			kills, st.Reconnects, st.Retransmitted, b.Stats().Duplicates)
	})
}

func TestStreams_ReceiverRestart(t *testing.T) {
	a, b := newNode(t, "a", nil), newNode(t, "b", func(c *Config) { c.Incarnation = 1 })
	mesh(a, b)
	sendAll(t, a.Streams, "b", 1, 1000, 64)
	testutil.WaitFor(t, 10*time.Second, "first life to receive", func() bool { return b.rec.count("a") == 1000 })
	testutil.WaitFor(t, 5*time.Second, "acknowledgement", func() bool { return a.peerStats("b").Unacked == 0 })

	_ = b.Close()
	testutil.WaitFor(t, 10*time.Second, "a to notice", func() bool { return !a.peerStats("b").Connected })
	sendAll(t, a.Streams, "b", 1001, 1500, 64) // queued while b is down

	b2 := newNode(t, "b", func(c *Config) { c.Incarnation = 2; c.Listener = listen(t, b.addr) })
	b2.SetPeers(map[string]Peer{"a": {Addr: a.addr}})
	testutil.WaitFor(t, 10*time.Second, "queued messages to reach the new life", func() bool { return b2.rec.count("a") == 500 })
	sendAll(t, a.Streams, "b", 1501, 2000, 64)
	testutil.WaitFor(t, 10*time.Second, "the rest", func() bool { return b2.rec.count("a") >= 1000 })
	checkRange(t, b2.rec.seqs("a"), 1001, 2000)
	if d := a.Stats().Dropped; d != 0 {
		t.Errorf("dropped %d, want 0", d)
	}
}

func TestStreams_OriginRestartResetsSequence(t *testing.T) {
	b := newNode(t, "b", nil)
	a := newNode(t, "a", func(c *Config) { c.Incarnation = 10 })
	a.SetPeers(map[string]Peer{"b": {Addr: b.addr}})
	sendAll(t, a.Streams, "b", 1, 500, 64)
	testutil.WaitFor(t, 10*time.Second, "first life", func() bool { return b.rec.count("a") == 500 })
	_ = a.Close()

	// The new life numbers from 1 again; b must not take it for duplicates.
	a2 := newNode(t, "a", func(c *Config) { c.Incarnation = 11 })
	a2.SetPeers(map[string]Peer{"b": {Addr: b.addr}})
	sendAll(t, a2.Streams, "b", 1, 300, 64)
	testutil.WaitFor(t, 10*time.Second, "second life", func() bool { return b.rec.count("a") == 800 })
	got := b.rec.seqs("a")
	checkRange(t, got[:500], 1, 500)
	checkRange(t, got[500:], 1, 300)
	if o := b.Stats().Origins["a"]; o.Incarnation != 11 || o.Duplicates != 0 {
		t.Errorf("origin stats %+v", o)
	}

	// The old life coming back is refused.
	old := newNode(t, "a", func(c *Config) { c.Incarnation = 10 })
	old.SetPeers(map[string]Peer{"b": {Addr: b.addr}})
	if err := old.Send(context.Background(), "b", numbered(999, 8)); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "stale origin refused", func() bool { return b.Stats().HandshakeFailures > 0 })
	if c := b.rec.count("a"); c != 800 {
		t.Errorf("stale origin delivered: %d messages", c)
	}
}

// A lingering peer (gossip says dead) that is unreachable takes every
// message and keeps the newest; the destination counts the gap.
func TestStreams_GapWhileUnreachableIsCountedNotReordered(t *testing.T) {
	b := newNode(t, "b", nil)
	px := newProxy(t, b.addr)
	a := newNode(t, "a", func(c *Config) { c.MaxQueueBytes = 4 << 10; c.RetainBytes = 4 << 10 })
	a.SetPeers(map[string]Peer{"b": {Addr: px.addr()}})
	testutil.WaitFor(t, 10*time.Second, "connection", func() bool { return a.peerStats("b").Connected })
	sendAll(t, a.Streams, "b", 1, 10, 1000)
	testutil.WaitFor(t, 10*time.Second, "delivery before the cut", func() bool { return b.rec.count("a") == 10 })
	testutil.WaitFor(t, 5*time.Second, "acknowledgement", func() bool { return a.peerStats("b").Unacked == 0 })

	px.cut()
	testutil.WaitFor(t, 10*time.Second, "a to notice", func() bool { return !a.peerStats("b").Connected })
	a.SetPeers(map[string]Peer{"b": {Addr: px.addr(), Lingering: true}})
	for i := uint64(11); i <= 100; i++ {
		start := time.Now()
		if err := a.Send(context.Background(), "b", numbered(i, 1000)); err != nil {
			t.Fatalf("Send to an unreachable peer: %v", err)
		}
		if d := time.Since(start); d > 50*time.Millisecond {
			t.Fatalf("Send to an unreachable peer blocked %s", d)
		}
	}
	ps := a.peerStats("b")
	if limit := 8<<10 + 1000 + msgOverhead; ps.QueuedBytes+ps.UnackedBytes > limit {
		t.Fatalf("queue holds %d bytes, bound %d", ps.QueuedBytes+ps.UnackedBytes, limit)
	}
	px.restore()
	testutil.WaitFor(t, 10*time.Second, "the newest message", func() bool { return b.rec.last("a") == 100 })
	got := b.rec.seqs("a")
	for i := 1; i < len(got); i++ {
		if got[i] <= got[i-1] {
			t.Fatalf("out of order or duplicate at %d: %s", i, summary(got))
		}
	}
	dropped, lost := a.Stats().Dropped, b.Stats().Lost
	if dropped == 0 || dropped != lost || uint64(len(got))+lost != 100 {
		t.Errorf("dropped=%d lost=%d delivered=%d, want dropped=lost and delivered+lost=100", dropped, lost, len(got))
	}
}

// A peer believed alive that is unreachable refuses, at once, what its
// queue cannot hold, so the caller knows; what it took arrives in order
// once the peer is back, nothing lost.
func TestStreams_UnreachablePeerRefusesBeyondBound(t *testing.T) {
	b := newNode(t, "b", nil)
	px := newProxy(t, b.addr)
	const queue, retain = 4 << 10, 4 << 10
	a := newNode(t, "a", func(c *Config) { c.MaxQueueBytes, c.RetainBytes = queue, retain })
	a.SetPeers(map[string]Peer{"b": {Addr: px.addr()}})
	testutil.WaitFor(t, 10*time.Second, "connection", func() bool { return a.peerStats("b").Connected })
	px.cut()
	testutil.WaitFor(t, 10*time.Second, "a to notice", func() bool { return !a.peerStats("b").Connected })

	var accepted uint64
	var err error
	for accepted < 1000 {
		start := time.Now()
		err = a.Send(context.Background(), "b", numbered(accepted+1, 1000))
		if d := time.Since(start); d > 50*time.Millisecond {
			t.Fatalf("Send to an unreachable peer blocked %s", d)
		}
		if err != nil {
			break
		}
		accepted++
	}
	if !errors.Is(err, ErrBackpressure) {
		t.Fatalf("after %d messages: %v, want ErrBackpressure", accepted, err)
	}
	ps := a.peerStats("b")
	if ps.QueuedBytes+ps.UnackedBytes > queue+retain || ps.Dropped != 0 || ps.Backpressure == 0 {
		t.Fatalf("queue %d bytes (bound %d), dropped %d, backpressure %d", ps.QueuedBytes+ps.UnackedBytes, queue+retain, ps.Dropped, ps.Backpressure)
	}
	px.restore()
	testutil.WaitFor(t, 10*time.Second, "every accepted message", func() bool { return b.rec.count("a") == int(accepted) })
	checkRange(t, b.rec.seqs("a"), 1, accepted)
	if lost := b.Stats().Lost; lost != 0 {
		t.Errorf("lost %d", lost)
	}
}

// A peer that gossip declared dead but kept (lingering) resumes the same
// stream when it is reachable again: what was unacknowledged or queued
// meanwhile arrives once, in order.
func TestStreams_LingeringPeerResumesSameStream(t *testing.T) {
	b := newNode(t, "b", nil)
	px := newProxy(t, b.addr)
	a := newNode(t, "a", nil)
	a.SetPeers(map[string]Peer{"b": {Addr: px.addr(), Incarnation: 7}})
	testutil.WaitFor(t, 10*time.Second, "connection", func() bool { return a.peerStats("b").Connected })
	sendAll(t, a.Streams, "b", 1, 100, 200)
	testutil.WaitFor(t, 10*time.Second, "delivery before the cut", func() bool { return b.rec.count("a") == 100 })

	px.freeze() // written, never acknowledged
	sendAll(t, a.Streams, "b", 101, 200, 200)
	px.cut()
	a.SetPeers(map[string]Peer{"b": {Addr: px.addr(), Incarnation: 7, Lingering: true}})
	testutil.WaitFor(t, 10*time.Second, "a to notice", func() bool { return !a.peerStats("b").Connected })
	sendAll(t, a.Streams, "b", 201, 300, 200)
	if ps := a.peerStats("b"); !ps.Lingering || ps.Queued+ps.Unacked == 0 {
		t.Fatalf("lingering peer stats %+v", ps)
	}

	px.restore()
	a.SetPeers(map[string]Peer{"b": {Addr: px.addr(), Incarnation: 7}})
	testutil.WaitFor(t, 10*time.Second, "every message", func() bool { return b.rec.last("a") == 300 })
	checkRange(t, b.rec.seqs("a"), 1, 300)
	if st, o := a.Stats(), b.Stats(); st.Dropped != 0 || o.Lost != 0 {
		t.Errorf("dropped %d, lost %d; want none", st.Dropped, o.Lost)
	}
}

// A new incarnation of a peer gets a new stream: the old queue was meant
// for a process that is gone.
func TestStreams_NewIncarnationReplacesStream(t *testing.T) {
	ln := listen(t, "127.0.0.1:0")
	addr := ln.Addr().String()
	_ = ln.Close()
	a := newNode(t, "a", nil)
	a.SetPeers(map[string]Peer{"b": {Addr: addr, Incarnation: 1, Lingering: true}})
	sendAll(t, a.Streams, "b", 1, 50, 100)
	b := newNode(t, "b", func(c *Config) { c.Listener = listen(t, addr) })
	a.SetPeers(map[string]Peer{"b": {Addr: addr, Incarnation: 2}})
	if err := a.Send(context.Background(), "b", numbered(51, 100)); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "the new stream's message", func() bool { return b.rec.count("a") == 1 })
	checkRange(t, b.rec.seqs("a"), 51, 51)
	if d := a.Stats().Dropped; d != 50 {
		t.Errorf("dropped %d, want the old stream's 50", d)
	}
}

// Drain refuses new messages and returns once the peers believed alive
// have acknowledged everything; a lingering peer does not hold it up.
func TestStreams_DrainWaitsForAcknowledgements(t *testing.T) {
	b := newNode(t, "b", nil)
	gate := b.rec.block()
	a := newNode(t, "a", nil)
	a.SetPeers(map[string]Peer{"b": {Addr: b.addr}, "gone": {Addr: "127.0.0.1:1", Lingering: true}})
	sendAll(t, a.Streams, "b", 1, 100, 100)
	if err := a.Send(context.Background(), "gone", numbered(1, 100)); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Drain(context.Background()) }()
	sent := uint64(100) // a Send before Drain began is taken, and waited for
	testutil.WaitFor(t, 5*time.Second, "Drain to refuse new messages", func() bool {
		err := a.Send(context.Background(), "b", numbered(sent+1, 100))
		if err == nil {
			sent++
		}
		return errors.Is(err, ErrClosed)
	})
	if err := a.Broadcast(context.Background(), numbered(101, 100), nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("Broadcast while draining: %v", err)
	}
	select {
	case err := <-done:
		t.Fatalf("Drain returned %v with deliveries blocked", err)
	default:
	}
	close(gate)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Drain did not return after the acknowledgements")
	}
	checkRange(t, b.rec.seqs("a"), 1, sent)

	// An unreachable peer believed alive holds Drain until ctx ends.
	c := newNode(t, "c", nil)
	c.SetPeers(map[string]Peer{"b": {Addr: "127.0.0.1:1"}})
	sendAll(t, c.Streams, "b", 1, 1, 100)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := c.Drain(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Drain with an unreachable peer: %v", err)
	}
}

func TestStreams_Backpressure(t *testing.T) {
	b := newNode(t, "b", nil)
	gate := b.rec.block()
	const queue, retain, timeout = 64 << 10, 64 << 10, 100 * time.Millisecond
	a := newNode(t, "a", func(c *Config) {
		c.MaxQueueBytes, c.RetainBytes, c.SendTimeout = queue, retain, timeout
	})
	mesh(a, b)
	testutil.WaitFor(t, 10*time.Second, "connection", func() bool { return a.peerStats("b").Connected })

	var accepted uint64
	var err error
	var took time.Duration
	for accepted < 100_000 {
		start := time.Now()
		err = a.Send(context.Background(), "b", numbered(accepted+1, 1000))
		took = time.Since(start)
		if err != nil {
			break
		}
		accepted++
	}
	if !errors.Is(err, ErrBackpressure) {
		t.Fatalf("after %d messages: err = %v, want ErrBackpressure", accepted, err)
	}
	if took < timeout-10*time.Millisecond || took > timeout+time.Second {
		t.Errorf("Send took %s to report back-pressure, bound %s", took, timeout)
	}
	ps := a.peerStats("b")
	const msg = 1000 + 64 + msgOverhead
	if ps.QueuedBytes > queue+msg || ps.UnackedBytes > retain+msg {
		t.Errorf("queued %d bytes, unacked %d bytes; bounds %d and %d", ps.QueuedBytes, ps.UnackedBytes, queue, retain)
	}
	if ps.Backpressure == 0 {
		t.Error("back-pressure not counted")
	}
	t.Logf("accepted %d messages before back-pressure; queued=%d unacked=%d", accepted, ps.QueuedBytes, ps.UnackedBytes)

	close(gate)
	testutil.WaitFor(t, 20*time.Second, "the backlog", func() bool { return b.rec.count("a") == int(accepted) })
	checkRange(t, b.rec.seqs("a"), 1, accepted)
}

func TestStreams_SendRespectsContext(t *testing.T) {
	b := newNode(t, "b", nil)
	defer close(b.rec.block())
	a := newNode(t, "a", func(c *Config) { c.MaxQueueBytes, c.RetainBytes, c.SendTimeout = 4<<10, 4<<10, time.Minute })
	mesh(a, b)
	testutil.WaitFor(t, 10*time.Second, "connection", func() bool { return a.peerStats("b").Connected })
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	var err error
	for i := uint64(1); err == nil && i < 10_000; i++ {
		err = a.Send(ctx, "b", numbered(i, 1000))
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want context.DeadlineExceeded", err)
	}
}

func TestStreams_RemovedPeerDropsBuffer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	_ = ln.Close()

	a := newNode(t, "a", nil)
	a.SetPeers(map[string]Peer{"b": {Addr: dead}})
	for i := uint64(1); i <= 100; i++ {
		if err := a.Send(context.Background(), "b", numbered(i, 200)); err != nil {
			t.Fatal(err)
		}
	}
	if q := a.peerStats("b").Queued; q != 100 {
		t.Fatalf("queued %d, want 100", q)
	}
	a.SetPeers(map[string]Peer{})
	st := a.Stats()
	if _, ok := st.Peers["b"]; ok || st.Dropped != 100 {
		t.Fatalf("after removal: peers=%v dropped=%d", st.Peers, st.Dropped)
	}
	if err := a.Send(context.Background(), "b", numbered(101, 8)); !errors.Is(err, ErrUnknownPeer) {
		t.Fatalf("Send to a removed peer: %v", err)
	}

	// Added again, it is a new stream: nothing of the old queue comes back.
	b := newNode(t, "b", nil)
	a.SetPeers(map[string]Peer{"b": {Addr: b.addr}})
	if err := a.Send(context.Background(), "b", numbered(102, 8)); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "delivery", func() bool { return b.rec.count("a") == 1 })
	checkRange(t, b.rec.seqs("a"), 102, 102)
}

func TestStreams_RemovalWakesBlockedSend(t *testing.T) {
	b := newNode(t, "b", nil)
	defer close(b.rec.block())
	a := newNode(t, "a", func(c *Config) { c.MaxQueueBytes, c.RetainBytes, c.SendTimeout = 4<<10, 4<<10, time.Minute })
	mesh(a, b)
	testutil.WaitFor(t, 10*time.Second, "connection", func() bool { return a.peerStats("b").Connected })
	errc := make(chan error, 1)
	go func() {
		for i := uint64(1); ; i++ {
			if err := a.Send(context.Background(), "b", numbered(i, 1000)); err != nil {
				errc <- err
				return
			}
		}
	}()
	testutil.WaitFor(t, 10*time.Second, "a blocked Send", func() bool {
		p := (*a.peers.Load())["b"]
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.waiters > 0
	})
	a.SetPeers(nil)
	select {
	case err := <-errc:
		if !errors.Is(err, ErrUnknownPeer) {
			t.Fatalf("blocked Send returned %v, want ErrUnknownPeer", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("blocked Send not woken by removal")
	}
}

func TestStreams_WrongNodeAtAddress(t *testing.T) {
	b := newNode(t, "b", nil)
	a := newNode(t, "a", nil)
	a.SetPeers(map[string]Peer{"c": {Addr: b.addr}})
	if err := a.Send(context.Background(), "c", numbered(1, 8)); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "refusal", func() bool { return a.Stats().HandshakeFailures > 0 })
	if b.rec.count("a") != 0 {
		t.Fatal("delivered to the wrong node")
	}
}

func TestStreams_SendErrors(t *testing.T) {
	a := newNode(t, "a", nil)
	a.SetPeers(map[string]Peer{"a": {Addr: a.addr}})
	if err := a.Send(context.Background(), "a", numbered(1, 8)); !errors.Is(err, ErrUnknownPeer) {
		t.Errorf("Send to self: %v", err)
	}
	if err := a.Send(context.Background(), "x", Message{}); !errors.Is(err, ErrInvalidMessage) {
		t.Errorf("Send of a zero kind: %v", err)
	}
	big := Message{Kind: KindPublish, Payload: make([]byte, MaxMessageSize)}
	if err := a.Broadcast(context.Background(), big, nil); !errors.Is(err, ErrInvalidMessage) {
		t.Errorf("Broadcast of an oversized message: %v", err)
	}
	_ = a.Close()
	if err := a.Send(context.Background(), "x", numbered(1, 8)); !errors.Is(err, ErrClosed) {
		t.Errorf("Send after Close: %v", err)
	}
}

func TestNew_Validates(t *testing.T) {
	deliver := func(string, Message) {}
	ln := listen(t, "127.0.0.1:0")
	for name, cfg := range map[string]Config{
		"no node id":   {Listener: ln},
		"long node id": {NodeID: string(make([]byte, maxIDLen+1)), Listener: ln},
		"no listener":  {NodeID: "a"},
	} {
		if s, err := New(cfg, deliver); err == nil {
			_ = s.Close()
			t.Errorf("%s: New accepted", name)
		}
	}
	if _, err := New(Config{NodeID: "a", Listener: ln}, nil); err == nil {
		t.Error("nil deliver accepted")
	}
}

func TestStreams_SilentPeerDetected(t *testing.T) {
	const peerTimeout = 400 * time.Millisecond
	b := newNode(t, "b", func(c *Config) { c.PeerTimeout = peerTimeout })
	px := newProxy(t, b.addr)
	a := newNode(t, "a", func(c *Config) { c.PeerTimeout = peerTimeout })
	a.SetPeers(map[string]Peer{"b": {Addr: px.addr()}})
	testutil.WaitFor(t, 10*time.Second, "connection", func() bool { return a.peerStats("b").Connected })
	sendAll(t, a.Streams, "b", 1, 100, 64)
	testutil.WaitFor(t, 10*time.Second, "delivery", func() bool { return b.rec.count("a") == 100 })

	px.freeze() // b hangs: no FIN, no RST, no heartbeats
	start := time.Now()
	testutil.WaitFor(t, 10*time.Second, "a to give up on the silent connection", func() bool { return !a.peerStats("b").Connected })
	if d := time.Since(start); d > 3*peerTimeout {
		t.Errorf("silent peer noticed after %s, PeerTimeout %s", d, peerTimeout)
	}
	sendAll(t, a.Streams, "b", 101, 200, 64)
	px.thaw()
	testutil.WaitFor(t, 20*time.Second, "delivery after the hang", func() bool { return b.rec.last("a") == 200 })
	checkRange(t, b.rec.seqs("a"), 1, 200)
}

func TestReadData_DropsDuplicatesAndCountsGaps(t *testing.T) {
	var got []uint64
	s := &Streams{log: testLogger(t), deliver: func(_ string, m Message) {
		got = append(got, uint64(m.Payload[7]))
	}}
	client, server := net.Pipe()
	defer server.Close()
	o := &origin{id: "a"}
	o.last.Store(5)
	go func() {
		w := newRecordWriter(client, time.Second)
		w.begin()
		for _, seq := range []uint64{4, 5, 6, 6, 9} {
			enc, _ := encodeMessage(numbered(seq, 8))
			w.appendData(seq, enc)
		}
		_ = w.finish()
		_ = w.flush()
		_ = client.Close()
	}()
	r := &recordReader{conn: server, br: bufio.NewReader(server), timeout: time.Second}
	// The writer's close shows as EOF, or, when it comes before the next
	// read's deadline is set, as net.Pipe's ErrClosedPipe.
	if err := s.readData(r, o, make(chan struct{}, 1)); !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrClosedPipe) {
		t.Fatalf("readData: %v", err)
	}
	if len(got) != 2 || got[0] != 6 || got[1] != 9 {
		t.Fatalf("delivered %v, want [6 9]", got)
	}
	if o.duplicates.Load() != 3 || o.lost.Load() != 2 || o.last.Load() != 9 {
		t.Errorf("duplicates=%d lost=%d last=%d", o.duplicates.Load(), o.lost.Load(), o.last.Load())
	}
}

// BroadcastTo reports only the failures of its first group: the second is
// best effort (the cluster's lingering peers), and still gets the message.
func TestStreams_BroadcastToReportsOnlyTheFirstGroup(t *testing.T) {
	a, b, c := newNode(t, "a", nil), newNode(t, "b", nil), newNode(t, "c", nil)
	mesh(a, b, c)
	if err := a.BroadcastTo(context.Background(), numbered(1, 8), []string{"b"}, []string{"c", "gone"}); err != nil {
		t.Fatalf("BroadcastTo = %v, want nil (\"gone\" is best effort)", err)
	}
	if err := a.BroadcastTo(context.Background(), numbered(2, 8), []string{"gone"}, []string{"b"}); !errors.Is(err, ErrUnknownPeer) {
		t.Fatalf("BroadcastTo to an unknown first-group peer = %v", err)
	}
	testutil.WaitFor(t, 5*time.Second, "b got both, c got one", func() bool {
		return b.rec.count("a") == 2 && c.rec.count("a") == 1
	})
}
