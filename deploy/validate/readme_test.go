package validate

import "testing"

func TestReadmeConfigurationTable(t *testing.T) {
	k := knownEnv(t)
	for _, n := range []string{"SOKETI_DEFAULT_APP_KEY", "SOKETI_SSL_KEY", "SOKETI_CLUSTER_GOSSIP_PORT", "CLUSTER_RAFT_PORT", "CLUSTER_EXPECTED_SERVERS"} {
		if !k[n] {
			t.Errorf("%s missing from the names parsed out of README.md", n)
		}
	}
	if k["SOKETI_SOKETI_PORT"] || k["_KEY"] {
		t.Errorf("README parsing produced a bogus name")
	}
}
