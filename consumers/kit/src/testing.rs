//! Helpers for the consumers' tests (feature `testing`): a synthesized capture whose event
//! times are spread as asked, waiting until a consumer has applied everything, contract
//! payloads to publish by hand, and a plain HTTP GET for a service's endpoints.

use crate::status::Progress;
use staging::capture::Capture;
use staging::synth::{SynthConfig, SynthReport};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// A capture of about `ops` record ops synthesized from the real repository in the
/// fixtures, deterministic from `seed`, its event times starting at `start_us` and
/// advancing `events_per_second` per second of event time.
pub fn synth(
    ops: u64,
    seed: u64,
    start_us: i64,
    events_per_second: f64,
) -> Result<(Arc<Capture>, SynthReport), String> {
    use staging::synth::{synthesize, Source};
    let source = Source::load(staging::fixtures::calabro()).map_err(|e| e.to_string())?;
    let cfg = SynthConfig {
        seed,
        ops,
        start_seq: 1_000_000,
        start_time_micros: start_us,
        events_per_second,
        repos: 5_000,
        big_every: 0,
        ..SynthConfig::default()
    };
    let mut w =
        staging::capture::CaptureWriter::new(Vec::new(), None).map_err(|e| e.to_string())?;
    let report = synthesize(&source, cfg, &mut w).map_err(|e| e.to_string())?;
    let bytes = w.finish().map_err(|e| e.to_string())?;
    let capture = Capture::from_bytes(bytes).map_err(|e| e.to_string())?;
    Ok((Arc::new(capture), report))
}

/// The stream's last sequence now.
pub async fn stream_last_seq(
    js: &async_nats::jetstream::Context,
    stream: &str,
) -> Result<u64, crate::handler::BoxError> {
    let s = js.get_stream(stream).await?;
    Ok(s.get_info().await?.state.last_sequence)
}

/// Waits until a consumer reports nothing pending at a moment the stream's last sequence
/// was `last_seq`: everything matching up to there is applied and committed.
pub async fn wait_caught_up(
    progress: &mut watch::Receiver<Progress>,
    last_seq: u64,
    timeout: Duration,
) -> Result<Progress, String> {
    let start = Instant::now();
    loop {
        {
            let p = progress.borrow_and_update();
            if p.known && p.pending == 0 && p.stream_last_seq >= last_seq {
                return Ok(p.clone());
            }
        }
        let left = timeout.saturating_sub(start.elapsed());
        match tokio::time::timeout(left, progress.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err("the consumer stopped".into()),
            Err(_) => {
                return Err(format!(
                    "not caught up with {last_seq} after {timeout:?}: {:?}",
                    *progress.borrow()
                ))
            }
        }
    }
}

/// A commit payload of the contract, for publishing by hand.
pub fn commit_json(
    did: &str,
    time_us: i64,
    collection: &str,
    operation: &str,
    rkey: &str,
) -> String {
    let record = if operation == "delete" {
        String::new()
    } else {
        format!(
            r#","record":{{"$type":"{collection}","createdAt":"2026-07-04T00:00:00Z"}},"cid":"bafyreib2rxk3rybk3aobmv5cjuql3bm2twh4jo5uxgf5kpqcsgz7soqqru""#
        )
    };
    format!(
        r#"{{"did":"{did}","time_us":{time_us},"kind":"commit","commit":{{"rev":"3mptbypluud2a","operation":"{operation}","collection":"{collection}","rkey":"{rkey}"{record}}}}}"#
    )
}
