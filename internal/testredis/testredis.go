// Package testredis runs a real redis-server (Debian's redis-server
// package) for tests, on a free loopback port, without persistence, and
// stops it when the test ends. In CI a missing redis-server fails the test;
// elsewhere it skips.
package testredis

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Server is one redis-server process; Restart keeps its address.
type Server struct {
	t    testing.TB
	bin  string
	Addr string
	port int
	args []string    // beyond the port, persistence and binding
	tls  *tls.Config // to reach a TLS-only server

	mu     sync.Mutex
	cmd    *exec.Cmd
	out    bytes.Buffer
	exited chan struct{}
}

// Start runs a redis-server and waits until it answers PING.
func Start(t testing.TB) *Server {
	t.Helper()
	s := newServer(t)
	s.start()
	t.Cleanup(s.Stop)
	return s
}

func newServer(t testing.TB) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("no redis-server on PATH: CI must run the Redis tests (.ci/run installs Debian's redis-server)")
		}
		t.Skip("no redis-server on PATH (apt-get install redis-server)")
	}
	s := &Server{t: t, bin: bin, port: FreePort(t)}
	s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
	return s
}

// FreePort returns a TCP port free on 127.0.0.1 now.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func (s *Server) start() {
	s.t.Helper()
	s.mu.Lock()
	args := []string{"--port", strconv.Itoa(s.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--protected-mode", "no", "--daemonize", "no"}
	if s.tls != nil { // TLS only: the plain port is closed
		args[1] = "0"
	}
	s.cmd = exec.Command(s.bin, append(args, s.args...)...)
	s.cmd.Stdout, s.cmd.Stderr = &s.out, &s.out
	if err := s.cmd.Start(); err != nil {
		s.mu.Unlock()
		s.t.Fatalf("start redis-server: %v", err)
	}
	exited := make(chan struct{})
	s.exited = exited
	cmd := s.cmd
	go func() { _ = cmd.Wait(); close(exited) }()
	s.mu.Unlock()
	c := redis.NewClient(&redis.Options{Addr: s.Addr, DialTimeout: 200 * time.Millisecond, MaxRetries: -1, TLSConfig: s.tls})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("redis-server on %s never answered: %v\n%s", s.Addr, err, s.output())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *Server) output() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.out.String()
}

// Kill stops the server at once (SIGKILL); its data is gone.
func (s *Server) Kill() {
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-exited
}

// Restart kills the server and starts an empty one on the same address.
func (s *Server) Restart() {
	s.t.Helper()
	s.Kill()
	s.start()
}

// Stop ends the server; tests get it through Cleanup.
func (s *Server) Stop() { s.Kill() }

// Client returns a client of the server, closed when the test ends.
func (s *Server) Client() *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: s.Addr})
	s.t.Cleanup(func() { c.Close() })
	return c
}

// Prefix returns a key prefix unique to this test.
func Prefix(t testing.TB) string {
	return fmt.Sprintf("test-%d-%s:", time.Now().UnixNano(), t.Name())
}
