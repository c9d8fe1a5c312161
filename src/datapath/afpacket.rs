//! AF_PACKET sockets: one per worker per interface, joined in a fanout
//! group, with PACKET_VNET_HDR so that GRO super-frames and partial
//! checksums arrive described (and leave the same way), and
//! PACKET_IGNORE_OUTGOING so the daemon never sees its own transmissions.
//!
//! Frames arrive in a TPACKET_V2 ring shared by mmap ([`super::ring`]): no
//! system call per received frame, and the core rewrites each frame in its
//! slot. Frames too large for a slot arrive whole on the socket queue and
//! are read with `recvmsg` into a [`Batch`]. Frames leave in batches with
//! `sendmmsg` from wherever they were rewritten: no allocation per packet.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::core::director::{Offload, HEADROOM};
use crate::datapath::ring::{self, RxRing};

const ETH_P_ALL: u16 = 0x0003;
const PACKET_VNET_HDR: libc::c_int = 15;
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
const PACKET_FANOUT: libc::c_int = 18;
const PACKET_FANOUT_HASH: u32 = 0;
/// The kernel picks a group id no other socket of the namespace uses.
const PACKET_FANOUT_FLAG_UNIQUEID: u32 = 0x2000;

/// Which fanout group a new socket enters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fanout {
    /// No group (a single worker): no flow hash computed per frame.
    Alone,
    /// A new group, its id chosen by the kernel (read it back with
    /// [`PacketSocket::fanout_id`]); the other workers' sockets join it.
    New,
    /// The group of that id, made by [`Fanout::New`].
    Join(u16),
}
/// `struct virtio_net_hdr` (no num_buffers): flags, gso_type, hdr_len,
/// gso_size, csum_start, csum_offset.
pub const VNET_HDR_LEN: usize = 10;
const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;
/// Largest frame the kernel hands over: a 64 KiB GSO super-frame plus its
/// Ethernet header (and VLAN tag).
pub const MAX_FRAME: usize = 65536 + 18;
/// Bytes per receive slot.
pub const SLOT_LEN: usize = HEADROOM + MAX_FRAME;

/// Decodes a received `virtio_net_hdr`.
pub fn parse_vnet(h: &[u8; VNET_HDR_LEN]) -> Offload {
    Offload {
        needs_csum: h[0] & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0,
        gso_type: h[1],
        hdr_len: u16::from_ne_bytes([h[2], h[3]]),
        gso_size: u16::from_ne_bytes([h[4], h[5]]),
        csum_start: u16::from_ne_bytes([h[6], h[7]]),
        csum_offset: u16::from_ne_bytes([h[8], h[9]]),
    }
}

/// Encodes a `virtio_net_hdr` for transmit.
pub fn emit_vnet(o: &Offload) -> [u8; VNET_HDR_LEN] {
    let mut h = [0u8; VNET_HDR_LEN];
    h[0] = if o.needs_csum {
        VIRTIO_NET_HDR_F_NEEDS_CSUM
    } else {
        0
    };
    h[1] = o.gso_type;
    h[2..4].copy_from_slice(&o.hdr_len.to_ne_bytes());
    h[4..6].copy_from_slice(&o.gso_size.to_ne_bytes());
    h[6..8].copy_from_slice(&o.csum_start.to_ne_bytes());
    h[8..10].copy_from_slice(&o.csum_offset.to_ne_bytes());
    h
}

/// One bound AF_PACKET socket and its receive ring.
#[derive(Debug)]
pub struct PacketSocket {
    /// Declared before `fd`: unmapped before the socket closes.
    pub ring: RxRing,
    fd: OwnedFd,
    pub ifindex: u32,
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn setsockopt<T>(fd: RawFd, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
    let len = libc::socklen_t::try_from(std::mem::size_of::<T>()).unwrap_or(0);
    // SAFETY: `value` points to a live T of `len` bytes for the call.
    cvt(unsafe { libc::setsockopt(fd, level, name, (value as *const T).cast(), len) })?;
    Ok(())
}

/// Reads option `name` of `fd` into `value` (a `T` the option fills).
pub(crate) fn getsockopt<T>(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: &mut T,
) -> io::Result<()> {
    let mut len = libc::socklen_t::try_from(std::mem::size_of::<T>()).unwrap_or(0);
    // SAFETY: `value` points to a live, writable T of `len` bytes.
    cvt(unsafe { libc::getsockopt(fd, level, name, (value as *mut T).cast(), &mut len) })?;
    Ok(())
}

impl PacketSocket {
    /// Opens a socket on `ifindex`, in the fanout group `fanout` (shared by
    /// the workers' sockets on that interface), with a receive ring of about
    /// `frames` slots sized for `mtu`. `rcvbuf` bounds the queue of frames
    /// too large for a slot. `filter` is attached before the socket is
    /// bound, so it never holds a frame the filter would refuse.
    pub fn open(
        ifindex: u32,
        fanout: Fanout,
        mtu: u32,
        frames: u32,
        rcvbuf: usize,
        filter: &[crate::datapath::bpf::Insn],
    ) -> io::Result<PacketSocket> {
        let proto = ETH_P_ALL.to_be();
        // Protocol 0: the socket receives nothing until bind(2) names the
        // interface and the protocol. Created with ETH_P_ALL it would take
        // frames from every interface of the namespace until then, and
        // keep them queued.
        // SAFETY: plain socket(2) call; the result is checked.
        let fd = cvt(unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        })?;
        // SAFETY: fd was just returned by socket(2) and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let raw = fd.as_raw_fd();
        let one: libc::c_int = 1;
        // The vnet header, version and reserve must precede the ring.
        setsockopt(raw, libc::SOL_PACKET, PACKET_VNET_HDR, &one)?;
        setsockopt(
            raw,
            libc::SOL_PACKET,
            ring::PACKET_VERSION,
            &ring::TPACKET_V2,
        )?;
        setsockopt(raw, libc::SOL_PACKET, ring::PACKET_RESERVE, &ring::RESERVE)?;
        // Any non-zero threshold: frames larger than a slot are queued whole.
        setsockopt(raw, libc::SOL_PACKET, ring::PACKET_COPY_THRESH, &one)?;
        setsockopt(raw, libc::SOL_PACKET, PACKET_IGNORE_OUTGOING, &one)?;
        let buf = libc::c_int::try_from(rcvbuf).unwrap_or(libc::c_int::MAX);
        // Without FORCE the kernel caps at rmem_max; either is fine.
        let _ = setsockopt(raw, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &buf)
            .or_else(|_| setsockopt(raw, libc::SOL_SOCKET, libc::SO_RCVBUF, &buf));
        let _ = setsockopt(raw, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, &buf)
            .or_else(|_| setsockopt(raw, libc::SOL_SOCKET, libc::SO_SNDBUF, &buf));
        let ring = RxRing::create(raw, ring::geometry(mtu, frames))?;
        crate::datapath::bpf::attach(raw, filter)?;
        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as libc::sa_family_t;
        sll.sll_protocol = proto;
        sll.sll_ifindex = libc::c_int::try_from(ifindex).unwrap_or(0);
        let len = libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_ll>()).unwrap_or(0);
        // SAFETY: sll is a valid sockaddr_ll of `len` bytes.
        cvt(unsafe { libc::bind(raw, (&sll as *const libc::sockaddr_ll).cast(), len) })?;
        // Flow hash fanout keeps a flow's packets on one worker (in order).
        // Not FLAG_DEFRAG: the kernel's defragmenter would swallow broken
        // headers before rvs could count them, and rvs drops fragments.
        // Ids are per network namespace and shared with every other
        // process in it: an id of rvs's own choosing could be another
        // program's group (of another type: EINVAL), or a previous
        // generation's on another device. The kernel's unique id cannot.
        let arg = match fanout {
            Fanout::Alone => None,
            Fanout::New => Some(PACKET_FANOUT_FLAG_UNIQUEID << 16),
            Fanout::Join(id) => Some(u32::from(id)),
        };
        if let Some(arg) = arg {
            let arg = arg | (PACKET_FANOUT_HASH << 16);
            setsockopt(raw, libc::SOL_PACKET, PACKET_FANOUT, &arg)?;
        }
        // Not PACKET_QDISC_BYPASS: it hides rvs's transmissions from
        // tcpdump on the director, and saved no measurable time on veth
        // (whose qdisc is noqueue) within the noise of the e2e bench.
        Ok(PacketSocket { ring, fd, ifindex })
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The id of the fanout group the socket is in (the low 16 bits of
    /// `PACKET_FANOUT`; type and flags are above them).
    pub fn fanout_id(&self) -> io::Result<u16> {
        let mut v: u32 = 0;
        getsockopt(self.fd(), libc::SOL_PACKET, PACKET_FANOUT, &mut v)?;
        Ok((v & 0xffff) as u16)
    }

    /// Reads and clears the socket's pending error (`SO_ERROR`): the
    /// kernel sets ENETDOWN when the device goes down or away, and `poll`
    /// reports POLLERR at once until it is read, so a worker that did not
    /// read it would spin on a core from the first link flap on.
    pub fn take_error(&self) -> Option<io::Error> {
        let mut err: libc::c_int = 0;
        match getsockopt(self.fd(), libc::SOL_SOCKET, libc::SO_ERROR, &mut err) {
            Err(e) => Some(e),
            Ok(()) => (err != 0).then(|| io::Error::from_raw_os_error(err)),
        }
    }
}

/// `recvmmsg` state: slots, each with a vnet header and a frame buffer
/// with headroom (the frames too large for a ring slot land here).
pub struct Batch {
    pub vnet: Vec<[u8; VNET_HDR_LEN]>,
    pub bufs: Vec<Vec<u8>>,
    /// Received frame length per slot.
    pub lens: Vec<usize>,
    iov: Vec<[libc::iovec; 2]>,
    msgs: Vec<libc::mmsghdr>,
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("slots", &self.bufs.len())
            .finish()
    }
}

// SAFETY: the raw pointers inside iov/msgs point only into this Batch's own
// buffers and are rebuilt before every syscall; moving the Batch to another
// thread moves those buffers with it.
unsafe impl Send for Batch {}

/// One frame to send: slot index in the batch, frame range, vnet header,
/// and the index of the socket it leaves by.
#[derive(Debug, Clone, Copy)]
pub struct TxDesc {
    pub slot: usize,
    pub start: usize,
    pub len: usize,
    pub vnet: [u8; VNET_HDR_LEN],
    pub sock: usize,
}

impl Batch {
    pub fn new(slots: usize) -> Batch {
        Batch {
            vnet: vec![[0; VNET_HDR_LEN]; slots],
            bufs: (0..slots).map(|_| vec![0u8; SLOT_LEN]).collect(),
            lens: vec![0; slots],
            // SAFETY: iovec and mmsghdr are plain old data; zero is valid.
            iov: vec![unsafe { std::mem::zeroed() }; slots],
            // SAFETY: as above.
            msgs: vec![unsafe { std::mem::zeroed() }; slots],
        }
    }

    /// A batch without slots (a placeholder while one is borrowed out).
    pub fn empty() -> Batch {
        Batch::new(0)
    }

    pub fn slots(&self) -> usize {
        self.bufs.len()
    }

    /// Receives up to `slots()` frames; returns how many. Frame `i` is at
    /// `bufs[i][HEADROOM..HEADROOM + lens[i]]` with offload `vnet[i]`.
    pub fn recv(&mut self, sock: &PacketSocket) -> io::Result<usize> {
        let n = self.bufs.len();
        for i in 0..n {
            self.iov[i][0] = libc::iovec {
                iov_base: self.vnet[i].as_mut_ptr().cast(),
                iov_len: VNET_HDR_LEN,
            };
            self.iov[i][1] = libc::iovec {
                iov_base: self.bufs[i][HEADROOM..].as_mut_ptr().cast(),
                iov_len: MAX_FRAME,
            };
            // SAFETY: msghdr is plain old data.
            let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
            hdr.msg_iov = self.iov[i].as_mut_ptr();
            hdr.msg_iovlen = 2;
            self.msgs[i] = libc::mmsghdr {
                msg_hdr: hdr,
                msg_len: 0,
            };
        }
        let vlen = libc::c_uint::try_from(n).unwrap_or(0);
        // SAFETY: msgs[..n] point at iovecs and buffers owned by self that
        // outlive the call; MSG_DONTWAIT never blocks.
        let r = unsafe {
            libc::recvmmsg(
                sock.fd(),
                self.msgs.as_mut_ptr(),
                vlen,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
                _ => Err(e),
            };
        }
        let got = usize::try_from(r).unwrap_or(0);
        for i in 0..got {
            let l = self.msgs[i].msg_len as usize;
            self.lens[i] = l.saturating_sub(VNET_HDR_LEN);
        }
        Ok(got)
    }
}

/// Sends `frames` (bytes and vnet header each) on `sock`, up to 64 per
/// `sendmmsg`. Returns how many the kernel refused.
pub fn send_frames<'a>(
    sock: &PacketSocket,
    frames: impl Iterator<Item = (&'a [u8], [u8; VNET_HDR_LEN])>,
) -> usize {
    const MAX: usize = 64;
    let mut frames = frames.peekable();
    let mut refused = 0;
    while frames.peek().is_some() {
        let mut vnets = [[0u8; VNET_HDR_LEN]; MAX];
        // SAFETY: plain old data arrays; zero is valid.
        let mut iov: [[libc::iovec; 2]; MAX] = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut msgs: [libc::mmsghdr; MAX] = unsafe { std::mem::zeroed() };
        let mut n = 0;
        for (bytes, vnet) in frames.by_ref().take(MAX) {
            vnets[n] = vnet;
            iov[n][1] = libc::iovec {
                iov_base: bytes.as_ptr() as *mut libc::c_void,
                iov_len: bytes.len(),
            };
            n += 1;
        }
        for i in 0..n {
            iov[i][0] = libc::iovec {
                iov_base: vnets[i].as_mut_ptr().cast(),
                iov_len: VNET_HDR_LEN,
            };
            msgs[i].msg_hdr.msg_iov = iov[i].as_mut_ptr();
            msgs[i].msg_hdr.msg_iovlen = 2;
        }
        let mut sent = 0;
        let mut waits = 0;
        while sent < n {
            let vlen = libc::c_uint::try_from(n - sent).unwrap_or(0);
            // SAFETY: msgs[sent..n] point at iovecs and headers on this stack
            // frame and at caller-owned byte slices that outlive the call.
            let r = unsafe { libc::sendmmsg(sock.fd(), msgs[sent..].as_mut_ptr(), vlen, 0) };
            if r > 0 {
                sent += usize::try_from(r).unwrap_or(1);
                continue;
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock if waits < 10 => {
                    // Queue full: wait for room briefly instead of dropping.
                    waits += 1;
                    let mut pfd = libc::pollfd {
                        fd: sock.fd(),
                        events: libc::POLLOUT,
                        revents: 0,
                    };
                    // SAFETY: one valid pollfd.
                    unsafe { libc::poll(&mut pfd, 1, 10) };
                }
                _ => {
                    // This frame is refused (too big, interface down...).
                    refused += 1;
                    sent += 1;
                }
            }
        }
    }
    refused
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vnet_roundtrip() {
        let o = Offload {
            needs_csum: true,
            csum_start: 34,
            csum_offset: 16,
            gso_type: 1,
            gso_size: 1448,
            hdr_len: 66,
        };
        assert_eq!(parse_vnet(&emit_vnet(&o)), o);
        assert_eq!(parse_vnet(&[0; VNET_HDR_LEN]), Offload::default());
    }
}
