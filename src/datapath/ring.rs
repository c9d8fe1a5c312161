//! The TPACKET_V2 receive ring of one AF_PACKET socket: the kernel writes
//! each frame (behind its `virtio_net_hdr`) into a slot of a ring shared
//! with rvs by mmap, and rvs hands the slot back by writing its status
//! word. Under load the worker takes frames without any system call; it
//! sleeps in `poll` only when the ring is empty. V2 rather than V3: V3
//! hands over whole blocks, and a lone packet waits for its block's timeout
//! (at least a jiffy), which multiplies the latency of a quiet flow.
//!
//! Frames that do not fit a slot (GRO super-frames of up to 64 KiB) are
//! written truncated with `TP_STATUS_COPY`, and the kernel queues the whole
//! frame on the socket (`PACKET_COPY_THRESH`); the worker reads those with
//! `recvmsg`, in ring order. This layer only moves bytes: it never looks
//! inside a frame.

use std::io;
use std::os::fd::RawFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::core::director::HEADROOM;

use super::afpacket::{getsockopt, VNET_HDR_LEN};

pub const PACKET_RX_RING: libc::c_int = 5;
pub const PACKET_STATISTICS: libc::c_int = 6;
pub const PACKET_COPY_THRESH: libc::c_int = 7;
pub const PACKET_VERSION: libc::c_int = 10;
pub const PACKET_RESERVE: libc::c_int = 12;
pub const TPACKET_V2: libc::c_int = 1;

const TP_STATUS_KERNEL: u32 = 0;
const TP_STATUS_USER: u32 = 1;
const TP_STATUS_COPY: u32 = 2;

/// `struct tpacket2_hdr`: status, len, snaplen, mac, net, sec, nsec,
/// vlan_tci, vlan_tpid, padding — 32 bytes, then `sockaddr_ll`.
const TPACKET2_HDR_LEN: usize = 32;
const OFF_LEN: usize = 4;
const OFF_SNAPLEN: usize = 8;
const OFF_MAC: usize = 12;

/// Bytes the kernel keeps free between its headers and the frame
/// (`PACKET_RESERVE`): the core's headroom (an outer IPv4 header for TUN)
/// comes out of them, so a slot holds everything the core may write.
pub const RESERVE: u32 = HEADROOM as u32;

/// `struct tpacket_req`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct TpacketReq {
    pub block_size: u32,
    pub block_nr: u32,
    pub frame_size: u32,
    pub frame_nr: u32,
}

/// Ring geometry for an interface MTU: slots of a power of two that hold
/// the kernel's headers, the reserve, an Ethernet frame with a VLAN tag
/// and room for the core to grow it (an ICMP error quoting the packet),
/// `frames` of them (rounded to whole 64 KiB blocks).
pub fn geometry(mtu: u32, frames: u32) -> TpacketReq {
    let need = 128 + RESERVE + mtu.max(576) + 18 + 96;
    let frame_size = need.next_power_of_two().max(2048);
    let block_size = frame_size.max(1 << 16);
    let per_block = block_size / frame_size;
    let block_nr = frames.div_ceil(per_block).max(1);
    TpacketReq {
        block_size,
        block_nr,
        frame_size,
        frame_nr: block_nr * per_block,
    }
}

/// Slots of a ring of about `bytes` for an interface MTU (at least one).
pub fn frames_for(mtu: u32, bytes: u32) -> u32 {
    (bytes / geometry(mtu, 1).frame_size).max(1)
}

/// One frame the ring handed over: where its bytes are in the slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxFrame {
    /// Slot index (release it with [`RxRing::release`]).
    pub slot: usize,
    /// Offset of the Ethernet header inside the slot.
    pub mac: usize,
    /// Bytes present in the slot.
    pub snaplen: usize,
    /// The frame's full length (larger than `snaplen` when truncated).
    pub len: usize,
    /// The whole frame waits on the socket queue (`TP_STATUS_COPY`).
    pub copied: bool,
}

/// The mapped ring; unmapped on drop.
#[derive(Debug)]
pub struct RxRing {
    map: NonNull<u8>,
    map_len: usize,
    frame_size: usize,
    frames: usize,
    head: usize,
}

// SAFETY: the mapping belongs to this value alone (one worker thread uses
// it); the kernel is the only other party and synchronises via the status
// words with acquire/release.
unsafe impl Send for RxRing {}

impl RxRing {
    /// Sets up the ring on `fd`, which must already have its vnet header,
    /// version and reserve options set, and maps it.
    pub fn create(fd: RawFd, req: TpacketReq) -> io::Result<RxRing> {
        let len = libc::socklen_t::try_from(std::mem::size_of::<TpacketReq>()).unwrap_or(0);
        // SAFETY: `req` is a valid tpacket_req of `len` bytes.
        let r = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_PACKET,
                PACKET_RX_RING,
                (&req as *const TpacketReq).cast(),
                len,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        let map_len = req.block_size as usize * req.block_nr as usize;
        // SAFETY: mapping the ring the kernel just allocated for `fd`; the
        // result is checked.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let map = NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap: null"))?;
        Ok(RxRing {
            map,
            map_len,
            frame_size: req.frame_size as usize,
            frames: req.frame_nr as usize,
            head: 0,
        })
    }

    pub fn frames(&self) -> usize {
        self.frames
    }

    fn slot_ptr(&self, slot: usize) -> *mut u8 {
        debug_assert!(slot < self.frames);
        // SAFETY: slot < frames, and frames × frame_size ≤ map_len
        // (blocks are whole multiples of the frame size).
        unsafe { self.map.as_ptr().add(slot * self.frame_size) }
    }

    fn status(&self, slot: usize) -> &AtomicU32 {
        // SAFETY: the status word is the first, 4-byte aligned field of
        // every slot (slots are 16-byte aligned inside a page-aligned map)
        // and the kernel accesses it atomically too.
        unsafe { &*self.slot_ptr(slot).cast::<AtomicU32>() }
    }

    fn read_u32(&self, slot: usize, off: usize) -> u32 {
        // SAFETY: off + 4 ≤ TPACKET2_HDR_LEN < frame_size, inside the slot;
        // the kernel wrote it before publishing the status (acquire).
        unsafe { std::ptr::read_volatile(self.slot_ptr(slot).add(off).cast::<u32>()) }
    }

    fn read_u16(&self, slot: usize, off: usize) -> u16 {
        // SAFETY: as read_u32.
        unsafe { std::ptr::read_volatile(self.slot_ptr(slot).add(off).cast::<u16>()) }
    }

    /// The next frame the kernel handed over, if any; advances the head.
    /// Slots must be released in the order they were taken.
    pub fn take(&mut self) -> Option<RxFrame> {
        let slot = self.head;
        let st = self.status(slot).load(Ordering::Acquire);
        if st & TP_STATUS_USER == 0 {
            return None;
        }
        self.head = if slot + 1 == self.frames { 0 } else { slot + 1 };
        let len = self.read_u32(slot, OFF_LEN) as usize;
        let snaplen = self.read_u32(slot, OFF_SNAPLEN) as usize;
        let mac = usize::from(self.read_u16(slot, OFF_MAC));
        // A kernel that wrote offsets outside the slot gets an empty frame
        // (dropped as malformed upstream) rather than a wild slice.
        let (mac, snaplen) = if mac < TPACKET2_HDR_LEN + VNET_HDR_LEN + HEADROOM
            || mac.saturating_add(snaplen) > self.frame_size
        {
            (self.frame_size, 0)
        } else {
            (mac, snaplen)
        };
        Some(RxFrame {
            slot,
            mac,
            snaplen,
            len,
            copied: st & TP_STATUS_COPY != 0,
        })
    }

    /// The vnet header written in front of frame `f`.
    pub fn vnet(&self, f: &RxFrame) -> [u8; VNET_HDR_LEN] {
        let mut h = [0u8; VNET_HDR_LEN];
        if f.snaplen > 0 {
            // SAFETY: take() checked mac ≥ header + vnet length, so the
            // 10 bytes before it lie inside the slot.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    self.slot_ptr(f.slot).add(f.mac - VNET_HDR_LEN),
                    h.as_mut_ptr(),
                    VNET_HDR_LEN,
                );
            }
        }
        h
    }

    /// The writable part of slot `f.slot` from `HEADROOM` bytes before the
    /// frame to the slot's end: the frame is at `HEADROOM..HEADROOM +
    /// snaplen`. The kernel's header fields before it are not included.
    pub fn buf_mut(&mut self, f: &RxFrame) -> &mut [u8] {
        let start = f.mac.saturating_sub(HEADROOM).min(self.frame_size);
        // SAFETY: start ≥ TPACKET2_HDR_LEN (checked in take()), so the
        // slice [start, frame_size) lies inside slot f.slot, which the
        // kernel does not touch while its status is USER; &mut self keeps
        // it unique.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.slot_ptr(f.slot).add(start),
                self.frame_size - start,
            )
        }
    }

    /// The bytes `[start, start + len)` of the slice [`buf_mut`] returns.
    pub fn bytes(&self, f: &RxFrame, start: usize, len: usize) -> &[u8] {
        let base = f.mac.saturating_sub(HEADROOM).min(self.frame_size);
        let from = (base + start).min(self.frame_size);
        let to = (from + len).min(self.frame_size);
        // SAFETY: [from, to) lies inside the slot (clamped above).
        unsafe { std::slice::from_raw_parts(self.slot_ptr(f.slot).add(from), to - from) }
    }

    /// Gives slot `slot` back to the kernel.
    pub fn release(&self, slot: usize) {
        self.status(slot).store(TP_STATUS_KERNEL, Ordering::Release);
    }
}

impl Drop for RxRing {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the region create() mapped.
        unsafe {
            libc::munmap(self.map.as_ptr().cast(), self.map_len);
        }
    }
}

/// Frames the kernel dropped on `fd` since the last call (ring full, or a
/// truncated frame whose copy found the socket queue full): reading
/// `PACKET_STATISTICS` resets it.
pub fn take_drops(fd: RawFd) -> u64 {
    // struct tpacket_stats: packets, drops.
    let mut st = [0u32; 2];
    match getsockopt(fd, libc::SOL_PACKET, PACKET_STATISTICS, &mut st) {
        Ok(()) => u64::from(st[1]),
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_fits_frames_and_blocks() {
        for (mtu, frames) in [(1500, 2048), (9000, 512), (68, 1), (65535, 8)] {
            let g = geometry(mtu, frames);
            assert!(g.frame_size.is_power_of_two(), "{g:?}");
            assert!(g.frame_size >= 128 + RESERVE + mtu + 18, "{g:?}");
            assert_eq!(g.block_size % g.frame_size, 0, "{g:?}");
            assert_eq!(g.block_size % 4096, 0, "{g:?}");
            assert_eq!(
                g.frame_nr,
                g.block_nr * (g.block_size / g.frame_size),
                "{g:?}"
            );
            assert!(g.frame_nr >= frames, "{g:?}");
        }
        assert_eq!(geometry(1500, 2048).frame_size, 2048);
        assert_eq!(frames_for(1500, 8 << 20), 4096);
        assert_eq!(frames_for(9000, 8 << 20), 512);
        assert_eq!(frames_for(65535, 1), 1);
    }
}
