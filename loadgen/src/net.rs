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

fn split_host_port(hostport: &str, default_port: u16) -> Result<SocketAddr, String> {
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

/// Default number of source addresses: enough that no address carries more than 20k
/// connections.
pub fn auto_source_addrs(conns: usize) -> u32 {
    (conns.div_ceil(20_000)).clamp(1, 250) as u32
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
        assert_eq!(auto_source_addrs(20_000), 1);
        assert_eq!(auto_source_addrs(20_001), 2);
    }
}
