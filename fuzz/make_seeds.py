#!/usr/bin/env python3
"""Writes a small seed corpus of real frames to fuzz/corpus/<target>/.

The frames are the ones the test suite uses (client SYN and ACK to a NAT
VIP, NAT reply, UDP query, DR/TUN SYNs, ARP request for a VIP, ICMP
errors quoting a flow, a fragment, IPv6); each parser target gets the
matching header slice. The corpus is generated, never committed.
"""
import os
import socket
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
IF_MAC = bytes([2, 0, 0, 0, 0, 1])
CLIENT_MAC = bytes([2, 0, 0, 0, 0, 0xC1])


def csum(b):
    if len(b) % 2:
        b += b"\0"
    t = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while t >> 16:
        t = (t & 0xFFFF) + (t >> 16)
    return ~t & 0xFFFF


def a(s):
    return socket.inet_aton(s)


def ip(src, dst, proto, payload, flags=0x4000, ihl=5, opts=b""):
    h = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, 20 + len(opts) + len(payload), 1, flags,
                    64, proto, 0, a(src), a(dst)) + opts
    return h[:10] + struct.pack("!H", csum(h)) + h[12:] + payload


def tcp(src, sport, dst, dport, fl, payload=b""):
    h = struct.pack("!HHIIBBHHH", sport, dport, 1000, 0 if fl == 2 else 1, 0x50, fl, 65535, 0, 0)
    pseudo = a(src) + a(dst) + struct.pack("!BBH", 0, 6, len(h) + len(payload))
    c = csum(pseudo + h + payload)
    return h[:16] + struct.pack("!H", c) + h[18:] + payload


def udp(sport, dport, payload):
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def eth(et, payload, dst=IF_MAC, src=CLIENT_MAC):
    return dst + src + struct.pack("!H", et) + payload


def icmp_err(quote, typ=3, code=4):
    h = struct.pack("!BBHHH", typ, code, 0, 0, 1400) + quote
    return h[:2] + struct.pack("!H", csum(h)) + h[4:]


CLI, VIP = "198.51.100.2", "203.0.113.10"
syn = tcp(CLI, 40000, VIP, 80, 0x02)
ack = tcp(CLI, 40000, VIP, 80, 0x10, b"GET / HTTP/1.0\r\n\r\n")
reply = tcp("192.0.2.11", 8080, CLI, 40000, 0x12)
ip_syn = ip(CLI, VIP, 6, syn)
ip_ack = ip(CLI, VIP, 6, ack)
ip_reply = ip("192.0.2.11", CLI, 6, reply)
ip_udp = ip(CLI, VIP, 17, udp(40001, 53, b"q1"))
ip_dr = ip(CLI, "203.0.113.20", 6, tcp(CLI, 40002, "203.0.113.20", 80, 0x02))
ip_tun = ip(CLI, "203.0.113.30", 6, tcp(CLI, 40003, "203.0.113.30", 80, 0x02))
ip_opts = ip(CLI, VIP, 6, tcp(CLI, 40004, VIP, 80, 0x02), ihl=6, opts=b"\x01\x01\x01\x00")
ip_frag = ip(CLI, VIP, 6, syn, flags=0x2000)
vip_to_cli = ip(VIP, CLI, 6, tcp(VIP, 80, CLI, 40000, 0x12))
icmp_in = ip("198.51.100.1", VIP, 1, icmp_err(vip_to_cli[:28]))
icmp_rs = ip("192.0.2.11", CLI, 1, icmp_err(ip(CLI, "192.0.2.11", 6, syn)[:28], code=3))
arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, CLIENT_MAC, a("192.0.2.254"),
                  b"\0" * 6, a(VIP))
ipv6 = b"\x60" + b"\0" * 39

frames = {
    "syn": eth(0x0800, ip_syn), "ack": eth(0x0800, ip_ack),
    "reply": eth(0x0800, ip_reply), "udp": eth(0x0800, ip_udp),
    "dr": eth(0x0800, ip_dr), "tun": eth(0x0800, ip_tun),
    "opts": eth(0x0800, ip_opts), "frag": eth(0x0800, ip_frag),
    "icmp_in": eth(0x0800, icmp_in), "icmp_rs": eth(0x0800, icmp_rs),
    "arp": eth(0x0806, arp), "ipv6": eth(0x86DD, ipv6),
}


def record(step, frame):
    return struct.pack("!BH", step, len(frame)) + frame


seeds = {
    "ethernet": frames,
    "arp": {"request": arp},
    "ipv4": {"syn": ip_syn, "opts": ip_opts, "frag": ip_frag, "icmp": icmp_in},
    "tcp": {"syn": syn, "ack": ack, "reply": reply},
    "udp": {"query": udp(40001, 53, b"q1")},
    "icmpv4": {"frag_needed": icmp_err(vip_to_cli[:28]), "echo": bytes([8, 0, 0xF7, 0xFF, 0, 0, 0, 0])},
    "director": {
        # A whole NAT flow: SYN, reply, ACK, an ICMP error about it, then time passes.
        "nat_flow": record(0, frames["syn"]) + record(0, frames["reply"]) + record(1, frames["ack"])
        + record(0, frames["icmp_in"]) + record(0, frames["icmp_rs"]) + record(0x7F, frames["ack"]),
        "mixed": b"".join(record(0x40, f) for f in frames.values()),
        "gso_tun": record(0x80, frames["tun"]),
    },
}

root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "corpus")
for target, files in seeds.items():
    d = os.path.join(root, target)
    os.makedirs(d, exist_ok=True)
    for name, data in files.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
print("seeds written to", root)
