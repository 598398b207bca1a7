//! The Redis URL every connection of the node is made from: its grammar
//! (`redis[s]://[[user]:password@]host[:port][/db]`), the TLS configuration a `rediss://`
//! URL carries to every connection made from it, and its one conversion to an error a
//! caller can return. Parsing and name resolution only: it never connects.

use std::io::{self, ErrorKind};
use std::net::{SocketAddr, ToSocketAddrs};

use super::tls::Tls;
use crate::config::RedisTls;

/// A Redis URL that does not parse, with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlError(pub String);

impl std::fmt::Display for UrlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UrlError {}

impl From<UrlError> for io::Error {
    fn from(e: UrlError) -> io::Error {
        io::Error::new(ErrorKind::InvalidInput, e.0)
    }
}

/// Where and how to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisUrl {
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<String>,
    pub db: Option<u32>,
    /// `rediss://`: every connection made from this URL is TLS with this configuration.
    pub tls: Option<Tls>,
}

impl RedisUrl {
    /// Parses `redis[s]://[[user]:password@]host[:port][/db]`; a `rediss://` URL
    /// verifies the server with the built-in roots (see `parse_with`).
    pub fn parse(url: &str) -> Result<RedisUrl, UrlError> {
        Self::parse_with(url, &RedisTls::default())
    }

    /// Parses the URL; a `rediss://` one carries TLS as `tls` says (`--redis-ca`,
    /// `--redis-insecure`).
    pub fn parse_with(url: &str, tls: &RedisTls) -> Result<RedisUrl, UrlError> {
        Self::parse_str(url, tls).map_err(UrlError)
    }

    fn parse_str(url: &str, tls: &RedisTls) -> Result<RedisUrl, String> {
        let (rest, tls) = if let Some(rest) = url.strip_prefix("redis://") {
            (rest, None)
        } else if let Some(rest) = url.strip_prefix("rediss://") {
            (rest, Some(Tls::new(tls)))
        } else {
            return Err(format!(
                "Redis URL must start with redis:// or rediss:// (TLS) (got {url:?})"
            ));
        };
        let (auth, hostpart) = match rest.rsplit_once('@') {
            Some((a, h)) => (Some(a), h),
            None => (None, rest),
        };
        let (hostport, db) = match hostpart.split_once('/') {
            Some((hp, "")) => (hp, None),
            Some((hp, db)) => (
                hp,
                Some(
                    db.parse::<u32>()
                        .map_err(|_| format!("bad Redis db {db:?}"))?,
                ),
            ),
            None => (hostpart, None),
        };
        let port_of = |p: &str| {
            p.parse::<u16>()
                .map_err(|_| format!("bad Redis port {p:?}"))
        };
        // `[v6 address]` or `[v6 address]:port`; otherwise `host` or `host:port`.
        let (host, port) = if let Some(bracketed) = hostport.strip_prefix('[') {
            let (h, after) = bracketed
                .split_once(']')
                .ok_or_else(|| format!("Redis URL has an unclosed [ in {hostport:?}"))?;
            match after {
                "" => (h, 6379),
                _ => match after.strip_prefix(':') {
                    Some(p) => (h, port_of(p)?),
                    None => return Err(format!("bad Redis host {hostport:?}")),
                },
            }
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, port_of(p)?),
                None => (hostport, 6379),
            }
        };
        if host.is_empty() {
            return Err("Redis URL has no host".into());
        }
        // User and password are percent-encoded in a URL (`p%40ss` is `p@ss`), as
        // redis-cli and the Redis client libraries read them.
        let decode = |part: &str, what: &str| {
            percent_encoding::percent_decode_str(part)
                .decode_utf8()
                .map(|s| s.into_owned())
                .map_err(|_| format!("Redis URL {what} is not valid UTF-8 once decoded"))
        };
        let (username, password) = match auth {
            None => (None, None),
            Some(a) => match a.split_once(':') {
                Some((u, p)) => (
                    (!u.is_empty())
                        .then(|| decode(u, "user name"))
                        .transpose()?,
                    Some(decode(p, "password")?),
                ),
                None => (None, Some(decode(a, "password")?)),
            },
        };
        Ok(RedisUrl {
            host: host.to_string(),
            port,
            username,
            password,
            db,
            tls,
        })
    }

    /// Parses a Redis Cluster URL, `redis[s]+cluster://[[user]:password@]host:port,host:port,…`
    /// (the grammar of `parse` with a comma list of seed nodes; no db: a cluster has only
    /// db 0) into one URL per seed, each carrying the credentials and TLS.
    pub fn parse_cluster(url: &str, tls: &RedisTls) -> Result<Vec<RedisUrl>, UrlError> {
        let (scheme, rest) = if let Some(rest) = url.strip_prefix("redis+cluster://") {
            ("redis://", rest)
        } else if let Some(rest) = url.strip_prefix("rediss+cluster://") {
            ("rediss://", rest)
        } else {
            return Err(UrlError(format!(
                "Redis Cluster URL must start with redis+cluster:// or rediss+cluster:// (got {url:?})"
            )));
        };
        let (auth, hosts) = match rest.rsplit_once('@') {
            Some((a, h)) => (format!("{a}@"), h),
            None => (String::new(), rest),
        };
        let hosts = hosts.strip_suffix('/').unwrap_or(hosts);
        let mut seeds = Vec::new();
        for host in hosts.split(',').map(str::trim).filter(|h| !h.is_empty()) {
            let seed = Self::parse_with(&format!("{scheme}{auth}{host}"), tls)?;
            if seed.db.is_some_and(|db| db != 0) {
                return Err(UrlError("Redis Cluster has only db 0".into()));
            }
            seeds.push(RedisUrl { db: None, ..seed });
        }
        if seeds.is_empty() {
            return Err(UrlError("Redis Cluster URL names no seed node".into()));
        }
        Ok(seeds)
    }

    /// The same credentials and TLS, to another node.
    pub fn with_node(&self, host: &str, port: u16) -> RedisUrl {
        RedisUrl {
            host: host.to_string(),
            port,
            db: None,
            ..self.clone()
        }
    }

    /// The first address the host resolves to.
    pub fn addr(&self) -> io::Result<SocketAddr> {
        (self.host.as_str(), self.port)
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::new(ErrorKind::NotFound, "Redis host has no address"))
    }
}

/// `url` with its password (if any) replaced by `***`, for logs: credentials never
/// reach a log line. Works on any `scheme://[user[:password]@]host...` string, including
/// a comma-separated seed list.
pub fn redact(url: &str) -> String {
    let Some(start) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let rest = &url[start..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_string();
    };
    let userinfo = &rest[..at];
    let user = match userinfo.find(':') {
        Some(colon) => &userinfo[..colon],
        None => return url.to_string(), // a user without a password is not a secret
    };
    format!("{}{}:***{}", &url[..start], user, &rest[at..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_a_log_line() {
        assert_eq!(
            redact("redis://app:p%40ss@h:6379/1"),
            "redis://app:***@h:6379/1"
        );
        assert_eq!(redact("rediss://:secret@h"), "rediss://:***@h");
        assert_eq!(
            redact("redis+cluster://u:pw@a:1,b:2"),
            "redis+cluster://u:***@a:1,b:2"
        );
        assert_eq!(redact("redis://app@h"), "redis://app@h");
        assert_eq!(redact("redis://h:6379"), "redis://h:6379");
        assert_eq!(redact("redis://a:b@c@h"), "redis://a:***@h");
        assert_eq!(redact("embedded"), "embedded");
    }

    #[test]
    fn parses_urls() {
        let u = RedisUrl::parse("redis://127.0.0.1:6380").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.db), ("127.0.0.1", 6380, None));
        let u = RedisUrl::parse("redis://:secret@redis.local/2").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.db),
            ("redis.local", 6379, Some(2))
        );
        assert_eq!(u.password.as_deref(), Some("secret"));
        assert_eq!(u.username, None);
        let u = RedisUrl::parse("redis://bob:pw@h:1/").unwrap();
        assert_eq!(u.username.as_deref(), Some("bob"));
        let u = RedisUrl::parse("redis://[::1]:7000").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 7000));
        let u = RedisUrl::parse("redis://[::1]").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 6379));
        assert!(RedisUrl::parse("redis://[::1").is_err());
        assert!(RedisUrl::parse("redis://[::1]x").is_err());
        assert!(RedisUrl::parse("http://x").is_err());
        assert!(RedisUrl::parse("redis://h:notaport").is_err());
        assert!(RedisUrl::parse("redis://h/x").is_err());
        assert!(RedisUrl::parse("redis://").is_err());
        assert!(u.tls.is_none());
    }

    #[test]
    fn rediss_is_tls_with_the_same_grammar() {
        let u = RedisUrl::parse("rediss://app:p%40ss@redis.example.com:6380/1").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.db),
            ("redis.example.com", 6380, Some(1))
        );
        assert_eq!(u.username.as_deref(), Some("app"));
        assert_eq!(u.password.as_deref(), Some("p@ss"));
        assert!(u.tls.as_ref().is_some_and(|t| t.verified()));
        let u = RedisUrl::parse("rediss://[::1]").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 6379));
        let insecure = RedisTls {
            ca: None,
            insecure: true,
        };
        let u = RedisUrl::parse_with("rediss://h", &insecure).unwrap();
        assert!(u.tls.as_ref().is_some_and(|t| !t.verified()));
        assert!(RedisUrl::parse_with("redis://h", &insecure)
            .unwrap()
            .tls
            .is_none());
        let e = RedisUrl::parse("redisss://h").unwrap_err();
        assert!(e.0.contains("rediss://"), "{e}");
    }

    #[test]
    fn user_and_password_are_percent_decoded() {
        let u = RedisUrl::parse("redis://app%2Bx:p%40ss%3Aw%2Fd@h:1").unwrap();
        assert_eq!(u.username.as_deref(), Some("app+x"));
        assert_eq!(u.password.as_deref(), Some("p@ss:w/d"));
        assert!(RedisUrl::parse("redis://:%ff@h").is_err(), "not UTF-8");
    }

    #[test]
    fn cluster_urls_share_the_grammar() {
        let tls = RedisTls::default();
        let seeds = RedisUrl::parse_cluster("redis+cluster://a:1,b:2, [::1]:3/", &tls).unwrap();
        let hp: Vec<(&str, u16)> = seeds.iter().map(|u| (u.host.as_str(), u.port)).collect();
        assert_eq!(hp, vec![("a", 1), ("b", 2), ("::1", 3)]);
        let seeds = RedisUrl::parse_cluster("rediss+cluster://app:p%40ss@a:1,b", &tls).unwrap();
        assert_eq!(seeds.len(), 2);
        assert!(seeds.iter().all(|u| u.tls.is_some()
            && u.password.as_deref() == Some("p@ss")
            && u.username.as_deref() == Some("app")));
        assert_eq!(seeds[1].port, 6379);
        let other = seeds[0].with_node("c", 9);
        assert_eq!((other.host.as_str(), other.port), ("c", 9));
        assert!(other.tls.is_some() && other.password.as_deref() == Some("p@ss"));
        assert!(RedisUrl::parse_cluster("redis://a:1", &tls).is_err());
        assert!(RedisUrl::parse_cluster("redis+cluster://", &tls).is_err());
        assert!(RedisUrl::parse_cluster("redis+cluster://a:1/2", &tls).is_err());
        assert!(RedisUrl::parse_cluster("redis+cluster://a:x", &tls).is_err());
    }

    #[test]
    fn a_bad_url_becomes_an_invalid_input_error() {
        let e: io::Error = RedisUrl::parse("http://x").unwrap_err().into();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(e.to_string().contains("redis://"), "{e}");
    }
}
