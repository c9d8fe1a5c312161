//! IPVS's TCP connection states and transition tables
//! (`net/netfilter/ipvs/ip_vs_proto_tcp.c`, `tcp_states[]`).
//!
//! The director sees both directions of a NAT flow (INPUT and OUTPUT
//! tables) but only the client's side of a TUN or DR flow (INPUT-ONLY).
//! A packet moves the state by its most significant flag: RST, then SYN,
//! then FIN, then ACK; a segment with none of them leaves it unchanged.

use crate::core::config::Timeouts;
use std::time::Duration;

/// A connection's state, with IPVS's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum TcpState {
    None = 0,
    Established = 1,
    SynSent = 2,
    SynRecv = 3,
    FinWait = 4,
    TimeWait = 5,
    Close = 6,
    CloseWait = 7,
    LastAck = 8,
    Listen = 9,
    SynAck = 10,
}

/// Which side a packet came from, and which table applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client → real server, with replies seen (NAT).
    Input,
    /// Real server → client (NAT replies).
    Output,
    /// Client → real server, replies not seen (TUN, DR).
    InputOnly,
}

use TcpState::{
    Close as CL, CloseWait as CW, Established as ES, FinWait as FW, LastAck as LA, Listen as LI,
    None as NO, SynAck as SA, SynRecv as SR, SynSent as SS, TimeWait as TW,
};

/// `[direction][flag][state]`; flag order syn, fin, ack, rst; state order
/// as in [`TcpState`]. Transcribed from the IPVS table, which is the
/// behaviour operators know from `ipvsadm -L -c`.
const TABLE: [[[TcpState; 11]; 4]; 3] = [
    // INPUT
    [
        [SR, ES, ES, SR, SR, SR, SR, SR, SR, SR, SR],
        [CL, CW, SS, TW, TW, TW, CL, CW, LA, LI, TW],
        [CL, ES, SS, ES, FW, TW, CL, CW, CL, LI, ES],
        [CL, CL, CL, SR, CL, CL, CL, CL, LA, LI, SR],
    ],
    // OUTPUT
    [
        [SS, ES, SS, SR, SS, SS, SS, SS, SS, LI, SR],
        [TW, FW, SS, TW, FW, TW, CL, TW, LA, LI, TW],
        [ES, ES, SS, ES, FW, TW, CL, CW, LA, ES, ES],
        [CL, CL, SS, CL, CL, TW, CL, CL, CL, CL, CL],
    ],
    // INPUT-ONLY
    [
        [SR, ES, ES, SR, SR, SR, SR, SR, SR, SR, SR],
        [CL, FW, SS, TW, FW, TW, CL, CW, LA, LI, TW],
        [CL, ES, SS, ES, FW, TW, CL, CW, CL, LI, ES],
        [CL, CL, CL, SR, CL, CL, CL, CL, LA, LI, CL],
    ],
];

const ALL: [TcpState; 11] = [NO, ES, SS, SR, FW, TW, CL, CW, LA, LI, SA];

impl TcpState {
    pub fn from_u8(v: u8) -> TcpState {
        ALL.get(usize::from(v)).copied().unwrap_or(CL)
    }

    /// The state after a segment with TCP `flags` (raw flag byte) travelling
    /// in `dir`.
    pub fn next(self, dir: Direction, flags: u8) -> TcpState {
        const FIN: u8 = 0x01;
        const SYN: u8 = 0x02;
        const RST: u8 = 0x04;
        const ACK: u8 = 0x10;
        let idx = if flags & RST != 0 {
            3
        } else if flags & SYN != 0 {
            0
        } else if flags & FIN != 0 {
            1
        } else if flags & ACK != 0 {
            2
        } else {
            return self;
        };
        let d = match dir {
            Direction::Input => 0,
            Direction::Output => 1,
            Direction::InputOnly => 2,
        };
        TABLE[d][idx][self as usize]
    }

    /// IPVS counts ESTABLISHED connections as active, all others inactive.
    pub fn is_active(self) -> bool {
        self == ES
    }

    /// A SYN in one of these states starts a new connection on the same
    /// tuple (the client reused its port after closing): it is rescheduled
    /// at once instead of being stalled the way IPVS's conn_reuse_mode does.
    pub fn allows_reuse(self) -> bool {
        matches!(self, TW | CL | FW | CW | LA)
    }

    pub fn timeout(self, t: &Timeouts) -> Duration {
        match self {
            NO => t.tcp_close,
            ES => t.tcp_established,
            SS => t.tcp_syn_sent,
            SR => t.tcp_syn_recv,
            FW => t.tcp_fin_wait,
            TW => t.tcp_time_wait,
            CL => t.tcp_close,
            CW => t.tcp_close_wait,
            LA => t.tcp_last_ack,
            LI => t.tcp_listen,
            SA => t.tcp_synack,
        }
    }

    /// IPVS's name, as `ipvsadm -L -n -c` prints it.
    pub fn name(self) -> &'static str {
        match self {
            NO => "NONE",
            ES => "ESTABLISHED",
            SS => "SYN_SENT",
            SR => "SYN_RECV",
            FW => "FIN_WAIT",
            TW => "TIME_WAIT",
            CL => "CLOSE",
            CW => "CLOSE_WAIT",
            LA => "LAST_ACK",
            LI => "LISTEN",
            SA => "SYNACK",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    const SYN: u8 = 0x02;
    const SYNACK: u8 = 0x12;
    const ACK: u8 = 0x10;
    const FIN: u8 = 0x11;
    const RST: u8 = 0x04;

    #[test]
    fn nat_handshake_and_close() {
        let s = TcpState::None.next(Direction::Input, SYN);
        assert_eq!(s, SR);
        let s = s.next(Direction::Output, SYNACK);
        assert_eq!(s, SR);
        let s = s.next(Direction::Input, ACK);
        assert_eq!(s, ES);
        assert!(s.is_active());
        let s = s.next(Direction::Input, FIN);
        assert_eq!(s, CW);
        let s = s.next(Direction::Output, FIN);
        assert_eq!(s, TW);
        assert!(s.allows_reuse());
    }

    #[test]
    fn input_only_close_goes_through_fin_wait() {
        let s = TcpState::None.next(Direction::InputOnly, SYN);
        let s = s.next(Direction::InputOnly, ACK);
        assert_eq!(s, ES);
        let s = s.next(Direction::InputOnly, FIN);
        assert_eq!(s, FW);
        assert_eq!(s.next(Direction::InputOnly, RST), CL);
    }

    #[test]
    fn flagless_segment_keeps_state_and_ack_without_syn_closes() {
        assert_eq!(ES.next(Direction::Input, 0), ES);
        assert_eq!(NO.next(Direction::Input, ACK), CL);
    }

    #[test]
    fn default_timeouts_are_ipvs() {
        let t = Timeouts::default();
        assert_eq!(ES.timeout(&t), Duration::from_secs(900));
        assert_eq!(SR.timeout(&t), Duration::from_secs(60));
        assert_eq!(CL.timeout(&t), Duration::from_secs(10));
        assert_eq!(LA.timeout(&t), Duration::from_secs(30));
        for s in ALL {
            assert_eq!(TcpState::from_u8(s as u8), s);
        }
        assert_eq!(TcpState::from_u8(200), CL);
    }
}
