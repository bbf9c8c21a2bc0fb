//! # service: what every binary of the pipeline shares
//!
//! `ingest` and each consumer (`charts`, `feedgen`, `gateway`) are thin binaries with one
//! typed configuration each. The mechanics around that configuration are the same for all
//! of them and live here, once:
//!
//! - [`nats`]: the `[nats]` settings (URL, credentials from the URL, a file or the
//!   environment, TLS), [`nats::connect`] with the server checks every binary needs (version
//!   ≥ 2.10, `max_payload`), and [`nats::redact`], so no secret reaches a log line or an error;
//! - [`config`]: defaults < TOML file < environment < flags through figment, unknown keys
//!   rejected with the key named, and [`config::duration`] for human durations ("5s", "72h");
//! - [`help`]: the `--help` list of settings, read from the configuration's defaults;
//! - [`telemetry`]: structured logging (text or JSON) and the Prometheus `/metrics` route;
//! - [`shutdown`]: SIGTERM / SIGINT cancel one token; a second signal exits at once;
//! - [`process`]: a binary's `main` around its `run(config, shutdown)`: exit codes,
//!   logging, the runtime;
//! - [`backoff`]: the retry delay, exponential with jitter;
//! - [`supervise`]: a binary's tasks under one root token, stopped in stages; the first
//!   failure stops the rest and is returned with its reason.

pub mod backoff;
pub mod config;
pub mod help;
pub mod nats;
pub mod process;
pub mod shutdown;
pub mod supervise;
pub mod telemetry;
