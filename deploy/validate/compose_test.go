package validate

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
)

// loadCompose loads compose.yaml as `docker compose` does (schema validation,
// interpolation, merging of the YAML anchors), with env as the shell
// environment.
func loadCompose(t *testing.T, env map[string]string) *types.Project {
	t.Helper()
	dir, err := filepath.Abs(repo("deploy", "docker"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := loader.LoadWithContext(context.Background(), types.ConfigDetails{
		WorkingDir:  dir,
		ConfigFiles: []types.ConfigFile{{Filename: filepath.Join(dir, "compose.yaml")}},
		Environment: env,
	}, func(o *loader.Options) { o.SetProjectName("soketi", true) })
	if err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	return p
}

func TestCompose(t *testing.T) {
	p := loadCompose(t, map[string]string{"CLUSTER_KEY": placeholderKey})
	names := slices.Sorted(func(yield func(string) bool) {
		for n := range p.Services {
			if !yield(n) {
				return
			}
		}
	})
	if want := []string{"soketi-1", "soketi-2", "soketi-3"}; !slices.Equal(names, want) {
		t.Fatalf("services %v, want %v", names, want)
	}
	if n, ok := p.Networks["soketi"]; !ok || n.Driver != "bridge" || bool(n.External) {
		t.Errorf("want a user-defined bridge network soketi, got %+v", n)
	}

	nodeIDs := map[string]bool{}
	hostPorts := map[string]bool{}
	for _, name := range names {
		s := p.Services[name]
		t.Run(name, func(t *testing.T) {
			env := map[string]string{}
			var envNames []string
			for k, v := range s.Environment {
				envNames = append(envNames, k)
				if v != nil {
					env[k] = *v
				}
			}
			sort.Strings(envNames)
			checkEnvNames(t, name, envNames)
			checkPortEnv(t, name, env)
			for k, want := range map[string]string{
				"ADAPTER_DRIVER":           "cluster",
				"CLUSTER_EXPECTED_SERVERS": strconv.Itoa(len(names)),
				"CLUSTER_DATA_DIR":         dataDir,
			} {
				if env[k] != want {
					t.Errorf("%s=%q, want %q", k, env[k], want)
				}
			}
			for _, k := range []string{"CLUSTER_UNICAST_ADDRESSES", "CLUSTER_MULTICAST_ADDRESS"} {
				if env[k] != "" {
					t.Errorf("%s is set: this file runs in broadcast mode", k)
				}
			}
			if env["CLUSTER_NODE_ID"] == "" || nodeIDs[env["CLUSTER_NODE_ID"]] {
				t.Errorf("CLUSTER_NODE_ID %q is empty or not unique", env["CLUSTER_NODE_ID"])
			}
			nodeIDs[env["CLUSTER_NODE_ID"]] = true

			if _, ok := s.Networks["soketi"]; !ok || len(s.Networks) != 1 {
				t.Errorf("networks %v, want only soketi", s.Networks)
			}
			// expose lists exactly the ports a node binds; only 6001 is published.
			var exposed []string
			for _, e := range s.Expose {
				exposed = append(exposed, exposeKey(e))
			}
			sort.Strings(exposed)
			if want := nodePorts(); !slices.Equal(exposed, want) {
				t.Errorf("expose %v, want the ports the server binds %v", exposed, want)
			}
			if len(s.Ports) != 1 || s.Ports[0].Target != uint32(mainPort) || s.Ports[0].Published == "" ||
				s.Ports[0].Protocol != "tcp" {
				t.Errorf("ports %+v, want one host port mapped to %d", s.Ports, mainPort)
			} else {
				if hostPorts[s.Ports[0].Published] {
					t.Errorf("host port %s used twice", s.Ports[0].Published)
				}
				hostPorts[s.Ports[0].Published] = true
			}

			hc := s.HealthCheck
			if hc == nil || hc.Disable || !slices.Equal([]string(hc.Test), []string{"CMD", "/usr/local/bin/healthcheck"}) {
				t.Errorf("healthcheck %+v, want CMD /usr/local/bin/healthcheck", hc)
			}
			need := minStopTime(t, name, env["SOKETI_SHUTDOWN_GRACE_PERIOD"])
			if s.StopGracePeriod == nil || time.Duration(*s.StopGracePeriod) <= need {
				t.Errorf("stop_grace_period %v, want more than %s", s.StopGracePeriod, need)
			}

			var vol *types.ServiceVolumeConfig
			for i, v := range s.Volumes {
				if v.Target == env["CLUSTER_DATA_DIR"] {
					vol = &s.Volumes[i]
				}
			}
			if vol == nil || vol.Type != types.VolumeTypeVolume {
				t.Errorf("no named volume at CLUSTER_DATA_DIR %q", env["CLUSTER_DATA_DIR"])
			} else if _, ok := p.Volumes[vol.Source]; !ok {
				t.Errorf("volume %q is not declared", vol.Source)
			}
			if !s.ReadOnly {
				t.Error("read_only: the root filesystem should be read-only")
			}

			if s.Build == nil {
				t.Fatal("no build section")
			}
			if _, err := os.Stat(filepath.Join(s.Build.Context, s.Build.Dockerfile)); err != nil {
				t.Errorf("build: %v", err)
			}
		})
	}
	if len(hostPorts) != 3 || !hostPorts["6001"] || !hostPorts["6002"] || !hostPorts["6003"] {
		t.Errorf("host ports %v, want 6001, 6002, 6003", hostPorts)
	}
	volumes := map[string]bool{}
	for _, s := range p.Services {
		for _, v := range s.Volumes {
			if volumes[v.Source] {
				t.Errorf("volume %s shared by two nodes", v.Source)
			}
			volumes[v.Source] = true
		}
	}
}

// TestComposeNeedsClusterKey: without CLUSTER_KEY compose refuses to start,
// saying how to make one, rather than run an open cluster.
func TestComposeNeedsClusterKey(t *testing.T) {
	dir, err := filepath.Abs(repo("deploy", "docker"))
	if err != nil {
		t.Fatal(err)
	}
	for _, env := range []map[string]string{{}, {"CLUSTER_KEY": ""}} {
		_, err = loader.LoadWithContext(context.Background(), types.ConfigDetails{
			WorkingDir:  dir,
			ConfigFiles: []types.ConfigFile{{Filename: filepath.Join(dir, "compose.yaml")}},
			Environment: env,
		}, func(o *loader.Options) { o.SetProjectName("soketi", true) })
		if err == nil || !strings.Contains(err.Error(), "CLUSTER_KEY") || !strings.Contains(err.Error(), "openssl rand -base64 32") {
			t.Errorf("environment %v: loaded with error %v; want a refusal naming CLUSTER_KEY and how to generate one", env, err)
		}
	}
}

// TestComposeInterpolation checks that credentials and the cluster key come
// from the environment (or a .env file beside compose.yaml).
func TestComposeInterpolation(t *testing.T) {
	p := loadCompose(t, map[string]string{
		"CLUSTER_KEY":               "c29rZXRpLWdvLWV4YW1wbGUta2V5LXJlcGxhY2UtbWU=",
		"SOKETI_DEFAULT_APP_SECRET": "s3cret",
	})
	for name, s := range p.Services {
		if v := s.Environment["CLUSTER_KEY"]; v == nil || *v != "c29rZXRpLWdvLWV4YW1wbGUta2V5LXJlcGxhY2UtbWU=" {
			t.Errorf("%s: CLUSTER_KEY not taken from the environment", name)
		}
		if v := s.Environment["SOKETI_DEFAULT_APP_SECRET"]; v == nil || *v != "s3cret" {
			t.Errorf("%s: SOKETI_DEFAULT_APP_SECRET not taken from the environment", name)
		}
	}
}
