//! Migration throughput of the Vulkan engine (`unimem::device::VulkanBlockDevice`), each way,
//! for 64 KiB blocks, in batches of 256 blocks (16 MiB) and one block at a time, on both copy
//! paths, against `memcpy` of the same bytes measured in the same run.
//!
//!     cargo bench -p unimem-benches --bench migrate
//!
//! Criterion reports each case (throughput in bytes). Then a summary measures every case again
//! in interleaved rounds (so drift hits all cases alike) and prints the median throughput and
//! its ratio to memcpy. Goal (issue 5): batched >= 0.8 of memcpy.
//!
//! Uploads are of blocks without a frame (the frames are discarded, untimed, before each
//! upload), so they include frame allocation and page-table writes; downloads read resident
//! blocks. Block numbers are scattered over the page table.
//!
//! Without a Vulkan device it prints a notice and exits (with `UNIMEM_REQUIRE_DEVICE=1` it
//! fails), by the rule of `unimem::device::test_support`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use unimem::coherence::{BlockDevice, BlockId};
use unimem::device::test_support::or_skip;
use unimem::device::{Device, MigrateConfig, VulkanBlockDevice};
use unimem::options::CopyMode;

const BLOCK: usize = 64 << 10;
const BATCH: usize = 256;
/// Blocks every case cycles through: 64 MiB each of sources, destinations and frames, twice
/// the last-level cache of the development machine, so no case runs from cache.
const WORKING: usize = 4 * BATCH;
const ROUNDS: usize = 25;

/// Host memory for the copies: `WORKING` source and `WORKING` destination blocks, touched.
struct Host {
    src: Vec<u8>,
    dst: Vec<u8>,
}

impl Host {
    fn new() -> Host {
        let mut src = vec![0u8; WORKING * BLOCK];
        for (i, b) in src.iter_mut().enumerate() {
            *b = (i * 31 % 251) as u8;
        }
        Host {
            src,
            dst: vec![1u8; WORKING * BLOCK],
        }
    }
    fn src(&self, i: usize) -> *const u8 {
        self.src[i * BLOCK..].as_ptr()
    }
    fn dst(&mut self, i: usize) -> *mut u8 {
        self.dst[i * BLOCK..].as_mut_ptr()
    }
}

/// An engine on one copy path with room for the working set, and its block numbers.
struct Engine {
    name: &'static str,
    dev: VulkanBlockDevice,
    ids: Vec<BlockId>,
}

impl Engine {
    fn open(mode: CopyMode) -> Option<Engine> {
        let name = match mode {
            CopyMode::Staging => "staging",
            _ => "direct",
        };
        let device = or_skip("migrate bench", Device::open())?;
        let config = MigrateConfig {
            block_size: BLOCK,
            pool_bytes: Some((WORKING * BLOCK) as u64),
            copy: mode,
            blocks: Some(1 << 16),
            in_place: unimem::options::InPlaceMode::Off,
            ..MigrateConfig::default()
        };
        let dev = or_skip("migrate bench", VulkanBlockDevice::new(device, config))?;
        assert_eq!(dev.copy_mode(), mode);
        let ids = (0..WORKING as u32).map(|i| i * 251 % (1 << 16)).collect();
        Some(Engine { name, dev, ids })
    }

    /// Uploads `blocks` (indices into the working set) from `host`, their frames discarded
    /// first.
    fn upload(&self, host: &Host, blocks: std::ops::Range<usize>) -> Duration {
        let batch: Vec<(BlockId, *const u8)> = blocks.map(|i| (self.ids[i], host.src(i))).collect();
        let ids: Vec<BlockId> = batch.iter().map(|b| b.0).collect();
        self.dev.discard(&ids);
        let start = Instant::now();
        // SAFETY: the sources are readable and not written during the call.
        unsafe { self.dev.upload(&batch) }.expect("upload");
        start.elapsed()
    }

    /// Downloads `blocks` (resident) into `host`.
    fn download(&self, host: &mut Host, blocks: std::ops::Range<usize>) -> Duration {
        let batch: Vec<(BlockId, *mut u8)> = blocks.map(|i| (self.ids[i], host.dst(i))).collect();
        let start = Instant::now();
        // SAFETY: the destinations are writable and not otherwise accessed during the call.
        unsafe { self.dev.download(&batch) }.expect("download");
        start.elapsed()
    }
}

/// memcpy of the same blocks, host to host.
fn memcpy(host: &mut Host, blocks: std::ops::Range<usize>) -> Duration {
    let start = Instant::now();
    for i in blocks {
        let (s, d) = (host.src(i), host.dst(i));
        // SAFETY: distinct vectors, in bounds.
        unsafe { std::ptr::copy_nonoverlapping(s, d, BLOCK) };
    }
    black_box(&mut host.dst);
    start.elapsed()
}

/// One case: a name and how to time `n` blocks starting at block `i`.
type Case<'a> = (
    String,
    Box<dyn FnMut(&mut Host, usize, usize) -> Duration + 'a>,
);

fn cases(engines: &[Engine]) -> Vec<(&'static str, Vec<Case<'_>>)> {
    let mut out = Vec::new();
    for label in ["batch", "single"] {
        let mut list: Vec<Case> = vec![(
            "memcpy".into(),
            Box::new(|h: &mut Host, i, n| memcpy(h, i..i + n)),
        )];
        for e in engines {
            list.push((
                format!("upload_{}", e.name),
                Box::new(move |h: &mut Host, i, n| e.upload(h, i..i + n)),
            ));
            list.push((
                format!("download_{}", e.name),
                Box::new(move |h: &mut Host, i, n| e.download(h, i..i + n)),
            ));
        }
        out.push((label, list));
    }
    out
}

fn main() {
    let engines: Vec<Engine> = [CopyMode::Direct, CopyMode::Staging]
        .into_iter()
        .filter_map(Engine::open)
        .collect();
    if engines.is_empty() {
        return; // or_skip printed why
    }
    let mut host = Host::new();
    // Make every block resident once (downloads need it; uploads discard first anyway).
    for e in &engines {
        e.upload(&host, 0..WORKING);
    }

    let mut criterion = Criterion::default().configure_from_args();
    for (label, mut list) in cases(&engines) {
        let blocks = if label == "single" { 1 } else { BATCH };
        let mut group = criterion.benchmark_group(format!("migrate_{label}"));
        group.throughput(Throughput::Bytes((blocks * BLOCK) as u64));
        if label == "batch" {
            group.sample_size(30);
        }
        for (name, f) in list.iter_mut() {
            let mut next = 0;
            group.bench_function(name.as_str(), |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        total += f(&mut host, next, blocks);
                        next = (next + blocks) % WORKING;
                    }
                    total
                })
            });
        }
        group.finish();
    }
    criterion.final_summary();
    summary(&engines, &mut host);
}

/// Interleaved rounds of every case; prints median throughput and the ratio to memcpy.
fn summary(engines: &[Engine], host: &mut Host) {
    println!(
        "\nmigrate: {} KiB blocks, medians of {ROUNDS} interleaved rounds (device: {})",
        BLOCK >> 10,
        engines[0].dev.device().report().name
    );
    println!("{:<36} {:>8} {:>10}", "case", "GB/s", "/ memcpy");
    for (label, mut list) in cases(engines) {
        let (blocks, reps) = if label == "single" {
            (1, WORKING)
        } else {
            (BATCH, 4)
        };
        let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); list.len()];
        for _ in 0..ROUNDS {
            for (k, (_, f)) in list.iter_mut().enumerate() {
                let mut t = Duration::ZERO;
                for r in 0..reps {
                    t += f(host, r * blocks % WORKING, blocks);
                }
                samples[k].push(t);
            }
        }
        let bytes = (reps * blocks * BLOCK) as f64;
        let gbps: Vec<f64> = samples
            .iter_mut()
            .map(|s| {
                s.sort();
                bytes / s[s.len() / 2].as_secs_f64() / 1e9
            })
            .collect();
        for ((name, _), g) in list.iter().zip(&gbps) {
            let size = if label == "single" {
                "64 KiB".to_string()
            } else {
                format!("{} MiB", (BATCH * BLOCK) >> 20)
            };
            println!(
                "{:<36} {:>8.2} {:>10.2}",
                format!("{name} ({label}, {size})"),
                g,
                g / gbps[0]
            );
        }
    }
}
