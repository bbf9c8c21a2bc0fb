//! The service's durable pull consumer on the stream: bound when the server's state agrees
//! with the database, recreated at the committed position otherwise.
//!
//! The database is the truth; the durable consumer is how the server paces deliveries
//! (`max_ack_pending`), redelivers what was not acknowledged (`ack_wait`) and shows the
//! service in `nats consumer info`. It is bound as it is only when nothing is in flight
//! (`num_ack_pending == 0`), nothing past the committed position was acknowledged, and its
//! settings are ours; otherwise it is deleted and created again to deliver from the
//! committed position + 1. That also covers a database restored from a backup, or a
//! process killed with messages in hand (which the server would otherwise hold back for
//! `ack_wait` while delivering later ones, out of order).
//!
//! Settings, on purpose:
//! - `ack_policy: all`: one ack per committed batch acknowledges it all (kit applies in
//!   stream order, so everything below the batch's last message is done);
//! - `max_deliver: -1`: the server never drops a message on its own; poison messages are
//!   terminated by kit, transient failures are retried until they pass;
//! - `ack_wait` and `max_ack_pending` from the configuration.

use crate::config;
use async_nats::jetstream::consumer::{self, pull, AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::stream::Stream;

/// JetStream refused or failed a consumer operation: retry later, or stop if it persists.
#[derive(Debug, thiserror::Error)]
#[error("durable consumer {durable}: {what}")]
pub struct ConsumerError {
    /// The durable's name.
    pub durable: String,
    /// What was being done.
    pub what: &'static str,
    /// The server's or the client's error.
    #[source]
    pub source: crate::handler::BoxError,
}

/// Our configuration of the durable, delivering from `start` (a stream sequence).
pub fn desired(cfg: &config::Consumer, start: u64) -> pull::Config {
    let mut subjects = cfg.subjects.clone();
    subjects.sort();
    subjects.dedup();
    pull::Config {
        durable_name: Some(cfg.durable.clone()),
        description: Some("bsky consumer (kit): position kept in its SQLite state".into()),
        deliver_policy: if start <= 1 {
            DeliverPolicy::All
        } else {
            DeliverPolicy::ByStartSequence {
                start_sequence: start,
            }
        },
        ack_policy: AckPolicy::All,
        ack_wait: cfg.ack_wait,
        max_deliver: -1,
        filter_subjects: subjects,
        max_ack_pending: cfg.max_ack_pending,
        ..Default::default()
    }
}

/// Whether the server's consumer has our settings (delivery start aside).
fn same_settings(have: &consumer::Config, want: &pull::Config) -> bool {
    let mut subjects = have.filter_subjects.clone();
    if !have.filter_subject.is_empty() {
        subjects.push(have.filter_subject.clone());
    }
    subjects.sort();
    subjects.dedup();
    have.ack_policy == want.ack_policy
        && have.ack_wait == want.ack_wait
        && have.max_deliver == want.max_deliver
        && have.max_ack_pending == want.max_ack_pending
        && subjects == want.filter_subjects
        && have.deliver_subject.is_none()
}

/// How the consumer was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened {
    /// Bound as it was; the last delivery sequence the server handed out.
    Bound {
        /// `delivered.consumer_sequence`
        last_delivery: u64,
    },
    /// Created (or recreated) to deliver from the position + 1.
    Created,
}

/// Binds the durable if it agrees with `position` (the committed stream sequence) and
/// `force_new` is false; creates it again at `position + 1` otherwise.
pub async fn open(
    stream: &Stream,
    cfg: &config::Consumer,
    position: u64,
    force_new: bool,
) -> Result<(PullConsumer, Opened), ConsumerError> {
    let err = |what: &'static str, e: crate::handler::BoxError| ConsumerError {
        durable: cfg.durable.clone(),
        what,
        source: e,
    };
    let want = desired(cfg, position + 1);
    match stream.consumer_info(&cfg.durable).await {
        Ok(info) => {
            let agrees = !force_new
                && same_settings(&info.config, &want)
                && info.num_ack_pending == 0
                && info.ack_floor.stream_sequence <= position;
            if agrees {
                let c: PullConsumer = stream
                    .get_consumer(&cfg.durable)
                    .await
                    .map_err(|e| err("binding", e))?;
                tracing::info!(durable = %cfg.durable, position, delivered = info.delivered.stream_sequence, "bound the durable consumer");
                return Ok((
                    c,
                    Opened::Bound {
                        last_delivery: info.delivered.consumer_sequence,
                    },
                ));
            }
            tracing::info!(
                durable = %cfg.durable,
                position,
                ack_floor = info.ack_floor.stream_sequence,
                ack_pending = info.num_ack_pending,
                "recreating the durable consumer at the stored position"
            );
            stream
                .delete_consumer(&cfg.durable)
                .await
                .map_err(|e| err("deleting", e.into()))?;
        }
        Err(e) if e.kind() == async_nats::jetstream::context::ConsumerInfoErrorKind::NotFound => {}
        Err(e) => return Err(err("reading its info", e.into())),
    }
    let c = stream
        .create_consumer(want)
        .await
        .map_err(|e| err("creating", e.into()))?;
    tracing::info!(durable = %cfg.durable, from_seq = position + 1, "created the durable consumer");
    Ok((c, Opened::Created))
}
