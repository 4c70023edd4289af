//go:build netns && chaos && linux

package netnstest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/soketi-go/soketi/pkg/pusher"
)

// The load of a chaos run: pusher-js sockets (presence churn, watchers and
// subscribers) and signed HTTP publishes. Everything here runs on its own
// goroutines, so nothing fails the test directly: failures are counted or
// recorded as violations, and every operation is bounded.

type sockKind string

const (
	kindChurn   sockKind = "churn"   // joins chaosPresence as a churn user, leaves, disconnects
	kindWatcher sockKind = "watcher" // stays on chaosPresence as its own user
	kindSub     sockKind = "sub"     // stays subscribed to chaosNews
	kindFresh   sockKind = "fresh"   // joins chaosPresence once at the end, to read its list
)

// chaosSock is one pusher-js client of the run.
type chaosSock struct {
	id   string
	kind sockKind
	node int // host it connects (and pusher-js reconnects) to
	gen  int // the node's life it was opened in
	user string
	// joined: the test joined (subscribed) it and has not asked it to leave.
	joined bool
	// leftMark is the event position just before the test's leave; later
	// presence frames of this socket are not replayed. -1 when it did not leave.
	leftMark int
	dropped  bool // the test disconnected it (or it never connected)
	why      string
	opened   time.Time
}

type churnStats struct {
	connects, connectFails int
	joins, joinFails       int
	joinFailStatus         map[string]int
	leaves, disconnects    int
}

// chaosPub is one publish through the HTTP API.
type chaosPub struct {
	id         string
	via        int
	sent, done time.Time
	status     int // 0 when the request failed
	err        string
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// newSock registers a socket before it connects, so a kill of its node
// meanwhile drops it too.
func (r *chaosRun) newSock(kind sockKind, node, gen int, user string) *chaosSock {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.nextSock++
	var id string
	switch kind {
	case kindChurn:
		id = fmt.Sprintf("c%04d", r.nextSock)
	case kindWatcher:
		r.watcherSeq[node]++
		id = fmt.Sprintf("w%d-%d", node, r.watcherSeq[node])
		user = id
	case kindSub:
		id = fmt.Sprintf("s%d-%04d", node, r.nextSock)
	case kindFresh:
		id = fmt.Sprintf("f%d-%04d", node, r.nextSock)
		user = "fresh-" + id
	}
	s := &chaosSock{id: id, kind: kind, node: node, gen: gen, user: user, leftMark: -1, opened: time.Now()}
	if gen != r.gen[node] {
		s.dropped, s.why = true, "node killed before it connected"
	}
	r.socks[id] = s
	r.order = append(r.order, s)
	return s
}

func (r *chaosRun) hostAddr(i int) string { return r.c.nw.Hosts[i].Addr.String() }

func (r *chaosRun) connectSock(s *chaosSock) error {
	if r.isDropped(s) {
		return fmt.Errorf("dropped: %s", s.why)
	}
	rep := <-r.cl.send(map[string]any{"op": "connect", "id": s.id, "host": r.hostAddr(s.node), "port": 6001, "timeout_ms": 3000})
	if !rep.OK {
		r.markDropped(s, "connect failed: "+rep.Error)
		return fmt.Errorf("connect %s to node %d: %s", s.id, s.node, rep.Error)
	}
	return nil
}

// subscribeSock subscribes s (presence when it has a user) and marks it joined.
func (r *chaosRun) subscribeSock(s *chaosSock, channel string) (reply, error) {
	cmd := map[string]any{"op": "subscribe", "id": s.id, "channel": channel, "timeout_ms": 5000}
	if s.user != "" {
		cmd = joinCmd(s.id, channel, s.user, map[string]any{"node": s.node})
		cmd["timeout_ms"] = 5000
	}
	rep := <-r.cl.send(cmd)
	if !rep.OK {
		return rep, fmt.Errorf("subscribe %s on node %d to %s: status %d: %s", s.id, s.node, channel, rep.Status, rep.Error)
	}
	r.mu.Lock()
	stale := s.dropped || s.gen != r.gen[s.node]
	if !stale {
		s.joined = true
	}
	r.mu.Unlock()
	if stale {
		r.dropSock(s, "node killed while it joined")
		return rep, fmt.Errorf("%s: node killed while it joined", s.id)
	}
	return rep, nil
}

func (r *chaosRun) isDropped(s *chaosSock) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return s.dropped
}

func (r *chaosRun) markDropped(s *chaosSock, why string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if s.dropped {
		return false
	}
	s.dropped, s.why, s.joined = true, why, false
	return true
}

// dropSock disconnects s for good.
func (r *chaosRun) dropSock(s *chaosSock, why string) {
	r.markDropped(s, why)
	<-r.cl.send(map[string]any{"op": "disconnect", "id": s.id})
}

// dropNode disconnects every socket of node i (it was killed).
func (r *chaosRun) dropNode(i int, why string) {
	r.mu.Lock()
	var on []*chaosSock
	for _, s := range r.order {
		if s.node == i && !s.dropped {
			s.dropped, s.why, s.joined = true, why, false
			on = append(on, s)
		}
	}
	r.mu.Unlock()
	var w sync.WaitGroup
	for _, s := range on {
		w.Add(1)
		go func() { defer w.Done(); <-r.cl.send(map[string]any{"op": "disconnect", "id": s.id}) }()
	}
	w.Wait()
}

// joinNew opens a churn socket on node and joins chaosPresence as user.
func (r *chaosRun) joinNew(node int, user string) {
	r.mu.Lock()
	gen := r.gen[node]
	r.churn.connects++
	r.mu.Unlock()
	s := r.newSock(kindChurn, node, gen, user)
	if err := r.connectSock(s); err != nil {
		r.mu.Lock()
		r.churn.connectFails++
		r.mu.Unlock()
		return
	}
	rep, err := r.subscribeSock(s, chaosPresence)
	r.mu.Lock()
	if err != nil {
		r.churn.joinFails++
		if r.churn.joinFailStatus == nil {
			r.churn.joinFailStatus = map[string]int{}
		}
		why := "timeout/other"
		if rep.Status != 0 {
			why = fmt.Sprint(rep.Status)
		}
		r.churn.joinFailStatus[why]++
	} else {
		r.churn.joins++
	}
	r.mu.Unlock()
	if err != nil {
		r.dropSock(s, "join failed: "+err.Error())
	}
}

// addWatcher opens a watcher on node i, retrying while the node comes up
// (bounded); gen is the node's life it belongs to.
func (r *chaosRun) addWatcher(i, gen int) { r.addLongLived(kindWatcher, i, gen, chaosPresence) }

func (r *chaosRun) addSubscriber(i, gen int) { r.addLongLived(kindSub, i, gen, chaosNews) }

func (r *chaosRun) addLongLived(kind sockKind, i, gen int, channel string) {
	var errs []string
	for attempt := range 8 {
		if r.loadCtx.Err() != nil && attempt > 0 {
			break
		}
		r.mu.Lock()
		stale := gen != r.gen[i]
		r.mu.Unlock()
		if stale {
			return
		}
		s := r.newSock(kind, i, gen, "")
		err := r.connectSock(s)
		if err == nil {
			if _, err = r.subscribeSock(s, channel); err == nil {
				return
			}
			r.dropSock(s, "subscribe failed: "+err.Error())
		}
		errs = append(errs, err.Error())
		time.Sleep(time.Second)
	}
	r.note("could not open a %s on node %d (life %d): %s", kind, i, gen, strings.Join(errs, "; "))
}

func (r *chaosRun) liveChurn() []*chaosSock {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*chaosSock
	for _, s := range r.order {
		if s.kind == kindChurn && !s.dropped {
			out = append(out, s)
		}
	}
	return out
}

// churnLoop opens, joins, leaves and disconnects churn sockets on random
// nodes, keeping about chaosSockets open, one operation every 150–450 ms.
func (r *chaosRun) churnLoop(rng *rand.Rand) {
	defer r.wg.Done()
	for k := 0; k < 100_000; k++ {
		select {
		case <-r.loadCtx.Done():
			return
		case <-time.After(150*time.Millisecond + time.Duration(rng.Int64N(int64(300*time.Millisecond)))):
		}
		live := r.liveChurn()
		node, user, pick, coin := rng.IntN(3), fmt.Sprintf("u%02d", rng.IntN(chaosUsers)), rng.IntN(1<<20), rng.Float64()
		if len(live) < chaosSockets-8 || (len(live) < chaosSockets && coin < 0.5) {
			r.joinNew(node, user)
			continue
		}
		s := live[pick%len(live)]
		r.mu.Lock()
		joined := s.joined
		r.mu.Unlock()
		if joined && coin < 0.75 {
			// Leave, staying connected; a later pick disconnects it.
			mark := r.cl.mark()
			r.mu.Lock()
			s.joined, s.leftMark = false, mark
			r.churn.leaves++
			r.mu.Unlock()
			<-r.cl.send(map[string]any{"op": "unsubscribe", "id": s.id, "channel": chaosPresence})
			continue
		}
		r.mu.Lock()
		r.churn.disconnects++
		r.mu.Unlock()
		r.dropSock(s, "churn disconnect")
	}
}

var publishClient = &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}

// publishLoop publishes one message about every publishEvery through the
// HTTP API of a random node, each with a unique id, and records the answer.
func (r *chaosRun) publishLoop(rng *rand.Rand) {
	defer r.wg.Done()
	sem := make(chan struct{}, 16)
	var inflight sync.WaitGroup
	defer inflight.Wait()
	tick := time.NewTicker(publishEvery)
	defer tick.Stop()
	for k := 1; k <= 1_000_000; k++ {
		select {
		case <-r.loadCtx.Done():
			return
		case <-tick.C:
		}
		p := &chaosPub{id: fmt.Sprintf("p-%06d", k), via: rng.IntN(3), sent: time.Now()}
		r.mu.Lock()
		r.pubs = append(r.pubs, p)
		r.mu.Unlock()
		select {
		case sem <- struct{}{}:
		default:
			r.mu.Lock()
			p.err, p.done = "not sent: 16 requests in flight", p.sent
			r.mu.Unlock()
			continue
		}
		inflight.Add(1)
		go func() {
			defer inflight.Done()
			defer func() { <-sem }()
			status, err := r.publish(p.via, p.id)
			r.mu.Lock()
			p.done, p.status = time.Now(), status
			if err != nil {
				p.err = err.Error()
			}
			r.mu.Unlock()
		}()
	}
}

// publish posts event "msg" with data id to chaosNews through node i.
func (r *chaosRun) publish(i int, id string) (int, error) {
	const path = "/apps/app-id/events"
	body, _ := json.Marshal(map[string]any{"name": "msg", "channel": chaosNews, "data": id})
	q := pusher.SignedQuery("app-key", "app-secret", "POST", path, nil, body, time.Now())
	resp, err := publishClient.Post("http://"+r.hostAddr(i)+":6001"+path+"?"+q.Encode(), "application/json", bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, fmt.Errorf("HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(b))
	}
	return resp.StatusCode, nil
}

func (r *chaosRun) note(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.notes) < 200 {
		r.notes = append(r.notes, fmt.Sprintf(format, args...))
	}
}

// socksOf lists the run's sockets of a kind, in creation order.
func (r *chaosRun) socksOf(kind sockKind) []*chaosSock {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.DeleteFunc(slices.Clone(r.order), func(s *chaosSock) bool { return s.kind != kind })
}
