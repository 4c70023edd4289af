package stream

// Counters are monotonic totals of an outbound stream.
type Counters struct {
	// Enqueued messages were accepted by Send or Broadcast.
	Enqueued uint64 `json:"enqueued"`
	// Sent messages were written for the first time.
	Sent uint64 `json:"sent"`
	// Retransmitted messages were written again after a reconnect.
	Retransmitted uint64 `json:"retransmitted"`
	// Dropped messages left the queue unacknowledged: evicted while a
	// lingering peer was unreachable, addressed to a peer process that
	// restarted, or queued for a peer that was removed or replaced.
	Dropped uint64 `json:"dropped"`
	// Backpressure counts Sends refused with ErrBackpressure.
	Backpressure uint64 `json:"backpressure"`
	// Reconnects counts connections established after the first.
	Reconnects uint64 `json:"reconnects"`
}

// PeerStats describes the outbound stream to one peer.
type PeerStats struct {
	Addr      string `json:"addr"`
	Connected bool   `json:"connected"`
	// Lingering: gossip declared the peer dead; its stream is kept in case
	// it was only cut off (Peer.Lingering).
	Lingering bool `json:"lingering"`
	// Queued messages are not yet written.
	Queued      int `json:"queued"`
	QueuedBytes int `json:"queued_bytes"`
	// Unacked messages are written and kept until acknowledged.
	Unacked      int `json:"unacked"`
	UnackedBytes int `json:"unacked_bytes"`
	Counters
}

// OriginStats describes the inbound stream from one origin.
type OriginStats struct {
	Connected   bool   `json:"connected"`
	Incarnation uint64 `json:"incarnation"`
	LastSeq     uint64 `json:"last_seq"`
	Delivered   uint64 `json:"delivered"`
	// Duplicates were received again after a reconnect and dropped.
	Duplicates uint64 `json:"duplicates"`
	// Lost messages are sequence gaps the origin could no longer fill.
	Lost uint64 `json:"lost"`
}

// Stats is a snapshot of both directions. Totals include removed peers.
type Stats struct {
	Counters
	Delivered  uint64 `json:"delivered"`
	Duplicates uint64 `json:"duplicates"`
	Lost       uint64 `json:"lost"`
	// HandshakeFailures counts failed or refused handshakes in both
	// directions, including inbound connections refused at a limit;
	// AuthFailures is the part refused because a node id was not the one
	// the transport proved (Config.PeerID).
	HandshakeFailures uint64                 `json:"handshake_failures"`
	AuthFailures      uint64                 `json:"auth_failures"`
	Peers             map[string]PeerStats   `json:"peers"`
	Origins           map[string]OriginStats `json:"origins"`
}

// Stats returns current counters and queue lengths.
func (s *Streams) Stats() Stats {
	s.mu.Lock()
	st := Stats{
		Counters:          s.removed.snapshot(),
		HandshakeFailures: s.handshakeFailures.Load(),
		AuthFailures:      s.authFailures.Load(),
		Peers:             make(map[string]PeerStats),
		Origins:           make(map[string]OriginStats, len(s.origins)),
	}
	for id, o := range s.origins {
		ost := OriginStats{
			Connected:   o.connected.Load(),
			Incarnation: o.incarnation.Load(),
			LastSeq:     o.last.Load(),
			Delivered:   o.delivered.Load(),
			Duplicates:  o.duplicates.Load(),
			Lost:        o.lost.Load(),
		}
		st.Origins[id] = ost
		st.Delivered += ost.Delivered
		st.Duplicates += ost.Duplicates
		st.Lost += ost.Lost
	}
	peers := *s.peers.Load()
	s.mu.Unlock()
	for id, p := range peers {
		ps := p.stats()
		st.Peers[id] = ps
		st.Enqueued += ps.Enqueued
		st.Sent += ps.Sent
		st.Retransmitted += ps.Retransmitted
		st.Dropped += ps.Dropped
		st.Backpressure += ps.Backpressure
		st.Reconnects += ps.Reconnects
	}
	return st
}
