//! A TCP gate in front of a server: every connection to the gate's port is piped to the
//! server's. Closing the gate ends the open connections and refuses new ones, as a store
//! that went away does; opening it serves again on the same port.
//!
//! The S3 test stops the store this way rather than with SIGSTOP on SeaweedFS: a stopped
//! `weed server` once came back (in CI, on two busy cores) with listings answered and every
//! write hanging for minutes: that tested SeaweedFS, not the archiver.

use anyhow::Context as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

pub struct Gate {
    port: u16,
    open: watch::Sender<bool>,
}

impl Gate {
    /// An open gate on a free port to `127.0.0.1:target`; runs on the current tokio runtime.
    pub fn start(target: u16) -> anyhow::Result<Gate> {
        let listener = std::net::TcpListener::bind(("127.0.0.1", testkit::free_port()?))?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let runtime = tokio::runtime::Handle::try_current().context("a gate needs a runtime")?;
        let listener = {
            let _entered = runtime.enter();
            TcpListener::from_std(listener)?
        };
        let (open, rx) = watch::channel(true);
        runtime.spawn(serve(listener, port, target, rx));
        Ok(Gate { port, open })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Ends every connection and refuses new ones.
    pub fn close(&self) {
        self.open.send_replace(false);
    }

    /// Accepts connections again.
    pub fn open(&self) {
        self.open.send_replace(true);
    }
}

async fn serve(mut listener: TcpListener, port: u16, target: u16, mut open: watch::Receiver<bool>) {
    loop {
        let mut pipes = JoinSet::new();
        loop {
            tokio::select! {
                changed = open.changed() => {
                    if changed.is_err() {
                        return; // the gate was dropped
                    }
                    if !*open.borrow_and_update() {
                        break;
                    }
                }
                accepted = listener.accept() => {
                    if let Ok((client, _)) = accepted {
                        pipes.spawn(pipe(client, target));
                    }
                }
            }
        }
        // Closed: the connections end mid-request, the port refuses.
        pipes.abort_all();
        drop(listener);
        loop {
            if open.changed().await.is_err() {
                return;
            }
            if *open.borrow_and_update() {
                break;
            }
        }
        listener = loop {
            match TcpListener::bind(("127.0.0.1", port)).await {
                Ok(l) => break l,
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
            }
        };
    }
}

async fn pipe(mut client: TcpStream, target: u16) {
    let Ok(mut server) = TcpStream::connect(("127.0.0.1", target)).await else {
        return;
    };
    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
}
