//! Linux's `/proc/net/tcp` and `/proc/net/tcp6`, parsed without touching the
//! file system, so the parser is tested on recorded tables (`fixtures/`).
//!
//! A line is `sl: LOCAL REMOTE ST ... UID TIMEOUT INODE ...` where an address
//! is `HEX:PORT`: the IPv4 address as one `%08X` of the raw 32-bit word, an
//! IPv6 address as four such words (`seq_printf` in net/ipv4/tcp_ipv4.c and
//! net/ipv6/tcp_ipv6.c), each word in the machine's own byte order; the port
//! is plain big-endian hex. `ST` is the kernel's TCP state: `0A` is
//! TCP_LISTEN, `06` TCP_TIME_WAIT, `07` TCP_CLOSE (bound, not listening).
// On macOS only the tests use it.
#![cfg_attr(not(target_os = "linux"), allow(dead_code))]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// TCP_LISTEN in include/net/tcp_states.h.
pub(super) const LISTEN: u8 = 0x0A;
/// TCP_CLOSE: a socket that is bound but not listening (or not yet).
pub(super) const CLOSE: u8 = 0x07;

/// One socket of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TcpEntry {
    pub local: SocketAddr,
    /// The other end (all zeros for a listener).
    pub remote: SocketAddr,
    pub state: u8,
    /// The socket's inode, as in `/proc/PID/fd/N -> socket:[INODE]`; 0 for
    /// sockets no descriptor holds (TIME_WAIT, half-open connections).
    pub inode: u64,
}

/// Every well-formed line of a `/proc/net/tcp` or `/proc/net/tcp6` text;
/// the header and anything unreadable are skipped.
pub(super) fn parse(text: &str) -> Vec<TcpEntry> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<TcpEntry> {
    let f: Vec<&str> = line.split_whitespace().collect();
    let local = parse_addr(f.get(1)?)?;
    let remote = parse_addr(f.get(2)?)?;
    let state = u8::from_str_radix(f.get(3)?, 16).ok()?;
    let inode = f.get(9)?.parse().ok()?;
    Some(TcpEntry {
        local,
        remote,
        state,
        inode,
    })
}

fn parse_addr(text: &str) -> Option<SocketAddr> {
    let (host, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = match host.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(host)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_mut(4).enumerate() {
                chunk.copy_from_slice(&word(host.get(i * 8..i * 8 + 8)?)?);
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// One `%08X` word back into the four bytes it was printed from.
fn word(hex: &str) -> Option<[u8; 4]> {
    Some(u32::from_str_radix(hex, 16).ok()?.to_ne_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    // Recorded on this project's Linux x86_64 CI machine (little-endian)
    // with `cat /proc/net/tcp{,6}` while a Python script held: listeners on
    // 127.0.0.1:47811, 0.0.0.0:47812, [::]:47813, [::1]:47814,
    // [::ffff:127.0.0.1]:47815 and a V6ONLY [::]:47816; one established
    // connection to 47811 (both ends); a TIME_WAIT left on 47817.
    const TCP: &str = include_str!("fixtures/proc_net_tcp.txt");
    const TCP6: &str = include_str!("fixtures/proc_net_tcp6.txt");

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn recorded_tables() {
        let v4 = parse(TCP);
        let want: [(&str, u8, u64); 5] = [
            ("127.0.0.1:47811", LISTEN, 73371),
            ("0.0.0.0:47812", LISTEN, 73372),
            ("127.0.0.1:34912", 0x01, 73538),
            ("127.0.0.1:47811", 0x01, 73539),
            ("127.0.0.1:47817", 0x06, 0),
        ];
        let got: Vec<(SocketAddr, u8, u64)> =
            v4.iter().map(|e| (e.local, e.state, e.inode)).collect();
        let want: Vec<(SocketAddr, u8, u64)> =
            want.iter().map(|(a, s, i)| (addr(a), *s, *i)).collect();
        assert_eq!(got, want);
        // The established connection, seen from the server's side.
        let server = v4
            .iter()
            .find(|e| e.local == addr("127.0.0.1:47811") && e.state == 0x01)
            .map(|e| (e.remote, e.inode));
        assert_eq!(server, Some((addr("127.0.0.1:34912"), 73539)));

        let v6 = parse(TCP6);
        let want6 = [
            ("[::1]:47814", 73374),
            ("[::ffff:127.0.0.1]:47815", 73375),
            ("[::]:47813", 73373),
            ("[::]:47816", 73376),
        ];
        assert_eq!(v6.len(), want6.len());
        for (e, (a, inode)) in v6.iter().zip(want6) {
            assert_eq!((e.local, e.state, e.inode), (addr(a), LISTEN, inode));
        }
    }

    #[test]
    fn malformed_lines_are_skipped() {
        let table = [
            "",
            "  sl  local_address rem_address   st",
            "   1: 0100007F 00000000:0000 0A 0 0 0 0 0 1",
            "   1: 0100007F:XYZ0 00000000:0000 0A 0 0 0 0 0 1",
            "   1: 0100:0050 00000000:0000 0A 0 0 0 0 0 1",
            "   1: 0100007F:0050 00000000:0000 0A 0 0 0 0 0",
            "   1: 0100007F:0050 00000000:0000 QQ 0 0 0 0 0 1",
        ];
        for line in table {
            assert_eq!(parse(line), Vec::new(), "{line:?}");
        }
    }
}
