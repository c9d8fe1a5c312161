//! The TPACKET_V3 receive ring: the kernel writes frames into memory we
//! share with it, a block at a time, so receiving costs no syscall and no
//! copy; a block is handed back once every frame in it has been forwarded
//! (frames are rewritten in place and sent from the ring itself).
//!
//! The block timeout is 1 ms: V3 hands a block over when it is full or
//! when the timeout fires, and the default (derived from the block size)
//! adds several milliseconds of latency to a lone packet.
//! PACKET_RESERVE leaves [`HEADROOM`] bytes in front of every frame so TUN
//! can prepend its outer header in place.

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{fence, Ordering};

use crate::core::director::HEADROOM;
use crate::datapath::afpacket::VNET_HDR_LEN;

/// 256 KiB blocks hold a 64 KiB GSO super-frame with room to spare; 32 of
/// them (8 MiB per socket) absorb a burst of ~80 000 small frames.
pub const BLOCK_SIZE: usize = 1 << 18;
pub const BLOCKS: usize = 32;
const RETIRE_TIMEOUT_MS: u32 = 1;

/// One frame in a block: offsets relative to the block start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxFrame {
    /// Where the frame's writable region starts (HEADROOM before the MAC
    /// header).
    pub region: usize,
    /// Where the region ends (the next frame's header, or the block end).
    pub region_end: usize,
    /// Captured length from the MAC header.
    pub len: usize,
    /// The frame was cut short (longer than the ring can hold).
    pub truncated: bool,
    pub vnet: [u8; VNET_HDR_LEN],
}

/// A mapped receive ring.
#[derive(Debug)]
pub struct RxRing {
    map: *mut u8,
    size: usize,
    cur: usize,
}

// SAFETY: the mapping is owned by this value and only touched through
// &mut self; moving it to another thread moves that ownership.
unsafe impl Send for RxRing {}

fn setsockopt<T>(fd: RawFd, name: libc::c_int, value: &T) -> io::Result<()> {
    let len = libc::socklen_t::try_from(std::mem::size_of::<T>()).unwrap_or(0);
    // SAFETY: value points to a live T of len bytes for the call.
    let r =
        unsafe { libc::setsockopt(fd, libc::SOL_PACKET, name, (value as *const T).cast(), len) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

impl RxRing {
    /// Sets TPACKET_V3, the reserve and the ring on `fd` (before bind) and
    /// maps it.
    pub fn setup(fd: RawFd) -> io::Result<RxRing> {
        // enum tpacket_versions { TPACKET_V1, TPACKET_V2, TPACKET_V3 }.
        let v3: libc::c_int = 2;
        setsockopt(fd, libc::PACKET_VERSION, &v3)?;
        let reserve = u32::try_from(HEADROOM).unwrap_or(64);
        setsockopt(fd, libc::PACKET_RESERVE, &reserve)?;
        let req = libc::tpacket_req3 {
            tp_block_size: BLOCK_SIZE as u32,
            tp_block_nr: BLOCKS as u32,
            // V3 frames are variable; frame_size only has to divide the block.
            tp_frame_size: 2048,
            tp_frame_nr: (BLOCK_SIZE / 2048 * BLOCKS) as u32,
            tp_retire_blk_tov: RETIRE_TIMEOUT_MS,
            tp_sizeof_priv: 0,
            tp_feature_req_word: 0,
        };
        setsockopt(fd, libc::PACKET_RX_RING, &req)?;
        let size = BLOCK_SIZE * BLOCKS;
        // SAFETY: mapping the ring the kernel just created on fd.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd,
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(RxRing {
            map: map.cast(),
            size,
            cur: 0,
        })
    }

    fn status(&self) -> &std::sync::atomic::AtomicU32 {
        // SAFETY: the block descriptor starts every block; block_status is
        // its first u32 of the v1 header at offset 8 (after version and
        // offset_to_priv), aligned to 4, inside the mapping.
        unsafe {
            &*(self.map.add(self.cur * BLOCK_SIZE + 8) as *const std::sync::atomic::AtomicU32)
        }
    }

    /// The current block, if the kernel has handed it to us: its bytes and
    /// the frames in it (written into `frames`, cleared first).
    pub fn block(&mut self, frames: &mut Vec<RxFrame>) -> Option<&mut [u8]> {
        if self.status().load(Ordering::Acquire) & libc::TP_STATUS_USER == 0 {
            return None;
        }
        // SAFETY: the block is ours until release(); it lies inside the map.
        let block = unsafe {
            std::slice::from_raw_parts_mut(self.map.add(self.cur * BLOCK_SIZE), BLOCK_SIZE)
        };
        frames.clear();
        let rd = |off: usize| {
            u32::from_ne_bytes([block[off], block[off + 1], block[off + 2], block[off + 3]])
                as usize
        };
        let rd16 = |off: usize| u16::from_ne_bytes([block[off], block[off + 1]]) as usize;
        // tpacket_block_desc: version(4) offset_to_priv(4) then
        // tpacket_hdr_v1: block_status(4) num_pkts(4) offset_to_first_pkt(4) blk_len(4).
        let num = rd(12);
        let mut off = rd(16);
        for _ in 0..num {
            if off + 36 > BLOCK_SIZE {
                break;
            }
            // tpacket3_hdr: next_offset(4) sec(4) nsec(4) snaplen(4) len(4)
            // status(4) mac(2) net(2) ...
            let next = rd(off);
            let snaplen = rd(off + 12);
            let len = rd(off + 16);
            let mac = rd16(off + 24);
            let frame = off + mac;
            let end = if next == 0 { BLOCK_SIZE } else { off + next };
            if mac < HEADROOM + VNET_HDR_LEN || frame + snaplen > end.min(BLOCK_SIZE) {
                break;
            }
            let mut vnet = [0u8; VNET_HDR_LEN];
            vnet.copy_from_slice(&block[frame - VNET_HDR_LEN..frame]);
            frames.push(RxFrame {
                region: frame - HEADROOM,
                region_end: end.min(BLOCK_SIZE),
                len: snaplen,
                truncated: snaplen < len,
                vnet,
            });
            if next == 0 {
                break;
            }
            off += next;
        }
        Some(block)
    }

    /// Hands the current block back to the kernel and moves on.
    pub fn release(&mut self) {
        fence(Ordering::Release);
        self.status()
            .store(libc::TP_STATUS_KERNEL, Ordering::Release);
        self.cur = (self.cur + 1) % BLOCKS;
    }
}

impl Drop for RxRing {
    fn drop(&mut self) {
        // SAFETY: map/size came from mmap and are unmapped once.
        unsafe { libc::munmap(self.map.cast(), self.size) };
    }
}
