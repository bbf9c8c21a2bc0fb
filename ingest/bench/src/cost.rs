//! CPU seconds per phase, for each process: this benchmark, the ingest child, nats-server.
//! On a small shared machine they say whether a phase is CPU-bound and who holds the CPU.

use testkit::process::cpu_secs;

/// CPU seconds used so far by this process, the ingest child and the nats-server.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cpu {
    pub bench: f64,
    pub ingest: Option<f64>,
    pub nats: Option<f64>,
}

impl Cpu {
    pub fn now(ingest: Option<u32>, nats: Option<u32>) -> Cpu {
        Cpu {
            bench: cpu_secs("self").unwrap_or(0.0),
            ingest: ingest.and_then(|p| cpu_secs(&p.to_string())),
            nats: nats.and_then(|p| cpu_secs(&p.to_string())),
        }
    }

    /// Usage between `before` and `self`; the ingest child starts at zero.
    pub fn since(&self, before: &Cpu) -> Cpu {
        Cpu {
            bench: self.bench - before.bench,
            ingest: self.ingest.map(|i| i - before.ingest.unwrap_or(0.0)),
            nats: self.nats.map(|n| n - before.nats.unwrap_or(0.0)),
        }
    }

    pub fn fmt(&self) -> String {
        let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
        format!(
            "{:.1} / {} / {}",
            self.bench,
            opt(self.ingest),
            opt(self.nats)
        )
    }
}
