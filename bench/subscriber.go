package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// Every payload the publishers generate starts with
// "sb1.<publisher>.<seq>.<unix nanos>." and is padded with 'x'. None of these
// characters need JSON escaping, so the receive path finds and parses them in
// the raw frame without decoding the envelope or the data string.
const markerPrefix = "sb1."

var dataMarker = []byte(`"` + markerPrefix)

func appendMarker(dst []byte, pub int, seq, ts int64) []byte {
	dst = append(dst, markerPrefix...)
	dst = strconv.AppendInt(dst, int64(pub), 10)
	dst = append(dst, '.')
	dst = strconv.AppendInt(dst, seq, 10)
	dst = append(dst, '.')
	dst = strconv.AppendInt(dst, ts, 10)
	return append(dst, '.')
}

// parseMarker parses "P.S.T." (the part after markerPrefix).
func parseMarker(b []byte) (pub, seq, ts int64, ok bool) {
	var v [3]int64
	for k := range v {
		var n int64
		j := 0
		for j < len(b) && j < 19 && b[j] >= '0' && b[j] <= '9' {
			n = n*10 + int64(b[j]-'0')
			j++
		}
		if j == 0 || j >= len(b) || b[j] != '.' {
			return 0, 0, 0, false
		}
		v[k] = n
		b = b[j+1:]
	}
	return v[0], v[1], v[2], true
}

// wireMsg is the Pusher envelope, decoded only for control frames.
type wireMsg struct {
	Event   string          `json:"event"`
	Channel string          `json:"channel,omitempty"`
	Data    json.RawMessage `json:"data,omitempty"`
}

var (
	pingFrame = []byte(`{"event":"pusher:ping","data":{}}`)
	pongFrame = []byte(`{"event":"pusher:pong","data":{}}`)
)

// runState is shared by all subscribers and publishers of one run.
type runState struct {
	cfg        *config
	chanNames  []string
	chanFields [][]byte // `"channel":"NAME"`, the fast-path channel check
	subMsgs    [][]byte // pusher:subscribe frame per channel

	issued []atomic.Int64 // sequence numbers handed out per channel
	unique atomic.Int64   // distinct deliveries received (drain progress)

	latNode  []shardedHist // per subscriber server (index into cfg.targets)
	latLocal shardedHist   // publisher and subscriber on the same server
	latCross shardedHist   // on different servers
	pubNode  []int         // publisher id -> index into cfg.targets, -1 if none
	tl       *timeline

	readers sync.WaitGroup
	closing atomic.Bool
	lost    atomic.Int64 // connections dropped before shutdown
	errs    errorLog
}

func newRunState(cfg *config) *runState {
	st := &runState{
		cfg:      cfg,
		issued:   make([]atomic.Int64, cfg.channels),
		latLocal: newShardedHist(8),
		latCross: newShardedHist(8),
		tl:       newTimeline(len(cfg.targets), cfg.deadline),
	}
	for range cfg.targets {
		st.latNode = append(st.latNode, newShardedHist(8))
	}
	for id := range cfg.publishers {
		st.pubNode = append(st.pubNode, slices.Index(cfg.targets, cfg.pubTargets[id%len(cfg.pubTargets)]))
	}
	for i := range cfg.channels {
		name := cfg.channelPrefix + strconv.Itoa(i)
		q, _ := json.Marshal(name)
		st.chanNames = append(st.chanNames, name)
		st.chanFields = append(st.chanFields, append([]byte(`"channel":`), q...))
		st.subMsgs = append(st.subMsgs, []byte(`{"event":"pusher:subscribe","data":{"channel":`+string(q)+`}}`))
	}
	return st
}

func (st *runState) wsURL(target string) string {
	return "ws://" + target + "/app/" + url.PathEscape(st.cfg.key) + "?protocol=7&client=bench&version=1.0"
}

type subscriber struct {
	id, ch int
	node   int // index into cfg.targets
	target string
	conn   *websocket.Conn
	wmu    sync.Mutex // the pinger and the reader (answering pusher:ping) both write

	// Owned by the read goroutine; read by the report after it has exited.
	recv     bitset  // channel sequence numbers seen
	lastSeq  []int64 // highest sequence seen per publisher, for reordering
	frames   int64   // data frames, including duplicates
	dups     int64
	ooo      int64
	invalid  int64
	foreign  int64
	errors   int64
	lastRecv int64 // unix nanos of the last data frame
	hist     *histogram
	local    *histogram
	cross    *histogram
	buf      []byte
}

func newSubscriber(id int, st *runState) *subscriber {
	node := id % len(st.cfg.targets)
	s := &subscriber{
		id:      id,
		ch:      id % st.cfg.channels,
		node:    node,
		target:  st.cfg.targets[node],
		lastSeq: make([]int64, st.cfg.publishers),
		hist:    st.latNode[node].shard(id / len(st.cfg.targets)),
		local:   st.latLocal.shard(id),
		cross:   st.latCross.shard(id),
	}
	for i := range s.lastSeq {
		s.lastSeq[i] = -1
	}
	return s
}

// connect dials, waits for connection_established, subscribes and waits for
// subscription_succeeded, all within the per-connection timeout. On success
// the read loop is started. connLat is zero if the connection was never
// established.
func (s *subscriber) connect(ctx context.Context, d *websocket.Dialer, st *runState) (connLat, subLat time.Duration, err error) {
	ctx, cancel := context.WithTimeout(ctx, st.cfg.connectTimeout)
	defer cancel()
	deadline, _ := ctx.Deadline()

	t0 := time.Now()
	conn, resp, err := d.DialContext(ctx, st.wsURL(s.target), nil)
	if err != nil {
		if resp != nil {
			err = fmt.Errorf("%w (HTTP %s)", err, resp.Status)
		}
		return 0, 0, fmt.Errorf("dial: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			conn.Close()
		}
	}()
	conn.SetReadLimit(2 << 20) // -payload allows up to 1 MiB of data
	conn.SetReadDeadline(deadline)
	conn.SetWriteDeadline(deadline)
	s.conn = conn

	if _, err := s.await(st, "pusher:connection_established", ""); err != nil {
		return 0, 0, fmt.Errorf("connection_established: %w", err)
	}
	t1 := time.Now()
	if err := conn.WriteMessage(websocket.TextMessage, st.subMsgs[s.ch]); err != nil {
		return t1.Sub(t0), 0, fmt.Errorf("subscribe: %w", err)
	}
	if _, err := s.await(st, "pusher_internal:subscription_succeeded", st.chanNames[s.ch]); err != nil {
		return t1.Sub(t0), 0, fmt.Errorf("subscribe: %w", err)
	}
	t2 := time.Now()
	conn.SetReadDeadline(time.Time{})
	conn.SetWriteDeadline(time.Time{})
	ok = true
	st.readers.Add(1)
	go s.readLoop(st)
	return t1.Sub(t0), t2.Sub(t1), nil
}

// await reads control frames until the wanted event (for channel, if set).
func (s *subscriber) await(st *runState, event, channel string) (*wireMsg, error) {
	for {
		_, b, err := s.conn.ReadMessage()
		if err != nil {
			return nil, err
		}
		var m wireMsg
		if err := json.Unmarshal(b, &m); err != nil {
			return nil, fmt.Errorf("bad frame %.80q", b)
		}
		switch {
		case m.Event == event && (channel == "" || m.Channel == channel):
			return &m, nil
		case m.Event == "pusher:error" || m.Event == "pusher:subscription_error":
			return nil, fmt.Errorf("%s %s", m.Event, m.Data)
		case m.Event == "pusher:ping":
			if err := s.write(pongFrame); err != nil {
				return nil, err
			}
		}
	}
}

func (s *subscriber) write(b []byte) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	return s.conn.WriteMessage(websocket.TextMessage, b)
}

func (s *subscriber) readLoop(st *runState) {
	defer st.readers.Done()
	for {
		_, r, err := s.conn.NextReader()
		if err == nil {
			s.buf, err = readAll(r, s.buf)
		}
		if err != nil {
			if !st.closing.Load() {
				st.lost.Add(1)
				st.errs.add("connection lost: " + err.Error())
			}
			return
		}
		s.handle(st, s.buf, time.Now().UnixNano())
	}
}

// readAll reads a whole frame into buf, reusing its capacity.
func readAll(r io.Reader, buf []byte) ([]byte, error) {
	if buf == nil {
		buf = make([]byte, 0, 256)
	}
	buf = buf[:0]
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

func (s *subscriber) handle(st *runState, f []byte, now int64) {
	i := bytes.Index(f, dataMarker)
	if i < 0 {
		s.control(st, f)
		return
	}
	if !bytes.Contains(f, st.chanFields[s.ch]) && !s.sameChannel(st, f) {
		s.foreign++
		return
	}
	pub, seq, ts, ok := parseMarker(f[i+len(dataMarker):])
	if !ok || pub >= int64(len(s.lastSeq)) || seq >= st.issued[s.ch].Load() {
		s.invalid++
		return
	}
	s.frames++
	s.lastRecv = now
	if s.recv.set(seq) {
		s.dups++
		return
	}
	st.unique.Add(1)
	if seq < s.lastSeq[pub] {
		s.ooo++
	} else {
		s.lastSeq[pub] = seq
	}
	lat := uint64(max(now-ts, 0) / 1000)
	s.hist.record(lat)
	if st.pubNode[pub] == s.node {
		s.local.record(lat)
	} else {
		s.cross.record(lat)
	}
	st.tl.delivery(now, lat, s.node, s.id)
}

// sameChannel is the slow path for servers that format the envelope
// differently (e.g. spaces after colons).
func (s *subscriber) sameChannel(st *runState, f []byte) bool {
	var m wireMsg
	return json.Unmarshal(f, &m) == nil && m.Channel == st.chanNames[s.ch]
}

func (s *subscriber) control(st *runState, f []byte) {
	var m wireMsg
	if json.Unmarshal(f, &m) != nil {
		s.invalid++
		return
	}
	switch m.Event {
	case "pusher:ping":
		s.write(pongFrame)
	case "pusher:error":
		s.errors++
		st.errs.add("pusher:error " + string(m.Data))
	}
}

// pinger sends pusher:ping on every connection at a fixed interval so the
// server's activity timeout never closes an idle subscriber.
func startPinger(subs []*subscriber, every time.Duration) (stop func()) {
	return repeat(every, func(done <-chan struct{}) {
		for _, s := range subs {
			select {
			case <-done:
				return
			default:
			}
			s.write(pingFrame)
		}
	})
}

// repeat calls fn every interval on its own goroutine until stop is called;
// fn gets the stop signal to cut a long round short.
func repeat(every time.Duration, fn func(done <-chan struct{})) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				fn(done)
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

// closeAll sends close frames under one shared deadline (so a stuck server
// cannot stall shutdown per connection), closes the sockets and waits for the
// read loops to exit.
func closeAll(st *runState, subs []*subscriber) {
	st.closing.Store(true)
	deadline := time.Now().Add(time.Second)
	msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")
	for _, s := range subs {
		s.conn.WriteControl(websocket.CloseMessage, msg, deadline)
		s.conn.Close()
	}
	st.readers.Wait()
}

type connectReport struct {
	Attempted          int            `json:"attempted"`
	Connected          int            `json:"connected"`
	Subscribed         int            `json:"subscribed"`
	Failed             int            `json:"failed"`
	Seconds            float64        `json:"seconds"`
	ConnectionsPerSec  float64        `json:"connections_per_sec"`
	SubscribesPerSec   float64        `json:"subscribes_per_sec"`
	ConnectLatencyUS   latencySummary `json:"connect_latency_us"`
	SubscribeLatencyUS latencySummary `json:"subscribe_latency_us"`
}

// connectAll opens the subscribers with a bounded worker pool. It returns the
// subscribed ones, ordered by id.
func connectAll(ctx context.Context, st *runState, log io.Writer) ([]*subscriber, connectReport) {
	cfg := st.cfg
	d := newDialer(cfg)
	var (
		mu                sync.Mutex
		subs              = make([]*subscriber, 0, cfg.subscribers)
		lastConn, lastSub time.Duration
		attempted         atomic.Int64
		connected         atomic.Int64
		subscribed        atomic.Int64
		failed            atomic.Int64
		connH, subH       histogram
	)
	start := time.Now()
	stopProgress := progress(log, time.Second, func() string {
		return fmt.Sprintf("connect t=%.1fs attempted=%d connected=%d subscribed=%d failed=%d",
			time.Since(start).Seconds(), attempted.Load(), connected.Load(), subscribed.Load(), failed.Load())
	})

	jobs := make(chan int)
	var wg sync.WaitGroup
	for range min(cfg.connectWorkers, cfg.subscribers) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := range jobs {
				attempted.Add(1)
				s := newSubscriber(id, st)
				cl, sl, err := s.connect(ctx, d, st)
				if cl > 0 {
					connected.Add(1)
					connH.record(uint64(cl / time.Microsecond))
				}
				if err != nil {
					failed.Add(1)
					st.errs.add(err.Error())
					continue
				}
				subscribed.Add(1)
				subH.record(uint64(sl / time.Microsecond))
				now := time.Since(start)
				mu.Lock()
				subs = append(subs, s)
				lastSub = max(lastSub, now)
				lastConn = max(lastConn, now-sl)
				mu.Unlock()
			}
		}()
	}
feed:
	for id := range cfg.subscribers {
		select {
		case jobs <- id:
		case <-ctx.Done():
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	stopProgress()

	sort.Slice(subs, func(i, j int) bool { return subs[i].id < subs[j].id })
	r := connectReport{
		Attempted:  int(attempted.Load()),
		Connected:  int(connected.Load()),
		Subscribed: len(subs),
		Failed:     int(failed.Load()),
		Seconds:    lastSub.Seconds(),
	}
	if lastConn > 0 {
		r.ConnectionsPerSec = float64(r.Connected) / lastConn.Seconds()
	}
	if lastSub > 0 {
		r.SubscribesPerSec = float64(r.Subscribed) / lastSub.Seconds()
	}
	cs, ss := newSnapshot(), newSnapshot()
	cs.add(&connH)
	ss.add(&subH)
	r.ConnectLatencyUS, r.SubscribeLatencyUS = cs.summary(), ss.summary()
	return subs, r
}

// progress prints line() every interval until stop is called.
func progress(w io.Writer, every time.Duration, line func() string) (stop func()) {
	if w == io.Discard {
		return func() {}
	}
	return repeat(every, func(<-chan struct{}) { fmt.Fprintln(w, line()) })
}

// errorLog keeps a bounded sample of distinct error messages with counts.
type errorLog struct {
	mu     sync.Mutex
	counts map[string]int
	order  []string
}

const maxDistinctErrors = 20

// localAddr matches the "local->" part of socket errors, which differs per
// connection and would make every message distinct.
var localAddr = regexp.MustCompile(`[0-9a-fA-F.:\[\]]+:\d+->`)

func (e *errorLog) add(msg string) {
	msg = localAddr.ReplaceAllString(msg, "")
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.counts == nil {
		e.counts = map[string]int{}
	}
	if _, ok := e.counts[msg]; !ok {
		if len(e.order) >= maxDistinctErrors {
			msg = "(other errors)"
			if _, ok := e.counts[msg]; !ok {
				e.order = append(e.order, msg)
			}
		} else {
			e.order = append(e.order, msg)
		}
	}
	e.counts[msg]++
}

func (e *errorLog) list() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]string, 0, len(e.order))
	for _, m := range e.order {
		out = append(out, fmt.Sprintf("%d× %s", e.counts[m], m))
	}
	return out
}
