//! `--redis-ca` / `--redis-insecure`: how a `rediss://` connection verifies Redis's
//! certificate, read and checked once at startup (a CA file that is missing, not PEM or
//! holds no usable certificate stops the start). The TLS sessions themselves are
//! `crate::redis::tls`; this module never opens a connection.

use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

/// The CA certificates of `--redis-ca`: they replace the built-in roots.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisCa {
    pub path: PathBuf,
    pub certs: Vec<CertificateDer<'static>>,
}

impl std::fmt::Debug for RedisCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RedisCa({}, {} certificates)",
            self.path.display(),
            self.certs.len()
        )
    }
}

/// How `rediss://` connections verify the server. The default: the built-in (Mozilla)
/// roots and the URL's host name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedisTls {
    /// Trust only these CAs (`--redis-ca`).
    pub ca: Option<RedisCa>,
    /// Skip certificate verification (`--redis-insecure`; tests only).
    pub insecure: bool,
}

/// Resolves the flags (flag or env first, then the file) against the Redis URL.
pub(super) fn resolve(
    redis: Option<&str>,
    ca: Option<PathBuf>,
    insecure: bool,
) -> Result<RedisTls, String> {
    if ca.is_none() && !insecure {
        return Ok(RedisTls::default());
    }
    let flag = if ca.is_some() {
        "--redis-ca"
    } else {
        "--redis-insecure"
    };
    if ca.is_some() && insecure {
        return Err("--redis-ca and --redis-insecure exclude each other: give one".into());
    }
    match redis {
        Some(url) if url.starts_with("rediss://") || url.starts_with("rediss+cluster://") => {}
        _ => {
            return Err(format!(
                "{flag} applies to TLS connections only: it needs --redis rediss://…"
            ))
        }
    }
    let ca = ca.map(|path| read_ca(&path)).transpose()?;
    Ok(RedisTls { ca, insecure })
}

/// Reads a PEM file of CA certificates; every certificate must be usable as a root.
pub fn read_ca(path: &Path) -> Result<RedisCa, String> {
    let what = || format!("--redis-ca {}", path.display());
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", what()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{} is not a PEM certificate file: {e}", what()))?;
    if certs.is_empty() {
        return Err(format!(
            "{} holds no certificate (expected -----BEGIN CERTIFICATE-----)",
            what()
        ));
    }
    let mut roots = rustls::RootCertStore::empty();
    for (i, cert) in certs.iter().enumerate() {
        roots
            .add(cert.clone())
            .map_err(|e| format!("{}: certificate {} is unusable: {e}", what(), i + 1))?;
    }
    Ok(RedisCa {
        path: path.to_path_buf(),
        certs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str, text: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("fanout-ca-{}-{name}", std::process::id()));
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn off_without_flags() {
        assert_eq!(
            resolve(Some("redis://h"), None, false).unwrap(),
            RedisTls::default()
        );
    }

    #[test]
    fn flags_need_a_rediss_url() {
        let e = resolve(Some("redis://h"), None, true).unwrap_err();
        assert!(e.contains("rediss://"), "{e}");
        let e = resolve(None, Some("/x".into()), false).unwrap_err();
        assert!(e.contains("--redis-ca"), "{e}");
        let e = resolve(Some("rediss://h"), Some("/x".into()), true).unwrap_err();
        assert!(e.contains("exclude"), "{e}");
        assert!(resolve(Some("rediss://h"), None, true).unwrap().insecure);
    }

    #[test]
    fn a_bad_ca_file_is_a_clear_error() {
        let e = resolve(
            Some("rediss://h"),
            Some("/nonexistent/ca.pem".into()),
            false,
        )
        .unwrap_err();
        assert!(
            e.contains("cannot read --redis-ca /nonexistent/ca.pem"),
            "{e}"
        );
        let empty = temp("empty", "just text\n");
        let e = read_ca(&empty).unwrap_err();
        assert!(e.contains("holds no certificate"), "{e}");
        let broken = temp(
            "broken",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        );
        let e = read_ca(&broken).unwrap_err();
        assert!(e.contains("unusable") || e.contains("not a PEM"), "{e}");
        let truncated = temp("truncated", "-----BEGIN CERTIFICATE-----\nMIIB\n");
        assert!(read_ca(&truncated).is_err());
        for p in [empty, broken, truncated] {
            let _ = std::fs::remove_file(p);
        }
    }
}
