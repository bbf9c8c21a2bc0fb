//! What an ack says, and which refusals no resend will cure.

/// What an ack says.
pub enum Ack {
    /// Stored at this stream sequence.
    Stored(u64),
    /// The message was refused; `code` 0 when the server gave none (e.g. no responders).
    Refused { code: u64, description: String },
}

pub fn parse_ack(m: &async_nats::Message) -> Ack {
    #[derive(serde::Deserialize)]
    struct Raw {
        seq: Option<u64>,
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
        return Ack::Refused {
            code: 0,
            description: format!("status {status} {}", m.description.as_deref().unwrap_or("")),
        };
    }
    match serde_json::from_slice::<Raw>(&m.payload) {
        Ok(Raw {
            seq: Some(s),
            error: None,
        }) => Ack::Stored(s),
        Ok(Raw { error: Some(e), .. }) => Ack::Refused {
            code: e.err_code,
            description: e.description,
        },
        _ => Ack::Refused {
            code: 0,
            description: format!("unreadable ack {:?}", String::from_utf8_lossy(&m.payload)),
        },
    }
}

/// What went wrong with a publish.
pub enum Failure {
    /// Lost, late, refused out of order: a recovery round cures it.
    Retry(Retry),
    /// JetStream will go on refusing (see [`PERMANENT`]).
    Permanent { code: u64, description: String },
}

/// Why a recovery round is needed.
#[derive(Debug, thiserror::Error)]
pub enum Retry {
    /// The client could not hand the message to the connection.
    #[error("publish")]
    Publish(#[source] async_nats::PublishError),
    /// No ack in time: a stalled server, or a lost publish or ack.
    #[error("no ack within {0:?}")]
    Timeout(std::time::Duration),
    /// An ack for another place in the stream.
    #[error("message sent as stream seq {sent} was stored at {stored}")]
    Misplaced { sent: u64, stored: u64 },
    /// JetStream refused it for now (e.g. a lost predecessor: wrong last sequence).
    #[error("refused ({code}): {description}")]
    Refused { code: u64, description: String },
    /// A fast-ingest batch lost messages on the way, and ended before them.
    #[error("batch messages {expected} to {got} did not arrive; the batch ended")]
    Gap { expected: u64, got: u64 },
    /// A fast-ingest batch ended before its last message.
    #[error("the batch ended after {stored} of its {sent} messages")]
    Ended { stored: u64, sent: u64 },
    /// An answer that says nothing readable.
    #[error("unreadable ack")]
    Unreadable,
}

/// JetStream error codes that no resend will cure.
pub const PERMANENT: [u64; 4] = [
    10002, // account resources exceeded
    10023, // insufficient resources
    10047, // storage resources exceeded
    10054, // message size exceeds the stream's maximum
];
