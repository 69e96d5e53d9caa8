//! The bytes XNU hands back through `sysctl` and libproc, laid out and read
//! without calling anything, so the layouts and parsers are compiled and
//! tested on Linux CI as well as used on macOS.
//!
//! Neither the `libc` crate nor any crate that builds without the macOS SDK
//! declares `kinfo_proc` or `socket_fdinfo`, so they are written out here
//! from XNU's headers (xnu-11417: bsd/sys/sysctl.h, bsd/sys/proc.h,
//! bsd/sys/proc_internal.h for the 64-bit `user64_kinfo_proc` the kernel
//! copies out, bsd/sys/proc_info.h). Every layout carries compile-time
//! checks of its size and of the offsets read; the sizes were also checked
//! against the same declarations compiled by a C compiler for LP64 and
//! against golang.org/x/sys's generated `SizeofKinfoProc = 0x288`. Nothing
//! here was recorded on a real Mac: the fixtures in the tests are built
//! from these documented layouts.
// On Linux only the tests use it.
#![cfg_attr(not(target_os = "macos"), allow(dead_code))]

use std::mem::{offset_of, size_of};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// `SZOMB` from bsd/sys/proc.h: exited, not yet reaped.
pub(super) const SZOMB: i8 = 5;

/// `struct extern_proc` as a 64-bit process receives it (`user64_extern_proc`
/// in bsd/sys/proc_internal.h): pointers are 64-bit words, and only the
/// fields read are named for what they are.
#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct ExternProc {
    /// A union of the run-queue links and `p_starttime` (a `timeval`).
    pub p_un: [u64; 2],
    pub p_vmspace: u64,
    pub p_sigacts: u64,
    pub p_flag: i32,
    pub p_stat: i8,
    pub p_pid: i32,
    pub p_oppid: i32,
    pub p_dupfd: i32,
    pub user_stack: u64,
    pub exit_thread: u64,
    pub p_debugger: i32,
    pub sigwait: i32,
    pub p_estcpu: u32,
    pub p_cpticks: i32,
    pub p_pctcpu: u32,
    pub p_wchan: u64,
    pub p_wmesg: u64,
    pub p_swtime: u32,
    pub p_slptime: u32,
    /// `struct user64_itimerval`: two 16-byte timevals.
    pub p_realtimer: [u64; 4],
    pub p_rtime: [u64; 2],
    pub p_uticks: u64,
    pub p_sticks: u64,
    pub p_iticks: u64,
    pub p_traceflag: i32,
    pub p_tracep: u64,
    pub p_siglist: i32,
    pub p_textvp: u64,
    pub p_holdcnt: i32,
    pub p_sigmask: u32,
    pub p_sigignore: u32,
    pub p_sigcatch: u32,
    pub p_priority: u8,
    pub p_usrpri: u8,
    pub p_nice: i8,
    pub p_comm: [u8; 17],
    pub p_pgrp: u64,
    pub p_addr: u64,
    pub p_xstat: u16,
    pub p_acflag: u16,
    pub p_ru: u64,
}

/// `struct eproc` (`user64_eproc`).
#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct Eproc {
    pub e_paddr: u64,
    pub e_sess: u64,
    /// `struct user64_pcred`: a 72-byte lock, a pointer, five ints.
    pub e_pcred: [u64; 13],
    /// `struct _ucred`: ref, uid, ngroups, 16 groups.
    pub e_ucred: [u32; 19],
    /// `struct user64_vmspace`.
    pub e_vm: [u64; 8],
    pub e_ppid: i32,
    pub e_pgid: i32,
    pub e_jobc: i16,
    pub e_tdev: i32,
    pub e_tpgid: i32,
    pub e_tsess: u64,
    pub e_wmesg: [u8; 8],
    pub e_xsize: i32,
    pub e_xrssize: i16,
    pub e_xccount: i16,
    pub e_xswrss: i16,
    pub e_flag: i32,
    pub e_login: [u8; 12],
    pub e_spare: [i32; 4],
}

/// `struct kinfo_proc`, one per process from `sysctl(CTL_KERN, KERN_PROC, ...)`.
#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct KinfoProc {
    pub kp_proc: ExternProc,
    pub kp_eproc: Eproc,
}

const _: () = {
    assert!(size_of::<KinfoProc>() == 648);
    assert!(offset_of!(ExternProc, p_stat) == 36);
    assert!(offset_of!(ExternProc, p_pid) == 40);
    assert!(offset_of!(KinfoProc, kp_eproc) == 296);
    assert!(offset_of!(KinfoProc, kp_eproc) + offset_of!(Eproc, e_ppid) == 560);
    assert!(offset_of!(KinfoProc, kp_eproc) + offset_of!(Eproc, e_pgid) == 564);
};

/// What the supervisor needs of one `kinfo_proc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ProcEntry {
    pub pid: i32,
    pub ppid: i32,
    pub pgid: i32,
    /// Exited and not yet reaped: runs no code, holds no descriptors.
    pub zombie: bool,
}

/// The processes in a `KERN_PROC` answer (the kernel copies whole
/// records only; a short tail is ignored).
pub(super) fn parse_kinfo_procs(bytes: &[u8]) -> Vec<ProcEntry> {
    bytes
        .chunks_exact(size_of::<KinfoProc>())
        .map(|chunk| {
            // SAFETY: the chunk is exactly one KinfoProc long, the struct
            // is plain integers (any bit pattern is valid), and
            // read_unaligned copes with the Vec<u8>'s alignment.
            let k: KinfoProc = unsafe { std::ptr::read_unaligned(chunk.as_ptr().cast()) };
            ProcEntry {
                pid: k.kp_proc.p_pid,
                ppid: k.kp_eproc.e_ppid,
                pgid: k.kp_eproc.e_pgid,
                zombie: k.kp_proc.p_stat == SZOMB,
            }
        })
        .collect()
}

/// `proc_fdtype` of a socket in a `PROC_PIDLISTFDS` answer.
pub(super) const PROX_FDTYPE_SOCKET: u32 = 2;
/// `proc_fdtype` of a file or folder (a vnode).
pub(super) const PROX_FDTYPE_VNODE: u32 = 1;
/// `PROC_PIDFDVNODEINFO`, the `proc_pidfdinfo` flavor for vnodes.
pub(super) const PROC_PIDFDVNODEINFO: i32 = 1;
/// `PROC_PIDFDSOCKETINFO`, the `proc_pidfdinfo` flavor for sockets.
pub(super) const PROC_PIDFDSOCKETINFO: i32 = 3;
/// `soi_kind` of a TCP socket, whose `soi_proto` is a `tcp_sockinfo`.
pub(super) const SOCKINFO_TCP: i32 = 2;
/// `tcpsi_state` of a listening socket.
pub(super) const TSI_S_LISTEN: i32 = 1;
/// `tcpsi_state` of a closed one (`TSI_S_CLOSED`).
pub(super) const TSI_S_CLOSED: i32 = 0;
/// `insi_vflag` bits: the pcb takes IPv4 / IPv6 traffic.
pub(super) const INI_IPV4: u8 = 0x1;
pub(super) const INI_IPV6: u8 = 0x2;

#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct ProcFileInfo {
    pub fi_openflags: u32,
    pub fi_status: u32,
    pub fi_offset: i64,
    pub fi_type: i32,
    pub fi_guardflags: u32,
}

/// `struct vinfo_stat`: a fixed-size copy of `stat64`.
#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct VinfoStat {
    pub vst_dev: u32,
    pub vst_mode: u16,
    pub vst_nlink: u16,
    pub vst_ino: u64,
    pub vst_uid: u32,
    pub vst_gid: u32,
    /// atime, mtime, ctime, birthtime: seconds and nanoseconds each.
    pub vst_times: [i64; 8],
    pub vst_size: i64,
    pub vst_blocks: i64,
    pub vst_blksize: i32,
    pub vst_flags: u32,
    pub vst_gen: u32,
    pub vst_rdev: u32,
    pub vst_qspare: [i64; 2],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct SockbufInfo {
    pub sbi_cc: u32,
    pub sbi_hiwat: u32,
    pub sbi_mbcnt: u32,
    pub sbi_mbmax: u32,
    pub sbi_lowat: u32,
    pub sbi_flags: i16,
    pub sbi_timeo: i16,
}

/// An `in4in6_addr`/`in6_addr` union: 16 bytes, 4-byte aligned. An IPv4
/// address is the last four bytes.
#[repr(C, align(4))]
#[derive(Clone, Copy)]
pub(super) struct InAddr46(pub [u8; 16]);

#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct InSockInfoV6 {
    pub in6_hlim: u8,
    pub in6_cksum: i32,
    pub in6_ifindex: u16,
    pub in6_hops: i16,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct InSockInfo {
    pub insi_fport: i32,
    /// The port in network byte order, widened to an int (`inp_lport`).
    pub insi_lport: i32,
    pub insi_gencnt: u64,
    pub insi_flags: u32,
    pub insi_flow: u32,
    pub insi_vflag: u8,
    pub insi_ip_ttl: u8,
    pub rfu_1: u32,
    pub insi_faddr: InAddr46,
    pub insi_laddr: InAddr46,
    pub insi_v4: u8,
    pub insi_v6: InSockInfoV6,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct TcpSockInfo {
    pub tcpsi_ini: InSockInfo,
    pub tcpsi_state: i32,
    pub tcpsi_timer: [i32; 4],
    pub tcpsi_mss: i32,
    pub tcpsi_flags: u32,
    pub rfu_1: u32,
    pub tcpsi_tp: u64,
}

/// `soi_proto`: a union whose largest member is `un_sockinfo` (two handles
/// and two 255-byte address unions: 526 bytes, padded to 528).
#[repr(C)]
#[derive(Clone, Copy)]
pub(super) union SoiProto {
    pub pri_tcp: TcpSockInfo,
    pub bytes: [u64; 66],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct SocketInfo {
    pub soi_stat: VinfoStat,
    /// The socket's identity: `VM_KERNEL_ADDRHASH(so)` (socket_info.c), a
    /// kernel address hashed with a per-boot salt. Stable for the socket's
    /// life, the same in every process that holds it.
    pub soi_so: u64,
    pub soi_pcb: u64,
    pub soi_type: i32,
    pub soi_protocol: i32,
    pub soi_family: i32,
    pub soi_options: i16,
    pub soi_linger: i16,
    pub soi_state: i16,
    pub soi_qlen: i16,
    pub soi_incqlen: i16,
    pub soi_qlimit: i16,
    pub soi_timeo: i16,
    pub soi_error: u16,
    pub soi_oobmark: u32,
    pub soi_rcv: SockbufInfo,
    pub soi_snd: SockbufInfo,
    pub soi_kind: i32,
    pub rfu_1: u32,
    pub soi_proto: SoiProto,
}

/// `struct vnode_info`: what a vnode descriptor is open on.
#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct VnodeInfo {
    pub vi_stat: VinfoStat,
    pub vi_type: i32,
    pub vi_pad: i32,
    pub vi_fsid: [i32; 2],
}

/// `struct vnode_fdinfo`, the answer to `PROC_PIDFDVNODEINFO`.
#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct VnodeFdInfo {
    pub pfi: ProcFileInfo,
    pub pvi: VnodeInfo,
}

impl VnodeFdInfo {
    /// An all-zero record for the kernel to fill.
    pub(super) fn zeroed() -> VnodeFdInfo {
        // SAFETY: every field is an integer or an array of them; all-zero
        // is a valid value.
        unsafe { std::mem::zeroed() }
    }
}

/// `struct socket_fdinfo`, the answer to `PROC_PIDFDSOCKETINFO`.
#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct SocketFdInfo {
    pub pfi: ProcFileInfo,
    pub psi: SocketInfo,
}

const _: () = {
    assert!(size_of::<ProcFileInfo>() == 24);
    assert!(size_of::<VinfoStat>() == 136);
    assert!(size_of::<InSockInfo>() == 80);
    assert!(size_of::<TcpSockInfo>() == 120);
    assert!(size_of::<SoiProto>() == 528);
    assert!(size_of::<SocketInfo>() == 768);
    assert!(size_of::<SocketFdInfo>() == 792);
    assert!(size_of::<VnodeInfo>() == 152);
    assert!(size_of::<VnodeFdInfo>() == 176);
    assert!(offset_of!(VinfoStat, vst_ino) == 8);
    assert!(offset_of!(SocketInfo, soi_so) == 136);
    assert!(offset_of!(SocketInfo, soi_family) == 160);
    assert!(offset_of!(SocketInfo, soi_kind) == 232);
    assert!(offset_of!(SocketInfo, soi_proto) == 240);
    assert!(offset_of!(InSockInfo, insi_vflag) == 24);
    assert!(offset_of!(InSockInfo, insi_laddr) == 48);
    assert!(offset_of!(TcpSockInfo, tcpsi_state) == 80);
};

impl SocketFdInfo {
    /// An all-zero record for the kernel to fill.
    pub(super) fn zeroed() -> SocketFdInfo {
        // SAFETY: every field is an integer or an array of them; all-zero
        // is a valid value.
        unsafe { std::mem::zeroed() }
    }
}

/// A listening TCP socket as libproc describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct TcpListening {
    pub local: SocketAddr,
    /// An IPv6 socket that also takes IPv4 (`[::]` without IPV6_V6ONLY):
    /// tcp6_usr_bind in bsd/netinet/tcp_usrreq.c sets INP_IPV4 beside
    /// INP_IPV6 exactly then.
    pub dual_stack: bool,
    pub socket: u64,
}

/// The local address of a listening TCP socket; `None` for anything else.
pub(super) fn tcp_listening(info: &SocketFdInfo) -> Option<TcpListening> {
    if info.psi.soi_kind != SOCKINFO_TCP {
        return None;
    }
    // SAFETY: soi_kind says the union holds a tcp_sockinfo (fill_socketinfo
    // in bsd/kern/socket_info.c), and it is plain integers either way.
    let tcp = unsafe { info.psi.soi_proto.pri_tcp };
    if tcp.tcpsi_state != TSI_S_LISTEN {
        return None;
    }
    let ini = tcp.tcpsi_ini;
    let port = u16::from_be(ini.insi_lport as u16);
    let raw = ini.insi_laddr.0;
    let (ip, dual_stack) = if ini.insi_vflag & INI_IPV6 != 0 {
        let ip = Ipv6Addr::from(raw);
        (IpAddr::V6(ip), ini.insi_vflag & INI_IPV4 != 0)
    } else {
        // A v4-mapped bind becomes a plain IPv4 pcb (tcp6_usr_bind), so
        // IPv4 covers it.
        let v4 = Ipv4Addr::new(raw[12], raw[13], raw[14], raw[15]);
        (IpAddr::V4(v4), false)
    };
    Some(TcpListening {
        local: SocketAddr::new(ip, port),
        dual_stack,
        socket: info.psi.soi_so,
    })
}

/// A TCP connection's two ends as libproc describes its socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct TcpConnection {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub socket: u64,
}

/// The two ends of a TCP socket that is not listening; `None` for
/// anything else. An IPv4 connection accepted by a dual-stack IPv6
/// listener is a plain IPv4 pcb (tcp_input in bsd/netinet/tcp_input.c
/// clears INP_IPV6 and sets INP_IPV4 on the new socket), its addresses in
/// the last four bytes of `in4in6_addr`.
pub(super) fn tcp_connection(info: &SocketFdInfo) -> Option<TcpConnection> {
    if info.psi.soi_kind != SOCKINFO_TCP {
        return None;
    }
    // SAFETY: as in `tcp_listening`.
    let tcp = unsafe { info.psi.soi_proto.pri_tcp };
    if tcp.tcpsi_state == TSI_S_LISTEN || tcp.tcpsi_state == TSI_S_CLOSED {
        return None;
    }
    let ini = tcp.tcpsi_ini;
    let ip = |raw: [u8; 16]| match ini.insi_vflag & INI_IPV6 {
        0 => IpAddr::V4(Ipv4Addr::new(raw[12], raw[13], raw[14], raw[15])),
        _ => IpAddr::V6(Ipv6Addr::from(raw)),
    };
    let port = |p: i32| u16::from_be(p as u16);
    Some(TcpConnection {
        local: SocketAddr::new(ip(ini.insi_laddr.0), port(ini.insi_lport)),
        remote: SocketAddr::new(ip(ini.insi_faddr.0), port(ini.insi_fport)),
        socket: info.psi.soi_so,
    })
}

/// The command line in a `KERN_PROCARGS2` answer. The layout
/// (sysctl_procargsx in bsd/kern/kern_sysctl.c, the strings area written
/// by exec_copyout_strings in bsd/kern/kern_exec.c): a native-endian `int`
/// argc, the executable path and its NUL, NUL padding, then argc
/// NUL-terminated arguments, then the environment (or nothing, when the
/// kernel withholds it). Returns the arguments, or the executable path
/// alone when the process has none; `None` for a buffer too short to hold
/// even that.
pub(super) fn parse_procargs2(bytes: &[u8]) -> Option<Vec<String>> {
    let argc = i32::from_ne_bytes(bytes.get(..4)?.try_into().ok()?);
    let rest = &bytes[4..];
    let path_end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
    let path = String::from_utf8_lossy(&rest[..path_end]).into_owned();
    let mut at = path_end;
    while rest.get(at) == Some(&0) {
        at += 1;
    }
    let mut args = Vec::new();
    for _ in 0..argc.max(0) {
        let Some(tail) = rest.get(at..).filter(|t| !t.is_empty()) else {
            break;
        };
        let end = tail.iter().position(|b| *b == 0).unwrap_or(tail.len());
        args.push(String::from_utf8_lossy(&tail[..end]).into_owned());
        at += end + 1;
    }
    if args.is_empty() {
        if path.is_empty() {
            return None;
        }
        args.push(path);
    }
    Some(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn as_bytes<T: Copy>(v: &T) -> Vec<u8> {
        // SAFETY: reading the bytes of a plain-data value we own.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
    }

    fn kinfo(pid: i32, ppid: i32, pgid: i32, stat: i8) -> Vec<u8> {
        // SAFETY: all-zero is a valid KinfoProc (integers only).
        let mut k: KinfoProc = unsafe { std::mem::zeroed() };
        k.kp_proc.p_pid = pid;
        k.kp_proc.p_stat = stat;
        k.kp_eproc.e_ppid = ppid;
        k.kp_eproc.e_pgid = pgid;
        as_bytes(&k)
    }

    // Built from XNU's layout (no Mac here): the answer to
    // KERN_PROC_PGRP for a group of three, one of them a zombie, plus
    // a torn tail the parser must ignore.
    #[test]
    fn kinfo_proc_records() {
        let mut bytes = kinfo(500, 1, 500, 2);
        bytes.extend(kinfo(501, 500, 500, 3));
        bytes.extend(kinfo(502, 500, 500, SZOMB));
        // The fields sit where XNU puts them, whatever this struct says.
        assert_eq!(bytes[36], 2);
        assert_eq!(i32::from_ne_bytes(bytes[40..44].try_into().unwrap()), 500);
        assert_eq!(i32::from_ne_bytes(bytes[560..564].try_into().unwrap()), 1);
        bytes.extend([0u8; 100]);
        let got = parse_kinfo_procs(&bytes);
        let want = [
            (500, 1, 500, false),
            (501, 500, 500, false),
            (502, 500, 500, true),
        ];
        let got: Vec<_> = got
            .iter()
            .map(|e| (e.pid, e.ppid, e.pgid, e.zombie))
            .collect();
        assert_eq!(got, want);
        assert!(parse_kinfo_procs(&[]).is_empty());
    }

    fn tcp_socket(vflag: u8, laddr: [u8; 16], port: u16, state: i32) -> SocketFdInfo {
        let mut info = SocketFdInfo::zeroed();
        info.psi.soi_so = 0xfeed_f00d_0000_0001;
        info.psi.soi_kind = SOCKINFO_TCP;
        // SAFETY: writing plain integers into the union's TCP member.
        let tcp = unsafe { &mut info.psi.soi_proto.pri_tcp };
        tcp.tcpsi_state = state;
        tcp.tcpsi_ini.insi_vflag = vflag;
        tcp.tcpsi_ini.insi_lport = i32::from(port.to_be());
        tcp.tcpsi_ini.insi_laddr = InAddr46(laddr);
        info
    }

    fn v4(a: [u8; 4]) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[12..].copy_from_slice(&a);
        b
    }

    // Built from XNU's layout (no Mac here): socket_fdinfo records as
    // fill_socketinfo() writes them for the listeners a port scan meets.
    #[test]
    fn listening_tcp_sockets() {
        let any6 = [0u8; 16];
        let one6 = Ipv6Addr::LOCALHOST.octets();
        let table: [(SocketFdInfo, Option<(&str, bool)>); 7] = [
            (
                tcp_socket(INI_IPV4, v4([127, 0, 0, 1]), 8420, TSI_S_LISTEN),
                Some(("127.0.0.1:8420", false)),
            ),
            (
                tcp_socket(INI_IPV4, v4([0, 0, 0, 0]), 8420, TSI_S_LISTEN),
                Some(("0.0.0.0:8420", false)),
            ),
            (
                tcp_socket(INI_IPV4 | INI_IPV6, any6, 8420, TSI_S_LISTEN),
                Some(("[::]:8420", true)),
            ),
            (
                tcp_socket(INI_IPV6, any6, 8420, TSI_S_LISTEN),
                Some(("[::]:8420", false)),
            ),
            (
                tcp_socket(INI_IPV6, one6, 443, TSI_S_LISTEN),
                Some(("[::1]:443", false)),
            ),
            // An accepted connection, and a UDP-like socket kind.
            (tcp_socket(INI_IPV4, v4([127, 0, 0, 1]), 8420, 4), None),
            (
                {
                    let mut s = tcp_socket(INI_IPV4, v4([127, 0, 0, 1]), 8420, 1);
                    s.psi.soi_kind = 1;
                    s
                },
                None,
            ),
        ];
        for (info, want) in table {
            let got = tcp_listening(&info).map(|l| (l.local, l.dual_stack));
            let want = want.map(|(a, d)| (a.parse::<SocketAddr>().unwrap(), d));
            assert_eq!(got, want);
        }
        let l = tcp_listening(&tcp_socket(INI_IPV4, v4([1, 2, 3, 4]), 1, 1)).unwrap();
        assert_eq!(l.socket, 0xfeed_f00d_0000_0001);
        // The raw record: port big-endian at offset 24 + 240 + 4.
        let bytes = as_bytes(&tcp_socket(INI_IPV4, v4([1, 2, 3, 4]), 0x1234, 1));
        assert_eq!(&bytes[24 + 240 + 4..24 + 240 + 6], &[0x12, 0x34]);
    }

    // Accepted connections as fill_socketinfo() writes them for the
    // sockets a probe's taker holds (the probe's client end is ours).
    #[test]
    fn connected_tcp_sockets() {
        let conn = |vflag: u8, l: [u8; 16], lport: u16, f: [u8; 16], fport: u16, state: i32| {
            let mut info = tcp_socket(vflag, l, lport, state);
            // SAFETY: writing plain integers into the union's TCP member.
            let tcp = unsafe { &mut info.psi.soi_proto.pri_tcp };
            tcp.tcpsi_ini.insi_faddr = InAddr46(f);
            tcp.tcpsi_ini.insi_fport = i32::from(fport.to_be());
            info
        };
        let lo = v4([127, 0, 0, 1]);
        let one6 = Ipv6Addr::LOCALHOST.octets();
        let table: [(SocketFdInfo, Option<(&str, &str)>); 5] = [
            // ESTABLISHED (4), IPv4.
            (
                conn(INI_IPV4, lo, 8420, lo, 50123, 4),
                Some(("127.0.0.1:8420", "127.0.0.1:50123")),
            ),
            // CLOSE_WAIT (5): the client closed first; still the taker's.
            (
                conn(INI_IPV4, lo, 8420, lo, 50124, 5),
                Some(("127.0.0.1:8420", "127.0.0.1:50124")),
            ),
            (
                conn(INI_IPV6, one6, 8420, one6, 50125, 4),
                Some(("[::1]:8420", "[::1]:50125")),
            ),
            // A listener, and a closed socket: no connection.
            (conn(INI_IPV4, lo, 8420, [0; 16], 0, TSI_S_LISTEN), None),
            (conn(INI_IPV4, lo, 8420, lo, 1, TSI_S_CLOSED), None),
        ];
        for (info, want) in table {
            let got = tcp_connection(&info).map(|c| (c.local, c.remote));
            let want = want.map(|(l, r)| (l.parse().unwrap(), r.parse().unwrap()));
            assert_eq!(got, want);
        }
        let c = tcp_connection(&conn(INI_IPV4, lo, 1, lo, 2, 4)).unwrap();
        assert_eq!(c.socket, 0xfeed_f00d_0000_0001);
        // The foreign port is the record's first field, big-endian.
        let bytes = as_bytes(&conn(INI_IPV4, lo, 1, lo, 0xabcd, 4));
        assert_eq!(&bytes[24 + 240..24 + 240 + 2], &[0xab, 0xcd]);
    }

    fn procargs(argc: i32, parts: &[&[u8]]) -> Vec<u8> {
        let mut b = argc.to_ne_bytes().to_vec();
        for p in parts {
            b.extend_from_slice(p);
        }
        b
    }

    // Built from XNU's documented layout (no Mac here): argc, the exec
    // path, NUL padding to a word, argv, then the environment.
    #[test]
    fn procargs2_layouts() {
        let table: [(Vec<u8>, Option<Vec<&str>>); 8] = [
            (
                procargs(
                    3,
                    &[
                        b"/usr/bin/python3\0\0\0\0",
                        b"python3\0-m\0src.main\0",
                        b"PATH=/usr/bin\0HOME=/var/root\0",
                    ],
                ),
                Some(vec!["python3", "-m", "src.main"]),
            ),
            // Environment withheld (a restricted target): argv ends the buffer.
            (
                procargs(2, &[b"/bin/sleep\0\0", b"sleep\0", b"100\0"]),
                Some(vec!["sleep", "100"]),
            ),
            // An argument with a newline and an empty one survive as such.
            (
                procargs(3, &[b"/bin/sh\0", b"sh\0-c\0echo\nhi\0"]),
                Some(vec!["sh", "-c", "echo\nhi"]),
            ),
            (
                procargs(2, &[b"/bin/x\0", b"x\0\0PATH=/\0"]),
                Some(vec!["x", ""]),
            ),
            // No arguments at all: the executable path stands in.
            (
                procargs(0, &[b"/usr/libexec/thing\0\0\0"]),
                Some(vec!["/usr/libexec/thing"]),
            ),
            // argc larger than what arrived (torn buffer): what is there.
            (procargs(5, &[b"/bin/a\0", b"a\0b"]), Some(vec!["a", "b"])),
            (procargs(1, &[]), None),
            (vec![1, 0], None),
        ];
        for (bytes, want) in table {
            let want = want.map(|w| w.into_iter().map(String::from).collect::<Vec<_>>());
            assert_eq!(parse_procargs2(&bytes), want, "{bytes:?}");
        }
    }
}
