//! Connection authentication: verifies a JWT (the one configured algorithm, `exp`, `nbf`,
//! `sub`, the audience when configured) and turns its claims into a `Grant`: who the
//! client is, until when, and which channels it may subscribe and publish to. Pure: a
//! token string and the time in, a grant or a reason out; no I/O, no logging (a token
//! never reaches a log line from here).

use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::config::{JwtConfig, JwtKey};

/// Seconds of clock skew allowed on `exp` and `nbf`.
pub const LEEWAY: u64 = 0;

/// A channel pattern of a token: an exact name, or a prefix when it ends with `*`
/// (`*` alone: every channel).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    Exact(Box<str>),
    Prefix(Box<str>),
}

impl Pattern {
    pub fn parse(p: &str) -> Pattern {
        match p.strip_suffix('*') {
            Some(prefix) => Pattern::Prefix(prefix.into()),
            None => Pattern::Exact(p.into()),
        }
    }

    pub fn matches(&self, channel: &str) -> bool {
        match self {
            Pattern::Exact(name) => &**name == channel,
            Pattern::Prefix(prefix) => channel.starts_with(&**prefix),
        }
    }
}

/// What a verified token allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The user id (presence records the connection under it).
    pub sub: Box<str>,
    /// Unix seconds at which the token expires.
    pub exp: u64,
    /// Channels the client may subscribe to (claim `channels`).
    pub subscribe: Vec<Pattern>,
    /// Channels the client may publish to (claim `publish`).
    pub publish: Vec<Pattern>,
    /// May ask about any user's presence (claim `"presence": true`); else only its own.
    pub presence: bool,
}

impl Grant {
    pub fn may_subscribe(&self, channel: &str) -> bool {
        self.subscribe.iter().any(|p| p.matches(channel))
    }

    pub fn may_publish(&self, channel: &str) -> bool {
        self.publish.iter().any(|p| p.matches(channel))
    }
}

/// Why a token was refused (never carries the token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// Malformed, wrong algorithm, bad signature, wrong audience, missing claims.
    Invalid(String),
    /// `exp` has passed.
    Expired,
    /// `nbf` is in the future.
    NotYetValid,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default)]
    nbf: Option<u64>,
    #[serde(default)]
    channels: Vec<String>,
    #[serde(default)]
    publish: Vec<String>,
    /// May ask about any user's presence (else only about its own `sub`).
    #[serde(default)]
    presence: bool,
}

/// The decoding key and the rules of the node.
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("algorithms", &self.validation.algorithms)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// Builds the verifier of `--jwt-secret` (HS256) or `--jwt-public-key` (RS256 for an
    /// RSA key, ES256 for an EC P-256 key).
    pub fn new(config: &JwtConfig) -> Result<Verifier, String> {
        let (key, alg) = match &config.key {
            JwtKey::Secret(secret) => (
                DecodingKey::from_secret(secret).map_err(|e| format!("--jwt-secret: {e}"))?,
                Algorithm::HS256,
            ),
            JwtKey::PublicKeyPem(pem) => match DecodingKey::from_rsa_pem(pem) {
                Ok(key) => (key, Algorithm::RS256),
                Err(_) => match DecodingKey::from_ec_pem(pem) {
                    Ok(key) => (key, Algorithm::ES256),
                    Err(e) => {
                        return Err(format!(
                            "--jwt-public-key: neither an RSA nor an EC public key in PEM: {e}"
                        ))
                    }
                },
            },
        };
        let mut validation = Validation::new(alg);
        validation.leeway = LEEWAY;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        match &config.audience {
            Some(aud) => {
                validation.set_required_spec_claims(&["exp", "sub", "aud"]);
                validation.set_audience(&[aud]);
            }
            None => {
                validation.set_required_spec_claims(&["exp", "sub"]);
                validation.validate_aud = false;
            }
        }
        Ok(Verifier { key, validation })
    }

    /// The algorithm tokens must be signed with.
    pub fn algorithm(&self) -> Algorithm {
        self.validation.algorithms[0]
    }

    /// Verifies `token` at `now` (Unix seconds). The library checks `exp` and `nbf`
    /// against the system clock; they are checked against `now` as well, so a caller
    /// (and a test) decides the instant.
    pub fn verify(&self, token: &str, now: u64) -> Result<Grant, AuthError> {
        use jsonwebtoken::errors::ErrorKind;
        let data =
            decode::<Claims>(token, &self.key, &self.validation).map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                kind => AuthError::Invalid(format!("{kind:?}")),
            })?;
        let c = data.claims;
        if c.exp.saturating_add(LEEWAY) <= now {
            return Err(AuthError::Expired);
        }
        if c.nbf.is_some_and(|nbf| nbf > now.saturating_add(LEEWAY)) {
            return Err(AuthError::NotYetValid);
        }
        if c.sub.is_empty() {
            return Err(AuthError::Invalid("empty sub".into()));
        }
        Ok(Grant {
            sub: c.sub.into(),
            exp: c.exp,
            subscribe: c.channels.iter().map(|p| Pattern::parse(p)).collect(),
            publish: c.publish.iter().map(|p| Pattern::parse(p)).collect(),
            presence: c.presence,
        })
    }
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
