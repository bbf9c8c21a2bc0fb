//! [`Cluster`]: N real nats-servers forming one JetStream cluster on loopback, for the
//! tests that prove replicated streams keep the data when a server dies.
//!
//! Every node has its own client, cluster and monitoring port (free ports chosen at
//! start), its own `server_name`, its own store directory, and routes to every node.
//! Configuration files to share (`deploy/accounts.conf`) are copied beside the generated
//! node files and `include`d, so the cluster runs with the same users and permissions as
//! production. Dropping the cluster kills every node and removes the stores.
//!
//! ```no_run
//! let mut cluster = testkit::Cluster::start(3)?;
//! let urls = cluster.urls(); // "nats://127.0.0.1:A,nats://127.0.0.1:B,..."
//! cluster.kill(0); // SIGKILL, no goodbye to the others
//! # Ok::<(), testkit::Error>(())
//! ```

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::{find_server, free_port, http_status, info_names, log_tail, Error, MAX_PAYLOAD};

/// How long [`Cluster::start`] waits for every node to report healthy (a JetStream meta
/// leader elected and the node current with it).
pub const CLUSTER_START_TIMEOUT: Duration = Duration::from_secs(30);

/// How many fresh port sets [`Cluster::start`] tries when a port is taken meanwhile.
const PORT_ATTEMPTS: u32 = 3;

#[derive(Debug)]
struct Node {
    name: String,
    port: u16,
    monitor_port: u16,
    cluster_port: u16,
    child: Option<Child>,
    dir: PathBuf,
}

impl Node {
    fn conf(&self) -> PathBuf {
        self.dir.join("nats-server.conf")
    }
    fn log(&self) -> PathBuf {
        self.dir.join("nats-server.log")
    }
}

/// A running JetStream cluster owned by a test.
#[derive(Debug)]
pub struct Cluster {
    binary: PathBuf,
    nodes: Vec<Node>,
    /// Holds one directory per node (config, store, log) and the shared include files.
    dir: TempDir,
}

impl Cluster {
    /// Starts `n` nodes with no authentication and waits until all are healthy.
    pub fn start(n: usize) -> Result<Cluster, Error> {
        Self::start_with(n, &[], &[])
    }

    /// Starts `n` nodes that `include` each file of `includes` (copied beside the node
    /// files, so their own `include`s must not reach further), with `env` in the servers'
    /// environment (the passwords `deploy/accounts.conf` reads).
    pub fn start_with(
        n: usize,
        includes: &[&Path],
        env: &[(&str, &str)],
    ) -> Result<Cluster, Error> {
        static SERIAL: AtomicU32 = AtomicU32::new(0);
        let (binary, _) = find_server()?;
        let dir = tempfile::Builder::new()
            .prefix("testkit-cluster-")
            .tempdir()
            .map_err(Error::io("creating a temp dir for the cluster"))?;
        let mut names = Vec::new();
        for file in includes {
            let name = file
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            let dest = dir.path().join(&name);
            fs::copy(file, &dest).map_err(Error::io(format!("copying {}", file.display())))?;
            names.push(name);
        }
        let id = format!(
            "testkit-{}-{}",
            std::process::id(),
            SERIAL.fetch_add(1, Ordering::Relaxed)
        );
        let mut cluster = Cluster {
            binary,
            nodes: Vec::new(),
            dir,
        };
        let mut attempt = 1;
        loop {
            match cluster.launch(&id, n, &names, env) {
                Ok(()) => return Ok(cluster),
                Err(e) if e.is_port_clash() && attempt < PORT_ATTEMPTS => {
                    cluster.kill_all();
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn launch(
        &mut self,
        id: &str,
        n: usize,
        includes: &[String],
        env: &[(&str, &str)],
    ) -> Result<(), Error> {
        self.nodes.clear();
        for i in 0..n {
            let name = format!("{id}-n{}", i + 1);
            let dir = self.dir.path().join(format!("n{}", i + 1));
            fs::create_dir_all(&dir).map_err(Error::io(format!("creating {}", dir.display())))?;
            self.nodes.push(Node {
                name,
                port: free_port()?,
                monitor_port: free_port()?,
                cluster_port: free_port()?,
                child: None,
                dir,
            });
        }
        let routes: Vec<String> = self
            .nodes
            .iter()
            .map(|node| format!("nats-route://127.0.0.1:{}", node.cluster_port))
            .collect();
        for node in &mut self.nodes {
            let mut conf = format!(
                "server_name: {}\nlisten: 127.0.0.1:{}\nhttp: 127.0.0.1:{}\nmax_payload: {MAX_PAYLOAD}\n\
                 jetstream {{\n  store_dir: \"{}\"\n}}\n\
                 cluster {{\n  name: {id}\n  listen: 127.0.0.1:{}\n  routes: [{}]\n}}\n",
                node.name,
                node.port,
                node.monitor_port,
                node.dir.join("store").display(),
                node.cluster_port,
                routes.join(", "),
            );
            for file in includes {
                conf.push_str(&format!("include ../{file}\n"));
            }
            fs::write(node.conf(), conf)
                .map_err(Error::io(format!("writing {}", node.conf().display())))?;
            let log = OpenOptions::new()
                .create(true)
                .append(true)
                .open(node.log())
                .map_err(Error::io(format!("opening {}", node.log().display())))?;
            let log_for_stdout = log
                .try_clone()
                .map_err(Error::io(format!("duplicating {}", node.log().display())))?;
            let child = Command::new(&self.binary)
                .envs(env.iter().copied())
                .arg("-c")
                .arg(node.conf())
                .stdin(Stdio::null())
                .stdout(log_for_stdout)
                .stderr(log)
                .spawn()
                .map_err(Error::io(format!("starting {}", self.binary.display())))?;
            node.child = Some(child);
        }
        self.wait_healthy(Instant::now() + CLUSTER_START_TIMEOUT)
    }

    fn wait_healthy(&mut self, deadline: Instant) -> Result<(), Error> {
        loop {
            let mut all = true;
            for node in &mut self.nodes {
                let Some(child) = node.child.as_mut() else {
                    all = false;
                    continue;
                };
                let exited = child
                    .try_wait()
                    .map_err(Error::io(format!("waiting for {}", node.name)))?;
                if let Some(status) = exited {
                    return Err(Error::Exited {
                        binary: self.binary.clone(),
                        port: node.port,
                        status,
                        log: node.log(),
                        log_tail: log_tail(&node.log(), 0),
                    });
                }
                all &= info_names(node.port, &node.name)
                    && http_status(node.monitor_port, "/healthz") == Some(200);
            }
            if all {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let node = &self.nodes[0];
                return Err(Error::NotReady {
                    binary: self.binary.clone(),
                    port: node.port,
                    monitor_port: node.monitor_port,
                    log: node.log(),
                    log_tail: log_tail(&node.log(), 0),
                });
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Number of nodes, running or not.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True for a cluster of no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The `server_name` of node `i` (what JetStream reports as a stream's leader).
    pub fn name(&self, i: usize) -> &str {
        &self.nodes[i].name
    }

    /// The node whose `server_name` is `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// `nats://127.0.0.1:PORT` of node `i`.
    pub fn url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.nodes[i].port)
    }

    /// Every node's URL, comma-separated, for a client that fails over between them.
    pub fn urls(&self) -> String {
        (0..self.nodes.len())
            .map(|i| self.url(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `http://127.0.0.1:MPORT` of node `i` (`/healthz`, `/jsz`, ...).
    pub fn monitor_url(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.nodes[i].monitor_port)
    }

    /// The log of node `i` (its stdout and stderr).
    pub fn log_file(&self, i: usize) -> PathBuf {
        self.nodes[i].log()
    }

    /// Is node `i` still running?
    pub fn is_running(&mut self, i: usize) -> bool {
        self.nodes[i]
            .child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGKILLs node `i`: no clean shutdown, no leadership hand-over. Its store stays.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn kill_all(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.kill_all();
    }
}
