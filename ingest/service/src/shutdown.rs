//! One shutdown root per process: the first SIGTERM or SIGINT cancels a
//! [`CancellationToken`] that every task listens to; a second one exits at once (exit code
//! 130), for an operator who does not want to wait for a drain.

use tokio_util::sync::CancellationToken;

/// Cancels `token` on the first SIGTERM or SIGINT, and exits the process on the second.
/// Spawn it once, at start.
pub async fn on_signals(token: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop the process with SIGKILL");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping (send another signal to exit at once)"),
        _ = int.recv() => tracing::info!("SIGINT: stopping (send another signal to exit at once)"),
    }
    token.cancel();
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::warn!("second signal: exiting now");
    std::process::exit(130);
}
