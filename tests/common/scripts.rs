//! Small python3 programs the harness runs inside namespaces. Each server
//! prints `ready` on stdout once its socket is bound.

/// `http_server.py NAME PORT`: GET / answers `NAME\n`; GET /bytes?n=N answers
/// N bytes where byte i is `i % 251` (see [`super::expected_bytes`]).
pub const HTTP_SERVER: &str = r#"
import sys, http.server
from urllib.parse import urlsplit, parse_qs
name, port = sys.argv[1], int(sys.argv[2])
MAX_BYTES = 256 << 20
BLOCK = bytes(i % 251 for i in range(251 * 256))

class Handler(http.server.BaseHTTPRequestHandler):
    def reply(self, code, length):
        self.send_response(code)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        self.send_header("X-Real-Server", name)
        self.end_headers()

    def do_GET(self):
        url = urlsplit(self.path)
        if url.path == "/":
            body = (name + "\n").encode()
            self.reply(200, len(body))
            self.wfile.write(body)
        elif url.path == "/bytes":
            try:
                n = int(parse_qs(url.query).get("n", ["0"])[0])
            except ValueError:
                n = -1
            if n < 0 or n > MAX_BYTES:
                self.send_error(400, "n must be in 0..=%d" % MAX_BYTES)
                return
            self.reply(200, n)
            sent = 0
            while sent < n:
                k = min(len(BLOCK), n - sent)
                self.wfile.write(BLOCK[:k])
                sent += k
        else:
            self.send_error(404)

    def log_message(self, fmt, *args):
        sys.stderr.write("%s %s\n" % (self.address_string(), fmt % args))

class Server(http.server.ThreadingHTTPServer):
    allow_reuse_address = True
    daemon_threads = True

server = Server(("0.0.0.0", port), Handler)
print("ready", flush=True)
server.serve_forever()
"#;

/// `udp_echo.py NAME PORT`: answers each datagram with `NAME:` + payload,
/// from the address the datagram was sent to (IP_PKTINFO), so a VIP on lo or
/// on a TUN device answers as the VIP, as DR and TUN need.
pub const UDP_ECHO: &str = r#"
import socket, struct, sys
name, port = sys.argv[1], int(sys.argv[2])
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
s.bind(("0.0.0.0", port))
print("ready", flush=True)
prefix = (name + ":").encode()
while True:
    data, anc, _flags, addr = s.recvmsg(65535, socket.CMSG_SPACE(12))
    local = None
    for level, kind, cdata in anc:
        if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(cdata) >= 12:
            local = struct.unpack("=I4s4s", cdata[:12])[2]
    if local is None:
        s.sendto(prefix + data, addr)
    else:
        info = struct.pack("=I4s4s", 0, local, b"\0\0\0\0")
        s.sendmsg([prefix + data], [(socket.IPPROTO_IP, IP_PKTINFO, info)], 0, addr)
    sys.stderr.write("%s:%d %d bytes\n" % (addr[0], addr[1], len(data)))
    sys.stderr.flush()
"#;

/// `python3 -c UDP_REQUEST HOST PORT PAYLOAD TIMEOUT`: one datagram, one
/// reply on stdout. The socket is connected, so only a reply from HOST:PORT
/// counts (as for a real client).
pub const UDP_REQUEST: &str = r#"
import socket, sys
host, port, payload, timeout = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(timeout)
s.connect((host, port))
s.send(payload.encode())
try:
    data = s.recv(65535)
except socket.timeout:
    sys.stderr.write("no reply from %s:%d within %ss\n" % (host, port, timeout))
    sys.exit(2)
except OSError as e:
    sys.stderr.write("%s:%d: %s\n" % (host, port, e))
    sys.exit(3)
sys.stdout.write(data.decode("utf-8", "replace"))
"#;

/// `python3 -c PING ADDR TIMEOUT`: one ICMP echo request, exit 0 on a reply
/// from ADDR (no `ping` binary needed).
pub const PING: &str = r#"
import os, select, socket, struct, sys, time
addr, timeout = sys.argv[1], float(sys.argv[2])
def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s > 0xffff:
        s = (s & 0xffff) + (s >> 16)
    return (~s) & 0xffff
ident = os.getpid() & 0xffff
msg = struct.pack("!BBHHH", 8, 0, 0, ident, 1) + b"rvs-e2e"
msg = msg[:2] + struct.pack("!H", csum(msg)) + msg[4:]
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
s.sendto(msg, (addr, 0))
deadline = time.monotonic() + timeout
while True:
    left = deadline - time.monotonic()
    if left <= 0 or not select.select([s], [], [], left)[0]:
        sys.stderr.write("no echo reply from %s within %ss\n" % (addr, timeout))
        sys.exit(2)
    data, peer = s.recvfrom(65535)
    ihl = (data[0] & 0x0f) * 4
    kind, _code, _c, rid = struct.unpack("!BBHH", data[ihl:ihl + 6])
    if peer[0] == addr and kind == 0 and rid == ident:
        sys.exit(0)
"#;
