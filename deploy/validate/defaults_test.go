package validate

import (
	"bufio"
	"fmt"
	"go/ast"
	"go/constant"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// The ports a node binds by default, read from the server's code before
// any test runs. Every deployment must list exactly these (and set the port
// variables, if at all, to them), so a change of a default in the code fails
// here until deploy/ follows.
var (
	mainPort     int // WebSocket + HTTP API, TCP
	metricsPort  int // metrics server, TCP
	discoverPort int // discovery beacons, UDP
	gossipPort   int // memberlist, TCP and UDP
	raftPort     int // the cluster port: raft, RPC, message streams; TCP
)

// codeDefaults names, for each port, the exported constant of the server's
// internal/config package that Default() uses, and the variable that
// overrides it.
var codeDefaults = []struct {
	constant, env string
	dst           *int
}{
	{"DefaultPort", "SOKETI_PORT", &mainPort},
	{"DefaultMetricsPort", "SOKETI_METRICS_SERVER_PORT", &metricsPort},
	{"DefaultDiscoveryPort", "CLUSTER_PORT", &discoverPort},
	{"DefaultGossipPort", "CLUSTER_GOSSIP_PORT", &gossipPort},
	{"DefaultClusterPort", "CLUSTER_RAFT_PORT", &raftPort},
}

// configPackage is where the defaults live, relative to the repository.
var configPackage = []string{"internal", "config"}

func TestMain(m *testing.M) {
	vals, err := readConstants(repo(configPackage...))
	if err == nil {
		for _, d := range codeDefaults {
			v, ok := vals[d.constant]
			var n int64
			if ok && v.Kind() == constant.Int {
				n, ok = constant.Int64Val(v)
			}
			if !ok || n < 1 || n > 65535 {
				err = fmt.Errorf("%s.%s (the default of %s): want an integer constant 1-65535, got %v",
					strings.Join(configPackage, "/"), d.constant, d.env, v)
				break
			}
			*d.dst = int(n)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "deploy/validate: reading the server's default ports:", err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

// readConstants evaluates the package-level constants of the Go package in
// dir (test files excluded) that are integer literals, or expressions of
// literals and other such constants of the package. It parses instead of
// importing: this module does not depend on the server's module, nor on it
// compiling.
func readConstants(dir string) (map[string]constant.Value, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil || len(files) == 0 {
		return nil, fmt.Errorf("no Go files in %s (%v)", dir, err)
	}
	exprs := map[string]ast.Expr{}
	fset := token.NewFileSet()
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		file, err := parser.ParseFile(fset, f, nil, parser.SkipObjectResolution)
		if err != nil {
			return nil, err
		}
		for _, decl := range file.Decls {
			gd, ok := decl.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			for _, spec := range gd.Specs {
				vs := spec.(*ast.ValueSpec)
				for i, name := range vs.Names {
					if i < len(vs.Values) {
						exprs[name.Name] = vs.Values[i]
					}
				}
			}
		}
	}
	vals := map[string]constant.Value{}
	var eval func(e ast.Expr, depth int) constant.Value
	eval = func(e ast.Expr, depth int) constant.Value {
		if depth > 16 {
			return constant.MakeUnknown()
		}
		switch e := e.(type) {
		case *ast.BasicLit:
			return constant.MakeFromLiteral(e.Value, e.Kind, 0)
		case *ast.ParenExpr:
			return eval(e.X, depth+1)
		case *ast.Ident:
			if x, ok := exprs[e.Name]; ok {
				return eval(x, depth+1)
			}
		case *ast.BinaryExpr:
			x, y := eval(e.X, depth+1), eval(e.Y, depth+1)
			if x.Kind() == constant.Int && y.Kind() == constant.Int {
				switch e.Op {
				case token.ADD, token.SUB, token.MUL:
					return constant.BinaryOp(x, e.Op, y)
				}
			}
		}
		return constant.MakeUnknown()
	}
	for name, e := range exprs {
		vals[name] = eval(e, 0)
	}
	return vals, nil
}

// proto is a port with its protocol, "11003/UDP".
func proto(port int, p string) string { return strconv.Itoa(port) + "/" + p }

// nodePorts is every port a node binds with the defaults (the metrics
// server always runs; /metrics only with SOKETI_METRICS_ENABLED).
func nodePorts() []string {
	return slices.Sorted(slices.Values([]string{
		proto(mainPort, "TCP"), proto(metricsPort, "TCP"), proto(discoverPort, "UDP"),
		proto(gossipPort, "TCP"), proto(gossipPort, "UDP"), proto(raftPort, "TCP"),
	}))
}

// clusterPorts are the node-to-node ports: only other nodes may reach them.
func clusterPorts() []string {
	return slices.Sorted(slices.Values([]string{
		proto(discoverPort, "UDP"), proto(gossipPort, "TCP"), proto(gossipPort, "UDP"), proto(raftPort, "TCP"),
	}))
}

// checkPortEnv fails for a port variable set to anything but the code's
// default: the listed ports would then not be the bound ones. The bare
// cluster names are also read with the SOKETI_ prefix, which wins.
func checkPortEnv(t *testing.T, where string, env map[string]string) {
	t.Helper()
	for _, d := range codeDefaults {
		names := []string{d.env}
		if strings.HasPrefix(d.env, "CLUSTER_") {
			names = append(names, "SOKETI_"+d.env)
		}
		for _, n := range names {
			if v, ok := env[n]; ok && v != strconv.Itoa(*d.dst) {
				t.Errorf("%s: %s=%q, but the deployment lists the default %d (%s.%s)",
					where, n, v, *d.dst, strings.Join(configPackage, "/"), d.constant)
			}
		}
	}
}

// TestReadmeDefaultPorts checks the Configuration table's defaults of the
// port variables against the code.
func TestReadmeDefaultPorts(t *testing.T) {
	f, err := os.Open(repo("README.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	defaults := map[string]string{}
	inConfig := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "## ") {
			inConfig = line == "## Configuration"
		}
		cells := strings.Split(line, "|")
		if !inConfig || len(cells) < 4 {
			continue
		}
		defaults[strings.Trim(strings.TrimSpace(cells[1]), "`")] = strings.TrimSpace(cells[2])
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	for _, d := range codeDefaults {
		if want := "`" + strconv.Itoa(*d.dst) + "`"; defaults[d.env] != want {
			t.Errorf("README.md Configuration: %s default %q, want %s (%s.%s)", d.env, defaults[d.env], want,
				strings.Join(configPackage, "/"), d.constant)
		}
	}
}

// TestReadConstants guards the reader: literals, references and arithmetic
// evaluate; anything else is unknown rather than a guess.
func TestReadConstants(t *testing.T) {
	dir := t.TempDir()
	src := "package p\n\nconst (\n\tA = 6001\n\tB = A + 3600\n\tC, D = (B), 7\n\tE = \"x\"\n\tF = len(E)\n)\n\nconst G int = 0x2b03\n"
	if err := os.WriteFile(filepath.Join(dir, "p.go"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "p_test.go"), []byte("package p\n\nconst A = 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	vals, err := readConstants(dir)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"A": "6001", "B": "9601", "C": "9601", "D": "7", "E": `"x"`, "F": "unknown", "G": "11011"} {
		if got := vals[name].ExactString(); got != want {
			t.Errorf("%s = %s, want %s", name, got, want)
		}
	}
}
