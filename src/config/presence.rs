//! Presence (connection manager) settings: their type, defaults, the `--presence on|off`
//! switch, and how flags and the file resolve into them.

use std::time::Duration;

use serde::Deserialize;

use super::{bounded, Args, FileConfig, HEARTBEAT_SECONDS, SECONDS};

/// Presence (connection manager) settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceConfig {
    pub enabled: bool,
    /// Take the user id from the `user` query parameter of the upgrade URL.
    pub user_param: bool,
    /// Interval of the batched heartbeat (liveness key and key TTLs refreshed).
    pub heartbeat: Duration,
    /// TTL of each `connections:{user}` hash, in seconds.
    pub ttl_secs: u64,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        PresenceConfig {
            enabled: true,
            user_param: false,
            heartbeat: Duration::from_secs(30),
            ttl_secs: 120,
        }
    }
}

/// `--presence on|off`.
#[derive(clap::ValueEnum, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OnOff {
    On,
    Off,
}

pub(super) fn resolve_presence(args: &Args, file: &FileConfig) -> Result<PresenceConfig, String> {
    let d = PresenceConfig::default();
    let heartbeat = args
        .presence_heartbeat
        .or(file.presence_heartbeat)
        .unwrap_or(d.heartbeat.as_secs());
    let ttl_secs = args
        .presence_ttl
        .or(file.presence_ttl)
        .unwrap_or(d.ttl_secs);
    bounded(
        "presence-heartbeat",
        heartbeat,
        HEARTBEAT_SECONDS,
        "seconds",
    )?;
    bounded("presence-ttl", ttl_secs, SECONDS, "seconds")?;
    if ttl_secs <= heartbeat {
        return Err(format!(
            "--presence-ttl ({ttl_secs} s) must be longer than --presence-heartbeat ({heartbeat} s)"
        ));
    }
    Ok(PresenceConfig {
        enabled: args.presence.or(file.presence).unwrap_or(OnOff::On) == OnOff::On,
        user_param: args.presence_user_param || file.presence_user_param.unwrap_or(false),
        heartbeat: Duration::from_secs(heartbeat),
        ttl_secs,
    })
}
