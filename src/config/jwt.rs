//! `--jwt-secret` / `--jwt-public-key` / `--jwt-audience`: the key material of connection
//! authentication, read once at startup (the verifier itself is `crate::auth`).

use std::path::PathBuf;

/// Where the verifying key comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum JwtKey {
    /// HS256 with this shared secret.
    Secret(Vec<u8>),
    /// RS256 or ES256 (told apart by the key) with this PEM public key.
    PublicKeyPem(Vec<u8>),
}

/// Connection authentication settings; present only when auth is on.
#[derive(Clone, PartialEq, Eq)]
pub struct JwtConfig {
    pub key: JwtKey,
    /// Required `aud` of every token, when set.
    pub audience: Option<String>,
}

/// Never prints the secret (the config may be logged).
impl std::fmt::Debug for JwtConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let key = match self.key {
            JwtKey::Secret(_) => "HS256 secret (redacted)",
            JwtKey::PublicKeyPem(_) => "PEM public key",
        };
        f.debug_struct("JwtConfig")
            .field("key", &key)
            .field("audience", &self.audience)
            .finish()
    }
}

/// Resolves the flags (flag or env first, then the file). Both keys: an error.
pub(super) fn resolve(
    secret: Option<String>,
    public_key: Option<PathBuf>,
    audience: Option<String>,
) -> Result<Option<JwtConfig>, String> {
    let secret = secret.filter(|s| !s.is_empty());
    let key = match (secret, public_key) {
        (Some(_), Some(_)) => {
            return Err("--jwt-secret and --jwt-public-key exclude each other: give one".into())
        }
        (None, None) => {
            if audience.is_some() {
                return Err("--jwt-audience needs --jwt-secret or --jwt-public-key".into());
            }
            return Ok(None);
        }
        (Some(s), None) => JwtKey::Secret(s.into_bytes()),
        (None, Some(path)) => JwtKey::PublicKeyPem(
            std::fs::read(&path)
                .map_err(|e| format!("cannot read --jwt-public-key {}: {e}", path.display()))?,
        ),
    };
    Ok(Some(JwtConfig {
        key,
        audience: audience.filter(|a| !a.is_empty()),
    }))
}
