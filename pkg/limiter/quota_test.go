package limiter

import (
	"testing"
	"time"
)

func TestWindowOf(t *testing.T) {
	tests := []struct {
		ns   int64
		want int64
	}{
		{0, 0},
		{999_999_999, 0},
		{1_000_000_000, 1},
		{1_700_000_000_500_000_000, 1_700_000_000},
		{-1, -1},
		{-1_000_000_000, -1},
		{-1_000_000_001, -2},
	}
	for _, tt := range tests {
		if got := WindowOf(time.Unix(0, tt.ns)); got != tt.want {
			t.Errorf("WindowOf(%d) = %d, want %d", tt.ns, got, tt.want)
		}
		if end := windowEnd(tt.want); !end.After(time.Unix(0, tt.ns)) || end.Sub(time.Unix(0, tt.ns)) > Window {
			t.Errorf("windowEnd(%d) = %v does not end the window of %d", tt.want, end, tt.ns)
		}
	}
}

func TestGrantSize(t *testing.T) {
	tests := []struct {
		name                     string
		left, active, want, need int
		give                     int
	}{
		{"what is wanted, within the fair split", 100, 3, 10, 0, 10},
		{"capped at an even split of what is left", 100, 3, 80, 0, 34},
		{"alone, a node may take it all", 100, 1, 500, 0, 100},
		{"at least one token when asking ahead", 100, 3, 0, 0, 1},
		{"a waiting request gets what it needs past the split", 10, 3, 1, 6, 6},
		{"need above what is left: nothing", 5, 1, 10, 6, 0},
		{"nothing left", 0, 3, 10, 1, 0},
		{"never more than left", 2, 1, 10, 0, 2},
		{"zero active counts as one", 7, 0, 10, 0, 7},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := grantSize(tt.left, tt.active, tt.want, tt.need); got != tt.give {
				t.Fatalf("grantSize(%d, %d, %d, %d) = %d, want %d", tt.left, tt.active, tt.want, tt.need, got, tt.give)
			}
		})
	}
}

func TestShareOf(t *testing.T) {
	tests := []struct{ limit, nodes int }{{100, 3}, {100, 2}, {1, 3}, {2, 3}, {0, 3}, {7, 1}, {10, 0}}
	for _, tt := range tests {
		sum := 0
		for r := range max(tt.nodes, 1) {
			s := shareOf(tt.limit, r, tt.nodes)
			if s < tt.limit/max(tt.nodes, 1) || s > tt.limit/max(tt.nodes, 1)+1 {
				t.Errorf("shareOf(%d, %d, %d) = %d, not an even split", tt.limit, r, tt.nodes, s)
			}
			sum += s
		}
		if sum != tt.limit {
			t.Errorf("shares of %d over %d nodes add up to %d", tt.limit, tt.nodes, sum)
		}
	}
}

func TestQuota_Serve(t *testing.T) {
	type step struct {
		advance time.Duration
		lead    *bool // change leadership, then advance
		node    string
		app     string
		want    int
		need    int
		limit   int
		status  GrantStatus
		tokens  int
		left    int
		window  int64
	}
	yes, no := true, false
	const w0 = 1_700_000_000 // the fake clock's first window
	tests := []struct {
		name    string
		maxKeys int
		steps   []step
	}{
		{"a new term fences its first window", 10, []step{
			{lead: &yes, node: "a", app: "x", want: 10, limit: 100, status: GrantShare, window: w0},
			{advance: time.Second, node: "a", app: "x", want: 10, limit: 100, status: GrantLease, tokens: 10, left: 90, window: w0 + 1},
		}},
		{"not master", 10, []step{
			{node: "a", app: "x", want: 10, limit: 100, status: GrantNotMaster},
		}},
		{"even split among active nodes, then the window is spent", 10, []step{
			{lead: &yes, advance: time.Second, node: "a", app: "x", want: 90, limit: 100, status: GrantLease, tokens: 90, left: 10, window: w0 + 1},
			{node: "b", app: "x", want: 90, limit: 100, status: GrantLease, tokens: 5, left: 5, window: w0 + 1},
			{node: "a", app: "x", want: 90, limit: 100, status: GrantLease, tokens: 3, left: 2, window: w0 + 1},
			{node: "b", app: "x", want: 1, need: 3, limit: 100, status: GrantLease, tokens: 0, left: 2, window: w0 + 1},
			{node: "b", app: "x", want: 5, need: 2, limit: 100, status: GrantLease, tokens: 2, left: 0, window: w0 + 1},
			{node: "c", app: "x", want: 5, limit: 100, status: GrantLease, tokens: 0, left: 0, window: w0 + 1},
		}},
		{"a new window starts from the full limit; nodes of the last window still count", 10, []step{
			{lead: &yes, advance: time.Second, node: "a", app: "x", want: 100, limit: 100, status: GrantLease, tokens: 100, left: 0, window: w0 + 1},
			{node: "b", app: "x", want: 1, limit: 100, status: GrantLease, tokens: 0, left: 0, window: w0 + 1},
			{advance: time.Second, node: "a", app: "x", want: 100, limit: 100, status: GrantLease, tokens: 50, left: 50, window: w0 + 2},
			{advance: 2 * time.Second, node: "a", app: "x", want: 100, limit: 100, status: GrantLease, tokens: 100, left: 0, window: w0 + 4},
		}},
		{"the limit is the latest asked with", 10, []step{
			{lead: &yes, advance: time.Second, node: "a", app: "x", want: 10, limit: 10, status: GrantLease, tokens: 10, left: 0, window: w0 + 1},
			{node: "a", app: "x", want: 10, limit: 15, status: GrantLease, tokens: 5, left: 0, window: w0 + 1},
		}},
		{"apps are independent", 10, []step{
			{lead: &yes, advance: time.Second, node: "a", app: "x", want: 10, limit: 10, status: GrantLease, tokens: 10, left: 0, window: w0 + 1},
			{node: "a", app: "y", want: 10, limit: 10, status: GrantLease, tokens: 10, left: 0, window: w0 + 1},
		}},
		{"a probe gets the window and no tokens", 10, []step{
			{lead: &yes, advance: time.Second, node: "a", app: "", status: GrantLease, window: w0 + 1},
		}},
		{"losing and regaining the lead fences again", 10, []step{
			{lead: &yes, advance: time.Second, node: "a", app: "x", want: 100, limit: 100, status: GrantLease, tokens: 100, window: w0 + 1},
			{lead: &no, node: "a", app: "x", want: 1, limit: 100, status: GrantNotMaster},
			{lead: &yes, node: "a", app: "x", want: 1, limit: 100, status: GrantShare, window: w0 + 1},
		}},
		{"key cap: a new key gets local shares", 1, []step{
			{lead: &yes, advance: time.Second, node: "a", app: "x", want: 1, limit: 100, status: GrantLease, tokens: 1, left: 99, window: w0 + 1},
			{node: "a", app: "y", want: 1, limit: 100, status: GrantShare, window: w0 + 1},
			{advance: 2 * time.Second, node: "a", app: "y", want: 1, limit: 100, status: GrantLease, tokens: 1, left: 99, window: w0 + 3},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newFakeClock()
			q := NewQuota(tt.maxKeys)
			for i, s := range tt.steps {
				if s.lead != nil {
					q.Lead(*s.lead, clk.Now())
				}
				clk.Advance(s.advance)
				g := q.Serve(s.node, Ask{ID: uint64(i), App: s.app, Key: "k", Limit: s.limit, Want: s.want, Need: s.need}, clk.Now())
				if g.ID != uint64(i) || g.Status != s.status || g.Tokens != s.tokens || g.Left != s.left ||
					(s.status != GrantNotMaster && g.Window != s.window) {
					t.Fatalf("step %d: got %+v, want status %s tokens %d left %d window %d", i, g, s.status, s.tokens, s.left, s.window)
				}
				if g.Status != GrantNotMaster && (g.EndsIn <= 0 || g.EndsIn > Window) {
					t.Fatalf("step %d: ends_in = %v", i, g.EndsIn)
				}
			}
		})
	}
}
