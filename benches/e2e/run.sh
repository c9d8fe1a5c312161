#!/usr/bin/env bash
# End-to-end performance benchmark of rvs against the kernel, side by side.
#
#   benches/e2e/run.sh [--runs N] [--quick] [--only "fwd nftdnat nat fwd-direct dr tun floor"] [--profile]
#
# floor (not in the default set): examples/afpacket_floor, rvs's packet
# socket code with no director, in the DR topology; small packets only.
#
# --profile: `perf record -a -g -C <director core>` during the first
# small-packet load of each scenario; the report goes to
# benches/e2e/results/perf-<scenario>.txt.
#
# Run by hand as root; never part of `cargo test` or CI. See benches/README.md
# for the packages it needs, the CPU plan and how to read the table.
#
# Network safety: every link, address, route, sysctl and nftables rule is
# created inside network namespaces this script makes (prefix rvsb<pid>-);
# nothing in the root namespace is touched. Addresses are documentation
# ranges only (198.51.100.0/24 client, 203.0.113.0/24 VIP, 192.0.2.0/24
# servers). Every load is bounded in time (its own duration and `timeout`).
# On exit (normal, error, Ctrl-C) the trap kills every process inside our
# namespaces and deletes them.
set -euo pipefail

ARGS="$*"
RUNS=3
QUICK=0
ONLY="fwd nftdnat nat fwd-direct dr tun"
PROFILE=0
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) RUNS="$2"; shift 2 ;;
        --quick) QUICK=1; shift ;;
        --only) ONLY="$2"; shift 2 ;;
        --profile) PROFILE=1; shift ;;
        -h|--help) sed -n 2,15p "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
DUR=5            # seconds per load (trafgen, wrk, iperf3)
AB_N=2000        # requests for the latency test
if [ "$QUICK" = 1 ]; then
    RUNS=1; DUR=3; AB_N=1000
fi
case "$RUNS" in ''|*[!0-9]*|0) echo "--runs wants a positive integer" >&2; exit 2 ;; esac
for s in $ONLY; do
    case "$s" in fwd|nftdnat|nat|fwd-direct|dr|tun|floor) ;; *) echo "unknown scenario $s" >&2; exit 2 ;; esac
done

[ "$(id -u)" = 0 ] || { echo "run as root (network namespaces, AF_PACKET)" >&2; exit 1; }
for t in ip nft trafgen wrk ab iperf3 nginx taskset timeout python3 curl cargo cc; do
    command -v "$t" >/dev/null || {
        echo "missing $t: apt-get install -y iproute2 nftables netsniff-ng wrk apache2-utils iperf3 nginx-light util-linux coreutils python3 curl" >&2
        exit 1
    }
done
[ "$(nproc)" -ge 2 ] || { echo "needs 2 CPUs (generator core 0, director core 1)" >&2; exit 1; }

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
if [ -z "${RVS:-}" ]; then
    (cd "$ROOT" && cargo build --release --quiet)
    RVS="$CARGO_TARGET_DIR/release/rvs"
fi
[ -x "$RVS" ] || { echo "no rvs binary at $RVS" >&2; exit 1; }
FLOOR="$CARGO_TARGET_DIR/release/examples/afpacket_floor"
case " $ONLY " in *" floor "*)
    (cd "$ROOT" && cargo build --release --quiet --example afpacket_floor) ;;
esac

GEN_CPU=0        # load generators, router, bridge, real servers
DIR_CPU=1        # the director: rvs (taskset) or the kernel (RPS on its eth0)
RVS_WORKERS="${RVS_WORKERS:-1}"
export RVS_BUSY_POLL_US="${RVS_BUSY_POLL_US:-0}"
# Opt-in: the guest's idle halt-polling window in ns for the duration of the
# run (cpuidle-haltpoll's guest_halt_poll_ns; restored on exit). At 0, as on
# this VM by default, every idle vCPU halts and each cross-core wake-up (RPS
# IPI, a woken worker) waits for the host to run the vCPU again: the load
# generator then falls into a slow mode at random (benches/README.md). Not a
# network setting, but machine-wide while the bench runs: hence opt-in.
HALT_POLL="/sys/module/haltpoll/parameters/guest_halt_poll_ns"
HALT_POLL_WAS=""
export RVS_BENCH_HALT_POLL_NS="${RVS_BENCH_HALT_POLL_NS:-}"
VIP=203.0.113.10
PFX="rvsb$$-"
TMP=$(mktemp -d /tmp/rvs-bench.XXXXXX)
chmod 755 "$TMP"
RESULTS="$ROOT/benches/e2e/results"
mkdir -p "$RESULTS"
RAW="$TMP/raw.tsv"        # scenario metric run value
: > "$RAW"

log() { printf '[bench %(%T)T] %s\n' -1 "$*" >&2; }

teardown() {
    local ns pid
    for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^$PFX" || true); do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
    done
    for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^$PFX" || true); do
        ip netns del "$ns" 2>/dev/null || true
    done
}
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    teardown
    if [ -n "$HALT_POLL_WAS" ]; then echo "$HALT_POLL_WAS" > "$HALT_POLL" || true; fi
    if { [ "$rc" != 0 ] || [ -n "${KEEP_TMP:-}" ]; } && [ -d "$TMP" ]; then
        log "rc=$rc; logs kept in $TMP"
    else
        rm -rf "$TMP"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
if [ -n "$RVS_BENCH_HALT_POLL_NS" ]; then
    [ -w "$HALT_POLL" ] || { echo "RVS_BENCH_HALT_POLL_NS: no $HALT_POLL (not a cpuidle-haltpoll guest)" >&2; exit 2; }
    HALT_POLL_WAS=$(cat "$HALT_POLL")
    echo "$RVS_BENCH_HALT_POLL_NS" > "$HALT_POLL"
fi

# trafgen dies on EAGAIN from its TX ring kick; the shim keeps it going
# for the whole load (benches/e2e/trafgen_shim.c says why and how).
SHIM="$TMP/trafgen_shim.so"
cc -O2 -shared -fPIC -o "$SHIM" "$ROOT/benches/e2e/trafgen_shim.c" -ldl \
    || { echo "cannot build benches/e2e/trafgen_shim.c" >&2; exit 1; }

nsx() { local h="$1"; shift; ip netns exec "$PFX$h" "$@"; }
ipn() { local h="$1"; shift; ip -n "$PFX$h" "$@"; }
sysn() { nsx "$1" sysctl -qw "$2=$3"; }

# ---------------------------------------------------------------- topology
# Same picture as tests/common/mod.rs:
#  cli 198.51.100.2 ── eth0 ⇄ eth1 ── rtr 198.51.100.1 / 192.0.2.254 (forwarding,
#                                       │  203.0.113.0/24 via 192.0.2.1)
#                              sw: br0 ─┼─ dir 192.0.2.1 (default via .254)
#                                       └─ rs1..rs3 192.0.2.11-13
# $1: gateway of the real servers (192.0.2.1 for NAT, 192.0.2.254 for DR/TUN).
build_topology() {
    local gw="$1" h i addr mac
    teardown
    for h in cli rtr sw dir rs1 rs2 rs3; do
        ip netns add "$PFX$h"
        ipn "$h" link set lo up
        if [ -d /proc/sys/net/ipv6 ]; then
            sysn "$h" net.ipv6.conf.all.disable_ipv6 1
            sysn "$h" net.ipv6.conf.default.disable_ipv6 1
        fi
        if [ "$h" = rtr ]; then sysn "$h" net.ipv4.ip_forward 1; else sysn "$h" net.ipv4.ip_forward 0; fi
    done
    ipn sw link add br0 type bridge stp_state 0 forward_delay 0
    ipn sw link set br0 up
    for k in bridge-nf-call-iptables bridge-nf-call-arptables; do
        [ -e "/proc/sys/net/bridge/$k" ] && sysn sw "net.bridge.$k" 0
    done
    ipn cli link add eth0 address 02:00:00:00:01:02 type veth peer name eth1 address 02:00:00:00:01:01 netns "${PFX}rtr"
    for pair in rtr:192.0.2.254 dir:192.0.2.1 rs1:192.0.2.11 rs2:192.0.2.12 rs3:192.0.2.13; do
        h=${pair%%:*}; addr=${pair#*:}
        mac=$(printf '02:00:00:00:02:%02x' "${addr##*.}")
        ipn "$h" link add eth0 address "$mac" type veth peer name "$h" netns "${PFX}sw"
        ipn sw link set "$h" master br0
        ipn sw link set "$h" up
        ipn "$h" addr add "$addr/24" dev eth0
        ipn "$h" link set eth0 up
    done
    ipn cli addr add 198.51.100.2/24 dev eth0
    ipn cli link set eth0 up
    ipn cli route add default via 198.51.100.1
    ipn rtr addr add 198.51.100.1/24 dev eth1
    ipn rtr link set eth1 up
    ipn rtr route add 203.0.113.0/24 via 192.0.2.1
    ipn dir route add default via 192.0.2.254
    for i in 1 2 3; do ipn "rs$i" route replace default via "$gw"; done
    # Many short connections from one client address.
    sysn cli net.ipv4.ip_local_port_range "1024 65000"
    # CPU plan: the director's receive processing on DIR_CPU, the real
    # servers' on GEN_CPU (RPS on the namespaces' own veth queues).
    nsx dir sh -c "echo $(printf %x $((1 << DIR_CPU))) > /sys/class/net/eth0/queues/rx-0/rps_cpus"
    for i in 1 2 3; do
        nsx "rs$i" sh -c "echo $(printf %x $((1 << GEN_CPU))) > /sys/class/net/eth0/queues/rx-0/rps_cpus"
    done
    # The switch too: what the director sends is bridged on GEN_CPU.
    for h in rtr dir rs1 rs2 rs3; do
        nsx sw sh -c "echo $(printf %x $((1 << GEN_CPU))) > /sys/class/net/$h/queues/rx-0/rps_cpus"
    done
    # Counting (and dropping) the small-packet load where it is delivered.
    for i in 1 2 3; do
        nsx "rs$i" nft -f - <<'EOF'
table inet bench {
  counter udp_in { }
  counter ipip_in { }
  chain pre {
    type filter hook prerouting priority -400; policy accept;
    ip protocol 4 counter name ipip_in
    udp dport 53 counter name udp_in drop
  }
}
EOF
    done
}

start_servers() {
    local i d
    for i in 1 2 3; do
        d="$TMP/nginx-rs$i"
        mkdir -p "$d/html"
        echo "rs$i" > "$d/html/index.html"
        cat > "$d/nginx.conf" <<EOF
user root;
worker_processes 1;
daemon off;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $d;
  proxy_temp_path $d;
  fastcgi_temp_path $d;
  uwsgi_temp_path $d;
  scgi_temp_path $d;
  server { listen 80 reuseport backlog=4096; root $d/html; }
}
EOF
        nsx "rs$i" taskset -c "$GEN_CPU" nginx -c "$d/nginx.conf" >"$d/out.log" 2>&1 &
        disown
    done
    nsx rs1 taskset -c "$GEN_CPU" iperf3 -s >"$TMP/iperf3-s.log" 2>&1 &
    disown
    for i in 1 2 3; do
        wait_for "nginx on rs$i" 10 nsx "rs$i" curl -s -o /dev/null --max-time 1 "http://192.0.2.1$i/"
    done
}

# wait_for WHAT SECONDS CMD…: retries CMD every 0.1 s.
wait_for() {
    local what="$1" secs="$2"; shift 2
    local n=$((secs * 10))
    while [ $n -gt 0 ]; do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1; n=$((n - 1))
    done
    echo "timed out waiting for $what" >&2
    return 1
}

rvs_config() {
    local method="$1" i
    cat <<EOF
[daemon]
interfaces = ["eth0"]
control_socket = "$TMP/control.sock"
workers = $RVS_WORKERS
busy_poll_us = $RVS_BUSY_POLL_US

EOF
    for svc in "web tcp 80 1 2 3" "dns udp 53 1 2 3" "bulk tcp 5201 1"; do
        set -- $svc
        printf '[[virtual_service]]\nname = "%s"\nprotocol = "%s"\naddress = "%s:%s"\nscheduler = "rr"\nforwarding = "%s"\n' \
            "$1" "$2" "$VIP" "$3" "$method"
        local port="$3"; shift 3
        for i in "$@"; do
            printf '[[virtual_service.real_server]]\naddress = "192.0.2.1%s:%s"\n' "$i" "$port"
        done
        echo
    done
}

start_rvs() {
    local method="$1"
    rvs_config "$method" > "$TMP/rvs.toml"
    : > "$TMP/rvs.log"
    ip netns exec "${PFX}dir" taskset -c "$DIR_CPU" "$RVS" run --config "$TMP/rvs.toml" >"$TMP/rvs.log" 2>&1 &
    RVS_PID=$!   # ip netns exec and taskset exec: this is rvs itself
    disown
    wait_for "rvs ready" 10 grep -q "rvs: ready" "$TMP/rvs.log" || { cat "$TMP/rvs.log" >&2; return 1; }
}

# Scenario setup; sets TARGET (what the client addresses).
setup_scenario() {
    local s="$1" i
    RVS_PID=""
    case "$s" in
        fwd|fwd-direct)
            if [ "$s" = fwd ]; then build_topology 192.0.2.1; else build_topology 192.0.2.254; fi
            sysn dir net.ipv4.ip_forward 1
            sysn dir net.ipv4.conf.all.send_redirects 0
            sysn dir net.ipv4.conf.eth0.send_redirects 0
            for i in 1 2 3; do ipn rtr route add "192.0.2.1$i/32" via 192.0.2.1; done
            TARGET=192.0.2.11 ;;
        nftdnat)
            build_topology 192.0.2.1
            sysn dir net.ipv4.ip_forward 1
            sysn dir net.ipv4.conf.all.send_redirects 0
            sysn dir net.ipv4.conf.eth0.send_redirects 0
            nsx dir nft -f - <<EOF
table ip lb {
  chain pre {
    type nat hook prerouting priority dstnat; policy accept;
    ip daddr $VIP tcp dport { 80 } dnat to numgen inc mod 3 map { 0 : 192.0.2.11, 1 : 192.0.2.12, 2 : 192.0.2.13 }
    ip daddr $VIP udp dport { 53 } dnat to numgen inc mod 3 map { 0 : 192.0.2.11, 1 : 192.0.2.12, 2 : 192.0.2.13 }
    ip daddr $VIP tcp dport 5201 dnat to 192.0.2.11
  }
}
EOF
            TARGET=$VIP ;;
        nat)
            build_topology 192.0.2.1
            ipn dir addr add "$VIP/32" dev lo
            TARGET=$VIP ;;
        dr)
            build_topology 192.0.2.254
            for i in 1 2 3; do nsx "rs$i" "$RVS" realserver setup --mode dr --vip "$VIP" >/dev/null; done
            TARGET=$VIP ;;
        floor)
            build_topology 192.0.2.254
            # rs1 takes everything, as a DR real server.
            nsx rs1 "$RVS" realserver setup --mode dr --vip "$VIP" >/dev/null
            # The kernel's copy of each frame is dropped where rvs's
            # steering drops it.
            nsx dir nft -f - <<EOF
table netdev floor {
  chain in {
    type filter hook ingress device eth0 priority -500; policy accept;
    ip daddr $VIP drop
  }
}
EOF
            ip netns exec "${PFX}dir" taskset -c "$DIR_CPU" "$FLOOR" eth0 "$VIP" 02:00:00:00:02:0b 3600 >"$TMP/floor.log" 2>&1 &
            RVS_PID=$!
            disown
            wait_for "afpacket_floor ready" 10 grep -q "afpacket_floor: ready" "$TMP/floor.log" || { cat "$TMP/floor.log" >&2; return 1; }
            TARGET=$VIP ;;
        tun)
            build_topology 192.0.2.254
            for i in 1 2 3; do
                nsx "rs$i" taskset -c "$GEN_CPU" "$RVS" tunnel-endpoint --vip "$VIP" >"$TMP/tun-rs$i.log" 2>&1 &
                disown
                wait_for "tunnel endpoint rs$i" 10 grep -q "rvs: ready" "$TMP/tun-rs$i.log"
            done
            TARGET=$VIP ;;
    esac
    start_servers
    case "$s" in nat|dr|tun) start_rvs "$s" ;; esac
    # Neighbours learnt, paths work.
    wait_for "http via $TARGET" 10 nsx cli curl -s -o /dev/null --fail --max-time 1 "http://$TARGET/"
}

# ---------------------------------------------------------------- measures
cpu_ticks() { awk -v c="cpu$DIR_CPU" '$1 == c { print $2+$3+$4+$5+$6+$7+$8+$9, $5+$6, $8 }' /proc/stat; }
busy_since() { # $1 = "total idle" from cpu_ticks
    local t0 i0 t1 i1 x
    read -r t0 i0 x <<<"$1"; read -r t1 i1 x <<<"$(cpu_ticks)"
    awk -v t="$((t1 - t0))" -v i="$((i1 - i0))" 'BEGIN { printf "%.0f", (t > 0 ? 100 * (t - i) / t : 0) }'
}
softirq_since() { # softirq share of the director core since $1
    local t0 i0 s0 t1 i1 s1
    read -r t0 i0 s0 <<<"$1"; read -r t1 i1 s1 <<<"$(cpu_ticks)"
    awk -v t="$((t1 - t0))" -v s="$((s1 - s0))" 'BEGIN { printf "%.0f", (t > 0 ? 100 * s / t : 0) }'
}
rvs_ticks() { # utime stime of rvs (all threads), or "0 0"
    if [ -n "${RVS_PID:-}" ] && [ -r "/proc/$RVS_PID/stat" ]; then
        sed 's/^.*) //' "/proc/$RVS_PID/stat" | awk '{ print $12, $13 }'
    else echo "0 0"; fi
}
rvs_drop_sum() { # all of rvs's drop counters, or 0 without rvs
    [ -n "${RVS_PID:-}" ] && [ "$SCEN" != floor ] || { echo 0; return; }
    nsx dir timeout 10 "$RVS" services --json --socket "$TMP/control.sock" 2>/dev/null | python3 -c '
import json, sys
try:
    d = json.load(sys.stdin).get("drops") or {}
except ValueError:
    d = {}
vals = d.values() if isinstance(d, dict) else [x.get("packets", x.get("count", 0)) for x in d]
print(sum(int(v or 0) for v in vals))' || echo 0
}
cal_ipis() { # function-call interrupts received so far by GEN_CPU and DIR_CPU
    # The header names the online CPUs' columns ("CPU0 CPU1 ...").
    awk -v g="CPU$GEN_CPU" -v d="CPU$DIR_CPU" '
        NR == 1 { for (i = 1; i <= NF; i++) { if ($i == g) gc = i + 1; if ($i == d) dc = i + 1 } }
        $1 == "CAL:" { print (gc ? $gc : 0), (dc ? $dc : 0) }' /proc/interrupts
}
rec() { printf '%s\t%s\t%s\t%s\n' "$SCEN" "$1" "$RUN" "$2" >> "$RAW"; }
rs_counter() { # sum of counter $1 over the real servers
    local i n=0 v
    for i in 1 2 3; do
        v=$(nsx "rs$i" nft list counter inet bench "$1" | awk '/packets/ { print $2 }')
        n=$((n + v))
    done
    echo "$n"
}

measure_pps() {
    local dst="$1" cfg="$TMP/udp.trafgen" tx0 tx1 d0 d1 o0 o1 c
    cat > "$cfg" <<EOF
{
  eth(da=02:00:00:00:01:01, sa=02:00:00:00:01:02),
  ipv4(sa=198.51.100.2, da=$dst, ttl=64, df),
  udp(sp=dinc(1024, 2047), dp=53),
  fill(0x41, 18)
}
EOF
    # --no-sock-mem / --notouch-irq: do not touch socket memory sysctls or IRQ affinities.
    nsx cli timeout 10 taskset -c "$GEN_CPU" env LD_PRELOAD="$SHIM" trafgen --no-sock-mem --notouch-irq -C -P 1 --dev eth0 --conf "$cfg" -n 3000 >/dev/null 2>&1 || true
    sleep 0.5
    tx0=$(nsx cli cat /sys/class/net/eth0/statistics/tx_packets)
    local drx0 dtx0 drx1 dtx1
    drx0=$(nsx dir cat /sys/class/net/eth0/statistics/rx_packets)
    dtx0=$(nsx dir cat /sys/class/net/eth0/statistics/tx_packets)
    d0=$(rs_counter udp_in); o0=$(rs_counter ipip_in)
    local perf_pid="" stat_pid="" r0 r1 hz
    hz=$(getconf CLK_TCK)
    if [ "$PROFILE" = 1 ] && [ "$RUN" = 1 ]; then
        perf record -q -a -g -C "${PERF_CPUS:-$DIR_CPU}" -o "$TMP/perf-$SCEN.data" -- sleep "$DUR" >/dev/null 2>&1 &
        perf_pid=$!
        if [ -n "${RVS_PID:-}" ]; then
            perf stat -x, -o "$TMP/perf-stat-$SCEN.csv" -p "$RVS_PID" \
                -e syscalls:sys_enter_recvmmsg,syscalls:sys_enter_sendmmsg,syscalls:sys_enter_poll,context-switches,task-clock \
                -- sleep "$DUR" >/dev/null 2>&1 &
            stat_pid=$!
        fi
    fi
    r0=$(rvs_ticks)
    c=$(cpu_ticks)
    local cal0 cal1
    cal0=$(cal_ipis)
    nsx cli timeout -s INT "$DUR" taskset -c "$GEN_CPU" env LD_PRELOAD="$SHIM" trafgen --no-sock-mem --notouch-irq -C -P 1 --dev eth0 --conf "$cfg" >"$TMP/trafgen.log" 2>&1 || true
    local busy si; busy=$(busy_since "$c"); si=$(softirq_since "$c")
    cal1=$(cal_ipis)
    r1=$(rvs_ticks)
    [ -n "$stat_pid" ] && { wait "$stat_pid" || true; }
    if [ -n "$perf_pid" ]; then
        wait "$perf_pid" || true
        {
            echo "# cores ${PERF_CPUS:-$DIR_CPU}, all tasks (cpu-clock samples where no PMU):"
            perf report -i "$TMP/perf-$SCEN.data" --no-children -g none --sort comm,sym --stdio --percent-limit 0.5 2>/dev/null \
                | grep -E '^ +[0-9]' | cut -c1-140 | head -40
            echo "# the director alone (rvs threads, or the kernel's softirq work in any task):"
            perf report -i "$TMP/perf-$SCEN.data" --no-children -g none --comms rvs-worker-0,rvs-worker-1,rvs-timer,ksoftirqd/$DIR_CPU \
                --sort sym --stdio --percent-limit 0.3 2>/dev/null | grep -E '^ +[0-9]' | cut -c1-140 | head -50
        } > "$RESULTS/perf-$SCEN.txt" || true
        [ "${KEEP_TMP:-0}" = 1 ] || rm -f "$TMP/perf-$SCEN.data"
    fi
    sleep 0.5
    tx1=$(nsx cli cat /sys/class/net/eth0/statistics/tx_packets)
    drx1=$(nsx dir cat /sys/class/net/eth0/statistics/rx_packets)
    dtx1=$(nsx dir cat /sys/class/net/eth0/statistics/tx_packets)
    d1=$(rs_counter udp_in); o1=$(rs_counter ipip_in)
    # Offered: what trafgen pushed into its socket (drops in any backlog on
    # the way count as loss); the veth's tx counter only counts successes.
    local sent got=$((d1 - d0)) outer=$((o1 - o0))
    sent=$(awk '/packets outgoing/ { gsub("\r", " "); print $1 }' "$TMP/trafgen.log")
    [ -n "$sent" ] || sent=$((tx1 - tx0))
    if grep -q "Flushing TX_RING failed" "$TMP/trafgen.log"; then
        log "$SCEN run $RUN: trafgen died before the end of its load: this run's pps is not the director's"
    fi
    rec gen_refused "$(awk '/^trafgen shim:/ { n += $3 } END { print n + 0 }' "$TMP/trafgen.log")"
    # For TUN the director's work ends when the encapsulated packet reaches
    # the real server (outer count); the inner count also includes the
    # user-space decapsulation on the real servers.
    local delivered=$got
    [ "$SCEN" = tun ] && delivered=$outer
    rec pps_offered "$(awk -v n="$sent" -v d="$DUR" 'BEGIN { printf "%.0f", n / d }')"
    rec pps "$(awk -v n="$delivered" -v d="$DUR" 'BEGIN { printf "%.0f", n / d }')"
    rec pps_inner "$(awk -v n="$got" -v d="$DUR" 'BEGIN { printf "%.0f", n / d }')"
    rec loss "$(awk -v s="$sent" -v g="$delivered" 'BEGIN { printf "%.1f", (s > 0 ? 100 * (s - g) / s : 0) }')"
    rec pps_busy "$busy"
    # Frames through the director's eth0 per offered packet: 1 in and 1 out
    # when each packet crosses once; more means a loop (e.g. a packet
    # bounced between router and director until its TTL ran out).
    rec dir_rx "$(awk -v n="$((drx1 - drx0))" -v s="$sent" 'BEGIN { printf "%.2f", (s > 0 ? n / s : 0) }')"
    rec dir_tx "$(awk -v n="$((dtx1 - dtx0))" -v s="$sent" 'BEGIN { printf "%.2f", (s > 0 ? n / s : 0) }')"
    rec pps_softirq "$si"
    # Function-call IPIs (RPS wake-ups of another core's backlog, mostly)
    # each core received during the load, per delivered packet: on this VM
    # each costs its sender a trap to the hypervisor (benches/README.md).
    local g0 g1 k0 k1
    read -r g0 k0 <<<"$cal0"; read -r g1 k1 <<<"$cal1"
    rec ipi_gen "$(awk -v n="$((g1 - g0))" -v p="$delivered" 'BEGIN { printf "%.3f", (p > 0 ? n / p : 0) }')"
    rec ipi_dir "$(awk -v n="$((k1 - k0))" -v p="$delivered" 'BEGIN { printf "%.3f", (p > 0 ? n / p : 0) }')"
    local u0 s0 u1 s1
    read -r u0 s0 <<<"$r0"; read -r u1 s1 <<<"$r1"
    rec rvs_usr "$(awk -v t="$((u1 - u0))" -v hz="$hz" -v d="$DUR" 'BEGIN { printf "%.0f", 100 * t / hz / d }')"
    rec rvs_sys "$(awk -v t="$((s1 - s0))" -v hz="$hz" -v d="$DUR" 'BEGIN { printf "%.0f", 100 * t / hz / d }')"
    # Director-core CPU per delivered packet: the core's busy time (nothing
    # but the director runs there during this load on an otherwise idle
    # machine). Softirq time that interrupts rvs is charged both to the
    # core's softirq and to rvs's system time, so "softirq + rvs" (kept in
    # the notes) counts it twice.
    rec cost_us "$(awk -v b="$busy" -v d="$DUR" -v n="$delivered" \
        'BEGIN { printf "%.2f", (n > 0 ? b / 100 * d / n * 1e6 : 0) }')"
    rec cost_split_us "$(awk -v si="$si" -v d="$DUR" -v ru="$(( (u1 - u0) + (s1 - s0) ))" -v hz="$hz" -v n="$delivered" \
        'BEGIN { printf "%.2f", (n > 0 ? (si / 100 * d + ru / hz) / n * 1e6 : 0) }')"
    if [ -n "$stat_pid" ] && [ -s "$TMP/perf-stat-$SCEN.csv" ]; then
        {
            echo "# rvs during the small-packet load: $delivered packets delivered in ${DUR} s (perf stat -p)"
            awk -F, -v n="$delivered" '$1 ~ /^[0-9.]+$/ { printf "%16s  %-32s %10.3f per delivered packet\n", $1, $3, (n > 0 ? $1 / n : 0) }' "$TMP/perf-stat-$SCEN.csv"
        } >> "$RESULTS/perf-$SCEN.txt"
    fi
}

measure_conn() {
    local c out rps err
    c=$(cpu_ticks)
    out=$(nsx cli timeout $((DUR + 15)) taskset -c "$GEN_CPU" wrk -c 32 -t 1 -d "${DUR}s" -H 'Connection: close' "http://$TARGET/" 2>&1 || true)
    rec conn_busy "$(busy_since "$c")"
    echo "$out" > "$TMP/wrk-$SCEN-$RUN.log"
    rps=$(echo "$out" | awk '/^Requests\/sec:/ { print $2 }')
    err=$(echo "$out" | awk '/Socket errors:/ { gsub(",", ""); n += $4 + $6 + $8 + $10 } /Non-2xx/ { n += $NF } END { print n + 0 }')
    rec conn "${rps:-0}"
    rec conn_errors "${err:-0}"
}

measure_latency() {
    local csv="$TMP/ab.csv" c
    rm -f "$csv"
    c=$(cpu_ticks)
    nsx cli timeout 60 taskset -c "$GEN_CPU" ab -q -c 1 -n "$AB_N" -e "$csv" "http://$TARGET/" >"$TMP/ab.log" 2>&1 || true
    rec lat_busy "$(busy_since "$c")"
    rec lat_us "$(awk -F, '$1 == "50" { printf "%.0f", $2 * 1000 }' "$csv" 2>/dev/null || echo 0)"
}

measure_bulk() {
    local json="$TMP/iperf3.json" c
    c=$(cpu_ticks)
    nsx cli timeout $((DUR + 15)) taskset -c "$GEN_CPU" iperf3 -c "$TARGET" -t "$DUR" -J >"$json" 2>&1 || true
    rec bulk_busy "$(busy_since "$c")"
    rec gbps "$(python3 -c 'import json,sys
try: print("%.2f" % (json.load(open(sys.argv[1]))["end"]["sum_received"]["bits_per_second"] / 1e9))
except Exception: print("0")' "$json")"
}

# ---------------------------------------------------------------- main
START=$(date +%s)
LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
log "rvs: $RVS ($(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')); runs=$RUNS, ${DUR}s loads, ab -n $AB_N; scenarios: $ONLY"
for SCEN in $ONLY; do
    log "$SCEN: building"
    setup_scenario "$SCEN"
    PPS_DST=$TARGET
    for RUN in $(seq 1 "$RUNS"); do
        log "$SCEN run $RUN/$RUNS"
        # rvs's drops per load (all reasons), to tell which load they come from.
        loads="pps conn latency bulk"
        # The floor forwards small frames only (no super-frames, no director).
        [ "$SCEN" = floor ] && loads=pps
        for load in $loads; do
            before=$(rvs_drop_sum)
            case "$load" in
                pps) measure_pps "$PPS_DST" ;;
                conn) measure_conn ;;
                latency) measure_latency ;;
                bulk) measure_bulk ;;
            esac
            [ -n "${RVS_PID:-}" ] && [ "$SCEN" != floor ] && rec "drops_$load" "$(( $(rvs_drop_sum) - before ))"
        done
    done
    if [ -f "$TMP/rvs.log" ]; then
        cp "$TMP/rvs.log" "$TMP/rvs-$SCEN.log"
        # rvs's own drop counters over all runs of the scenario.
        nsx dir timeout 10 "$RVS" services --json --socket "$TMP/control.sock" 2>/dev/null | python3 -c '
import json, sys
d = json.load(sys.stdin).get("drops") or {}
items = d.items() if isinstance(d, dict) else [(x.get("reason"), x.get("packets", x.get("count"))) for x in d]
for k, v in items:
    if v: print("drop:%s\tall\t%s" % (k, v))' | sed "s/^/$SCEN\t/" >> "$RAW" || true
    fi
    rm -f "$TMP/rvs.log"
    teardown
done
ELAPSED=$(( $(date +%s) - START ))

# ---------------------------------------------------------------- report
python3 - "$RAW" "$RESULTS/last.md" "$RUNS" "$DUR" "$AB_N" "$ELAPSED" "$RVS_WORKERS" \
    "$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')" "$LOAD" "$ARGS" <<'PY'
import sys, statistics, collections, datetime, platform, os
raw, out, runs, dur, abn, elapsed, workers, commit, load, args = sys.argv[1:11]
vals = collections.defaultdict(list)
for line in open(raw):
    s, m, r, v = line.rstrip("\n").split("\t")
    try:
        vals[(s, m)].append(float(v))
    except ValueError:
        pass
def med(s, m):
    v = vals.get((s, m))
    return statistics.median(v) if v else None
def f(x, fmt):
    return "–" if x is None else format(x, fmt)
order = ["fwd", "nftdnat", "nat", "fwd-direct", "dr", "tun", "floor"]
names = {"fwd": "kernel forwarding (gw = director)", "nftdnat": "nftables DNAT rr",
         "nat": "rvs NAT", "fwd-direct": "kernel forwarding (gw = router)",
         "dr": "rvs DR", "tun": "rvs TUN", "floor": "AF_PACKET floor (no director)"}
scen = [s for s in order if any(k[0] == s for k in vals)]
L = []
cmd = ("benches/e2e/run.sh " + args).strip()
L.append(f"Run {datetime.datetime.now():%Y-%m-%d %H:%M}, commit {commit}, `{cmd}`, "
         f"{runs} run(s) per scenario, medians; {dur} s loads; ab -n {abn}; rvs workers = {workers}, busy_poll_us = {os.environ.get('RVS_BUSY_POLL_US', '0')}; "
         f"guest halt-poll {os.environ.get('RVS_BENCH_HALT_POLL_NS') or 'unchanged'} ns; "
         f"kernel {platform.release()}, {os.cpu_count()} CPUs; load average at start {load}; {elapsed} s in all.")
L.append("")
L.append("| scenario | delivered kpps | loss | director core µs/packet | core-1 busy | conn/s (wrk -c 32) | core-1 busy | p50 latency µs (ab -c 1) | core-1 busy | 1 TCP stream Gbit/s | core-1 busy |")
L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for s in scen:
    p = med(s, "pps")
    L.append(f"| {names[s]} | {f(p and p / 1000, '.0f')} | {f(med(s, 'loss'), '.1f')} % | {f(med(s, 'cost_us'), '.2f')} | {f(med(s, 'pps_busy'), '.0f')} % "
             f"| {f(med(s, 'conn'), '.0f')} | {f(med(s, 'conn_busy'), '.0f')} % "
             f"| {f(med(s, 'lat_us'), '.0f')} | {f(med(s, 'lat_busy'), '.0f')} % "
             f"| {f(med(s, 'gbps'), '.2f')} | {f(med(s, 'bulk_busy'), '.0f')} % |")
L.append("")
L.append("Ratios (rvs / baseline; latency: lower is better, goal in brackets):")
L.append("")
L.append("| rvs vs baseline | pps | conn/s | p50 latency | bulk | director µs/packet |")
L.append("|---|---:|---:|---:|---:|---:|")
def ratio(a, b, m):
    x, y = med(a, m), med(b, m)
    return None if x is None or not y else x / y
for a, b, goal in [("nat", "nftdnat", ("≥ 1.0", "≥ 1.0", "≤ 1.25", "≥ 0.8")),
                   ("nat", "fwd", ("", "", "", "")),
                   ("dr", "fwd-direct", ("≥ 1.0", "≥ 1.0", "≤ 1.0", "≥ 1.0")),
                   ("tun", "fwd-direct", ("≥ 1.0", "≥ 1.0", "≤ 1.0", "≥ 1.0")),
                   ("floor", "fwd-direct", ("", "", "", "")),
                   ("dr", "floor", ("", "", "", ""))]:
    if a in scen and b in scen:
        cells = []
        for m, g in zip(["pps", "conn", "lat_us", "gbps", "cost_us"], goal + ("",)):
            r = ratio(a, b, m)
            cells.append(f"{f(r, '.2f')}" + (f" [{g}]" if g else ""))
        L.append(f"| {names[a]} / {names[b]} | " + " | ".join(cells) + " |")
L.append("")
notes = []
for s in scen:
    off = med(s, "pps_offered")
    e = med(s, "conn_errors")
    extra = f"offered {off / 1000:.0f} kpps" if off is not None else ""
    extra += f"; director eth0 frames per offered packet: in {f(med(s, 'dir_rx'), '.2f')}, out {f(med(s, 'dir_tx'), '.2f')}"
    extra += f"; director core during it: softirq {f(med(s, 'pps_softirq'), '.0f')} %"
    extra += f" (softirq + rvs time per packet {f(med(s, 'cost_split_us'), '.2f')} µs, counting softirq in rvs's context twice)"
    extra += f"; IPIs per delivered packet received by the generator core {f(med(s, 'ipi_gen'), '.2f')}, by the director core {f(med(s, 'ipi_dir'), '.2f')}"
    if s in ("nat", "dr", "tun", "floor"):
        extra += f", rvs user {f(med(s, 'rvs_usr'), '.0f')} % + sys {f(med(s, 'rvs_sys'), '.0f')} % of a core"
    if s == "tun":
        extra += f"; after user-space decapsulation on the real servers {f(med(s, 'pps_inner') and med(s, 'pps_inner') / 1000, '.0f')} kpps"
    if e:
        extra += f"; wrk socket errors / non-2xx: {e:.0f}"
    drops = sorted((m[5:], v[0]) for (sc, m), v in vals.items() if sc == s and m.startswith("drop:"))
    if drops:
        extra += "; rvs drops over all runs: " + ", ".join(f"{k} {v:.0f}" for k, v in drops)
        extra += " (median per run during pps / conn / latency / bulk: " + " / ".join(
            f(med(s, f"drops_{l}"), ".0f") for l in ("pps", "conn", "latency", "bulk")) + ")"
    notes.append(f"- {names[s]}: {extra}")
L.append("Per scenario (medians):")
L.append("")
L.extend(notes)
text = "\n".join(L) + "\n"
open(out, "w").write(text)
print(text)
PY
log "table written to $RESULTS/last.md"
