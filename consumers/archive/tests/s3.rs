//! The archive on a real S3-compatible store (SeaweedFS on loopback, installed from PyPI
//! by `deploy/setup-seaweedfs.sh`): the same results as on a local directory across
//! `kill -9` and the store stopped for 10 s.

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_complete_across_kills_and_an_outage() -> anyhow::Result<()> {
    let Some(mut weed) =
        common::weed::Weed::start_or_skip("s3_complete_across_kills_and_an_outage")?
    else {
        return Ok(());
    };
    let (ops, secs) = common::scenario_size();
    common::kills_and_outage(&mut weed, ops, 5, secs).await?;
    Ok(())
}
