//! # testkit: a real nats-server for tests and benchmarks
//!
//! The pipeline is `relay → decode → publish → JetStream → consumers`. This crate
//! stands in for nothing: it starts a real `nats-server` with JetStream, so tests
//! and benchmarks of the publish and consume ends talk to the same server that
//! production runs. The relay end is served by the `staging` crate.
//!
//! Each [`NatsServer`] gets its own loopback port, its own monitoring port and its
//! own store directory (a temp dir removed on drop). [`NatsServer::stop`] and
//! [`NatsServer::restart`] keep the port and the store, so a test can prove that
//! state survives a server restart. The server runs with the same `max_payload`
//! as `deploy/nats-server.conf` ([`MAX_PAYLOAD`]).
//!
//! [`Cluster`] starts several of them routed into one JetStream cluster, for the tests
//! that kill a stream's leader. [`NatsServer::start_with_config`] runs a configuration
//! file of the caller's, such as `deploy/nats-server.conf` with its users and permissions;
//! [`NatsServer::start_with_conf`] one written by the test (a small `max_payload`, limits).
//!
//! Beside it, what every process-level test and benchmark needs once: [`free_port`] (a
//! port outside the kernel's ephemeral range, so no outgoing connection takes it first),
//! [`ChildGuard`] (a child process that is killed when the test ends) and [`process`]
//! (a process's memory and CPU time). Fixtures and
//! frame builders live with the staging relay (`staging::fixtures`, `staging::frames`).
//!
//! The API is synchronous (`std::process`, `std::net`), so it works from plain
//! `#[test]`s, `#[tokio::test]`s and benchmarks alike.
//!
//! Which binary: [`nats_server_binary`] takes `$NATS_SERVER_BIN`, then
//! `<workspace>/.tools/bin/nats-server`, then `PATH`, and refuses anything older
//! than [`MIN_SERVER_VERSION`]. `bash deploy/setup-nats.sh` installs a suitable
//! one; `--with-legacy` adds Debian's 2.9 as [`legacy_nats_server_binary`] for
//! tests that prove old servers are refused.
//!
//! ```no_run
//! let mut nats = testkit::NatsServer::start()?;
//! let url = nats.url(); // "nats://127.0.0.1:PORT": connect a client here
//! nats.restart()?; // same port, same JetStream store
//! # Ok::<(), testkit::Error>(())
//! ```

pub mod deploy;
pub mod http;
pub mod process;

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

mod binary;
mod child;
mod cluster;
mod ports;

use binary::find_server;
pub use binary::{
    legacy_nats_server_binary, legacy_server_or_skip, nats_server_binary, parse_version,
    server_version, workspace_root,
};
pub use child::ChildGuard;
pub use cluster::Cluster;
pub use ports::free_port;

/// Copies the directory tree `from` into `to` (which must exist), for a test that alters a
/// copy of what another part wrote (an archive missing a segment, say).
pub fn copy_dir(from: &Path, to: &Path) -> io::Result<()> {
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            fs::create_dir_all(&target)?;
            copy_dir(&entry.path(), &target)?;
        } else {
            fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// The oldest nats-server the project accepts: 2.9 ignores 2.10 stream settings.
pub const MIN_SERVER_VERSION: (u32, u32, u32) = (2, 10, 0);

/// `max_payload` of every test server, equal to the 8MB in `deploy/nats-server.conf`
/// (firehose frames can be up to 5 MB).
pub const MAX_PAYLOAD: usize = 8 * 1024 * 1024;

/// How long [`NatsServer::start`] and [`NatsServer::restart`] wait for readiness.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

/// How long [`NatsServer::stop`] waits after SIGTERM before it kills.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// How many fresh port pairs [`NatsServer::start`] tries when another process
/// takes a port between choosing it and the server binding it.
const PORT_ATTEMPTS: u32 = 5;

const SETUP_HINT: &str =
    "run `bash deploy/setup-nats.sh` to install the pinned nats-server 2.14.6 into .tools/bin";

/// Why `nats-server --version` gave no version.
#[derive(Debug, thiserror::Error)]
pub enum VersionError {
    /// The binary could not be run.
    #[error("could not be run")]
    Run(#[source] io::Error),
    /// It ran and failed; what it printed.
    #[error("exited with {status}: {output}")]
    Failed { status: ExitStatus, output: String },
    /// It printed no `MAJOR.MINOR.PATCH`.
    #[error("printed no version: {output:?}")]
    NoVersion { output: String },
}

/// Everything that can go wrong finding, starting or querying a nats-server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No candidate binary exists.
    #[error("no nats-server found (looked at {searched}); {}", SETUP_HINT)]
    NotFound { searched: String },
    /// The binary is older than [`MIN_SERVER_VERSION`].
    #[error("{} is nats-server {version}, but 2.10 or newer is required (2.9 ignores 2.10 settings); {}", path.display(), SETUP_HINT)]
    TooOld { path: PathBuf, version: String },
    /// `nats-server --version` could not be run or understood.
    #[error("`{} --version` gave no version", path.display())]
    Version {
        path: PathBuf,
        #[source]
        source: VersionError,
    },
    /// A file, directory, socket or process operation failed.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    /// The server process ended before it became ready.
    #[error("nats-server {} exited ({status}) before it was ready on 127.0.0.1:{port}; last lines of {}:\n{log_tail}", binary.display(), log.display())]
    Exited {
        binary: PathBuf,
        port: u16,
        status: ExitStatus,
        log: PathBuf,
        log_tail: String,
    },
    /// The server did not become ready within [`START_TIMEOUT`]; it was killed.
    #[error("nats-server {} was not ready on 127.0.0.1:{port} (monitoring port {monitor_port}) after {:?}; last lines of {}:\n{log_tail}", binary.display(), START_TIMEOUT, log.display())]
    NotReady {
        binary: PathBuf,
        port: u16,
        monitor_port: u16,
        log: PathBuf,
        log_tail: String,
    },
}

impl Error {
    fn io(what: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }

    /// True when the server exited because one of its ports was taken.
    fn is_port_clash(&self) -> bool {
        matches!(self, Error::Exited { log_tail, .. } if log_tail.contains("address already in use"))
    }
}

/// Where a server's configuration comes from.
enum Conf {
    /// Written by the test into the server's directory.
    Text(String),
    /// The caller's file (its `include`s resolve next to it).
    File(PathBuf),
}

impl Conf {
    fn default_text() -> Conf {
        Conf::Text(format!("max_payload: {MAX_PAYLOAD}\n"))
    }
}

/// A running (or stopped) nats-server with JetStream, owned by a test.
///
/// Dropping it kills the server and removes its store directory.
#[derive(Debug)]
pub struct NatsServer {
    binary: PathBuf,
    version: String,
    /// Unique `server_name`, checked in the INFO line so that readiness is
    /// never confused with another server that grabbed the same port.
    name: String,
    port: u16,
    monitor_port: u16,
    child: Option<Child>,
    /// Holds `store/`, `nats-server.conf` and `nats-server.log`.
    dir: TempDir,
    /// A configuration file of the caller's instead of the generated one.
    config: Option<PathBuf>,
    /// Environment of the server process (e.g. the passwords `deploy/accounts.conf` reads).
    env: Vec<(String, String)>,
}

impl NatsServer {
    /// Starts the binary chosen by [`nats_server_binary`] and waits until it is
    /// ready (JetStream enabled and the client port answering), at most
    /// [`START_TIMEOUT`].
    pub fn start() -> Result<NatsServer, Error> {
        let (binary, version) = find_server()?;
        Self::launch(binary, version, Conf::default_text(), Vec::new())
    }

    /// Like [`NatsServer::start`], with `conf` as the whole configuration file (ports,
    /// name, JetStream and store come from the command line): a test can set a smaller
    /// `max_payload`, users and permissions, or limits.
    pub fn start_with_conf(conf: &str) -> Result<NatsServer, Error> {
        let (binary, version) = find_server()?;
        Self::launch(binary, version, Conf::Text(conf.to_string()), Vec::new())
    }

    /// Like [`NatsServer::start`] but with the given binary and **no** version
    /// gate, so that tests can run an old server on purpose.
    pub fn start_with_binary(path: impl AsRef<Path>) -> Result<NatsServer, Error> {
        let binary = path.as_ref().to_path_buf();
        let version = server_version(&binary)?;
        Self::launch(binary, version, Conf::default_text(), Vec::new())
    }

    /// Like [`NatsServer::start`] but with the caller's configuration file (e.g.
    /// `deploy/nats-server.conf`, whose `include`s resolve next to it) and environment
    /// (e.g. `BSKY_NATS_INGEST_PASSWORD`). Flags still choose the ports, the name, the
    /// loopback address and the store directory, overriding the file.
    pub fn start_with_config(
        config: impl AsRef<Path>,
        env: &[(&str, &str)],
    ) -> Result<NatsServer, Error> {
        let (binary, version) = find_server()?;
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Self::launch(
            binary,
            version,
            Conf::File(config.as_ref().to_path_buf()),
            env,
        )
    }

    fn launch(
        binary: PathBuf,
        version: String,
        conf_source: Conf,
        env: Vec<(String, String)>,
    ) -> Result<NatsServer, Error> {
        static SERIAL: AtomicU32 = AtomicU32::new(0);
        let dir = tempfile::Builder::new()
            .prefix("testkit-nats-")
            .tempdir()
            .map_err(Error::io("creating a temp dir for nats-server"))?;
        let config = match conf_source {
            Conf::Text(text) => {
                let conf = dir.path().join("nats-server.conf");
                fs::write(&conf, text).map_err(Error::io(format!("writing {}", conf.display())))?;
                None
            }
            Conf::File(path) => Some(path),
        };
        let name = format!(
            "testkit-{}-{}",
            std::process::id(),
            SERIAL.fetch_add(1, Ordering::Relaxed)
        );
        let mut server = NatsServer {
            binary,
            version,
            name,
            port: 0,
            monitor_port: 0,
            child: None,
            dir,
            config,
            env,
        };
        let mut attempt = 1;
        loop {
            server.port = free_port()?;
            server.monitor_port = free_port()?;
            match server.spawn_and_wait(Instant::now() + START_TIMEOUT) {
                Err(e) if e.is_port_clash() && attempt < PORT_ATTEMPTS => attempt += 1,
                Err(e) => return Err(e),
                Ok(()) => return Ok(server),
            }
        }
    }

    /// `nats://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port; stays the same across [`NatsServer::restart`].
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:MPORT` for `/healthz`, `/varz`, `/jsz`. The monitoring
    /// port may change on [`NatsServer::restart`].
    pub fn monitor_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.monitor_port)
    }

    /// The server version as reported by `nats-server --version`, e.g. `2.14.6`.
    pub fn version(&self) -> String {
        self.version.clone()
    }

    /// The server's process id, while it runs (for SIGSTOP / SIGCONT in fault tests).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The binary this server runs.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// The JetStream store directory (`-sd`), kept across stop and restart.
    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// The server's log (its stdout and stderr, appended across restarts).
    pub fn log_file(&self) -> PathBuf {
        self.dir.path().join("nats-server.log")
    }

    /// Stops the server: SIGTERM (a clean JetStream shutdown), then a kill if it
    /// is still running after a few seconds. Keeps the port and store for
    /// [`NatsServer::restart`]. Does nothing if it is not running.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // The server binary can signal a pid itself, which spares us libc and procps.
        let asked = Command::new(&self.binary)
            .arg("--signal")
            .arg(format!("term={}", child.id()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if asked {
            let deadline = Instant::now() + STOP_GRACE;
            while Instant::now() < deadline {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => return,
                    Ok(None) => thread::sleep(Duration::from_millis(20)),
                }
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// SIGKILL: the server dies at once, without a clean JetStream shutdown and with
    /// whatever its clients had buffered. Keeps the port and store for
    /// [`NatsServer::restart`].
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same client port with the same store
    /// (stopping it first if it runs). If the port is briefly held by another
    /// process, retries until [`START_TIMEOUT`].
    pub fn restart(&mut self) -> Result<(), Error> {
        self.stop();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match self.spawn_and_wait(deadline) {
                Err(e) if e.is_port_clash() && Instant::now() < deadline => {
                    // Either port may be the taken one; the monitoring port need not stay.
                    self.monitor_port = free_port()?;
                    thread::sleep(Duration::from_millis(100));
                }
                other => return other,
            }
        }
    }

    fn spawn_and_wait(&mut self, deadline: Instant) -> Result<(), Error> {
        let log_path = self.log_file();
        let log_offset = fs::metadata(&log_path).map_or(0, |m| m.len());
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(Error::io(format!("opening {}", log_path.display())))?;
        let log_for_stdout = log
            .try_clone()
            .map_err(Error::io(format!("duplicating {}", log_path.display())))?;
        let config = self
            .config
            .clone()
            .unwrap_or_else(|| self.dir.path().join("nats-server.conf"));
        let mut child = Command::new(&self.binary)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .arg("-c")
            .arg(config)
            .args(["-js", "-a", "127.0.0.1"])
            .args(["-p", &self.port.to_string()])
            .args(["-m", &self.monitor_port.to_string()])
            .args(["-n", &self.name])
            .arg("-sd")
            .arg(self.store_dir())
            .stdin(Stdio::null())
            .stdout(log_for_stdout)
            .stderr(log)
            .spawn()
            .map_err(Error::io(format!("starting {}", self.binary.display())))?;
        match self.wait_ready(&mut child, deadline, log_offset) {
            Ok(()) => {
                self.child = Some(child);
                Ok(())
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(e)
            }
        }
    }

    fn wait_ready(
        &self,
        child: &mut Child,
        deadline: Instant,
        log_offset: u64,
    ) -> Result<(), Error> {
        loop {
            let exited = child
                .try_wait()
                .map_err(Error::io(format!("waiting for {}", self.binary.display())))?;
            if let Some(status) = exited {
                return Err(Error::Exited {
                    binary: self.binary.clone(),
                    port: self.port,
                    status,
                    log: self.log_file(),
                    log_tail: log_tail(&self.log_file(), log_offset),
                });
            }
            // The health check says JetStream is enabled; the INFO line says the
            // client port is served by this very server (not one that took the
            // port). A standalone server recovers its streams before it accepts.
            if self.healthz_ok() && self.info_is_ours() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::NotReady {
                    binary: self.binary.clone(),
                    port: self.port,
                    monitor_port: self.monitor_port,
                    log: self.log_file(),
                    log_tail: log_tail(&self.log_file(), log_offset),
                });
            }
            thread::sleep(Duration::from_millis(25));
        }
    }

    /// `GET /healthz?js-enabled-only=true` answers 200.
    fn healthz_ok(&self) -> bool {
        http_status(self.monitor_port, "/healthz?js-enabled-only=true") == Some(200)
    }

    /// The client port sends an INFO line naming this server.
    fn info_is_ours(&self) -> bool {
        info_names(self.port, &self.name)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The HTTP status of `GET path` on 127.0.0.1:`port`, or `None` if nothing answers.
pub(crate) fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut stream = connect(port)?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = Vec::new();
    stream.take(64 * 1024).read_to_end(&mut response).ok()?;
    let response = String::from_utf8_lossy(&response);
    response
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
}

/// The client port 127.0.0.1:`port` sends an INFO line naming server `name`.
pub(crate) fn info_names(port: u16, name: &str) -> bool {
    let Some(stream) = connect(port) else {
        return false;
    };
    let mut line = String::new();
    if BufReader::new(stream.take(64 * 1024))
        .read_line(&mut line)
        .is_err()
    {
        return false;
    }
    line.starts_with("INFO ") && line.contains(&format!("\"server_name\":\"{name}\""))
}

/// A loopback connection with short timeouts, or `None`.
pub(crate) fn connect(port: u16) -> Option<TcpStream> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let stream = TcpStream::connect_timeout(&addr, Duration::from_millis(250)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    stream
        .set_write_timeout(Some(Duration::from_secs(1)))
        .ok()?;
    Some(stream)
}

/// The last 20 lines written to `path` after byte `offset`.
pub(crate) fn log_tail(path: &Path, offset: u64) -> String {
    let mut text = String::new();
    let read = File::open(path).and_then(|f| {
        let mut f = BufReader::new(f);
        io::copy(&mut (&mut f).take(offset), &mut io::sink())?;
        f.read_to_string(&mut text)
    });
    if let Err(e) = read {
        return format!("(could not read the log: {e})");
    }
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
