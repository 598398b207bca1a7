//! Channel namespaces: per-prefix settings of channels (history size and age, who may
//! subscribe and publish). The default namespace comes from the flags `--history-size` /
//! `--history-ttl` (and auth on or off); the TOML file's `[[namespace]]` tables override
//! it for channels starting with their `prefix`, the longest matching prefix winning.
//! Resolved once at startup into `Namespaces`; looked up at subscribe and publish time,
//! never per delivery.

use std::ops::RangeInclusive;

use serde::Deserialize;

use super::bounded;

/// Who may subscribe to a namespace's channels (auth on; with auth off every channel is
/// public).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SubscribeRule {
    /// Any authenticated connection; the token's `channels` claim is not needed.
    Public,
    /// The token's `channels` patterns decide (the default with auth on).
    Token,
    /// Only the user's own channels: `<prefix><sub>` and `<prefix><sub>:...`.
    User,
}

/// Who may publish over the WebSocket to a namespace's channels (the HTTP API and Redis
/// publish always can).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PublishRule {
    /// No client: only the HTTP API and Redis publish.
    None,
    /// The token's `publish` patterns decide (the default with auth on).
    Token,
    /// Any (authenticated, when auth is on) connection.
    Public,
}

/// The settings of the channels under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    /// Channels starting with this belong here; empty for the default namespace.
    pub prefix: String,
    /// Messages kept per channel; 0: no history.
    pub history_size: u32,
    /// Seconds a message stays in history; 0: no time limit (only `history_size`).
    pub history_ttl_secs: u32,
    pub subscribe: SubscribeRule,
    pub publish: PublishRule,
}

impl Namespace {
    /// Whether `channel` is `user`'s own in this namespace: `<prefix><user>` or
    /// `<prefix><user>:...` (for `subscribe = "user"`).
    pub fn is_users_own(&self, channel: &str, user: &str) -> bool {
        match channel
            .strip_prefix(self.prefix.as_str())
            .and_then(|rest| rest.strip_prefix(user))
        {
            Some(rest) => !user.is_empty() && (rest.is_empty() || rest.starts_with(':')),
            None => false,
        }
    }
}

/// Every namespace of the node: the default and the `[[namespace]]` tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespaces {
    default: Namespace,
    /// Longest prefix first, so the first match is the longest.
    tables: Vec<Namespace>,
}

impl Namespaces {
    /// The namespace of `channel`: the longest matching prefix, else the default.
    pub fn lookup(&self, channel: &str) -> &Namespace {
        self.tables
            .iter()
            .find(|ns| channel.starts_with(ns.prefix.as_str()))
            .unwrap_or(&self.default)
    }

    /// Whether any channel has history.
    pub fn any_history(&self) -> bool {
        self.default.history_size > 0 || self.tables.iter().any(|ns| ns.history_size > 0)
    }

    /// The namespace of channels no table matches.
    pub fn default_namespace(&self) -> &Namespace {
        &self.default
    }

    /// The `[[namespace]]` tables, longest prefix first.
    pub fn tables(&self) -> &[Namespace] {
        &self.tables
    }
}

impl Default for Namespaces {
    /// No history, everything public: the node without auth and without namespaces.
    fn default() -> Self {
        Namespaces {
            default: Namespace {
                prefix: String::new(),
                history_size: 0,
                history_ttl_secs: 0,
                subscribe: SubscribeRule::Public,
                publish: PublishRule::Public,
            },
            tables: Vec::new(),
        }
    }
}

/// Accepted range of `--history-size` / `history_size` (messages per channel; 0 = off).
pub const HISTORY_SIZE: RangeInclusive<u64> = 0..=1_000_000;
/// Accepted range of `--history-ttl` / `history_ttl` (seconds; 0 = no time limit):
/// 30 days at most.
pub const HISTORY_TTL: RangeInclusive<u64> = 0..=30 * 86_400;
/// Most `[[namespace]]` tables (each lookup scans them).
pub const MAX_NAMESPACES: usize = 256;
/// Prefix reserved for the nodes' own channels (`protocol::channel::PROBE_PREFIX` and
/// the control channel live under it); no namespace may claim it.
const RESERVED_PREFIX: &str = "__fanout:";

/// One `[[namespace]]` table as written in the TOML file.
#[derive(Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct FileNamespace {
    prefix: Option<String>,
    history_size: Option<u64>,
    history_ttl: Option<u64>,
    subscribe: Option<SubscribeRule>,
    publish: Option<PublishRule>,
}

/// Resolves the default namespace (flag, then file, then 0) and the tables (each unset
/// field inherits the default). `auth` says whether connection tokens are on:
/// rules default to `token` with auth and `public` without, and a rule that needs a
/// token (`subscribe = "token"|"user"`, `publish = "token"`) is an error without auth.
pub(super) fn resolve(
    history_size: Option<u64>,
    history_ttl: Option<u64>,
    tables: &[FileNamespace],
    auth: bool,
    max_channel_len: usize,
) -> Result<Namespaces, String> {
    let size = bounded(
        "history-size",
        history_size.unwrap_or(0),
        HISTORY_SIZE,
        "messages",
    )?;
    let ttl = bounded(
        "history-ttl",
        history_ttl.unwrap_or(0),
        HISTORY_TTL,
        "seconds",
    )?;
    let (subscribe, publish) = if auth {
        (SubscribeRule::Token, PublishRule::Token)
    } else {
        (SubscribeRule::Public, PublishRule::Public)
    };
    let default = Namespace {
        prefix: String::new(),
        history_size: size as u32,
        history_ttl_secs: ttl as u32,
        subscribe,
        publish,
    };
    if tables.len() > MAX_NAMESPACES {
        return Err(format!(
            "at most {MAX_NAMESPACES} [[namespace]] tables (got {})",
            tables.len()
        ));
    }
    let mut out: Vec<Namespace> = Vec::with_capacity(tables.len());
    for (i, t) in tables.iter().enumerate() {
        let ns = resolve_table(t, &default, auth, max_channel_len)
            .map_err(|e| format!("[[namespace]] #{}: {e}", i + 1))?;
        if out.iter().any(|o| o.prefix == ns.prefix) {
            return Err(format!(
                "[[namespace]] #{}: prefix {:?} is given twice",
                i + 1,
                ns.prefix
            ));
        }
        out.push(ns);
    }
    out.sort_by_key(|ns| std::cmp::Reverse(ns.prefix.len()));
    Ok(Namespaces {
        default,
        tables: out,
    })
}

fn resolve_table(
    t: &FileNamespace,
    default: &Namespace,
    auth: bool,
    max_channel_len: usize,
) -> Result<Namespace, String> {
    let prefix = t.prefix.clone().unwrap_or_default();
    if prefix.is_empty() {
        return Err("prefix is required and may not be empty".into());
    }
    if prefix.len() > max_channel_len {
        return Err(format!(
            "prefix {prefix:?} is longer than the longest channel name ({max_channel_len} bytes)"
        ));
    }
    if prefix.chars().any(char::is_control) {
        return Err(format!("prefix {prefix:?} contains control characters"));
    }
    if prefix.starts_with(RESERVED_PREFIX) || RESERVED_PREFIX.starts_with(prefix.as_str()) {
        return Err(format!(
            "prefix {prefix:?} overlaps the reserved {RESERVED_PREFIX:?} prefix"
        ));
    }
    let history_size = match t.history_size {
        Some(n) => bounded("history-size", n, HISTORY_SIZE, "messages")? as u32,
        None => default.history_size,
    };
    let history_ttl_secs = match t.history_ttl {
        Some(n) => bounded("history-ttl", n, HISTORY_TTL, "seconds")? as u32,
        None => default.history_ttl_secs,
    };
    let subscribe = t.subscribe.unwrap_or(default.subscribe);
    let publish = t.publish.unwrap_or(default.publish);
    if !auth {
        let needs_token = match (subscribe, publish) {
            (SubscribeRule::Token, _) => Some("subscribe = \"token\""),
            (SubscribeRule::User, _) => Some("subscribe = \"user\""),
            (_, PublishRule::Token) => Some("publish = \"token\""),
            _ => None,
        };
        if let Some(rule) = needs_token {
            return Err(format!(
                "prefix {prefix:?}: {rule} needs auth (--jwt-secret or --jwt-public-key)"
            ));
        }
    }
    Ok(Namespace {
        prefix,
        history_size,
        history_ttl_secs,
        subscribe,
        publish,
    })
}
