package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// SoketiBinary builds cmd/soketi once per test process and returns its
// path, or returns $SOKETI_BIN (a prebuilt binary to test instead).
func SoketiBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		if binPath = os.Getenv("SOKETI_BIN"); binPath != "" {
			return
		}
		dir, err := os.MkdirTemp("", "soketi-test-bin")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "soketi")
		_, here, _, _ := runtime.Caller(0)
		cmd := exec.Command("go", "build", "-o", binPath, "./cmd/soketi")
		cmd.Dir = filepath.Join(filepath.Dir(here), "..", "..")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/soketi: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}
