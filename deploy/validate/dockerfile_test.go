package validate

import (
	"bytes"
	"os"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
)

// stage is one FROM ... section of a parsed Dockerfile.
type stage struct {
	image, name string
	nodes       []*parser.Node
}

func (s stage) all(instr string) []*parser.Node {
	var out []*parser.Node
	for _, n := range s.nodes {
		if strings.EqualFold(n.Value, instr) {
			out = append(out, n)
		}
	}
	return out
}

// args are the words after the instruction.
func args(n *parser.Node) []string {
	var out []string
	for a := n.Next; a != nil; a = a.Next {
		out = append(out, a.Value)
	}
	return out
}

// parseDockerfile parses with BuildKit's parser and splits into stages,
// expanding the global ARG defaults in FROM lines as BuildKit does.
func parseDockerfile(t *testing.T, path string) (stages []stage, src []byte) {
	t.Helper()
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	res, err := parser.Parse(bytes.NewReader(src))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	for _, w := range res.Warnings {
		t.Errorf("%s: parser warning: %s", path, w.Short)
	}
	var globals []string
	lex := shell.NewLex(res.EscapeToken)
	for _, n := range res.AST.Children {
		switch {
		case strings.EqualFold(n.Value, "from"):
			a := args(n)
			img, _, err := lex.ProcessWord(a[0], shell.EnvsFromSlice(globals))
			if err != nil {
				t.Fatalf("FROM %s: %v", a[0], err)
			}
			s := stage{image: img}
			if len(a) == 3 && strings.EqualFold(a[1], "as") {
				s.name = a[2]
			}
			stages = append(stages, s)
		case len(stages) == 0:
			if strings.EqualFold(n.Value, "arg") {
				globals = append(globals, args(n)...)
			}
		default:
			stages[len(stages)-1].nodes = append(stages[len(stages)-1].nodes, n)
		}
	}
	return stages, src
}

func TestDockerfile(t *testing.T) {
	stages, src := parseDockerfile(t, repo("deploy", "docker", "Dockerfile"))
	if len(stages) < 2 {
		t.Fatalf("want a builder stage and a final stage, got %d stages", len(stages))
	}
	if syntax, _, _, ok := parser.DetectSyntax(src); ok {
		t.Errorf("# syntax=%s pulls a frontend image: the built-in BuildKit frontend suffices", syntax)
	}

	build := stages[0]
	if !strings.HasPrefix(build.image, "golang:1.26") {
		t.Errorf("builder FROM %s, want golang:1.26*", build.image)
	}
	var runs strings.Builder
	for _, n := range build.all("run") {
		runs.WriteString(strings.Join(args(n), " ") + "\n")
	}
	for _, n := range build.all("env") {
		runs.WriteString(strings.Join(args(n), " ") + "\n")
	}
	for _, want := range []string{"CGO_ENABLED 0", "go build -trimpath", "-X main.version=", "./cmd/soketi", "./deploy/docker/healthcheck", "ca-certificates.crt"} {
		if !strings.Contains(runs.String(), want) {
			t.Errorf("builder stage lacks %q", want)
		}
	}

	// Only the builder image is pulled: every later FROM is scratch or a stage.
	names := map[string]bool{}
	for i, s := range stages {
		if i > 0 && s.image != "scratch" && !names[s.image] {
			t.Errorf("stage %d FROM %s pulls another image", i, s.image)
		}
		names[s.name] = true
	}

	final := stages[len(stages)-1]
	users := final.all("user")
	if len(users) == 0 {
		t.Fatal("final stage has no USER")
	}
	if u := args(users[len(users)-1])[0]; u == "root" || u == "0" || strings.HasPrefix(u, "0:") || strings.HasPrefix(u, "root:") {
		t.Errorf("final USER %s is root", u)
	}
	// EXPOSE is exactly the ports a node binds: "6001" is TCP.
	var exposed []string
	for _, n := range final.all("expose") {
		for _, a := range args(n) {
			exposed = append(exposed, exposeKey(a))
		}
	}
	sort.Strings(exposed)
	if want := nodePorts(); !slices.Equal(exposed, want) {
		t.Errorf("EXPOSE %v, want the ports the server binds %v", exposed, want)
	}
	checkPortEnv(t, "Dockerfile ENV", finalEnv(final))
	for _, instr := range []string{"entrypoint", "healthcheck"} {
		ns := final.all(instr)
		if len(ns) != 1 {
			t.Errorf("final stage: want one %s, got %d", strings.ToUpper(instr), len(ns))
			continue
		}
		// scratch has no shell: commands must be in exec (JSON) form.
		n := ns[0]
		if instr == "healthcheck" && (n.Next == nil || n.Next.Value != "CMD") {
			t.Error("HEALTHCHECK without CMD")
			continue
		}
		if !n.Attributes["json"] {
			t.Errorf("%s is in shell form; scratch has no shell", strings.ToUpper(instr))
		}
	}
	if hc := final.all("healthcheck"); len(hc) == 1 {
		if a := args(hc[0].Next); len(a) == 0 || a[0] != "/usr/local/bin/healthcheck" {
			t.Errorf("HEALTHCHECK runs %v, want /usr/local/bin/healthcheck", a)
		}
	}
	if finalEnv(final)["CLUSTER_DATA_DIR"] != dataDir {
		t.Errorf("final stage does not set CLUSTER_DATA_DIR=%s", dataDir)
	}
	if _, err := os.Stat(repo("deploy", "docker", "healthcheck", "main.go")); err != nil {
		t.Error(err)
	}
}

// finalEnv is what the stage's ENV instructions set.
func finalEnv(s stage) map[string]string {
	env := map[string]string{}
	for _, n := range s.all("env") {
		a := args(n)
		for i := 0; i+1 < len(a); i += 2 {
			env[a[i]] = a[i+1]
		}
	}
	return env
}

// exposeKey normalizes an EXPOSE or compose expose entry, "11003/udp" or
// "6001", to "11003/UDP" or "6001/TCP".
func exposeKey(s string) string {
	port, p, ok := strings.Cut(s, "/")
	if !ok {
		p = "tcp"
	}
	return port + "/" + strings.ToUpper(p)
}
