package cluster

import (
	"testing"
	"time"

	"github.com/soketi-go/soketi/pkg/consensus"
)

func TestHasQuorum(t *testing.T) {
	const mt = 2 * time.Second
	for _, tc := range []struct {
		name string
		st   consensus.NodeStatus
		want bool
	}{
		{"leader", consensus.NodeStatus{State: "leader", LeaderID: "a"}, true},
		{"follower in contact", consensus.NodeStatus{State: "follower", LeaderID: "a", LastContactMs: 150}, true},
		{"follower, leader silent", consensus.NodeStatus{State: "follower", LeaderID: "a", LastContactMs: 2500}, false},
		{"follower without leader", consensus.NodeStatus{State: "follower", LastContactMs: 900}, false},
		{"candidate", consensus.NodeStatus{State: "candidate", LastContactMs: 4000}, false},
		{"never contacted", consensus.NodeStatus{State: "follower", LeaderID: "a", LastContactMs: -1}, false},
		{"shut down", consensus.NodeStatus{State: "shutdown"}, false},
	} {
		if got := hasQuorum(tc.st, mt); got != tc.want {
			t.Errorf("%s: hasQuorum = %v, want %v", tc.name, got, tc.want)
		}
	}
}
