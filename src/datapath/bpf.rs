//! A classic BPF socket filter generated from the snapshot, so the workers
//! read only the frames that can concern them: ARP, IPv4 to a VIP, and
//! IPv4 from a NAT real server. Everything else (the director's own
//! traffic, IPv6, LLDP…) stays in the kernel and costs the daemon nothing.
//!
//! Each address is one compare-and-accept pair (`jeq #a, 0, 1; ret #-1`),
//! so jump offsets never exceed one and any number of addresses fits up to
//! the kernel's 4096-instruction limit (then the filter falls back to
//! "ARP and IPv4").

use std::collections::BTreeSet;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::RawFd;

use crate::core::service::Snapshot;

const LD_H_ABS: u16 = 0x28;
const LD_W_ABS: u16 = 0x20;
const JEQ_K: u16 = 0x15;
const RET_K: u16 = 0x06;
const LD_W_LEN: u16 = 0x80;
const JGE_K: u16 = 0x35;
const BPF_MAXINSNS: usize = 4096;

/// One instruction (`struct sock_filter`).
pub type Insn = libc::sock_filter;

fn insn(code: u16, jt: u8, jf: u8, k: u32) -> Insn {
    Insn { code, jt, jf, k }
}

/// The program accepting ARP, IPv4 to `dsts` and IPv4 from `srcs`.
pub fn program(dsts: &BTreeSet<Ipv4Addr>, srcs: &BTreeSet<Ipv4Addr>) -> Vec<Insn> {
    let accept = insn(RET_K, 0, 0, u32::MAX);
    let drop = insn(RET_K, 0, 0, 0);
    let mut p = vec![
        insn(LD_H_ABS, 0, 0, 12),
        insn(JEQ_K, 0, 1, 0x0806),
        accept,
        insn(JEQ_K, 1, 0, 0x0800),
        drop,
        // Runts that cannot hold both addresses are read so they can be
        // counted as malformed (a load past the end would drop them here).
        insn(LD_W_LEN, 0, 0, 0),
        insn(JGE_K, 1, 0, 34),
        accept,
    ];
    if p.len() + 2 * (dsts.len() + srcs.len()) + 3 > BPF_MAXINSNS {
        p.push(accept);
        return p;
    }
    // Ethernet 14 + IPv4 destination at 16, source at 12.
    p.push(insn(LD_W_ABS, 0, 0, 30));
    for a in dsts {
        p.push(insn(JEQ_K, 0, 1, u32::from(*a)));
        p.push(accept);
    }
    p.push(insn(LD_W_ABS, 0, 0, 26));
    for a in srcs {
        p.push(insn(JEQ_K, 0, 1, u32::from(*a)));
        p.push(accept);
    }
    p.push(drop);
    p
}

/// A program accepting nothing: a socket opened to take over from another
/// reads no frame (which would then be forwarded twice) until it is given
/// the real program.
pub fn nothing() -> Vec<Insn> {
    vec![insn(RET_K, 0, 0, 0)]
}

/// The program for `snap`.
pub fn for_snapshot(snap: &Snapshot) -> Vec<Insn> {
    let dsts: BTreeSet<Ipv4Addr> = snap.vips().collect();
    let srcs: BTreeSet<Ipv4Addr> = snap.nat_reals().map(|(_, a)| *a.ip()).collect();
    program(&dsts, &srcs)
}

/// Attaches (or replaces) the filter on a socket; safe while another
/// thread polls it.
pub fn attach(fd: RawFd, prog: &[Insn]) -> io::Result<()> {
    let fprog = libc::sock_fprog {
        len: u16::try_from(prog.len()).unwrap_or(0),
        filter: prog.as_ptr().cast_mut(),
    };
    let len = libc::socklen_t::try_from(std::mem::size_of::<libc::sock_fprog>()).unwrap_or(0);
    // SAFETY: fprog points at `prog`, alive for the call; the kernel copies it.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&fprog as *const libc::sock_fprog).cast(),
            len,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny interpreter for the instructions we emit.
    fn run(p: &[Insn], frame: &[u8]) -> u32 {
        let mut a = 0u32;
        let mut pc = 0;
        while pc < p.len() {
            let i = p[pc];
            pc += 1;
            match i.code {
                LD_H_ABS => {
                    let k = i.k as usize;
                    a = u32::from(u16::from_be_bytes([frame[k], frame[k + 1]]));
                }
                LD_W_ABS => {
                    let k = i.k as usize;
                    a = u32::from_be_bytes([frame[k], frame[k + 1], frame[k + 2], frame[k + 3]]);
                }
                JEQ_K => pc += usize::from(if a == i.k { i.jt } else { i.jf }),
                JGE_K => pc += usize::from(if a >= i.k { i.jt } else { i.jf }),
                LD_W_LEN => a = u32::try_from(frame.len()).unwrap_or(u32::MAX),
                RET_K => return i.k,
                _ => panic!("unexpected opcode"),
            }
        }
        panic!("fell off the program")
    }

    fn ipv4(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
        let mut f = vec![0u8; 34];
        f[12] = 0x08;
        f[26..30].copy_from_slice(&src);
        f[30..34].copy_from_slice(&dst);
        f
    }

    #[test]
    fn accepts_only_relevant_frames() {
        let vips: BTreeSet<_> = [Ipv4Addr::new(203, 0, 113, 10)].into();
        let reals: BTreeSet<_> =
            [Ipv4Addr::new(192, 0, 2, 11), Ipv4Addr::new(192, 0, 2, 12)].into();
        let p = program(&vips, &reals);
        assert_eq!(
            run(&p, &ipv4([198, 51, 100, 2], [203, 0, 113, 10])),
            u32::MAX
        );
        assert_eq!(run(&p, &ipv4([192, 0, 2, 12], [198, 51, 100, 2])), u32::MAX);
        assert_eq!(run(&p, &ipv4([192, 0, 2, 99], [192, 0, 2, 1])), 0);
        let mut arp = vec![0u8; 42];
        arp[12] = 0x08;
        arp[13] = 0x06;
        assert_eq!(run(&p, &arp), u32::MAX);
        let mut v6 = vec![0u8; 60];
        v6[12] = 0x86;
        v6[13] = 0xdd;
        assert_eq!(run(&p, &v6), 0);
        assert_eq!(
            run(&p, &ipv4([1, 1, 1, 1], [2, 2, 2, 2])[..20]),
            u32::MAX,
            "runt read"
        );
    }

    #[test]
    fn too_many_addresses_fall_back_to_all_ipv4() {
        let vips: BTreeSet<_> = (0..3000u32).map(Ipv4Addr::from).collect();
        let p = program(&vips, &BTreeSet::new());
        assert!(p.len() <= BPF_MAXINSNS);
        assert_eq!(run(&p, &ipv4([1, 1, 1, 1], [9, 9, 9, 9])), u32::MAX);
    }
}
