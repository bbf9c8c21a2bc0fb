//! Decoder throughput on one core: frame bytes in, ready-to-publish messages out.
//!
//! Groups:
//! - `decode/corpus`: the 150 real relay frames of `jetstream-corpus/frames.bin.zst`.
//! - `decode/synth`: a synthesized capture of ~20,000 ops (staging synth over calabro.car,
//!   the same source and mix as the end-to-end benchmark).
//! - `car`: walking the commit CAR slices of the real frames with our zero-copy
//!   `firehose::car::Blocks::parse` (`car/slice`) against iroh-car's async reader
//!   (`car/iroh-car`, on a current-thread tokio runtime), which is what the comment at the
//!   top of `src/car.rs` rests on.
//!
//! Criterion reports `decode/*` as elements/s where an element is one op (one published
//! message), and `car/*` as blocks/s. Under `cargo bench` a short plain timing loop also
//! prints frames/s next to ops/s, and the iroh-car / slice time ratio.
//!
//! ```sh
//! cargo bench -p bench --bench decode -- --warm-up-time 1 --measurement-time 3
//! ```
//!
//! Under `cargo test` (no `--bench` flag) criterion runs every case once, and the synthesized
//! capture is kept small.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde::Deserialize;
use staging::capture::Capture;
use std::hint::black_box;
use std::time::{Duration, Instant};

/// Ops in the synthesized capture under `cargo bench`.
const SYNTH_OPS: u64 = 20_000;
/// Ops in the synthesized capture under `cargo test` (each case runs once).
const SYNTH_OPS_TEST: u64 = 300;
/// Seed of the synthesized capture (printed).
const SYNTH_SEED: u64 = 0x5eed_2026;

fn bench_mode() -> bool {
    std::env::args().any(|a| a == "--bench")
}

fn corpus() -> Vec<Vec<u8>> {
    let path = staging::fixtures::corpus_path();
    let capture =
        Capture::load(&path).unwrap_or_else(|e| panic!("loading {}: {e}", path.display()));
    capture.frames().iter().map(|f| f.bytes.to_vec()).collect()
}

fn synth(ops: u64) -> Vec<Vec<u8>> {
    use staging::synth::{synthesize, Source, SynthConfig};
    let path = staging::fixtures::calabro();
    let source = Source::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let cfg = SynthConfig {
        seed: SYNTH_SEED,
        ops,
        start_seq: 1_000_000,
        repos: 2_000,
        // As in the ingest tests and the e2e bench: one big (~1.9 MB CAR) frame per half.
        big_every: ops / 2,
        ..SynthConfig::default()
    };
    let mut w = staging::capture::CaptureWriter::new(Vec::new(), None)
        .unwrap_or_else(|e| panic!("capture writer: {e}"));
    synthesize(&source, cfg, &mut w).unwrap_or_else(|e| panic!("synthesize: {e}"));
    let bytes = w.finish().unwrap_or_else(|e| panic!("finish: {e}"));
    let capture = Capture::from_bytes(bytes).unwrap_or_else(|e| panic!("capture: {e}"));
    capture.frames().iter().map(|f| f.bytes.to_vec()).collect()
}

/// Decodes every frame; returns the number of messages.
fn decode_all(frames: &[Vec<u8>]) -> usize {
    let mut n = 0;
    for f in frames {
        if let firehose::Decoded::Event(d) = firehose::decode(black_box(f)) {
            n += d.messages.len();
            black_box(&d);
        }
    }
    n
}

/// Seconds per call of `f`, the best of a few ~`budget / 5` rounds (a noisy machine
/// slows rounds down, it never speeds them up).
fn secs_per_iter(budget: Duration, mut f: impl FnMut()) -> f64 {
    f(); // warm-up
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let start = Instant::now();
        let mut iters = 0u64;
        while start.elapsed() < budget / 5 {
            f();
            iters += 1;
        }
        best = best.min(start.elapsed().as_secs_f64() / iters as f64);
    }
    best
}

fn decode(c: &mut Criterion) {
    let sets = [
        ("corpus", corpus()),
        (
            "synth",
            synth(if bench_mode() {
                SYNTH_OPS
            } else {
                SYNTH_OPS_TEST
            }),
        ),
    ];
    let mut group = c.benchmark_group("decode");
    for (name, frames) in &sets {
        let ops = decode_all(frames);
        let bytes: usize = frames.iter().map(Vec::len).sum();
        println!(
            "decode/{name}: {} frames, {ops} ops (messages), {:.1} MB{}",
            frames.len(),
            bytes as f64 / 1e6,
            if *name == "synth" {
                format!(", seed {SYNTH_SEED:#x}")
            } else {
                String::new()
            }
        );
        if bench_mode() {
            let s = secs_per_iter(Duration::from_secs(2), || {
                black_box(decode_all(frames));
            });
            println!(
                "decode/{name}: {:.0} frames/s, {:.0} ops/s, {:.1} MB/s (plain timing loop, best of 5)",
                frames.len() as f64 / s,
                ops as f64 / s,
                bytes as f64 / s / 1e6
            );
        }
        group.throughput(Throughput::Elements(ops as u64));
        group.bench_function(*name, |b| b.iter(|| decode_all(frames)));
    }
    group.finish();
}

/// The commit body's CAR slice, borrowed from the frame.
#[derive(Deserialize)]
struct CommitBlocks<'a> {
    #[serde(borrow, with = "serde_bytes")]
    blocks: &'a [u8],
}

#[derive(Deserialize)]
struct Header<'a> {
    #[serde(borrow, default)]
    t: Option<&'a str>,
}

/// The `blocks` of every `#commit` frame that has any.
fn car_slices(frames: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for f in frames {
        let mut de = serde_ipld_dagcbor::de::Deserializer::from_slice(f);
        let Ok(header) = Header::deserialize(&mut de) else {
            continue;
        };
        if header.t != Some("#commit") {
            continue;
        }
        if let Ok(body) = CommitBlocks::deserialize(&mut de) {
            if !body.blocks.is_empty() {
                out.push(body.blocks.to_vec());
            }
        }
    }
    out
}

fn walk_slice(cars: &[Vec<u8>]) -> usize {
    let mut n = 0;
    for car in cars {
        let blocks = firehose::car::Blocks::parse(black_box(car)).unwrap_or_default();
        n += blocks.len();
        black_box(&blocks);
    }
    n
}

fn walk_iroh(rt: &tokio::runtime::Runtime, cars: &[Vec<u8>]) -> usize {
    rt.block_on(async {
        let mut n = 0;
        for car in cars {
            let Ok(mut reader) = iroh_car::CarReader::new(black_box(&car[..])).await else {
                continue;
            };
            while let Ok(Some(block)) = reader.next_block().await {
                black_box(&block);
                n += 1;
            }
        }
        n
    })
}

fn car(c: &mut Criterion) {
    let cars = car_slices(&corpus());
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap_or_else(|e| panic!("tokio runtime: {e}"));
    let blocks = walk_slice(&cars);
    let iroh_blocks = walk_iroh(&rt, &cars);
    assert_eq!(blocks, iroh_blocks, "both readers see the same blocks");
    let bytes: usize = cars.iter().map(Vec::len).sum();
    println!(
        "car: {} commit CAR slices, {blocks} blocks, {:.1} kB",
        cars.len(),
        bytes as f64 / 1e3
    );
    if bench_mode() {
        let slice = secs_per_iter(Duration::from_secs(2), || {
            black_box(walk_slice(&cars));
        });
        let iroh = secs_per_iter(Duration::from_secs(2), || {
            black_box(walk_iroh(&rt, &cars));
        });
        let per = cars.len() as f64;
        println!(
            "car: slice {:.0} ns/CAR, iroh-car {:.0} ns/CAR: iroh-car takes {:.1}x the time of the zero-copy walk",
            slice / per * 1e9,
            iroh / per * 1e9,
            iroh / slice
        );
    }
    let mut group = c.benchmark_group("car");
    group.throughput(Throughput::Elements(blocks as u64));
    group.bench_function("slice", |b| b.iter(|| walk_slice(&cars)));
    group.bench_function("iroh-car", |b| b.iter(|| walk_iroh(&rt, &cars)));
    group.finish();
}

criterion_group!(benches, decode, car);
criterion_main!(benches);
