//! A session's authentication state (only when auth is on): whether a token was
//! accepted, the grant it carries, and the deadline at which the connection closes
//! (the time to authenticate, then the token's `exp`). Decides what a command may do,
//! under the channel namespaces' subscribe and publish rules; never verifies a token
//! (`crate::auth` does, in the shard).

use super::{Aside, Cmd, Session};
use crate::auth::Grant;
use crate::config::{Namespaces, PublishRule, SubscribeRule};
use crate::protocol::ErrorCode;

/// Whether `grant` may subscribe to `channel`: its namespace's `subscribe` rule decides
/// (`public`: any authenticated client; `token`: the `channels` claim; `user`: only the
/// user's own `<prefix><sub>` and `<prefix><sub>:...`).
pub fn may_subscribe(grant: &Grant, namespaces: &Namespaces, channel: &str) -> bool {
    let ns = namespaces.lookup(channel);
    match ns.subscribe {
        SubscribeRule::Public => true,
        SubscribeRule::Token => grant.may_subscribe(channel),
        SubscribeRule::User => ns.is_users_own(channel, &grant.sub),
    }
}

/// Whether `grant` may publish to `channel` over the WebSocket: its namespace's
/// `publish` rule decides (`none`: nobody; `token`: the `publish` claim; `public`: any
/// authenticated client).
pub fn may_publish(grant: &Grant, namespaces: &Namespaces, channel: &str) -> bool {
    match namespaces.lookup(channel).publish {
        PublishRule::None => false,
        PublishRule::Token => grant.may_publish(channel),
        PublishRule::Public => true,
    }
}

/// A connection's authentication, present only when auth is on.
#[derive(Debug)]
pub struct SessionAuth {
    /// `None` until a token is accepted.
    pub grant: Option<Grant>,
    /// Coarse second at which the connection is closed: the end of the time to
    /// authenticate (no grant) or the token's `exp` (a grant).
    pub deadline: u32,
}

/// What an accepted token did to the connection's grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresh {
    /// The first token of the connection.
    First,
    /// A fresh token for the same `sub`.
    Renewed,
    /// A token for another user: refused.
    OtherUser,
}

impl Session {
    pub(super) fn auth(&self) -> Option<&SessionAuth> {
        match self.aside.as_deref() {
            Some(Aside::Auth(a)) => Some(a),
            _ => None,
        }
    }

    /// Auth is on and no token came with the upgrade: the client has until `deadline`
    /// (coarse second) to send one.
    pub fn require_auth(&mut self, deadline: u32) {
        self.aside = Some(Box::new(Aside::Auth(SessionAuth {
            grant: None,
            deadline,
        })));
    }

    /// Accepts a verified token at coarse second `now` (Unix second `unix_now`): the
    /// connection closes at its `exp` unless refreshed. A token for another `sub` than
    /// the current grant's is refused (the grant is kept; the caller closes).
    pub fn authenticate(&mut self, grant: Grant, now: u32, unix_now: u64) -> Refresh {
        let left = u32::try_from(grant.exp.saturating_sub(unix_now)).unwrap_or(u32::MAX);
        let deadline = now.saturating_add(left);
        if !matches!(self.aside.as_deref(), Some(Aside::Auth(_))) {
            self.aside = Some(Box::new(Aside::Auth(SessionAuth {
                grant: None,
                deadline,
            })));
        }
        let Some(Aside::Auth(auth)) = self.aside.as_deref_mut() else {
            return Refresh::OtherUser; // cannot happen: set just above
        };
        let verdict = match &auth.grant {
            None => Refresh::First,
            Some(old) if old.sub == grant.sub => Refresh::Renewed,
            Some(_) => return Refresh::OtherUser,
        };
        auth.grant = Some(grant);
        auth.deadline = deadline;
        verdict
    }

    /// The current grant (auth on and authenticated).
    pub fn grant(&self) -> Option<&Grant> {
        self.auth().and_then(|a| a.grant.as_ref())
    }

    /// Whether this command may be carried out. With auth off: everything but a
    /// publish into a `publish = "none"` namespace. With auth on: only `auth` before a
    /// token is accepted, then subscribe and publish as the channel's namespace and the
    /// token allow (`may_subscribe`, `may_publish`), and presence queries about the
    /// token's own user (any user with the `presence` claim).
    pub fn permits(&self, cmd: &Cmd, namespaces: &Namespaces) -> Result<(), ErrorCode> {
        let Some(auth) = self.auth() else {
            return match cmd {
                Cmd::Publish { channel, .. }
                    if namespaces.lookup(channel).publish == PublishRule::None =>
                {
                    Err(ErrorCode::Forbidden)
                }
                _ => Ok(()),
            };
        };
        let Some(grant) = &auth.grant else {
            return match cmd {
                Cmd::Auth(_) => Ok(()),
                _ => Err(ErrorCode::Unauthorized),
            };
        };
        let allowed = match cmd {
            // Reading a channel's history needs the right to subscribe to it.
            Cmd::Subscribe(channel, _) | Cmd::History { channel, .. } => {
                may_subscribe(grant, namespaces, channel)
            }
            Cmd::Publish { channel, .. } => may_publish(grant, namespaces, channel),
            // Presence: only about yourself, unless the token says `"presence": true`.
            Cmd::Presence(user) => grant.presence || **user == *grant.sub,
            Cmd::Unsubscribe(_) | Cmd::Auth(_) => true,
        };
        if allowed {
            Ok(())
        } else {
            Err(ErrorCode::Forbidden)
        }
    }
}
