// Command soketi is a Pusher-protocol WebSocket server whose nodes can form a
// cluster on a private network with no third-party service.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/joho/godotenv"

	"github.com/soketi-go/soketi/internal/config"
	"github.com/soketi-go/soketi/pkg/pusher"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const usage = `soketi — a Pusher-protocol WebSocket server

Usage:
  soketi start [--config FILE]   start the server
  soketi --help                  show this help
  soketi --version               print the version

Configuration comes from built-in defaults, then the JSON file given with
--config (keys are soketi's dot paths, such as "port" or "appManager.array.apps"),
then environment variables (SOKETI_PORT, SOKETI_DEFAULT_APP_ID, ADAPTER_DRIVER, ...),
also read from a .env file in the working directory. See the README for every variable.
`

// defaultGCPercent is the garbage collector's target when GOGC is not set.
// A node's live heap is mostly long-lived connection state, and the
// runtime keeps heap up to (1 + GOGC/100) × live: at Go's 100, 15,000 idle
// connections held 3.1 KiB each, at 50 they held 2.5 KiB. A fan-out
// allocates only its frame, so collecting more often costs little CPU.
const defaultGCPercent = 50

func main() {
	_ = godotenv.Load() // a missing .env is normal
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(defaultGCPercent)
	}
	os.Exit(run(os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

// run is main without the process globals, so tests can drive it.
func run(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	case "-v", "--version", "version":
		fmt.Fprintln(stdout, "soketi", version)
		return 0
	case "start":
	default:
		fmt.Fprintf(stderr, "soketi: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	configPath := ""
	for i := 1; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--config" || a == "-c":
			if i+1 >= len(args) {
				fmt.Fprintln(stderr, "soketi: --config needs a file path")
				return 2
			}
			configPath = args[i+1]
			i++
		case strings.HasPrefix(a, "--config="):
			configPath = strings.TrimPrefix(a, "--config=")
		case a == "-h" || a == "--help":
			fmt.Fprint(stdout, usage)
			return 0
		default:
			fmt.Fprintf(stderr, "soketi: unknown flag %q\n", a)
			return 2
		}
	}
	cfg, err := config.Load(configPath, getenv)
	if err != nil {
		fmt.Fprintf(stderr, "soketi: %v\n", err)
		return 2
	}
	level := slog.LevelInfo
	if cfg.Debug {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	if err := serve(ctx, cfg, logger); err != nil {
		var cfgErr *config.Error
		if errors.As(err, &cfgErr) { // found only while starting: a value the operator must fix
			fmt.Fprintf(stderr, "soketi: %v\n", err)
			return 2
		}
		logger.Error("server stopped", "err", err)
		return 1
	}
	return 0
}

// serve runs the node until ctx ends, then shuts down gracefully.
func serve(ctx context.Context, cfg *config.Config, logger *slog.Logger) error {
	apps, err := pusher.NewStaticApps(cfg.Apps)
	if err != nil {
		return err
	}
	var tlsCfg *tls.Config
	if cfg.SSL.Enabled() {
		if tlsCfg, err = loadTLS(cfg.SSL); err != nil {
			return err
		}
	}
	node, err := newNode(ctx, cfg, apps, logger)
	if err != nil {
		return err
	}
	defer node.close()

	mainLn, err := net.Listen("tcp", net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.Port)))
	if err != nil {
		return fmt.Errorf("listen on port %d: %w", cfg.Port, err)
	}
	metricsLn, err := net.Listen("tcp", net.JoinHostPort(cfg.Metrics.Host, strconv.Itoa(cfg.Metrics.Port)))
	if err != nil {
		mainLn.Close()
		return fmt.Errorf("listen on metrics port %d: %w", cfg.Metrics.Port, err)
	}
	if tlsCfg != nil {
		mainLn = tls.NewListener(mainLn, tlsCfg)
	}

	// Default bounds on headers, API bodies and idle keep-alives; none on the
	// WebSocket connections these servers hijack.
	mainSrv := pusher.NewHTTPServer(node.handler, pusher.HTTPTimeouts{}, logger)
	metricsSrv := pusher.NewHTTPServer(node.metricsHandler, pusher.HTTPTimeouts{}, logger)
	errc := make(chan error, 2)
	go func() { errc <- mainSrv.Serve(mainLn) }()
	go func() { errc <- metricsSrv.Serve(metricsLn) }()
	logger.Info("soketi started", "version", version, "address", mainLn.Addr().String(),
		"metrics_address", metricsLn.Addr().String(), "adapter", cfg.AdapterDriver, "mode", cfg.Mode, "apps", len(cfg.Apps))

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
	}
	logger.Info("shutting down", "grace_period", cfg.ShutdownGracePeriod)
	node.shutdown(cfg.ShutdownGracePeriod)
	shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = mainSrv.Shutdown(shutCtx)
	_ = metricsSrv.Shutdown(shutCtx)
	if serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) {
		return serveErr
	}
	return nil
}

// loadTLS loads the key pair that config.Load has checked; an error (the
// files changed since) is a *config.Error naming the variable.
func loadTLS(s config.SSL) (*tls.Config, error) {
	cert, err := s.Certificate()
	if err != nil {
		return nil, err
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}
