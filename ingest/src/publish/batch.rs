//! Fast-ingest batches (ADR-50, nats-server 2.14+): the reply subject that carries the
//! batch protocol, what the server answers on it, and the state of the open batch.
//!
//! Each message's reply subject is `<inbox>.<id>.<flow>.fail.<batch seq>.<op>.$FI`: the
//! server stores the message as it arrives, checks its headers as for any publish, and
//! answers every `flow` messages with one flow ack (`{"type":"ack","seq":N,"msgs":F}`:
//! batch messages 1..=N are stored, the next ack comes F messages later). Gap mode `fail`:
//! a missing batch seq, or a message refused by a header check, ends the batch there, and
//! the server answers with the pub ack that ends the batch (`count` messages stored).
//! Nothing in this module does I/O: `mod.rs` publishes and reads the acks.

use async_nats::Subject;
use std::time::Instant;

/// Flow acks the publisher may run ahead of: it sends at most `OUTSTANDING × flow`
/// messages past the last one acked (ADR-50's recommended 2: the server stores one flow's
/// worth while the next arrives).
pub const OUTSTANDING: u64 = 2;

/// The batch operation, the last token before `$FI`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Batch seq 1: the server answers with the first flow ack (or an error).
    Start = 0,
    Append = 1,
    /// End of batch: the message itself is not stored; the server answers with the pub
    /// ack that ends the batch once everything before it is stored.
    EndOfBatch = 3,
}

/// The open batch.
pub struct Open {
    /// `<inbox>.<id>.<flow>.fail.`, the reply subject up to the batch seq.
    prefix: String,
    /// The batch id (unique per publisher and batch: the inbox's token and a counter).
    pub id: String,
    /// The stream sequence just before batch seq 1: batch seq `n` is stream seq `base + n`.
    pub base: u64,
    /// The highest batch seq sent.
    pub sent: u64,
    /// The highest batch seq the server acknowledged as stored.
    pub acked: u64,
    /// Messages per flow ack, as the server last said.
    pub flow: u64,
    /// The server answered the start: more than one message may be sent.
    pub started: bool,
    /// The end of batch is sent; its pub ack is awaited.
    pub ending: bool,
    /// Where the end of batch goes: [`contract::subject::batch_end`], a subject of the
    /// stream outside `bsky.>`, so no core NATS reader of the firehose receives it.
    pub end_subject: Subject,
    /// When the last message was sent.
    pub last_sent: Instant,
}

impl Open {
    /// A new batch whose first message gets stream sequence `base + 1`.
    pub fn new(inbox: &str, n: u64, flow: u16, base: u64, end_subject: Subject) -> Open {
        // The server takes the token before the flow as the batch id and keys batches by
        // it per stream: the inbox's own (random) last token keeps it unique.
        let token = inbox.rsplit('.').next().unwrap_or(inbox);
        let id = format!("{token}{n}");
        let prefix = format!("{inbox}.{id}.{flow}.fail.");
        Open {
            prefix,
            id,
            base,
            sent: 0,
            acked: 0,
            flow: u64::from(flow.max(1)),
            started: false,
            ending: false,
            end_subject,
            last_sent: Instant::now(),
        }
    }

    /// The reply subject of batch seq `seq` with operation `op`.
    pub fn reply(&self, seq: u64, op: Op) -> String {
        let mut s = String::with_capacity(self.prefix.len() + 26);
        s.push_str(&self.prefix);
        s.push_str(itoa::Buffer::new().format(seq));
        s.push('.');
        s.push_str(itoa::Buffer::new().format(op as u8));
        s.push_str(".$FI");
        s
    }

    /// Whether one more message may be sent now: the start is answered, the end not sent,
    /// and fewer than [`OUTSTANDING`] flows are unacknowledged.
    pub fn may_send(&self) -> bool {
        !self.ending
            && (self.sent == 0 || self.started)
            && self.sent < self.acked + OUTSTANDING * self.flow
    }
}

/// The batch id in the subject of an answer, `<inbox>.<id>.…`.
pub fn id_of<'a>(subject: &'a str, inbox: &str) -> Option<&'a str> {
    subject
        .strip_prefix(inbox)?
        .strip_prefix('.')?
        .split('.')
        .next()
}

/// What the server said on a batch's reply subject.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// Batch seqs `1..=seq` are stored; the next flow ack comes `flow` messages later.
    Flow { seq: u64, flow: u16 },
    /// Batch seqs from `expected` to before `got` never arrived (the batch ends).
    Gap { expected: u64, got: u64 },
    /// Batch seq `seq` was refused (e.g. by its `Nats-Expected-Last-Sequence`); the batch
    /// ends before it.
    Refused {
        seq: u64,
        code: u64,
        description: String,
    },
    /// The batch ended: its first `count` messages are stored, the last at `stream_seq`.
    Ended { stream_seq: u64, count: u64 },
    /// An error pub ack: the batch was not taken, or is unknown (ended, or abandoned
    /// after 10 s without a message).
    Error { code: u64, description: String },
    /// Not a message of the protocol.
    Unreadable,
}

/// Reads an answer.
pub fn parse(m: &async_nats::Message) -> Answer {
    #[derive(serde::Deserialize)]
    struct Raw {
        #[serde(rename = "type")]
        kind: Option<String>,
        seq: Option<u64>,
        msgs: Option<u16>,
        last_seq: Option<u64>,
        count: Option<u64>,
        error: Option<RawError>,
    }
    #[derive(serde::Deserialize)]
    struct RawError {
        #[serde(default)]
        err_code: u64,
        #[serde(default)]
        description: String,
    }
    if let Some(status) = m.status {
        return Answer::Error {
            code: 0,
            description: format!("status {status} {}", m.description.as_deref().unwrap_or("")),
        };
    }
    let Ok(raw) = serde_json::from_slice::<Raw>(&m.payload) else {
        return Answer::Unreadable;
    };
    match (raw.kind.as_deref(), raw.error) {
        (Some("ack"), _) => match (raw.seq, raw.msgs) {
            (Some(seq), Some(flow)) => Answer::Flow { seq, flow },
            _ => Answer::Unreadable,
        },
        (Some("gap"), _) => Answer::Gap {
            expected: raw.last_seq.unwrap_or(0),
            got: raw.seq.unwrap_or(0),
        },
        (Some("err"), e) => Answer::Refused {
            seq: raw.seq.unwrap_or(0),
            code: e.as_ref().map_or(0, |e| e.err_code),
            description: e.map(|e| e.description).unwrap_or_default(),
        },
        (Some(_), _) => Answer::Unreadable,
        (None, Some(e)) => Answer::Error {
            code: e.err_code,
            description: e.description,
        },
        (None, None) => match (raw.seq, raw.count) {
            (Some(stream_seq), Some(count)) => Answer::Ended { stream_seq, count },
            _ => Answer::Unreadable,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(payload: &str) -> async_nats::Message {
        async_nats::Message {
            subject: "_INBOX.abc.abc1.500.fail.3.1.$FI".into(),
            reply: None,
            payload: payload.to_string().into(),
            headers: None,
            status: None,
            description: None,
            length: payload.len(),
        }
    }

    #[test]
    fn reply_subjects_follow_adr_50() {
        let b = Open::new("_INBOX.abc", 7, 500, 41, "bsky.x".into());
        assert_eq!(b.id, "abc7");
        assert_eq!(b.reply(1, Op::Start), "_INBOX.abc.abc7.500.fail.1.0.$FI");
        assert_eq!(
            b.reply(9, Op::EndOfBatch),
            "_INBOX.abc.abc7.500.fail.9.3.$FI"
        );
        assert_eq!(id_of(&b.reply(2, Op::Append), "_INBOX.abc"), Some("abc7"));
        assert_eq!(id_of("_INBOX.other.x", "_INBOX.abc"), None);
    }

    #[test]
    fn sends_one_start_then_two_flows_ahead() {
        let mut b = Open::new("_INBOX.abc", 0, 100, 0, "bsky.x".into());
        assert!(b.may_send());
        b.sent = 1;
        assert!(!b.may_send(), "waits for the start's answer");
        b.started = true;
        b.flow = 10;
        b.sent = 20;
        assert!(!b.may_send(), "two flows unacknowledged");
        b.acked = 10;
        assert!(b.may_send());
        b.ending = true;
        assert!(!b.may_send());
    }

    #[test]
    fn answers() {
        assert_eq!(
            parse(&msg(r#"{"type":"ack","seq":10,"msgs":15}"#)),
            Answer::Flow { seq: 10, flow: 15 }
        );
        assert_eq!(
            parse(&msg(r#"{"type":"gap","last_seq":10,"seq":15}"#)),
            Answer::Gap {
                expected: 10,
                got: 15
            }
        );
        assert_eq!(
            parse(&msg(
                r#"{"type":"err","seq":10,"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 1"}}"#
            )),
            Answer::Refused {
                seq: 10,
                code: 10071,
                description: "wrong last sequence: 1".into()
            }
        );
        assert_eq!(
            parse(&msg(
                r#"{"stream":"BSKY","seq":120,"batch":"abc7","count":20}"#
            )),
            Answer::Ended {
                stream_seq: 120,
                count: 20
            }
        );
        assert_eq!(
            parse(&msg(
                r#"{"error":{"code":400,"err_code":10205,"description":"batch publish not enabled on stream"},"stream":"BSKY","seq":0}"#
            )),
            Answer::Error {
                code: 10205,
                description: "batch publish not enabled on stream".into()
            }
        );
        assert_eq!(parse(&msg("nonsense")), Answer::Unreadable);
    }
}
