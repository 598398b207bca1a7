//! What the cluster writer sends: a command (`Op`), kept until its reply so that a
//! redirection can send it again, and how it is written into a pipeline: a history
//! channel's publish as the history script (`XADD` + `SPUBLISH` in its slot), a plain
//! publish as the one-line `SPUBLISH` script (`plain`), bare while the cluster refuses
//! scripts, a history read as the read script. Owns no connection and decides nothing
//! about where a command goes.

use bytes::{Bytes, BytesMut};

use super::super::plain;
use crate::broker::redis::history::{self as scripts, Scripts};
use crate::broker::AckTo;
use crate::config::Namespaces;
use crate::msg::HistoryRead;
use crate::redis::cluster::key_slot;

/// What a command does, kept until its reply so a redirection can send it again.
pub(super) enum Op {
    Publish {
        channel: Box<str>,
        payload: Bytes,
        ack: Option<AckTo>,
    },
    Read(Box<HistoryRead>),
}

/// What a sent command's reply is for.
pub(super) enum Pending {
    /// The command, the redirections it followed, whether it went as a bare `SPUBLISH`.
    Op(Op, u8, bool),
    /// `SCRIPT LOAD` or `ASKING`: the reply only says it went through.
    Ignore,
}

impl Op {
    pub(super) fn channel(&self) -> &str {
        match self {
            Op::Publish { channel, .. } => channel,
            Op::Read(read) => &read.channel,
        }
    }

    pub(super) fn slot(&self) -> u16 {
        key_slot(self.channel().as_bytes())
    }

    /// Whether it goes through a history script (a read, or a publish on a channel with
    /// history), which the cluster refuses while it is down.
    pub(super) fn has_history(&self, namespaces: &Namespaces) -> bool {
        match self {
            Op::Publish { channel, .. } => {
                namespaces.lookup(channel).history_size > 0
                    && !crate::protocol::channel::is_internal(channel)
            }
            Op::Read(_) => true,
        }
    }

    /// Writes the command into `out`: a plain publish through the script `plain_sha`, or
    /// bare `SPUBLISH` when that is `None`. True if it went bare.
    pub(super) fn encode(
        &self,
        out: &mut BytesMut,
        scripts: &Scripts,
        plain_sha: Option<&str>,
        namespaces: &Namespaces,
    ) -> bool {
        match self {
            Op::Publish {
                channel, payload, ..
            } if self.has_history(namespaces) => {
                let ns = namespaces.lookup(channel);
                scripts::encode_publish(out, scripts, channel, payload, ns);
                false
            }
            Op::Publish {
                channel, payload, ..
            } => {
                plain::encode(out, plain_sha, channel, payload);
                plain_sha.is_none()
            }
            Op::Read(read) => {
                scripts::encode_read(out, scripts, read);
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::config::{Args, Config};

    fn publish(channel: &str) -> Op {
        Op::Publish {
            channel: channel.into(),
            payload: Bytes::from_static(b"{}"),
            ack: None,
        }
    }

    fn written(op: &Op, sha: Option<&str>, namespaces: &Namespaces) -> (bool, String) {
        let mut out = BytesMut::new();
        let bare = op.encode(&mut out, &Scripts::default(), sha, namespaces);
        (bare, String::from_utf8_lossy(&out).into_owned())
    }

    #[test]
    fn plain_publishes_go_as_the_script_or_bare_and_history_ones_never_bare() {
        let plain = Namespaces::default();
        let (bare, text) = written(&publish("a"), Some("abc"), &plain);
        assert!(
            !bare && text.contains("EVALSHA") && text.contains("abc"),
            "{text}"
        );
        let (bare, text) = written(&publish("a"), None, &plain);
        assert!(
            bare && text.contains("SPUBLISH") && !text.contains("EVALSHA"),
            "{text}"
        );
        assert!(!publish("a").has_history(&plain));

        let args = Args::try_parse_from(["fanout", "--history-size", "100"]).unwrap();
        let history = Config::resolve(args, None).unwrap().namespaces;
        assert!(publish("a").has_history(&history));
        // Even while plain publishes go bare, a history publish stays the script that
        // keeps XADD and SPUBLISH together.
        let (bare, text) = written(&publish("a"), None, &history);
        assert!(!bare && text.contains("EVALSHA"), "{text}");
        // The node's own channels never have history.
        let probe = format!("{}x", crate::protocol::channel::PROBE_PREFIX);
        assert!(!publish(&probe).has_history(&history));
    }
}
