package metrics

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/soketi-go/soketi/pkg/limiter"
	"github.com/soketi-go/soketi/pkg/webhook"
)

func scrape(t *testing.T, m *Metrics) map[string]*dto.MetricFamily {
	t.Helper()
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	families, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	return families
}

// value returns the value of the sample of family name whose labels are
// exactly want.
func value(t *testing.T, families map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	t.Helper()
	f, ok := families[name]
	if !ok {
		t.Fatalf("metric %s missing", name)
	}
	for _, m := range f.GetMetric() {
		got := map[string]string{}
		for _, l := range m.GetLabel() {
			got[l.GetName()] = l.GetValue()
		}
		if !sameLabels(got, want) {
			continue
		}
		switch f.GetType() {
		case dto.MetricType_COUNTER:
			return m.GetCounter().GetValue()
		case dto.MetricType_GAUGE:
			return m.GetGauge().GetValue()
		}
		t.Fatalf("metric %s has type %s", name, f.GetType())
	}
	t.Fatalf("metric %s has no sample with labels %v", name, want)
	return 0
}

func sameLabels(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestMetrics_SoketiNamesAndValues(t *testing.T) {
	m, err := New(Config{Port: 6001})
	if err != nil {
		t.Fatal(err)
	}
	m.ConnectionOpened("app-1")
	m.ConnectionOpened("app-1")
	m.ConnectionOpened("app-2")
	m.ConnectionClosed("app-1")
	m.FrameReceived("app-1", 10)
	m.FrameReceived("app-1", 5)
	m.FramesSent("app-1", 3, 100)
	m.FramesSent("app-1", 1, 7)
	m.HTTPCall("app-1", 20, 2)
	m.HTTPCall("app-1", 0, 30)
	m.Rejected("bad_json")
	m.Rejected("bad_json")
	m.Rejected("rate_limited")
	m.ObserveWebhooks(func() webhook.Stats {
		return webhook.Stats{Queued: 9, Sent: 5, FailedAttempts: 4, Retries: 3, Dropped: 2, GaveUp: 1, QueueLength: 7, RetryPending: 6}
	})
	m.ObserveLimiter(func() limiter.Stats { return limiter.Stats{Keys: 4, Rejected: 8, Evictions: 1} })

	fams := scrape(t, m)
	app1 := map[string]string{"app_id": "app-1", "port": "6001"}
	app2 := map[string]string{"app_id": "app-2", "port": "6001"}
	port := map[string]string{"port": "6001"}
	tests := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"soketi_connected", app1, 1},
		{"soketi_connected", app2, 1},
		{"soketi_new_connections_total", app1, 2},
		{"soketi_new_disconnections_total", app1, 1},
		{"soketi_socket_received_bytes", app1, 15},
		{"soketi_socket_transmitted_bytes", app1, 307},
		{"soketi_ws_messages_received_total", app1, 2},
		{"soketi_ws_messages_sent_total", app1, 4},
		{"soketi_http_received_bytes", app1, 20},
		{"soketi_http_transmitted_bytes", app1, 32},
		{"soketi_http_calls_received_total", app1, 2},
		{"soketi_rejected_total", map[string]string{"reason": "bad_json", "port": "6001"}, 2},
		{"soketi_rejected_total", map[string]string{"reason": "rate_limited", "port": "6001"}, 1},
		{"soketi_webhooks_queued_total", port, 9},
		{"soketi_webhooks_sent_total", port, 5},
		{"soketi_webhooks_failed_attempts_total", port, 4},
		{"soketi_webhooks_retries_total", port, 3},
		{"soketi_webhooks_dropped_total", port, 2},
		{"soketi_webhooks_gave_up_total", port, 1},
		{"soketi_webhooks_queue_length", port, 7},
		{"soketi_webhooks_retry_pending", port, 6},
		{"soketi_rate_limiter_rejections_total", port, 8},
		{"soketi_rate_limiter_evictions_total", port, 1},
		{"soketi_rate_limiter_keys", port, 4},
	}
	for _, tt := range tests {
		if got := value(t, fams, tt.name, tt.labels); got != tt.want {
			t.Errorf("%s%v = %v, want %v", tt.name, tt.labels, got, tt.want)
		}
	}
	for _, name := range []string{"soketi_go_goroutines", "soketi_process_cpu_seconds_total"} {
		f, ok := fams[name]
		if !ok {
			t.Errorf("runtime metric %s missing", name)
			continue
		}
		if l := f.GetMetric()[0].GetLabel(); len(l) != 1 || l[0].GetName() != "port" || l[0].GetValue() != "6001" {
			t.Errorf("%s labels = %v, want port=6001", name, l)
		}
	}
}

func TestMetrics_Prefix(t *testing.T) {
	m, err := New(Config{Prefix: "soketi_6001_", Port: 6001})
	if err != nil {
		t.Fatal(err)
	}
	m.ConnectionOpened("a")
	fams := scrape(t, m)
	if _, ok := fams["soketi_6001_connected"]; !ok {
		t.Fatal("prefixed soketi_6001_connected missing")
	}
	if _, err := New(Config{Prefix: "bad-prefix"}); err == nil {
		t.Fatal("invalid prefix accepted")
	}
}

func TestMetrics_AppCap(t *testing.T) {
	m, err := New(Config{Port: 1, MaxApps: 2})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"a", "b", "c", "d"} {
		m.ConnectionOpened(id)
	}
	fams := scrape(t, m)
	if got := len(fams["soketi_connected"].GetMetric()); got != 3 {
		t.Fatalf("app_id series = %d, want 3 (a, b, %s)", got, OtherApp)
	}
	if got := value(t, fams, "soketi_connected", map[string]string{"app_id": OtherApp, "port": "1"}); got != 2 {
		t.Fatalf("%s connected = %v, want 2", OtherApp, got)
	}
}

func TestMetrics_JSON(t *testing.T) {
	m, err := New(Config{Port: 6001})
	if err != nil {
		t.Fatal(err)
	}
	m.ConnectionOpened("app-1")
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/metrics?json=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got []jsonMetric
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	for _, jm := range got {
		if jm.Name != "soketi_connected" {
			continue
		}
		if jm.Type != "gauge" || len(jm.Values) != 1 || jm.Values[0].Value != 1.0 ||
			jm.Values[0].Labels["app_id"] != "app-1" || jm.Values[0].Labels["port"] != "6001" {
			t.Fatalf("soketi_connected = %+v", jm)
		}
		return
	}
	t.Fatal("soketi_connected missing from the JSON output")
}

func BenchmarkFramesSent(b *testing.B) {
	m, err := New(Config{Port: 6001})
	if err != nil {
		b.Fatal(err)
	}
	m.FramesSent("app-id", 1, 100)
	b.ReportAllocs()
	for b.Loop() {
		m.FramesSent("app-id", 10, 100)
	}
}

func BenchmarkFrameReceived(b *testing.B) {
	m, err := New(Config{Port: 6001})
	if err != nil {
		b.Fatal(err)
	}
	m.FrameReceived("app-id", 100)
	b.ReportAllocs()
	for b.Loop() {
		m.FrameReceived("app-id", 100)
	}
}

func BenchmarkFramesSentParallel(b *testing.B) {
	m, err := New(Config{Port: 6001})
	if err != nil {
		b.Fatal(err)
	}
	m.FramesSent("app-id", 1, 100)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			m.FramesSent("app-id", 10, 100)
		}
	})
}

func TestMetrics_HotPathDoesNotAllocate(t *testing.T) {
	m, err := New(Config{Port: 6001})
	if err != nil {
		t.Fatal(err)
	}
	m.FramesSent("app-id", 1, 1)
	m.FrameReceived("app-id", 1)
	m.Rejected("bad_json")
	allocs := testing.AllocsPerRun(1000, func() {
		m.FramesSent("app-id", 10, 100)
		m.FrameReceived("app-id", 100)
		m.Rejected("bad_json")
	})
	if allocs != 0 {
		t.Fatalf("allocs per call = %v, want 0", allocs)
	}
}

func TestMetrics_Cluster(t *testing.T) {
	m, err := New(Config{Prefix: "soketi_", Port: 6001})
	if err != nil {
		t.Fatal(err)
	}
	calls := 0
	m.ObserveCluster(func() ClusterStats {
		calls++
		return ClusterStats{Members: map[string]int{"alive": 3, "dead": 1}, RaftLeader: true, RaftTerm: 4,
			RaftCommitIndex: 9, StreamsDelivered: 12, StreamsLost: 1, RaftLastContactSeconds: -1}
	})
	fams := scrape(t, m)
	for name, want := range map[string]float64{
		"soketi_raft_leader": 1, "soketi_raft_term": 4, "soketi_raft_commit_index": 9,
		"soketi_streams_delivered_total": 12, "soketi_streams_lost_total": 1, "soketi_raft_last_contact_seconds": -1,
	} {
		f := fams[name]
		if f == nil {
			t.Fatalf("%s missing", name)
		}
		mm := f.GetMetric()[0]
		got := mm.GetGauge().GetValue() + mm.GetCounter().GetValue()
		if got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	alive := 0.0
	for _, mm := range fams["soketi_cluster_members"].GetMetric() {
		for _, l := range mm.GetLabel() {
			if l.GetName() == "state" && l.GetValue() == "alive" {
				alive = mm.GetGauge().GetValue()
			}
		}
	}
	if alive != 3 {
		t.Errorf("alive members = %v", alive)
	}
	if calls != 1 {
		t.Errorf("stats read %d times in one scrape, want 1", calls)
	}
}
