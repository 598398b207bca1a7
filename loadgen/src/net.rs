//! Addresses and sockets: ws:// and redis:// URL parsing, spreading connections over
//! 127.0.0.x source addresses (bind before connect), non-blocking connects, and raising
//! RLIMIT_NOFILE.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::os::fd::AsRawFd;

use socket2::{Domain, Protocol, Socket, Type};

/// A WebSocket endpoint.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    /// Value of the `Host` header.
    pub host: String,
    /// Request path (with query), e.g. `/`.
    pub path: String,
}

pub fn split_host_port(hostport: &str, default_port: u16) -> Result<SocketAddr, String> {
    let hp = if hostport.starts_with('[') || hostport.rsplit_once(':').is_some() {
        hostport.to_string()
    } else {
        format!("{hostport}:{default_port}")
    };
    hp.to_socket_addrs()
        .map_err(|e| format!("cannot resolve {hostport}: {e}"))?
        .find(|a| a.is_ipv4())
        .or_else(|| hp.to_socket_addrs().ok().and_then(|mut i| i.next()))
        .ok_or_else(|| format!("no address for {hostport}"))
}

/// Parse `ws://host[:port][/path]`.
pub fn parse_ws_url(url: &str) -> Result<Target, String> {
    let rest = url
        .strip_prefix("ws://")
        .ok_or_else(|| format!("--url must start with ws:// (got {url})"))?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if hostport.is_empty() {
        return Err(format!("no host in {url}"));
    }
    Ok(Target {
        addr: split_host_port(hostport, 80)?,
        host: hostport.to_string(),
        path: path.to_string(),
    })
}

/// Parse every `--url` (at least one).
pub fn parse_ws_urls(urls: &[String]) -> Result<Vec<Target>, String> {
    if urls.is_empty() {
        return Err("no --url given".into());
    }
    urls.iter().map(|u| parse_ws_url(u.trim())).collect()
}

/// Index of the URL that connection (or publisher) `idx` uses: round robin over `n`.
#[inline]
pub fn url_index(idx: usize, n: usize) -> usize {
    idx % n.max(1)
}

/// Source-address slot of connection `idx` when there are `n_urls` URLs: connections
/// that share a URL (idx, idx+n, idx+2n, …) take consecutive slots, so every URL gets
/// its connections spread over all source addresses (and not one address per URL when
/// the two counts divide each other).
#[inline]
pub fn source_slot(idx: usize, n_urls: usize) -> usize {
    idx / n_urls.max(1)
}

/// Connections per URL when connection ids `0..total` are assigned by [`url_index`].
pub fn per_url_counts(total: usize, n: usize) -> Vec<u64> {
    let n = n.max(1);
    (0..n)
        .map(|u| (total / n + usize::from(u < total % n)) as u64)
        .collect()
}

/// A Redis endpoint with optional `AUTH` credentials.
#[derive(Debug, Clone)]
pub struct RedisTarget {
    pub addr: SocketAddr,
    pub user: Option<String>,
    pub password: Option<String>,
}

/// Parse `redis://[[user]:password@]host[:port][/db]`.
pub fn parse_redis_url(url: &str) -> Result<RedisTarget, String> {
    let rest = url
        .strip_prefix("redis://")
        .ok_or_else(|| format!("--redis must start with redis:// (got {url})"))?;
    let rest = rest.split('/').next().unwrap_or("");
    let (cred, hostport) = match rest.rsplit_once('@') {
        Some((c, h)) => (Some(c), h),
        None => (None, rest),
    };
    let (user, password) = match cred {
        None => (None, None),
        Some(c) => match c.split_once(':') {
            Some((u, p)) => ((!u.is_empty()).then(|| u.to_string()), Some(p.to_string())),
            None => (None, Some(c.to_string())),
        },
    };
    let hostport = if hostport.is_empty() {
        "127.0.0.1"
    } else {
        hostport
    };
    Ok(RedisTarget {
        addr: split_host_port(hostport, 6379)?,
        user,
        password,
    })
}

/// Connections per (source address, server URL) pair that `auto_source_addrs` aims for.
/// With `IP_BIND_ADDRESS_NO_PORT` the kernel picks the port at connect() by scanning the
/// ephemeral range for one that is free for this 4-tuple; the fuller the range is for one
/// (source, destination) pair, the longer each scan. Measured here: 19,900 connections from
/// one address to one port cost loadgen 9.2 CPU-s (460 µs per connect) and ran at 3,500
/// connects/s; over 4 addresses, 0.4 CPU-s and 13,800 connects/s.
pub const CONNS_PER_SOURCE_PAIR: usize = 5_000;

/// Default number of source addresses: enough that no (source address, URL) pair carries
/// more than [`CONNS_PER_SOURCE_PAIR`] of `conns` connections spread over `n_urls` URLs.
pub fn auto_source_addrs(conns: usize, n_urls: usize) -> u32 {
    conns
        .div_ceil(n_urls.max(1))
        .div_ceil(CONNS_PER_SOURCE_PAIR)
        .clamp(1, 250) as u32
}

/// Source address for connection number `idx`: round-robin over 127.0.0.1..=127.0.0.n,
/// only when the target itself is on loopback.
pub fn source_ip(idx: usize, n: u32, target: &SocketAddr) -> Option<IpAddr> {
    match target.ip() {
        IpAddr::V4(v4) if v4.is_loopback() && n > 1 => {
            let host = 1 + (idx as u32 % n);
            Some(IpAddr::V4(Ipv4Addr::new(
                127,
                ((host >> 16) & 0xFF) as u8,
                ((host >> 8) & 0xFF) as u8,
                (host & 0xFF) as u8,
            )))
        }
        _ => None,
    }
}

/// Start a non-blocking TCP connect, optionally bound to `src` first.
pub fn connect_nb(addr: SocketAddr, src: Option<IpAddr>) -> io::Result<mio::net::TcpStream> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_nonblocking(true)?;
    if let Some(ip) = src {
        // Let the kernel pick the port at connect() time, so ports are shared per
        // destination instead of being reserved by bind().
        let one: libc::c_int = 1;
        // SAFETY: valid fd and option buffer of the right size.
        unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                &one as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        s.bind(&SocketAddr::new(ip, 0).into())?;
    }
    match s.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    let std: std::net::TcpStream = s.into();
    let m = mio::net::TcpStream::from_std(std);
    let _ = m.set_nodelay(true);
    Ok(m)
}

/// Whether a `connect_nb` connect has completed (on a writable event): `Ok(false)` while
/// it is still in progress, the connect's error if it failed.
pub fn connected(sock: &mio::net::TcpStream) -> io::Result<bool> {
    if let Some(e) = sock.take_error()? {
        return Err(e);
    }
    match sock.peer_addr() {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
        Err(e) => Err(e),
    }
}

/// Raise the soft RLIMIT_NOFILE to the hard limit; returns the resulting soft limit.
pub fn raise_nofile() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain getrlimit/setrlimit on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return 1024;
        }
        if r.rlim_cur < r.rlim_max {
            let want = libc::rlimit {
                rlim_cur: r.rlim_max,
                rlim_max: r.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                r.rlim_cur = r.rlim_max;
            }
        }
    }
    r.rlim_cur
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let t = parse_ws_url("ws://127.0.0.1:3000/").unwrap();
        assert_eq!(t.addr, "127.0.0.1:3000".parse().unwrap());
        assert_eq!(t.path, "/");
        assert_eq!(t.host, "127.0.0.1:3000");
        let t = parse_ws_url("ws://127.0.0.1:9").unwrap();
        assert_eq!(t.path, "/");
        assert!(parse_ws_url("http://x/").is_err());
        let r = parse_redis_url("redis://:pw@127.0.0.1:7000/0").unwrap();
        assert_eq!(r.addr, "127.0.0.1:7000".parse().unwrap());
        assert_eq!(r.password.as_deref(), Some("pw"));
        assert_eq!(r.user, None);
        let r = parse_redis_url("redis://127.0.0.1").unwrap();
        assert_eq!(r.addr.port(), 6379);
    }

    #[test]
    fn source_addrs_round_robin() {
        let lo: SocketAddr = "127.0.0.1:3000".parse().unwrap();
        assert_eq!(source_ip(0, 1, &lo), None);
        assert_eq!(source_ip(0, 3, &lo), Some("127.0.0.1".parse().unwrap()));
        assert_eq!(source_ip(4, 3, &lo), Some("127.0.0.2".parse().unwrap()));
        let far: SocketAddr = "10.0.0.1:3000".parse().unwrap();
        assert_eq!(source_ip(4, 3, &far), None);
        assert_eq!(auto_source_addrs(5_000, 1), 1);
        assert_eq!(auto_source_addrs(19_880, 1), 4);
        assert_eq!(auto_source_addrs(95_000, 5), 4);
        assert_eq!(auto_source_addrs(10_000_000, 1), 250);
    }

    #[test]
    fn several_urls_round_robin() {
        let urls: Vec<String> = ["ws://127.0.0.1:3001/", " ws://127.0.0.1:3002/x"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let t = parse_ws_urls(&urls).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[1].addr.port(), 3002);
        assert_eq!(t[1].path, "/x");
        assert!(parse_ws_urls(&[]).is_err());
        // Connection i → URL i % n; publisher k → URL k % n.
        let n = 5;
        let mut count = vec![0u64; n];
        for i in 0..23 {
            count[url_index(i, n)] += 1;
        }
        assert_eq!(count, vec![5, 5, 5, 4, 4]);
        assert_eq!(per_url_counts(23, n), count);
        assert_eq!(per_url_counts(7, 1), vec![7]);
        assert_eq!(url_index(7, 1), 0);
        assert_eq!(url_index(7, 0), 0);
        // A child process i of m owns ids ≡ i (mod m); with m = n every child talks to one
        // URL, with m coprime to n each child talks to every URL.
        let child: Vec<usize> = (0..30)
            .filter(|g| g % 3 == 1)
            .map(|g| url_index(g, 2))
            .collect();
        assert!(child.contains(&0) && child.contains(&1));
        // Connections of one URL are spread over every source address.
        let lo: SocketAddr = "127.0.0.1:3001".parse().unwrap();
        let srcs: std::collections::BTreeSet<_> = (0..50)
            .filter(|&i| url_index(i, n) == 2)
            .map(|i| source_ip(source_slot(i, n), 5, &lo).unwrap())
            .collect();
        assert_eq!(srcs.len(), 5);
        // One URL: unchanged from before (slot = connection index).
        assert_eq!(source_slot(9, 1), 9);
    }
}
