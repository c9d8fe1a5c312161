#!/usr/bin/env bash
# Builds rvs and runs it on config/demo-nat.toml in a demo network of
# namespaces: rvsdemo-cli (198.51.100.2) -- rvsdemo-rtr -- LAN bridge --
# rvsdemo-dir (director, 192.0.2.1) and rvsdemo-rs1..3 (192.0.2.11-13,
# python HTTP servers on :8080). VIP 203.0.113.10:80.
# Everything lives in namespaces and is removed on exit.
#   scripts/demo.sh          run in the foreground until Ctrl-C
#   scripts/demo.sh --check  start, send 6 requests, stop (unattended)
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "demo.sh: needs root (network namespaces)" >&2; exit 1; }
for t in ip nft python3 curl cargo; do
  command -v "$t" >/dev/null || { echo "demo.sh: $t is missing (apt-get install -y nftables iproute2 python3 curl)" >&2; exit 1; }
done
cargo build --release
P=rvsdemo
NS=(cli rtr sw dir rs1 rs2 rs3)
cleanup() {
  for n in "${NS[@]}"; do
    ip netns pids "$P-$n" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
    ip netns del "$P-$n" 2>/dev/null || true
  done
}
trap cleanup EXIT
cleanup
for n in "${NS[@]}"; do ip netns add "$P-$n"; ip -n "$P-$n" link set lo up; done
x() { ip netns exec "$P-$1" "${@:2}"; }
ip -n $P-sw link add br0 type bridge; ip -n $P-sw link set br0 up
ip -n $P-cli link add eth0 type veth peer name c0 netns $P-rtr
x cli ip addr add 198.51.100.2/24 dev eth0; x cli ip link set eth0 up
x cli ip route add default via 198.51.100.1
x rtr ip addr add 198.51.100.1/24 dev c0; x rtr ip link set c0 up
lan() { # ns ip
  ip -n "$P-$1" link add eth0 type veth peer name "$1" netns $P-sw
  ip -n $P-sw link set "$1" master br0 up
  x "$1" ip addr add "$2/24" dev eth0; x "$1" ip link set eth0 up
}
lan rtr 192.0.2.254
ip netns exec $P-rtr sysctl -qw net.ipv4.ip_forward=1
x rtr ip route add 203.0.113.0/24 via 192.0.2.1
lan dir 192.0.2.1
x dir ip route add default via 192.0.2.254
for i in 1 2 3; do
  lan rs$i 192.0.2.1$i
  x rs$i ip route add default via 192.0.2.1
  x rs$i python3 -c "
import http.server
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        b=b'rs$i\n'; self.send_response(200); self.send_header('Content-Length',str(len(b))); self.end_headers(); self.wfile.write(b)
    def log_message(self,*a): pass
http.server.ThreadingHTTPServer(('0.0.0.0',8080),H).serve_forever()" &
done
sed "s#/run/rvs/control.sock#/tmp/rvsdemo.sock#" config/nat.toml > /tmp/rvsdemo.toml
chmod 600 /tmp/rvsdemo.toml
if [ "${1:-}" = --check ]; then
  x dir target/release/rvs run --config /tmp/rvsdemo.toml & pid=$!
  sleep 2
  for k in 1 2 3 4 5 6; do x cli curl -sS --noproxy '*' --max-time 3 http://203.0.113.10/; done
  target/release/rvs services --socket /tmp/rvsdemo.sock
  kill $pid; wait $pid || true
else
  echo "demo: try  sudo ip netns exec $P-cli curl http://203.0.113.10/   and   rvs services --socket /tmp/rvsdemo.sock"
  x dir target/release/rvs run --config /tmp/rvsdemo.toml
fi
