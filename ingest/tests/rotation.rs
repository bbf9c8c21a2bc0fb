//! Rotating a password as `deploy/README.md` ("Rotating a password") says: a new password
//! file from `deploy/secrets.sh`, then nats-server restarted with the new `nats.env`. The
//! new password works and the old one is refused. A reload (SIGHUP) alone is not enough:
//! the server reads the passwords from its environment, which a reload does not change.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn secrets(dir: &Path) {
    let root = testkit::workspace_root();
    let out = Command::new("bash")
        .arg(root.join("deploy/secrets.sh"))
        .arg(dir)
        .output()
        .expect("run deploy/secrets.sh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `nats.env` as (name, value) pairs, as systemd's EnvironmentFile or compose's --env-file
/// read it.
fn env_file(dir: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(dir.join("nats.env"))
        .expect("nats.env")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (k, v) = l.split_once('=').expect("NAME=value");
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// nats-server as deployed: `-c deploy/nats-server.conf -sd DIR` with the passwords of
/// `DIR/nats.env` in its environment, on a free port. Run directly, not through testkit,
/// whose `-n NAME` flag would make the server refuse every reload ("config reload not
/// supported for ServerName"); a deployed server has no such flag.
struct Server {
    child: testkit::ChildGuard,
    port: u16,
    log: std::path::PathBuf,
}

impl Server {
    async fn start(secrets: &Path, store: &Path) -> Server {
        let port = testkit::free_port().expect("port");
        let monitor = testkit::free_port().expect("port");
        let log = store.with_extension("log");
        let out = std::fs::File::create(&log).expect("log");
        let child = Command::new(testkit::nats_server_binary().expect("nats-server"))
            .envs(env_file(secrets))
            .arg("-c")
            .arg(testkit::workspace_root().join("deploy/nats-server.conf"))
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .args(["-m", &monitor.to_string(), "-sd"])
            .arg(store)
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("start nats-server");
        let server = Server {
            child: testkit::ChildGuard(child),
            port,
            log,
        };
        server.wait_for("Server is ready").await;
        server
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    async fn wait_for(&self, line: &str) {
        let start = Instant::now();
        loop {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            if log.contains(line) {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "no {line:?}:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn works(url: &str, password: &str) -> bool {
    async_nats::ConnectOptions::with_user_and_password("charts".into(), password.into())
        .custom_inbox_prefix("_INBOX_charts")
        .connect(url)
        .await
        .is_ok()
}

fn password(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("charts.password"))
        .expect("charts.password")
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_the_new_secrets_rotates_a_password_and_a_reload_does_not() {
    let dir = tempfile::tempdir().expect("tmp");
    let secrets_dir = dir.path().join("secrets");
    secrets(&secrets_dir);
    let old = password(&secrets_dir);
    let nats = Server::start(&secrets_dir, &dir.path().join("store")).await;
    assert!(works(&nats.url(), &old).await, "the first password works");

    // Step 1: a new password file and nats.env.
    std::fs::remove_file(secrets_dir.join("charts.password")).expect("rm");
    secrets(&secrets_dir);
    let new = password(&secrets_dir);
    assert_ne!(old, new);

    // A reload alone (what `systemctl reload` sends) keeps the old password.
    let reloaded = Command::new(testkit::nats_server_binary().expect("nats-server"))
        .arg("--signal")
        .arg(format!("reload={}", nats.child.id()))
        .status()
        .expect("signal");
    assert!(reloaded.success());
    nats.wait_for("Reloaded server configuration").await;
    assert!(
        works(&nats.url(), &old).await,
        "after a reload the old password still works"
    );
    assert!(
        !works(&nats.url(), &new).await,
        "after a reload the new one is still refused"
    );

    // Step 2: nats-server restarted with the new nats.env.
    drop(nats);
    let nats = Server::start(&secrets_dir, &dir.path().join("store")).await;
    assert!(works(&nats.url(), &new).await, "the new password works");
    assert!(
        !works(&nats.url(), &old).await,
        "the old password is refused"
    );
}
