#!/usr/bin/env bash
# Starts N soketi nodes of the real binary on this machine, waits until they
# form one cluster (N alive members and a Raft leader on every node), runs the
# load tool against all of them with -urls and -server-pid, and stops
# everything on exit. The whole run is bounded by -t.
#
#   bench/cluster.sh [-n 3] [-t 300] [-netns] [-redis] [-keep-logs] [-- bench flags...]
#
# Loopback mode (default): node i listens on 127.0.0.i, WebSocket/API port
# 620i, metrics port 960i, discovery by unicast to every node's address.
# -netns (root): each node in its own network namespace on a bridge in
# 198.18.x.0/24 (broadcast discovery, as on a LAN), port 6001 everywhere.
# -n 1 starts one node with the local adapter, for single-node comparison.
# -redis (loopback only) runs the nodes with ADAPTER_DRIVER=redis against a
# fresh redis-server on 127.0.0.1:16379, whose CPU is counted with theirs.
#
# SOKETI_BIN and BENCH_BIN name prebuilt binaries; otherwise both are built.
# Further environment (e.g. SOKETI_DEFAULT_APP_MAX_BACKEND_EVENTS_PER_SEC) is
# passed to the nodes.
set -euo pipefail

nodes=3 limit=300 netns=false keep=false redis=false
while (($#)); do
	case $1 in
	-n) nodes=$2; shift 2 ;;
	-t) limit=$2; shift 2 ;;
	-netns) netns=true; shift ;;
	-redis) redis=true; shift ;;
	-keep-logs) keep=true; shift ;;
	--) shift; break ;;
	-h | --help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) break ;;
	esac
done
if ! [[ $nodes =~ ^[0-9]+$ ]] || ((nodes < 1 || nodes > 9)); then
	echo "cluster.sh: -n must be 1-9" >&2
	exit 2
fi
if ! [[ $limit =~ ^[0-9]+$ ]] || ((limit < 10)); then
	echo "cluster.sh: -t must be at least 10 (seconds)" >&2
	exit 2
fi

root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/soketi-cluster.XXXXXX)
started=$SECONDS
pids=() netnames=() bridge="" lockfd=""

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	# SIGTERM starts the (shortened) grace period; then insist.
	for _ in $(seq 80); do
		local alive=0
		for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
		((alive)) || break
		sleep 0.1
	done
	for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
	for n in "${netnames[@]}"; do ip netns del "$n" 2>/dev/null || true; done
	[[ -n $bridge ]] && ip link del "$bridge" 2>/dev/null
	if [[ $keep == true ]]; then
		echo "cluster.sh: logs kept in $work" >&2
	else
		rm -rf "$work"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

remaining() { echo $((limit - (SECONDS - started))); }

soketi=${SOKETI_BIN:-}
bench=${BENCH_BIN:-}
if [[ -z $soketi ]]; then
	soketi=$work/soketi
	(cd "$root" && go build -o "$soketi" ./cmd/soketi)
fi
if [[ -z $bench ]]; then
	bench=$work/bench
	(cd "$root" && go build -o "$bench" ./bench)
fi

adapter=cluster
((nodes == 1)) && adapter=local
redis_pid=""
if [[ $redis == true ]]; then
	[[ $netns == false ]] || { echo "cluster.sh: -redis runs on loopback only" >&2; exit 2; }
	adapter=redis
	redis-server --port 16379 --bind 127.0.0.1 --save '' --appendonly no --protected-mode no >"$work/redis.log" 2>&1 &
	redis_pid=$!
	pids+=("$redis_pid")
	disown "$redis_pid"
fi

hosts=() ports=() unicast=""
if [[ $netns == true ]]; then
	if ((EUID != 0)); then
		echo "cluster.sh: -netns needs root" >&2
		exit 2
	fi
	# Reserve a free /24 of 198.18.0.0/15 with the same lock files the
	# namespace tests use, so concurrent runs never share a subnet.
	for _ in $(seq 64); do
		idx=$((RANDOM % 512))
		exec {lockfd}>"/tmp/soketi-netns-$(printf %03x "$idx").lock"
		flock -n "$lockfd" && break
		exec {lockfd}>&-
		lockfd=""
	done
	[[ -n $lockfd ]] || { echo "cluster.sh: no free subnet" >&2; exit 1; }
	id=$(printf %03x "$idx")
	net="198.$((18 + idx / 256)).$((idx % 256))"
	bridge="skb${id}br"
	ip link add name "$bridge" type bridge mcast_snooping 0
	ip addr add "$net.254/24" dev "$bridge"
	ip link set "$bridge" up
	for i in $(seq "$nodes"); do
		ns="skb${id}h$i"
		ip netns add "$ns"
		netnames+=("$ns")
		ip link add "skb${id}v$i" type veth peer name "skb${id}p$i"
		ip link set "skb${id}p$i" netns "$ns"
		ip link set "skb${id}v$i" master "$bridge" up
		ip -n "$ns" link set "skb${id}p$i" name eth0
		ip -n "$ns" addr add "$net.$i/24" dev eth0
		ip -n "$ns" link set eth0 up
		ip -n "$ns" link set lo up
		hosts+=("$net.$i") ports+=(6001)
	done
else
	for i in $(seq "$nodes"); do
		hosts+=("127.0.0.$i") ports+=($((6200 + i)))
		unicast+="${unicast:+,}\"127.0.0.$i\""
	done
fi

for i in $(seq "$nodes"); do
	h=${hosts[i - 1]}
	env=(
		SOKETI_HOST="$h" SOKETI_PORT="${ports[i - 1]}"
		SOKETI_METRICS_HOST="$h" SOKETI_METRICS_SERVER_PORT=$((9600 + i))
		ADAPTER_DRIVER=$adapter SOKETI_DB_REDIS_PORT=16379
		CLUSTER_HOST="$h" CLUSTER_ADVERTISE_ADDRESS="$h" CLUSTER_NODE_ID="node$i"
		CLUSTER_EXPECTED_SERVERS="$nodes" CLUSTER_DATA_DIR="$work/data$i"
		SOKETI_SHUTDOWN_GRACE_PERIOD="${SOKETI_SHUTDOWN_GRACE_PERIOD:-500}"
	)
	if [[ $netns == true ]]; then
		env+=(CLUSTER_BROADCAST_ADDRESS="${h%.*}.255")
		ip netns exec "${netnames[i - 1]}" env "${env[@]}" "$soketi" start >"$work/node$i.log" 2>&1 &
	else
		env+=(CLUSTER_UNICAST_ADDRESSES="[$unicast]")
		env "${env[@]}" "$soketi" start >"$work/node$i.log" 2>&1 &
	fi
	pids+=($!)
	disown $! # no job-status noise when cleanup has to SIGKILL
done

# Ready: every node answers; in cluster mode every node sees all nodes alive,
# knows the Raft leader, has quorum, is registered and counts N voters (before
# that, presence joins are refused with 4302).
ready() {
	local i url
	for i in $(seq "$nodes"); do
		url="http://${hosts[i - 1]}:${ports[i - 1]}"
		if [[ $adapter == local ]]; then
			curl -fsS -m 1 "$url/" >/dev/null 2>&1 || return 1
			continue
		fi
		if [[ $adapter == redis ]]; then
			curl -fsS -m 1 "$url/ready" >/dev/null 2>&1 || return 1
			continue
		fi
		# The whole view is on the metrics port (a keyed node's public
		# /cluster shows a summary only).
		curl -fsS -m 1 "http://${hosts[i - 1]}:$((9600 + i))/cluster" 2>/dev/null |
			jq -e --argjson n "$nodes" \
				'([.members[] | select(.state == "alive")] | length) == $n and (.raft.leader_id // "") != ""
				 and (.quorum // true) and .raft.registered and (.raft.voters | length) == $n' \
				>/dev/null 2>&1 || return 1
	done
}
wait_s=$((limit / 3 < 60 ? limit / 3 : 60))
until ready; do
	for p in "${pids[@]}"; do
		kill -0 "$p" 2>/dev/null || { echo "cluster.sh: a node exited; see $work" >&2; keep=true; exit 1; }
	done
	if ((SECONDS - started > wait_s)); then
		echo "cluster.sh: the nodes did not form a cluster within ${wait_s}s; logs in $work" >&2
		keep=true
		exit 1
	fi
	sleep 0.2
done
echo "cluster.sh: $nodes node(s) ready in $((SECONDS - started))s (adapter $adapter): ${hosts[*]}" >&2

urls="" pidlist="$redis_pid"
nodepids=("${pids[@]}")
[[ -n $redis_pid ]] && nodepids=("${pids[@]:1}")
for i in $(seq "$nodes"); do
	urls+="${urls:+,}ws://${hosts[i - 1]}:${ports[i - 1]}"
	pidlist+="${pidlist:+,}${nodepids[i - 1]}"
done
left=$(remaining)
((left > 5)) || { echo "cluster.sh: no time left for the run" >&2; exit 1; }
# -deadline keeps the tool's own bound inside the script's; timeout backs it up.
timeout -k 5 "$left" "$bench" -urls "$urls" -server-pid "$pidlist" -deadline "$((left - 5))s" "$@"
