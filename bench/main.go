// Command bench is a load generator for Pusher-protocol WebSocket servers
// (soketi and compatible). It opens many subscribers on loopback, publishes
// signed HTTP events at a fixed rate or as fast as possible, and reports
// connection rate, delivery throughput, latency percentiles, loss,
// duplication and reordering, plus optional server CPU/RSS figures.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type config struct {
	targets    []string // host:port of each server; subscribers spread round-robin
	pubTargets []string // servers the publishers use (default: targets)

	appID, key, secret string
	channelPrefix      string
	event              string

	subscribers    int
	channels       int
	connectWorkers int
	connectTimeout time.Duration

	rate       float64
	saturate   bool
	publishers int
	duration   time.Duration
	messages   int
	payload    int
	drain      time.Duration

	// maxDeliveries caps accepted publishes × subscribers; it bounds the
	// receive bitsets (one bit per expected delivery).
	maxDeliveries int64

	deadline     time.Duration
	pingInterval time.Duration

	idle     bool
	idleWait time.Duration

	serverPIDs []int

	// Presence churn: joins per second on presenceChannel, each member
	// leaving after presenceHold; observers watch the member events.
	presenceChurn     float64
	presenceChannel   string
	presenceHold      time.Duration
	presenceObservers int

	plotFile       string
	timeseriesFile string

	jsonOut    bool
	quiet      bool
	cpuProfile string
}

// usageError marks configuration and safety refusals, which exit with 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return usageError{fmt.Sprintf(format, a...)} }

func isUsage(err error) bool {
	var u usageError
	return errors.As(err, &u)
}

func parseFlags(args []string, stderr io.Writer) (*config, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := &config{}
	var (
		host, urls, pubURLs, pids string
		port                      int
	)
	fs.StringVar(&host, "host", "127.0.0.1", "server host (loopback or 198.18.0.0/15 only)")
	fs.IntVar(&port, "port", 6001, "server port")
	fs.StringVar(&urls, "urls", "", "comma-separated server list (ws://host:port or host:port); overrides -host/-port; subscribers and publishers are spread round-robin")
	fs.StringVar(&pubURLs, "publish-urls", "", "servers the publishers use (same syntax as -urls; default: all of -urls), e.g. one node to compare local and cross-node delivery")
	fs.StringVar(&c.appID, "app-id", "app-id", "app id")
	fs.StringVar(&c.key, "key", "app-key", "app key")
	fs.StringVar(&c.secret, "secret", "app-secret", "app secret")
	fs.StringVar(&c.channelPrefix, "channel-prefix", "bench-", "channel name prefix; channels are PREFIX0..PREFIX(C-1)")
	fs.StringVar(&c.event, "event", "bench", "event name to publish")
	fs.IntVar(&c.subscribers, "subscribers", 1000, "number of subscriber connections")
	fs.IntVar(&c.channels, "channels", 1, "number of channels; subscriber i joins channel i%C, publishes round-robin over channels")
	fs.IntVar(&c.connectWorkers, "connect-workers", 50, "concurrent connection attempts")
	fs.DurationVar(&c.connectTimeout, "connect-timeout", 10*time.Second, "timeout per connection (dial + connection_established + subscribe)")
	fs.Float64Var(&c.rate, "rate", 40, "publishes per second; 0 means saturate")
	fs.BoolVar(&c.saturate, "saturate", false, "publish as fast as possible with -publishers concurrent publishers")
	fs.IntVar(&c.publishers, "publishers", 4, "concurrent HTTP publishers")
	fs.DurationVar(&c.duration, "duration", 10*time.Second, "publish phase length")
	fs.IntVar(&c.messages, "messages", 0, "stop after this many publishes (0 = no count limit); if set without -duration, only -deadline bounds time")
	fs.IntVar(&c.payload, "payload", 0, "pad each message's data to this many bytes")
	fs.DurationVar(&c.drain, "drain", 2*time.Second, "how long to wait for outstanding deliveries after publishing")
	fs.Int64Var(&c.maxDeliveries, "max-deliveries", 100_000_000, "stop publishing once accepted publishes × subscribers reaches this")
	fs.DurationVar(&c.deadline, "deadline", 2*time.Minute, "hard limit on the whole run; on expiry it stops and reports")
	fs.DurationVar(&c.pingInterval, "ping", 30*time.Second, "pusher:ping interval per connection")
	fs.BoolVar(&c.idle, "idle", false, "connect and subscribe, wait -idle-wait, report memory per connection, exit")
	fs.DurationVar(&c.idleWait, "idle-wait", 5*time.Second, "settle time in -idle mode before measuring")
	fs.StringVar(&pids, "server-pid", "", "server PID (comma-separated for several) to sample CPU and RSS from /proc")
	fs.Float64Var(&c.presenceChurn, "presence-churn", 0, "presence joins per second during the publish phase, spread over the servers (each member leaves after -presence-hold); 0 = off")
	fs.StringVar(&c.presenceChannel, "presence-channel", "presence-bench", "presence channel for -presence-churn")
	fs.DurationVar(&c.presenceHold, "presence-hold", time.Second, "how long each churn member stays before leaving")
	fs.IntVar(&c.presenceObservers, "presence-observers", 3, "sockets that stay on the presence channel and count member_added/member_removed")
	fs.StringVar(&c.plotFile, "plot", "", "write an SVG plot of per-second latency and deliveries to this file")
	fs.StringVar(&c.timeseriesFile, "timeseries", "", "write per-second figures as CSV to this file")
	fs.BoolVar(&c.jsonOut, "json", false, "print the report as one JSON object")
	fs.BoolVar(&c.quiet, "quiet", false, "no progress lines on stderr")
	fs.StringVar(&c.cpuProfile, "cpuprofile", "", "write the tool's own CPU profile to this file")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, usageError{err.Error()}
	}
	if fs.NArg() > 0 {
		return nil, usagef("unexpected arguments %q", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	var err error
	if urls != "" {
		c.targets, err = parseTargets(urls, port)
	} else {
		c.targets, err = parseTargets(net.JoinHostPort(host, strconv.Itoa(port)), port)
	}
	if err != nil {
		return nil, err
	}
	c.pubTargets = c.targets
	if pubURLs != "" {
		if c.pubTargets, err = parseTargets(pubURLs, port); err != nil {
			return nil, err
		}
	}
	if pids != "" {
		for _, p := range strings.Split(pids, ",") {
			pid, err := strconv.Atoi(strings.TrimSpace(p))
			if err != nil || pid <= 0 {
				return nil, usagef("bad -server-pid %q", p)
			}
			c.serverPIDs = append(c.serverPIDs, pid)
		}
	}
	if c.rate == 0 {
		c.saturate = true
	}
	if c.messages > 0 && !set["duration"] {
		c.duration = c.deadline
	}
	switch {
	case c.subscribers < 1:
		err = errors.New("-subscribers must be at least 1")
	case c.channels < 1 || c.channels > c.subscribers:
		err = errors.New("-channels must be between 1 and -subscribers")
	case c.connectWorkers < 1:
		err = errors.New("-connect-workers must be at least 1")
	case c.publishers < 1 || c.publishers > 1000:
		err = errors.New("-publishers must be between 1 and 1000")
	case c.rate < 0:
		err = errors.New("-rate must not be negative")
	case c.duration <= 0 || c.deadline <= 0 || c.connectTimeout <= 0 || c.pingInterval <= 0:
		err = errors.New("durations must be positive")
	case c.messages < 0 || c.payload < 0 || c.payload > 1<<20 || c.maxDeliveries < 1:
		err = errors.New("-messages, -payload (max 1 MiB) and -max-deliveries must be sensible")
	case c.presenceChurn < 0 || c.presenceChurn > 10_000:
		err = errors.New("-presence-churn must be between 0 and 10000 per second")
	case c.presenceChurn > 0 && (c.presenceObservers < 1 || c.presenceObservers > 100):
		err = errors.New("-presence-observers must be between 1 and 100")
	case c.presenceChurn > 0 && (c.presenceHold < 0 || c.presenceHold > time.Minute):
		err = errors.New("-presence-hold must be between 0 and 1m")
	case c.presenceChurn > 0 && c.idle:
		err = errors.New("-presence-churn runs during the publish phase; it cannot be combined with -idle")
	case c.presenceChurn > 0 && !strings.HasPrefix(c.presenceChannel, "presence-"):
		err = errors.New("-presence-channel must start with presence-")
	}
	if err != nil {
		return nil, usageError{err.Error()}
	}
	// Every publish server gets the same number of publishers, so paced
	// publishes split evenly between them.
	if n := len(c.pubTargets); c.publishers%n != 0 {
		c.publishers += n - c.publishers%n
	}
	return c, nil
}

// parseTargets turns "ws://h:p,h2:p2" into validated host:port strings and
// enforces the loopback / test-network restriction.
func parseTargets(list string, defPort int) ([]string, error) {
	var out []string
	for _, raw := range strings.Split(list, ",") {
		t := strings.TrimSpace(raw)
		if t == "" {
			continue
		}
		if scheme, rest, ok := strings.Cut(t, "://"); ok {
			switch scheme {
			case "ws", "http":
			default:
				return nil, usagef("%q: only ws:// and http:// are supported", t)
			}
			t = rest
		}
		t, _, _ = strings.Cut(t, "/")
		host, port, err := net.SplitHostPort(t)
		if err != nil {
			host, port = strings.Trim(t, "[]"), strconv.Itoa(defPort)
		}
		if !allowedHost(host) {
			return nil, usagef("refusing to load %q: only loopback (127.0.0.0/8, ::1, localhost) and 198.18.0.0/15 are allowed", host)
		}
		if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
			return nil, usagef("bad port in %q", raw)
		}
		out = append(out, net.JoinHostPort(host, port))
	}
	if len(out) == 0 {
		return nil, usagef("no server address given")
	}
	return out, nil
}

var benchNet = &net.IPNet{IP: net.IPv4(198, 18, 0, 0), Mask: net.CIDRMask(15, 32)}

// allowedHost accepts only addresses that cannot leave the machine or the
// project's network-namespace test range. Names other than "localhost" are
// refused rather than resolved, so DNS cannot redirect the load elsewhere.
func allowedHost(h string) bool {
	if strings.EqualFold(h, "localhost") {
		return true
	}
	ip := net.ParseIP(h)
	if ip == nil {
		return false
	}
	return ip.IsLoopback() || benchNet.Contains(ip)
}

// checkLimits raises the open-file limit and refuses runs that cannot fit.
func checkLimits(c *config, log io.Writer) error {
	soft, err := raiseNoFile()
	if err != nil {
		return fmt.Errorf("raising RLIMIT_NOFILE: %v", err)
	}
	// Besides one descriptor per subscriber: publishers' HTTP connections,
	// stdio, /proc reads and the runtime's own descriptors.
	need := uint64(c.subscribers + c.presenceSockets() + 2*c.publishers + 32)
	if need > soft {
		return usagef("%d subscribers need about %d file descriptors but the limit is %d (already raised to the hard limit); lower -subscribers or raise the hard limit (ulimit -Hn)",
			c.subscribers, need, soft)
	}
	if ports := localPortRange(); ports > 0 {
		perTarget := (c.subscribers + len(c.targets) - 1) / len(c.targets)
		if perTarget > ports {
			fmt.Fprintf(log, "warning: %d connections per server address exceed the %d ephemeral ports; expect connect failures\n", perTarget, ports)
		}
	}
	return nil
}

func main() { os.Exit(mainExit()) }

// mainExit returns the exit status: 0 done, 1 run failure, 2 usage or safety
// refusal. Deferred cleanups (profile, signal handler) run before exiting.
func mainExit() int {
	c, err := parseFlags(os.Args[1:], os.Stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 2
	}
	if err := checkLimits(c, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		if isUsage(err) {
			return 2
		}
		return 1
	}
	if c.cpuProfile != "" {
		f, err := os.Create(c.cpuProfile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			return 1
		}
		defer pprof.StopCPUProfile()
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var log io.Writer = os.Stderr
	if c.quiet {
		log = io.Discard
	}
	rep, err := run(ctx, c, log)
	if rep != nil {
		if c.jsonOut {
			if err := json.NewEncoder(os.Stdout).Encode(rep); err != nil {
				fmt.Fprintln(os.Stderr, "bench:", err)
			}
		} else {
			rep.writeText(os.Stdout)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	return 0
}
