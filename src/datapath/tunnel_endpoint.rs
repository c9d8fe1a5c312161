//! The real-server side of VS/TUN for hosts without the kernel `ipip` module.
//!
//! The director forwards a TUN flow by wrapping the client's IPv4 packet in an
//! outer IPv4 header (protocol 4, IP-in-IP, RFC 2003 § 3) addressed to the real
//! server. Where the kernel has no `ipip`/`tunl0`, this endpoint does the
//! decapsulation in user space:
//!
//! - a raw `socket(AF_INET, SOCK_RAW, IPPROTO_IPIP)` receives every protocol-4
//!   packet addressed to this host (the kernel has already reassembled and
//!   checked the outer header; with a raw socket bound to the protocol it no
//!   longer answers "protocol unreachable"), `RECV_BATCH` per `recvmmsg`;
//! - [`inner_packet`] validates the outer and inner headers and checks that
//!   the inner destination is one of the configured VIPs; anything else gets a
//!   [`DropReason`] and a counter, never an error;
//! - the inner packet is written to a TUN device (`IFF_TUN | IFF_NO_PI`) that
//!   owns each VIP as a /32, so the kernel delivers it to the local socket as
//!   if it had arrived on a wire. Replies leave with the VIP as source, through
//!   the normal routing table, straight to the client.
//! - consecutive segments of a TCP stream read in one go are merged in user
//!   space ([`super::coalesce`]) and written as one TCPv4 GSO packet
//!   (`IFF_VNET_HDR`), as a NIC driver's GRO does for `ipip`: one `write`
//!   and one receive in the real server's TCP per burst instead of per
//!   1448-byte segment;
//! - the device is opened with `IFF_NAPI` where the kernel allows it, and its
//!   `gro_flush_timeout` set, so that the kernel's GRO also merges what the
//!   endpoint wrote separately (segments of bursts read in several goes).
//!
//! The inner packet carries the client's source address but arrives on the
//! TUN device, so reverse-path filtering is turned off on that device and on
//! `all` (the effective value is the maximum of the two).
//!
//! Like the kernel's VS/TUN setup, a real server on the director's L2 segment
//! should not answer ARP for the VIP (`arp_ignore=1`, `arp_announce=2`); this
//! endpoint does not change those host-wide settings.

use std::ffi::c_void;
use std::fmt;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

use super::coalesce::{self, Coalescer, VNET_HDR_LEN};

/// Name of the TUN device when none is given.
pub const DEFAULT_DEVICE: &str = "rvstun0";

/// RFC 791 § 3.1: the minimum internet header is 5 words of 32 bits.
const IPV4_MIN_HEADER_LEN: usize = 20;

/// IP protocol number of IP-in-IP (RFC 2003 § 3).
const PROTOCOL_IPIP: u8 = 4;

/// Largest IPv4 datagram (the total-length field is 16 bits).
const MAX_DATAGRAM: usize = 65_535;

/// Packets handled per readiness event before the loop checks for a stop
/// request again; bounds the time a signal waits on a busy socket.
const BATCH: usize = 64;

/// Outer datagrams read per `recvmmsg` (each buffer holds a whole
/// datagram: 16 × 64 KiB).
const RECV_BATCH: usize = 16;

/// `IFF_NAPI` (linux/if_tun.h, Linux ≥ 4.15): writes to the device are
/// received through a NAPI context, hence through GRO.
const IFF_NAPI: libc::c_int = 0x0010;

/// The device's `gro_flush_timeout`, in ns: how long GRO may hold what it
/// merged for the next write. Without one, GRO flushes at the end of each
/// NAPI run, which is one write: nothing would merge. Segments that end a
/// burst (PSH), carry no data or a SYN/FIN/RST are not held, so requests
/// and handshakes do not wait; a bulk stream's segments wait at most this
/// long (or a jiffy while the stream keeps coming). 100 µs doubled one TCP
/// stream through the benchmark's TUN path (benches/README.md).
const GRO_FLUSH_TIMEOUT_NS: u32 = 100_000;

/// How long one `poll` waits, so a stop request is seen within this bound
/// even if the signal lands between the flag check and the `poll` call.
const POLL_TIMEOUT_MS: libc::c_int = 200;

/// What the endpoint needs to know: which VIPs it owns and the device name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelEndpointOptions {
    /// Virtual addresses accepted as inner destinations; each is put on the
    /// TUN device as a /32.
    pub vips: Vec<Ipv4Addr>,
    /// TUN device name (at most 15 bytes, `IFNAMSIZ - 1`).
    pub device: String,
}

impl Default for TunnelEndpointOptions {
    fn default() -> Self {
        TunnelEndpointOptions {
            vips: Vec::new(),
            device: DEFAULT_DEVICE.to_string(),
        }
    }
}

/// Why an outer packet was not delivered. Indexes [`Counters::drops`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// The outer packet is shorter than an IPv4 header or than its total length.
    Truncated,
    /// The outer packet is not IPv4.
    OuterNotIpv4,
    /// The outer header length is below 20 bytes or beyond the total length.
    OuterBadHeaderLength,
    /// The outer protocol is not IP-in-IP (4).
    NotIpip,
    /// The outer packet is a fragment (the kernel should have reassembled it).
    OuterFragment,
    /// The inner packet is shorter than an IPv4 header.
    InnerTruncated,
    /// The inner packet is not IPv4.
    InnerNotIpv4,
    /// The inner header length is below 20 bytes or beyond the payload.
    InnerBadHeaderLength,
    /// The inner total length is below its header length or beyond the payload.
    InnerBadTotalLength,
    /// The inner header checksum is invalid.
    InnerBadChecksum,
    /// The inner destination is not one of the endpoint's VIPs.
    NotVip,
}

impl DropReason {
    /// Number of variants, the length of the counter array.
    pub const COUNT: usize = 11;

    /// Every reason, in counter order.
    pub const ALL: [DropReason; DropReason::COUNT] = [
        DropReason::Truncated,
        DropReason::OuterNotIpv4,
        DropReason::OuterBadHeaderLength,
        DropReason::NotIpip,
        DropReason::OuterFragment,
        DropReason::InnerTruncated,
        DropReason::InnerNotIpv4,
        DropReason::InnerBadHeaderLength,
        DropReason::InnerBadTotalLength,
        DropReason::InnerBadChecksum,
        DropReason::NotVip,
    ];

    /// Position in [`Counters::drops`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// Stable snake_case name, used in logs and metrics labels.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Truncated => "truncated",
            DropReason::OuterNotIpv4 => "outer_not_ipv4",
            DropReason::OuterBadHeaderLength => "outer_bad_header_length",
            DropReason::NotIpip => "not_ipip",
            DropReason::OuterFragment => "outer_fragment",
            DropReason::InnerTruncated => "inner_truncated",
            DropReason::InnerNotIpv4 => "inner_not_ipv4",
            DropReason::InnerBadHeaderLength => "inner_bad_header_length",
            DropReason::InnerBadTotalLength => "inner_bad_total_length",
            DropReason::InnerBadChecksum => "inner_bad_checksum",
            DropReason::NotVip => "not_vip",
        }
    }
}

/// What the endpoint has seen since it started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Outer packets read from the raw socket.
    pub received: u64,
    /// Inner packets written to the TUN device.
    pub delivered: u64,
    /// Of those, packets written merged with others into one GSO packet.
    pub merged: u64,
    /// Inner packets the TUN device refused.
    pub write_errors: u64,
    /// Packets the kernel routed out through the TUN device, read and dropped.
    pub tun_discarded: u64,
    /// Drops, indexed by [`DropReason::index`].
    pub drops: [u64; DropReason::COUNT],
}

impl Counters {
    /// Count of drops for one reason.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops[reason.index()]
    }
}

impl fmt::Display for Counters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "received={} delivered={} merged={} write_errors={} tun_discarded={}",
            self.received, self.delivered, self.merged, self.write_errors, self.tun_discarded
        )?;
        for reason in DropReason::ALL {
            write!(f, " {}={}", reason.name(), self.dropped(reason))?;
        }
        Ok(())
    }
}

fn be16(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([bytes[at], bytes[at + 1]])
}

/// RFC 1071 internet checksum of `bytes` (even length); 0 over a header whose
/// checksum field is correct.
fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // The loop above folded `sum` into 16 bits, so the cast keeps every bit.
    !(sum as u16)
}

/// The inner IPv4 packet of an IP-in-IP packet `outer` (starting at the outer
/// IPv4 header, as a raw socket delivers it), if it is well formed and
/// addressed to one of `vips`. The result is trimmed to the inner total
/// length. Pure: no I/O, never panics on any input.
pub fn inner_packet<'a>(outer: &'a [u8], vips: &[Ipv4Addr]) -> Result<&'a [u8], DropReason> {
    if outer.len() < IPV4_MIN_HEADER_LEN {
        return Err(DropReason::Truncated);
    }
    if outer[0] >> 4 != 4 {
        return Err(DropReason::OuterNotIpv4);
    }
    let header_len = usize::from(outer[0] & 0x0f) * 4;
    let total_len = usize::from(be16(outer, 2));
    if header_len < IPV4_MIN_HEADER_LEN || header_len > total_len {
        return Err(DropReason::OuterBadHeaderLength);
    }
    if total_len > outer.len() {
        return Err(DropReason::Truncated);
    }
    if outer[9] != PROTOCOL_IPIP {
        return Err(DropReason::NotIpip);
    }
    // RFC 791 § 3.1: MF flag (0x2000) and the 13-bit fragment offset.
    if be16(outer, 6) & 0x3fff != 0 {
        return Err(DropReason::OuterFragment);
    }

    let inner = &outer[header_len..total_len];
    if inner.len() < IPV4_MIN_HEADER_LEN {
        return Err(DropReason::InnerTruncated);
    }
    if inner[0] >> 4 != 4 {
        return Err(DropReason::InnerNotIpv4);
    }
    let inner_header_len = usize::from(inner[0] & 0x0f) * 4;
    if inner_header_len < IPV4_MIN_HEADER_LEN || inner_header_len > inner.len() {
        return Err(DropReason::InnerBadHeaderLength);
    }
    let inner_total_len = usize::from(be16(inner, 2));
    if inner_total_len < inner_header_len || inner_total_len > inner.len() {
        return Err(DropReason::InnerBadTotalLength);
    }
    if checksum(&inner[..inner_header_len]) != 0 {
        return Err(DropReason::InnerBadChecksum);
    }
    let destination = Ipv4Addr::new(inner[16], inner[17], inner[18], inner[19]);
    if !vips.contains(&destination) {
        return Err(DropReason::NotVip);
    }
    Ok(&inner[..inner_total_len])
}

/// `struct ifreq` as TUNSETIFF reads it: the name, then the flags in the
/// union, padded to the kernel's 40 bytes (16-byte name + 24-byte union).
#[repr(C)]
struct IfReqFlags {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

fn check_device_name(device: &str) -> io::Result<()> {
    let ok = !device.is_empty()
        && device.len() < libc::IFNAMSIZ
        && device
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("device name {device:?}: want 1 to 15 characters of [A-Za-z0-9._-]"),
        ))
    }
}

fn ip(args: &[&str]) -> io::Result<()> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("running `ip {}`: {e}", args.join(" "))))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "`ip {}` failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

fn with_context(e: io::Error, what: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

fn write_sysctl(path: &str, value: &str) -> io::Result<()> {
    std::fs::write(path, value)
        .map_err(|e| io::Error::new(e.kind(), format!("writing {value} to {path}: {e}")))
}

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: F_GETFL/F_SETFL on a descriptor we own; no pointers involved.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Opens `/dev/net/tun` and attaches it to the TUN device `device`, creating
/// the device if needed, with `IFF_NAPI` if `napi`. A TUNSETIFF failure comes
/// back as the bare errno. The device is made non-persistent, so it
/// disappears when the returned descriptor is closed.
fn open_tun(device: &str, napi: bool) -> io::Result<OwnedFd> {
    // SAFETY: the path is a NUL-terminated literal; open has no other inputs.
    let raw = unsafe { libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if raw < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("opening /dev/net/tun: {e}"),
        ));
    }
    // SAFETY: `raw` is a descriptor open() just returned and nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };

    let mut request = IfReqFlags {
        name: [0; libc::IFNAMSIZ],
        // IFF_TUN | IFF_NO_PI | IFF_VNET_HDR | IFF_NAPI = 0x5011, which
        // fits in c_short.
        flags: (libc::IFF_TUN
            | libc::IFF_NO_PI
            | libc::IFF_VNET_HDR
            | if napi { IFF_NAPI } else { 0 }) as libc::c_short,
        _pad: [0; 22],
    };
    // check_device_name guarantees len < IFNAMSIZ, so a NUL byte remains.
    request.name[..device.len()].copy_from_slice(device.as_bytes());
    // SAFETY: TUNSETIFF reads and writes a `struct ifreq`; IfReqFlags has its
    // layout (name, then the flags member of the union) and size, and lives
    // for the whole call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut request as *mut _) };
    if rc < 0 {
        // Unwrapped, so the caller can match on the errno.
        return Err(io::Error::last_os_error());
    }
    // A device left persistent by someone else would outlive us; clear that.
    // SAFETY: TUNSETPERSIST takes an integer argument, not a pointer.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETPERSIST, 0 as libc::c_ulong) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("TUNSETPERSIST {device}: {e}"),
        ));
    }
    Ok(fd)
}

/// Whether the device attached to `fd` has `IFF_NAPI` (TUNGETIFF): kernels
/// that do not know the flag drop it silently instead of refusing it.
fn has_napi(fd: &OwnedFd) -> bool {
    let mut request = IfReqFlags {
        name: [0; libc::IFNAMSIZ],
        flags: 0,
        _pad: [0; 22],
    };
    // SAFETY: TUNGETIFF writes a `struct ifreq` (IfReqFlags has its layout
    // and size), which lives for the whole call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNGETIFF, &mut request as *mut _) };
    rc == 0 && libc::c_int::from(request.flags) & IFF_NAPI != 0
}

/// [`open_tun`] with `IFF_NAPI`, or without it if the kernel refuses the
/// attach with it (EINVAL); says whether the device has it.
fn attach_tun(device: &str) -> io::Result<(OwnedFd, bool)> {
    match open_tun(device, true) {
        Ok(fd) => {
            let napi = has_napi(&fd);
            Ok((fd, napi))
        }
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            open_tun(device, false).map(|fd| (fd, false))
        }
        Err(e) => Err(e),
    }
}

fn open_raw_ipip() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call with constant arguments.
    let raw = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::IPPROTO_IPIP,
        )
    };
    if raw < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("socket(AF_INET, SOCK_RAW, IPPROTO_IPIP): {e}"),
        ));
    }
    // SAFETY: `raw` is a descriptor socket() just returned and nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// An open endpoint: the TUN device with its VIPs and the raw socket.
/// Dropping it closes both, which removes the (non-persistent) device and the
/// VIPs on it.
#[derive(Debug)]
pub struct TunnelEndpoint {
    device: String,
    vips: Vec<Ipv4Addr>,
    tun: OwnedFd,
    raw: OwnedFd,
    /// Whether the device merges what is written to it (`IFF_NAPI` and a
    /// `gro_flush_timeout`).
    gro: bool,
    /// Receive buffers for `RECV_BATCH` outer datagrams (one `recvmmsg`),
    /// allocated once; the first also takes what the kernel routes out
    /// through the device.
    bufs: Vec<Vec<u8>>,
    /// Merges the TCP segments of one read-out into GSO packets.
    coalescer: Coalescer,
    counters: Counters,
}

impl TunnelEndpoint {
    /// Creates (or takes over) the TUN device, puts the VIPs on it, brings it
    /// up, turns off reverse-path filtering for it and opens the raw socket.
    /// Running it twice in a row is fine: an existing device of that name is
    /// reused, or deleted and recreated if it cannot be attached.
    pub fn open(opts: &TunnelEndpointOptions) -> io::Result<TunnelEndpoint> {
        check_device_name(&opts.device)?;
        if opts.vips.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "at least one VIP is needed",
            ));
        }
        let device = opts.device.as_str();
        let (tun, napi) = match attach_tun(device) {
            Ok(t) => t,
            // EBUSY: attached elsewhere; EINVAL: a device of another kind (or
            // a TAP) has the name. Recreate it once.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY) | Some(libc::EINVAL)) => {
                tracing::warn!(device, error = %e, "TUNSETIFF refused; recreating existing device");
                ip(&["link", "del", "dev", device])?;
                attach_tun(device).map_err(|e| with_context(e, &format!("TUNSETIFF {device}")))?
            }
            Err(e) => return Err(with_context(e, &format!("TUNSETIFF {device}"))),
        };
        set_nonblocking(&tun)?;
        // A reused device may carry addresses from an earlier run.
        ip(&["addr", "flush", "dev", device])?;
        for vip in &opts.vips {
            ip(&["addr", "add", &format!("{vip}/32"), "dev", device])?;
        }
        ip(&["link", "set", "dev", device, "up"])?;
        write_sysctl(&format!("/proc/sys/net/ipv4/conf/{device}/rp_filter"), "0")?;
        write_sysctl("/proc/sys/net/ipv4/conf/all/rp_filter", "0")?;
        let gro = napi
            && write_sysctl(
                &format!("/sys/class/net/{device}/gro_flush_timeout"),
                &GRO_FLUSH_TIMEOUT_NS.to_string(),
            )
            .inspect_err(|e| tracing::warn!(device, error = %e, "no GRO on the TUN device"))
            .is_ok();
        if !napi {
            tracing::warn!(
                device,
                "the kernel has no IFF_NAPI for TUN devices: no GRO on the TUN device"
            );
        }
        let raw = open_raw_ipip()?;
        Ok(TunnelEndpoint {
            device: opts.device.clone(),
            vips: opts.vips.clone(),
            tun,
            raw,
            gro,
            bufs: vec![vec![0; MAX_DATAGRAM]; RECV_BATCH],
            coalescer: Coalescer::default(),
            counters: Counters::default(),
        })
    }

    /// What has been counted so far.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Name of the TUN device.
    pub fn device(&self) -> &str {
        &self.device
    }

    /// Whether GRO merges the segments written to the device.
    pub fn gro(&self) -> bool {
        self.gro
    }

    /// Forwards packets until `stop` is set; sees the flag within
    /// `POLL_TIMEOUT_MS` (or at once if a signal interrupts `poll`).
    pub fn serve(&mut self, stop: &AtomicBool) -> io::Result<()> {
        while !stop.load(Ordering::Relaxed) {
            let mut fds = [
                libc::pollfd {
                    fd: self.raw.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: self.tun.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // SAFETY: `fds` is a live array of 2 pollfd structs for the call.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, POLL_TIMEOUT_MS) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            for pfd in &fds {
                if pfd.revents & (libc::POLLERR | libc::POLLNVAL) != 0 {
                    return Err(io::Error::other(format!(
                        "poll reports an error on fd {} (revents {:#x})",
                        pfd.fd, pfd.revents
                    )));
                }
            }
            if fds[0].revents & libc::POLLIN != 0 {
                self.drain_raw()?;
            }
            if fds[1].revents & libc::POLLIN != 0 {
                self.drain_tun()?;
            }
        }
        Ok(())
    }

    /// Reads up to `BATCH` outer packets and delivers the valid ones,
    /// merging what belongs together ([`Coalescer`]); nothing is held back
    /// once the socket is empty or the batch is done.
    fn drain_raw(&mut self) -> io::Result<()> {
        let TunnelEndpoint {
            raw,
            tun,
            bufs,
            vips,
            coalescer,
            counters,
            ..
        } = self;
        let tun = tun.as_raw_fd();
        let mut refused = false;
        let refused_gso = &mut refused;
        let mut write = |v: &[u8; VNET_HDR_LEN], p: &[u8]| {
            let iov = [
                libc::iovec {
                    iov_base: v.as_ptr() as *mut c_void,
                    iov_len: v.len(),
                },
                libc::iovec {
                    iov_base: p.as_ptr() as *mut c_void,
                    iov_len: p.len(),
                },
            ];
            // SAFETY: both iovecs describe live slices for the call; the
            // device only reads them.
            let w = unsafe { libc::writev(tun, iov.as_ptr(), 2) };
            let segments = coalesce::segments(v, p);
            if w < 0 {
                let e = io::Error::last_os_error();
                counters.write_errors += segments;
                if segments > 1 && e.raw_os_error() == Some(libc::EINVAL) {
                    // A kernel that takes no GSO packets from a TUN writer:
                    // TCP sends the lost run again, and it goes in segments.
                    *refused_gso = true;
                }
                tracing::debug!(error = %e, "TUN write failed");
            } else {
                counters.delivered += segments;
            }
        };
        let mut result = Ok(());
        'batches: for _ in 0..BATCH / RECV_BATCH {
            let mut iovs: [libc::iovec; RECV_BATCH] = std::array::from_fn(|i| libc::iovec {
                iov_base: bufs[i].as_mut_ptr().cast::<c_void>(),
                iov_len: bufs[i].len(),
            });
            // SAFETY: mmsghdr is plain data; all-zero is a valid value.
            let mut msgs: [libc::mmsghdr; RECV_BATCH] = unsafe { std::mem::zeroed() };
            for (m, iov) in msgs.iter_mut().zip(iovs.iter_mut()) {
                m.msg_hdr.msg_iov = iov;
                m.msg_hdr.msg_iovlen = 1;
            }
            // SAFETY: `msgs` holds RECV_BATCH headers, each pointing at one
            // iovec over a live, writable buffer of its stated length; all
            // outlive the call.
            let n = unsafe {
                libc::recvmmsg(
                    raw.as_raw_fd(),
                    msgs.as_mut_ptr(),
                    RECV_BATCH as libc::c_uint,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if !matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) {
                    result = Err(e);
                }
                break;
            }
            // n >= 0 was checked above.
            let n = n as usize;
            for (m, buf) in msgs.iter().zip(bufs.iter()).take(n) {
                counters.received += 1;
                if m.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                    counters.drops[DropReason::Truncated.index()] += 1;
                    continue;
                }
                let len = (m.msg_len as usize).min(buf.len());
                match inner_packet(&buf[..len], vips) {
                    Ok(inner) => coalescer.push(inner, &mut write),
                    Err(reason) => {
                        counters.drops[reason.index()] += 1;
                        tracing::debug!(reason = reason.name(), "dropped outer packet");
                    }
                }
            }
            if n < RECV_BATCH {
                break 'batches;
            }
        }
        coalescer.flush(&mut write);
        counters.merged = coalescer.merged;
        if refused && coalescer.enabled {
            coalescer.enabled = false;
            tracing::warn!(
                "the TUN device refuses GSO packets: segments are delivered one by one from now on"
            );
        }
        result
    }

    /// Reads and discards up to `BATCH` packets the kernel sent out through
    /// the TUN device (nothing should route there; this keeps its queue empty).
    fn drain_tun(&mut self) -> io::Result<()> {
        for _ in 0..BATCH {
            // SAFETY: `bufs[0]` is a live, writable allocation of its length.
            let n = unsafe {
                libc::read(
                    self.tun.as_raw_fd(),
                    self.bufs[0].as_mut_ptr().cast::<c_void>(),
                    self.bufs[0].len(),
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                return match e.kind() {
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(()),
                    _ => Err(e),
                };
            }
            self.counters.tun_discarded += 1;
        }
        Ok(())
    }
}

/// Set by the SIGTERM/SIGINT handler. A signal handler can reach nothing but
/// statics, hence the one global of this module.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_signal: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

fn install_stop_handlers() -> io::Result<()> {
    for signal in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: an all-zero sigaction is a valid "no flags, empty mask"
        // value; the handler field is filled in below.
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = on_stop_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        // No SA_RESTART: poll() returns EINTR, so the loop sees the flag at once.
        action.sa_flags = 0;
        // SAFETY: `action` is a live sigaction; the handler only stores to an
        // atomic, which is async-signal-safe.
        let rc = unsafe { libc::sigaction(signal, &action, std::ptr::null_mut()) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Runs the tunnel endpoint until SIGTERM or SIGINT, then logs the counters
/// and removes the device. Prints `rvs: ready` on stdout once the device,
/// its VIPs and the raw socket are in place.
pub fn run(opts: &TunnelEndpointOptions) -> io::Result<()> {
    install_stop_handlers()?;
    let mut endpoint = TunnelEndpoint::open(opts)?;
    tracing::info!(
        device = endpoint.device(),
        vips = ?opts.vips,
        gro = endpoint.gro(),
        "tunnel endpoint up: decapsulating IP-in-IP to the TUN device"
    );
    println!("rvs: ready");
    let result = endpoint.serve(&STOP);
    tracing::info!(counters = %endpoint.counters(), "tunnel endpoint stopping");
    let device = endpoint.device().to_string();
    drop(endpoint);
    tracing::info!(device, "device removed");
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    const VIP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);

    /// Outer 192.0.2.1 → 192.0.2.11, protocol 4, wrapping a UDP datagram
    /// 198.51.100.2:40000 → 203.0.113.10:5353 with payload "hi" (UDP checksum
    /// 0, i.e. not computed, RFC 768). Header checksums computed with RFC 1071.
    static PACKET_BYTES: [u8; 50] = [
        // outer IPv4: version 4, IHL 5, total 50, id 1, DF, TTL 64, proto 4
        0x45, 0x00, 0x00, 0x32, 0x00, 0x01, 0x40, 0x00, 0x40, 0x04, 0xb6, 0xba, 0xc0, 0x00, 0x02,
        0x01, 0xc0, 0x00, 0x02, 0x0b, //
        // inner IPv4: total 30, id 2, DF, TTL 64, proto 17
        0x45, 0x00, 0x00, 0x1e, 0x00, 0x02, 0x40, 0x00, 0x40, 0x11, 0xd4, 0x8c, 0xc6, 0x33, 0x64,
        0x02, 0xcb, 0x00, 0x71, 0x0a, //
        // UDP 40000 → 5353, length 10, checksum 0, "hi"
        0x9c, 0x40, 0x14, 0xe9, 0x00, 0x0a, 0x00, 0x00, b'h', b'i',
    ];

    fn fill_checksum(header: &mut [u8]) {
        header[10] = 0;
        header[11] = 0;
        let c = checksum(header);
        header[10..12].copy_from_slice(&c.to_be_bytes());
    }

    fn packet() -> Vec<u8> {
        PACKET_BYTES.to_vec()
    }

    /// Applies `edit` to the inner header and fixes its checksum.
    fn with_inner(edit: impl Fn(&mut [u8])) -> Vec<u8> {
        let mut p = packet();
        edit(&mut p[20..40]);
        fill_checksum(&mut p[20..40]);
        p
    }

    #[test]
    fn static_bytes_have_valid_checksums() {
        assert_eq!(checksum(&PACKET_BYTES[..20]), 0);
        assert_eq!(checksum(&PACKET_BYTES[20..40]), 0);
    }

    #[test]
    fn accepts_inner_packet_to_vip() {
        let p = packet();
        assert_eq!(inner_packet(&p, &[VIP]), Ok(&PACKET_BYTES[20..]));
    }

    #[test]
    fn accepts_any_of_several_vips() {
        let other = Ipv4Addr::new(203, 0, 113, 20);
        assert_eq!(
            inner_packet(&packet(), &[other, VIP]),
            Ok(&PACKET_BYTES[20..])
        );
    }

    #[test]
    fn trims_bytes_after_inner_total_length() {
        // The outer packet carries 4 bytes after the inner datagram.
        let mut p = packet();
        p.extend_from_slice(&[0xa5; 4]);
        p[3] = 54;
        fill_checksum(&mut p[..20]);
        assert_eq!(inner_packet(&p, &[VIP]), Ok(&PACKET_BYTES[20..]));
    }

    #[test]
    fn ignores_bytes_after_outer_total_length() {
        let mut p = packet();
        p.extend_from_slice(&[0xa5; 7]);
        assert_eq!(inner_packet(&p, &[VIP]), Ok(&PACKET_BYTES[20..]));
    }

    #[test]
    fn accepts_outer_header_with_options() {
        // Outer IHL 6: one word of options (NOPs).
        let mut p = vec![0x46];
        p.extend_from_slice(&PACKET_BYTES[1..20]);
        p.extend_from_slice(&[1, 1, 1, 1]);
        p.extend_from_slice(&PACKET_BYTES[20..]);
        p[3] = 54;
        fill_checksum(&mut p[..24]);
        assert_eq!(inner_packet(&p, &[VIP]), Ok(&PACKET_BYTES[20..]));
    }

    #[test]
    fn rejects_non_vip_destination() {
        assert_eq!(
            inner_packet(&packet(), &[Ipv4Addr::new(203, 0, 113, 11)]),
            Err(DropReason::NotVip)
        );
        assert_eq!(inner_packet(&packet(), &[]), Err(DropReason::NotVip));
        let p = with_inner(|h| h[19] = 99);
        assert_eq!(inner_packet(&p, &[VIP]), Err(DropReason::NotVip));
    }

    #[test]
    fn rejects_truncated_outer() {
        for len in [0, 1, 19] {
            assert_eq!(
                inner_packet(&PACKET_BYTES[..len], &[VIP]),
                Err(DropReason::Truncated),
                "len {len}"
            );
        }
        // Total length says 50, only 49 bytes present.
        assert_eq!(
            inner_packet(&PACKET_BYTES[..49], &[VIP]),
            Err(DropReason::Truncated)
        );
    }

    #[test]
    fn rejects_bad_outer_version_and_header_length() {
        let mut p = packet();
        p[0] = 0x65;
        assert_eq!(inner_packet(&p, &[VIP]), Err(DropReason::OuterNotIpv4));
        let mut p = packet();
        p[0] = 0x44;
        assert_eq!(
            inner_packet(&p, &[VIP]),
            Err(DropReason::OuterBadHeaderLength)
        );
        let mut p = packet();
        p[3] = 19; // total length below the header length
        assert_eq!(
            inner_packet(&p, &[VIP]),
            Err(DropReason::OuterBadHeaderLength)
        );
    }

    #[test]
    fn rejects_other_protocols_and_fragments() {
        let mut p = packet();
        p[9] = 17;
        assert_eq!(inner_packet(&p, &[VIP]), Err(DropReason::NotIpip));
        let mut p = packet();
        p[6] = 0x20; // MF
        assert_eq!(inner_packet(&p, &[VIP]), Err(DropReason::OuterFragment));
        let mut p = packet();
        p[6] = 0x40;
        p[7] = 0x01; // offset 8 bytes
        assert_eq!(inner_packet(&p, &[VIP]), Err(DropReason::OuterFragment));
    }

    #[test]
    fn rejects_bad_inner_headers() {
        let mut p = packet();
        p[3] = 39; // 19 bytes of inner packet
        assert_eq!(
            inner_packet(&p[..39], &[VIP]),
            Err(DropReason::InnerTruncated)
        );
        let p = with_inner(|h| h[0] = 0x65);
        assert_eq!(inner_packet(&p, &[VIP]), Err(DropReason::InnerNotIpv4));
        let p = with_inner(|h| h[0] = 0x44);
        assert_eq!(
            inner_packet(&p, &[VIP]),
            Err(DropReason::InnerBadHeaderLength)
        );
        let p = with_inner(|h| h[0] = 0x4f); // 60-byte header in a 30-byte payload
        assert_eq!(
            inner_packet(&p, &[VIP]),
            Err(DropReason::InnerBadHeaderLength)
        );
        let p = with_inner(|h| h[3] = 31); // one byte more than carried
        assert_eq!(
            inner_packet(&p, &[VIP]),
            Err(DropReason::InnerBadTotalLength)
        );
        let p = with_inner(|h| h[3] = 19);
        assert_eq!(
            inner_packet(&p, &[VIP]),
            Err(DropReason::InnerBadTotalLength)
        );
        let mut p = packet();
        p[30] ^= 0xff; // corrupt the inner checksum
        assert_eq!(inner_packet(&p, &[VIP]), Err(DropReason::InnerBadChecksum));
    }

    #[test]
    fn drop_reasons_index_their_counters() {
        for (i, reason) in DropReason::ALL.iter().enumerate() {
            assert_eq!(reason.index(), i);
        }
        let mut c = Counters::default();
        c.drops[DropReason::NotVip.index()] = 3;
        assert_eq!(c.dropped(DropReason::NotVip), 3);
        assert!(c.to_string().contains("not_vip=3"));
    }

    #[test]
    fn options_default_device() {
        assert_eq!(TunnelEndpointOptions::default().device, "rvstun0");
        assert!(check_device_name("rvstun0").is_ok());
        assert!(check_device_name("").is_err());
        assert!(check_device_name("a-name-too-long0").is_err());
        assert!(check_device_name("bad/name").is_err());
    }

    proptest::proptest! {
        #[test]
        fn never_panics_and_returns_a_vip_packet(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..120)) {
            if let Ok(inner) = inner_packet(&bytes, &[VIP]) {
                proptest::prop_assert!(inner.len() >= 20);
                proptest::prop_assert_eq!(&inner[16..20], &VIP.octets()[..]);
            }
        }

        #[test]
        fn mutated_real_packet_never_panics(at in 0usize..50, value in proptest::num::u8::ANY, cut in 0usize..=50) {
            let mut p = packet();
            p[at] = value;
            let _ = inner_packet(&p[..cut], &[VIP]);
        }
    }
}
