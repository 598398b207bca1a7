//! TLS test fixtures: a throwaway CA and server certificates made with the `openssl`
//! CLI for one test (files deleted on drop), and a real `redis-server` with a TLS port
//! beside its plain one (the plain port is the test's own admin door; fanout is given
//! only the TLS port).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{free_port, wait_for, RedisProcess, DEADLINE};

/// A directory of PEM files: a CA (`ca.pem`, `ca.key`) and the certificates it signed.
pub struct Pki {
    pub dir: PathBuf,
}

/// A new EC P-256 key (quick to make).
const EC_KEY: [&str; 4] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];

fn openssl(dir: &Path, args: &[&str]) {
    let req = args.first() == Some(&"req");
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .args(if req { &EC_KEY[..] } else { &[] })
        .output()
        .expect("the openssl CLI must be installed");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Pki {
    /// A new CA (EC P-256, valid two days) in a fresh directory.
    pub fn new(label: &str) -> Pki {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "fanout-tls-{}-{label}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        openssl(
            &dir,
            &[
                "req",
                "-x509",
                "-new",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                &format!("/CN=fanout test CA {label}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        Pki { dir }
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A server certificate signed by this CA for `san` (e.g.
    /// `DNS:localhost,IP:127.0.0.1`): (cert, key) paths.
    pub fn server_cert(&self, name: &str, san: &str) -> (PathBuf, PathBuf) {
        let (cert, key, csr, ext) = (
            format!("{name}.pem"),
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.ext"),
        );
        std::fs::write(
            self.dir.join(&ext),
            format!(
                "subjectAltName={san}\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n"
            ),
        )
        .unwrap();
        openssl(
            &self.dir,
            &[
                "req",
                "-new",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                &format!("/CN={name}"),
            ],
        );
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &cert,
                "-days",
                "2",
                "-extfile",
                &ext,
            ],
        );
        (self.dir.join(cert), self.dir.join(key))
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A redis-server with a TLS port (certificate `cert` signed by `pki`'s CA; clients
/// need no certificate) and its plain admin port.
pub struct TlsRedis {
    pub redis: RedisProcess,
    pub tls_port: u16,
}

impl TlsRedis {
    /// Starts Redis serving TLS with a certificate for `san`.
    pub fn start(pki: &Pki, san: &str) -> TlsRedis {
        let (cert, key) = pki.server_cert("redis", san);
        let tls_port = free_port();
        let path = |p: &Path| p.to_str().unwrap().to_string();
        let (port, cert, key, ca) = (
            tls_port.to_string(),
            path(&cert),
            path(&key),
            path(&pki.ca()),
        );
        let redis = RedisProcess::start_with(&[
            "--tls-port",
            &port,
            "--tls-cert-file",
            &cert,
            "--tls-key-file",
            &key,
            "--tls-ca-cert-file",
            &ca,
            "--tls-auth-clients",
            "no",
        ]);
        wait_for("the TLS port to listen", DEADLINE, || {
            std::net::TcpStream::connect(("127.0.0.1", tls_port)).ok()
        });
        TlsRedis { redis, tls_port }
    }

    /// `rediss://{auth}{host}:{tls_port}`.
    pub fn url(&self, auth: &str, host: &str) -> String {
        format!("rediss://{auth}{host}:{}", self.tls_port)
    }

    /// Clients connected through the TLS port (`laddr` in `CLIENT LIST`).
    pub fn tls_clients(&self) -> usize {
        let list: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query(&mut self.redis.conn())
            .unwrap();
        let laddr = format!("laddr=127.0.0.1:{}", self.tls_port);
        list.lines()
            .filter(|l| l.split(' ').any(|f| f == laddr))
            .count()
    }
}
