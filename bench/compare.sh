#!/usr/bin/env bash
# Compares WebSocket servers on this machine under the same load, A B C A B C:
# soketi 1.6.1 (shared/tools/soketi-reference.sh), this server with the
# event-loop transport and with the goroutine transport. Each server is
# started fresh for each run, on loopback, and the load tool samples its CPU
# and RSS. Prints every run, then the median of each figure per server.
#
#   bench/compare.sh [-r 3] [-s rate|saturate|idle] [-targets "soketi eventloop goroutine"] [-- bench flags...]
#
# eventloop-write is a fourth target: the event loop with SOKETI_WS_IO_URING=false.
#
#   rate:     1,000 subscribers, 40 publishes/s for 10 s (40k deliveries/s):
#             server CPU per delivery over the publish phase, latency p50/p99/p99.9
#   saturate: 1,000 subscribers, publishing as fast as 4 publishers can for 5 s:
#             deliveries per second
#   idle:     15,000 idle subscribed connections: RSS per connection
#
# SOKETI_BIN and BENCH_BIN name prebuilt binaries; otherwise both are built.
# REFERENCE names the reference tool (default ../shared/tools/soketi-reference.sh).
set -euo pipefail

rounds=3 scenario=rate targets="soketi eventloop goroutine"
while (($#)); do
	case $1 in
	-r) rounds=$2; shift 2 ;;
	-s) scenario=$2; shift 2 ;;
	-targets) targets=$2; shift 2 ;;
	--) shift; break ;;
	-h | --help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) break ;;
	esac
done
case $scenario in
rate) load=(-subscribers 1000 -rate 40 -duration 10s) ;;
saturate) load=(-subscribers 1000 -saturate -duration 5s) ;;
idle) load=(-subscribers 15000 -idle -idle-wait 5s -connect-workers 100 -connect-timeout 30s) ;;
*) echo "compare.sh: -s must be rate, saturate or idle" >&2; exit 2 ;;
esac

root=$(cd "$(dirname "$0")/.." && pwd)
reference=${REFERENCE:-$root/../shared/tools/soketi-reference.sh}
work=$(mktemp -d /tmp/soketi-compare.XXXXXX)
port=6101 ref_port=6102 metrics_port=9701
pid=""

cleanup() {
	[[ -n $pid ]] && kill -KILL "$pid" 2>/dev/null || true
	bash "$reference" stop >/dev/null 2>&1 || true
	rm -rf "$work"
}
trap cleanup EXIT INT TERM

soketi_bin=${SOKETI_BIN:-$work/soketi}
bench_bin=${BENCH_BIN:-$work/bench}
[[ -n ${SOKETI_BIN:-} ]] || (cd "$root" && go build -o "$soketi_bin" ./cmd/soketi)
[[ -n ${BENCH_BIN:-} ]] || (cd "$root" && go build -o "$bench_bin" ./bench)
if [[ $targets == *soketi* ]]; then
	bash "$reference" install >/dev/null
	bash "$reference" stop >/dev/null 2>&1 || true
fi

wait_http() { # port
	for _ in $(seq 100); do
		curl -fsS "http://127.0.0.1:$1/" >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	echo "compare.sh: no server on :$1" >&2
	return 1
}

start() { # target -> sets pid, target_port
	case $1 in
	soketi)
		pid=$(bash "$reference" start "$ref_port" 2>/dev/null | tail -1)
		target_port=$ref_port
		;;
	eventloop | goroutine | eventloop-write)
		# eventloop-write: the event loop without io_uring, as in Docker.
		local io_uring=true
		[[ $1 == eventloop-write ]] && io_uring=false
		SOKETI_WS_TRANSPORT=${1%-write} SOKETI_WS_IO_URING=$io_uring SOKETI_PORT=$port SOKETI_METRICS_SERVER_PORT=$metrics_port \
			"$soketi_bin" start >"$work/$1.log" 2>&1 &
		pid=$!
		target_port=$port
		;;
	*) echo "compare.sh: unknown target $1" >&2; exit 2 ;;
	esac
	wait_http "$target_port"
}

stop() { # target
	if [[ $1 == soketi ]]; then
		bash "$reference" stop >/dev/null 2>&1 || true
	else
		kill -TERM "$pid" 2>/dev/null || true
		for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$pid" 2>/dev/null || true
	fi
	pid=""
	sleep 1
}

results=$work/results.tsv
for r in $(seq "$rounds"); do
	for t in $targets; do
		start "$t"
		out=$work/$t-$r.json
		"$bench_bin" -port "$target_port" -server-pid "$pid" -quiet -json "${load[@]}" "$@" >"$out" || true
		stop "$t"
		python3 - "$t" "$r" "$out" >>"$results" <<-'EOF'
			import json, sys
			t, r, path = sys.argv[1:]
			try:
			    j = json.load(open(path))
			except Exception as e:
			    print(f"{t}\t{r}\terror\t{e}"); sys.exit()
			s, d, l = j.get("server", {}), j.get("delivery", {}), j.get("latency_us", {})
			fig = {
			    "cpu_us_per_delivery": s.get("cpu_per_delivery_us"),
			    "deliveries_per_s": d.get("deliveries_per_sec"),
			    "lost": d.get("lost"),
			    "p50_ms": l.get("p50", 0) / 1000 if l else None,
			    "p99_ms": l.get("p99", 0) / 1000 if l else None,
			    "p999_ms": l.get("p99_9", 0) / 1000 if l else None,
			    "rss_kib_per_conn": s.get("rss_per_connection_bytes", 0) / 1024 if s else None,
			    "connected": j.get("connect", {}).get("subscribed"),
			}
			print(f"{t}\t{r}\t" + "\t".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in fig.items() if v is not None))
		EOF
		tail -1 "$results"
	done
done

echo "== medians ($scenario, $rounds rounds)"
python3 - "$results" <<'EOF'
import sys, statistics
runs = {}
for line in open(sys.argv[1]):
    t, _, *kv = line.rstrip("\n").split("\t")
    for f in kv:
        if "=" not in f:
            continue
        k, v = f.split("=", 1)
        try:
            runs.setdefault(t, {}).setdefault(k, []).append(float(v))
        except ValueError:
            pass
for t, figs in runs.items():
    print(t + "\t" + "\t".join(f"{k}={statistics.median(v):.2f}" for k, v in figs.items()))
EOF
