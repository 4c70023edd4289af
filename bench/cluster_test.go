package main

import (
	"bytes"
	"encoding/csv"
	"encoding/xml"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestClusterPerNodeFigures(t *testing.T) {
	_, addrs := newFakeCluster(t, 2)
	dir := t.TempDir()
	svg, csvPath := filepath.Join(dir, "lat.svg"), filepath.Join(dir, "lat.csv")
	cfg := testConfig(t, "ws://"+addrs[0]+",ws://"+addrs[1], "-subscribers", "40", "-rate", "60",
		"-duration", "600ms", "-publishers", "3", "-plot", svg, "-timeseries", csvPath)
	if cfg.publishers != 4 {
		t.Fatalf("publishers = %d, want 4 (rounded up to a multiple of 2 servers)", cfg.publishers)
	}
	rep := runBench(t, cfg)

	p, d := rep.Publish, rep.Delivery
	if d.Lost != 0 || d.Received != d.Expected || d.Received == 0 {
		t.Fatalf("delivery = %+v", d)
	}
	if len(rep.Nodes) != 2 {
		t.Fatalf("nodes = %+v", rep.Nodes)
	}
	var recv, pub int64
	for _, n := range rep.Nodes {
		if n.Subscribers != 20 || n.Expected != p.Accepted*20 || n.Received != n.Expected || n.Lost != 0 ||
			n.LatencyUS.Count != uint64(n.Received) || n.DeliveriesPerSec <= 0 {
			t.Errorf("node %+v", n)
		}
		recv += n.Received
		pub += n.Published
	}
	if recv != d.Received || pub != p.Accepted {
		t.Errorf("nodes sum to %d received, %d published; total %d, %d", recv, pub, d.Received, p.Accepted)
	}
	// Paced publishes alternate between the servers.
	if a, b := rep.Nodes[0].Published, rep.Nodes[1].Published; a-b > 1 || b-a > 1 {
		t.Errorf("publishes split %d/%d", a, b)
	}
	l := rep.LatencySplit
	if l == nil || l.Local.Count == 0 || l.Cross.Count == 0 || l.Local.Count+l.Cross.Count != uint64(d.Received) {
		t.Fatalf("local/cross split = %+v", l)
	}

	var sum uint64
	for _, r := range rep.Timeline {
		sum += r.Deliveries
	}
	if sum != uint64(d.Received) || len(rep.Timeline) == 0 {
		t.Errorf("timeline holds %d deliveries in %d seconds, want %d", sum, len(rep.Timeline), d.Received)
	}
	checkSVG(t, mustRead(t, svg), 0)
	recs, err := csv.NewReader(bytes.NewReader(mustRead(t, csvPath))).ReadAll()
	if err != nil || len(recs) != len(rep.Timeline)+1 || len(recs[0]) != 9+2 {
		t.Fatalf("csv: %v, %d rows, header %v", err, len(recs), recs[0])
	}
}

func TestPerNodeLoss(t *testing.T) {
	// Two unrelated servers: publishes to the first never reach the second's
	// subscribers, which the per-node figures must show.
	_, a := newFakeServer(t)
	_, b := newFakeServer(t)
	cfg := testConfig(t, a+","+b, "-publish-urls", a, "-subscribers", "10", "-saturate",
		"-messages", "20", "-publishers", "1", "-drain", "200ms")
	rep := runBench(t, cfg)
	n0, n1 := rep.Nodes[0], rep.Nodes[1]
	if n0.Published != 20 || n0.Received != 100 || n0.Lost != 0 {
		t.Errorf("node a = %+v", n0)
	}
	if n1.Published != 0 || n1.Received != 0 || n1.Lost != 100 || n1.Expected != 100 {
		t.Errorf("node b = %+v", n1)
	}
	if rep.Delivery.Lost != 100 || rep.LatencySplit != nil {
		t.Errorf("total lost %d, split %+v", rep.Delivery.Lost, rep.LatencySplit)
	}
}

func TestPresenceChurn(t *testing.T) {
	_, addrs := newFakeCluster(t, 2)
	cfg := testConfig(t, addrs[0]+","+addrs[1], "-subscribers", "4", "-rate", "10", "-duration", "1s",
		"-presence-churn", "40", "-presence-hold", "100ms", "-presence-observers", "3")
	rep := runBench(t, cfg)
	p := rep.Presence
	if p == nil || p.Joined < 30 || p.Failed != 0 || p.Left != p.Joined || p.Attempted != p.Joined {
		t.Fatalf("presence = %+v, errors %v", p, rep.Errors)
	}
	if p.MemberAdded.Expected != 3*p.Joined || p.MemberAdded.Seen != p.MemberAdded.Expected ||
		p.MemberRemoved.Expected != 3*p.Left || p.MemberRemoved.Seen != p.MemberRemoved.Expected ||
		p.Mismatches != 0 || p.UnknownEvents != 0 {
		t.Fatalf("member events = %+v / %+v, mismatches %d", p.MemberAdded, p.MemberRemoved, p.Mismatches)
	}
	if p.JoinLatencyUS.Count != uint64(p.Joined) || p.AddedLatencyUS.Count != uint64(3*p.Joined) {
		t.Errorf("join latency %+v, added latency %+v", p.JoinLatencyUS, p.AddedLatencyUS)
	}
	if j0, j1 := rep.Nodes[0].JoinLatencyUS, rep.Nodes[1].JoinLatencyUS; j0 == nil || j1 == nil || j0.Count == 0 || j1.Count == 0 {
		t.Errorf("joins not spread over both servers: %+v %+v", j0, j1)
	}
	var joins uint64
	for _, r := range rep.Timeline {
		joins += r.Joins
	}
	if joins != uint64(p.Joined) {
		t.Errorf("timeline joins %d, want %d", joins, p.Joined)
	}
}

func TestPresenceMismatches(t *testing.T) {
	f, target := newFakeServer(t)
	f.memberCopies = func(event, user string) int {
		switch {
		case event == "added" && user == "u2":
			return 0
		case event == "removed" && user == "u3":
			return 2
		}
		return 1
	}
	cfg := testConfig(t, target, "-subscribers", "2", "-rate", "5", "-duration", "500ms",
		"-presence-churn", "20", "-presence-hold", "50ms", "-presence-observers", "2", "-drain", "300ms")
	rep := runBench(t, cfg)
	p := rep.Presence
	if p.Joined < 4 || p.Failed != 0 {
		t.Fatalf("presence = %+v, errors %v", p, rep.Errors)
	}
	if p.MemberAdded.Missing != 2 || p.MemberAdded.Extra != 0 || p.MemberRemoved.Missing != 0 ||
		p.MemberRemoved.Extra != 2 || p.Mismatches != 4 {
		t.Fatalf("added %+v removed %+v mismatches %d", p.MemberAdded, p.MemberRemoved, p.Mismatches)
	}
	for _, o := range p.Observers {
		if o.MemberAdded.Missing != 1 || o.MemberRemoved.Extra != 1 {
			t.Errorf("observer %+v", o)
		}
	}
}

func TestPresenceJoinErrors(t *testing.T) {
	_, target := newFakeServer(t)
	// A wrong secret makes every signature invalid.
	cfg := testConfig(t, target, "-subscribers", "2", "-rate", "5", "-duration", "300ms",
		"-presence-churn", "20", "-secret", "wrong")
	rep, err := run(t.Context(), cfg, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "observer 0") {
		t.Fatalf("err = %v", err)
	}
	if rep.Presence == nil || rep.Presence.Joined != 0 {
		t.Fatalf("presence = %+v", rep.Presence)
	}
}

func TestAccountMembers(t *testing.T) {
	members := map[string]*memberRec{
		"u1": {ok: true, leaveSent: 1},
		"u2": {ok: true},                // still a member
		"u3": {ok: false, joinSent: 1},  // join failed
		"u4": {ok: true, leaveSent: 1},  // never announced
		"u5": {ok: true, leaveSent: 10}, // announced twice
	}
	seen := map[string]*memberSeen{
		"u1":    {added: 1, removed: 1},
		"u2":    {added: 1},
		"u3":    {added: 1, removed: 1},
		"u5":    {added: 2, removed: 1},
		"obs-1": {added: 1},
		"x9":    {added: 1},
	}
	add, rem, failed, unknown := accountMembers(members, seen)
	if add != (memberEvents{Expected: 4, Seen: 4, Missing: 1, Extra: 1}) {
		t.Errorf("added = %+v", add)
	}
	if rem != (memberEvents{Expected: 3, Seen: 2, Missing: 1}) {
		t.Errorf("removed = %+v", rem)
	}
	if failed != 2 || unknown != 1 {
		t.Errorf("failed-join events %d, unknown %d", failed, unknown)
	}
}

func TestTimelineRows(t *testing.T) {
	tl := newTimeline(2, 3*time.Second)
	start := time.Unix(100, 0)
	tl.delivery(start.UnixNano(), 5, 0, 0) // before begin: ignored
	tl.begin(start)
	at := func(s float64) int64 { return start.Add(time.Duration(s * float64(time.Second))).UnixNano() }
	tl.delivery(at(0.1), 100, 0, 0)
	tl.delivery(at(0.9), 300, 1, 1)
	tl.delivery(at(2.5), 1000, 1, 0)
	tl.delivery(at(99), 2000, 0, 0) // past the end: clamped into the last second
	tl.join(at(0.2), 700, false)
	tl.join(at(0.3), 0, true)
	rows := tl.rows()
	if len(rows) != 5 {
		t.Fatalf("%d rows: %+v", len(rows), rows)
	}
	r0 := rows[0]
	if r0.Deliveries != 2 || r0.PerNode[0] != 1 || r0.PerNode[1] != 1 || r0.P50 != 100 || r0.Max != 300 ||
		r0.Joins != 1 || r0.JoinErrors != 1 || r0.JoinP99 != 700 {
		t.Errorf("second 0 = %+v", r0)
	}
	if rows[1].Deliveries != 0 || rows[2].Deliveries != 1 || rows[4].Deliveries != 1 || rows[4].Max != 2000 {
		t.Errorf("rows = %+v", rows)
	}
}

func TestSVGIsValidXML(t *testing.T) {
	rows := []secondRow{
		{Second: 0, Deliveries: 100, PerNode: []int64{60, 40}, P50: 900, P99: 4000, Max: 9000, Joins: 3, JoinP99: 20000},
		{Second: 1, PerNode: []int64{0, 0}}, // a gap
		{Second: 2, Deliveries: 120, PerNode: []int64{60, 60}, P50: 1100, P99: 5000, Max: 150000},
		{Second: 3, Deliveries: 110, PerNode: []int64{50, 60}, P50: 1000, P99: 4500, Max: 8000},
	}
	var b bytes.Buffer
	if err := writeSVG(&b, rows, `title with <markup> & "quotes"`, []string{"127.0.0.1:6201", "127.0.0.2:6202"}); err != nil {
		t.Fatal(err)
	}
	checkSVG(t, b.Bytes(), 6)
	if !strings.Contains(b.String(), "presence join p99") || !strings.Contains(b.String(), "127.0.0.2:6202") {
		t.Error("legend misses a series")
	}

	b.Reset()
	if err := writeSVG(&b, nil, "empty", []string{"a"}); err != nil {
		t.Fatal(err)
	}
	checkSVG(t, b.Bytes(), 0)
	if !strings.Contains(b.String(), "no data") {
		t.Error("an empty plot should say so")
	}
}

// checkSVG parses the document and checks its root and that it has at least
// minLines polylines.
func checkSVG(t *testing.T, doc []byte, minLines int) {
	t.Helper()
	dec := xml.NewDecoder(bytes.NewReader(doc))
	var root string
	lines := 0
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("invalid XML: %v\n%s", err, doc)
		}
		if se, ok := tok.(xml.StartElement); ok {
			if root == "" {
				root = se.Name.Local
				if se.Name.Space != "http://www.w3.org/2000/svg" {
					t.Errorf("root namespace %q", se.Name.Space)
				}
			}
			if se.Name.Local == "polyline" {
				lines++
			}
		}
	}
	if root != "svg" || lines < minLines {
		t.Fatalf("root %q with %d polylines, want svg with at least %d", root, lines, minLines)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
