//! Socket set-up the standard library does not offer: non-blocking connects bound to a
//! chosen loopback source address with `IP_BIND_ADDRESS_NO_PORT`, so one source address's
//! ephemeral ports never run out.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::FromRawFd;

/// The `i`-th source address: 127.0.0.2, 127.0.0.3, ... cycling over `count` of them.
pub fn source_ip(i: usize, count: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 2 + (i % usize::from(count)) as u8)
}

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn sockaddr(addr: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*addr.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

/// Starts a non-blocking TCP connect from `src` (port chosen at connect time) to `dst`,
/// with `TCP_NODELAY`. Completion is signalled by writability, as with `mio`'s own connect.
pub fn connect_from(src: Ipv4Addr, dst: SocketAddr) -> io::Result<mio::net::TcpStream> {
    let SocketAddr::V4(dst) = dst else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "only IPv4 servers are supported",
        ));
    };
    // SAFETY: plain socket(2) call; the descriptor is owned below.
    let fd = check(unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    })?;
    // SAFETY: `fd` is a fresh descriptor we own; the TcpStream closes it on every path.
    let stream = unsafe { std::net::TcpStream::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    let set = |level, name| {
        // SAFETY: `one` outlives the call and the length matches its type.
        check(unsafe {
            libc::setsockopt(
                fd,
                level,
                name,
                (&one as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        })
    };
    set(libc::IPPROTO_IP, libc::IP_BIND_ADDRESS_NO_PORT)?;
    set(libc::IPPROTO_TCP, libc::TCP_NODELAY)?;
    let local = sockaddr(SocketAddrV4::new(src, 0));
    let len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: `local` is a valid sockaddr_in of `len` bytes.
    check(unsafe { libc::bind(fd, (&local as *const libc::sockaddr_in).cast(), len) })?;
    let remote = sockaddr(dst);
    // SAFETY: `remote` is a valid sockaddr_in of `len` bytes.
    let rc = unsafe { libc::connect(fd, (&remote as *const libc::sockaddr_in).cast(), len) };
    if rc < 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(err);
        }
    }
    Ok(mio::net::TcpStream::from_std(stream))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::time::{Duration, Instant};

    #[test]
    fn source_addresses_cycle() {
        assert_eq!(source_ip(0, 4), Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(source_ip(3, 4), Ipv4Addr::new(127, 0, 0, 5));
        assert_eq!(source_ip(4, 4), Ipv4Addr::new(127, 0, 0, 2));
    }

    #[test]
    fn connects_from_the_chosen_source_address() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dst = listener.local_addr().unwrap();
        let stream = connect_from(Ipv4Addr::new(127, 0, 0, 3), dst).unwrap();
        let (mut accepted, peer) = listener.accept().unwrap();
        assert_eq!(peer.ip(), Ipv4Addr::new(127, 0, 0, 3));
        // The connect completes: the client side reports the server as its peer.
        let start = Instant::now();
        while stream.peer_addr().is_err() && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(stream.peer_addr().unwrap(), dst);
        drop(stream);
        let mut buf = [0u8; 1];
        assert_eq!(accepted.read(&mut buf).unwrap(), 0);
    }

    #[test]
    fn refuses_ipv6_targets() {
        let err = connect_from(Ipv4Addr::LOCALHOST, "[::1]:1".parse().unwrap()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
