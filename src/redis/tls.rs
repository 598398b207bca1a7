//! TLS for `rediss://` (rustls, ring provider): the client configuration built once per
//! node from `--redis-ca` / `--redis-insecure` (`Tls`), and a non-blocking TLS stream over
//! a mio socket for the reader's and writer's `Link` (`TlsStream`): handshake, reading
//! until the socket would block, partial writes, EOF and `close_notify`. It moves bytes
//! and checks certificates; what the bytes mean is for `link` and `resp`, and it never
//! blocks (the blocking presence client wraps a `rustls::StreamOwned` itself).

use std::io::{self, ErrorKind, Read, Write};
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use mio::net::TcpStream;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore};

use crate::config::RedisTls;

/// The TLS client configuration of every Redis connection of the node (shared).
#[derive(Clone)]
pub struct Tls {
    config: Arc<ClientConfig>,
    verified: bool,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("verified", &self.verified)
            .finish()
    }
}

/// Two configurations are the same when they are the same object.
impl PartialEq for Tls {
    fn eq(&self, other: &Tls) -> bool {
        Arc::ptr_eq(&self.config, &other.config)
    }
}

impl Eq for Tls {}

/// The ring provider: small, quick to build, no cmake (aws-lc-rs, rustls's default,
/// would add a large C build to every CI run for a post-quantum key exchange that the
/// managed Redis services do not offer yet). rustls 0.23.48 deprecates ring's
/// `default_provider` for that reason only; switching is this one line.
#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Tls {
    /// The configuration `settings` ask for: `--redis-ca` roots only, or the built-in
    /// Mozilla roots (webpki-roots), or no verification at all (`--redis-insecure`).
    pub fn new(settings: &RedisTls) -> Tls {
        let provider = provider();
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports TLS 1.2 and 1.3");
        let config = if settings.insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
                .with_no_client_auth()
        } else {
            let mut roots = RootCertStore::empty();
            match &settings.ca {
                Some(ca) => {
                    // Checked by config::read_ca at startup: none is rejected here.
                    roots.add_parsable_certificates(ca.certs.iter().cloned());
                }
                None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        };
        Tls {
            config: Arc::new(config),
            verified: !settings.insecure,
        }
    }

    /// False with `--redis-insecure`.
    pub fn verified(&self) -> bool {
        self.verified
    }

    /// A client session for `host`: SNI and the certificate check use the host name,
    /// or the IP address (no SNI, checked against the certificate's IP addresses).
    pub fn session(&self, host: &str) -> io::Result<ClientConnection> {
        let name = ServerName::try_from(host.to_string()).map_err(|e| {
            io::Error::new(
                ErrorKind::InvalidInput,
                format!("Redis host {host:?} is not a valid TLS server name: {e}"),
            )
        })?;
        ClientConnection::new(self.config.clone(), name)
            .map_err(|e| io::Error::new(ErrorKind::InvalidInput, TlsError(e)))
    }
}

/// A TLS protocol or certificate error (wrapped in an `io::Error` of kind
/// `InvalidData`); `is_tls_error` tells it apart from socket errors.
#[derive(Debug)]
pub struct TlsError(pub rustls::Error);

impl std::fmt::Display for TlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TLS: {}", self.0)
    }
}

impl std::error::Error for TlsError {}

/// True when `e` came from TLS (a certificate, CA, host name or protocol problem), not
/// from the socket.
pub fn is_tls_error(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<TlsError>())
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(ErrorKind::InvalidData, TlsError(e))
}

/// A TLS session over a non-blocking mio socket. Reads go until the socket would
/// block (the link's events are edge-triggered); writes hand rustls what it takes and
/// push records out until the socket would block, keeping the rest for the next call.
pub struct TlsStream {
    pub tcp: TcpStream,
    conn: ClientConnection,
}

impl TlsStream {
    pub fn new(tcp: TcpStream, conn: ClientConnection) -> TlsStream {
        TlsStream { tcp, conn }
    }

    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Reads and decrypts everything available into `rbuf` (through `scratch`), then
    /// writes what the session owes the peer (handshake messages, alerts). Errors on
    /// EOF (with or without `close_notify`) and on any TLS error.
    pub fn read_into(&mut self, rbuf: &mut BytesMut, scratch: &mut [u8]) -> io::Result<()> {
        loop {
            let (eof, would_block) = match self.conn.read_tls(&mut self.tcp) {
                Ok(0) => (true, false),
                Ok(_) => (false, false),
                Err(e) if e.kind() == ErrorKind::WouldBlock => (false, true),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let state = match self.conn.process_new_packets() {
                Ok(s) => s,
                Err(e) => {
                    // Tell the peer why (the alert rustls queued), best effort.
                    let _ = self.write_records();
                    return Err(tls_error(e));
                }
            };
            let closed = state.peer_has_closed();
            let mut left = state.plaintext_bytes_to_read();
            while left > 0 {
                let n = self.conn.reader().read(scratch)?;
                if n == 0 {
                    break;
                }
                rbuf.extend_from_slice(&scratch[..n]);
                left = left.saturating_sub(n);
            }
            if closed || eof {
                let why = if closed {
                    "Redis closed the TLS session (close_notify)"
                } else {
                    "Redis closed the connection"
                };
                return Err(io::Error::new(ErrorKind::UnexpectedEof, why));
            }
            if would_block {
                break;
            }
        }
        self.write_records()
    }

    /// Encrypts as much of `wbuf` as rustls takes, removing it from `wbuf`, and writes
    /// records until the socket would block or nothing is left. While the handshake runs
    /// rustls buffers a bounded amount of plaintext; the rest waits in `wbuf`.
    pub fn write_from(&mut self, wbuf: &mut BytesMut) -> io::Result<()> {
        loop {
            self.write_records()?;
            if self.conn.wants_write() {
                return Ok(()); // the socket would block: the next writable event resumes
            }
            if wbuf.is_empty() {
                return Ok(());
            }
            let n = self.conn.writer().write(wbuf)?;
            if n == 0 {
                return Ok(()); // rustls's buffer is full until the handshake progresses
            }
            wbuf.advance(n);
        }
    }

    /// Writes queued TLS records until none is left or the socket would block.
    fn write_records(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut self.tcp) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Sends `close_notify`, best effort (the socket is closed right after).
    pub fn close(&mut self) {
        self.conn.send_close_notify();
        let _ = self.write_records();
    }
}

/// `--redis-insecure`: accepts any certificate for any name. The handshake's signatures
/// are still checked (the peer must hold the key of the certificate it sent), so the
/// session is encrypted, but anyone on the path can present their own certificate.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_and_ip_addresses_are_server_names() {
        let tls = Tls::new(&RedisTls::default());
        assert!(tls.verified());
        assert!(tls.session("redis.example.com").is_ok());
        assert!(tls.session("127.0.0.1").is_ok());
        assert!(tls.session("::1").is_ok());
        let e = tls.session("bad name!").unwrap_err();
        assert!(e.to_string().contains("not a valid TLS server name"), "{e}");
    }

    #[test]
    fn insecure_is_not_verified() {
        let tls = Tls::new(&RedisTls {
            ca: None,
            insecure: true,
        });
        assert!(!tls.verified());
        assert_ne!(tls, Tls::new(&RedisTls::default()));
        assert_eq!(tls, tls.clone());
    }

    #[test]
    fn tls_errors_are_told_apart_from_socket_errors() {
        assert!(is_tls_error(&tls_error(rustls::Error::DecryptError)));
        assert!(!is_tls_error(&io::Error::from(ErrorKind::UnexpectedEof)));
        assert!(!is_tls_error(&io::Error::new(ErrorKind::InvalidData, "x")));
    }
}
