//! Coherence counters: relaxed atomics, updated from normal context and from the fault
//! handler (atomics are async-signal-safe), read as a [`Snapshot`].

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Live counters of a space.
#[derive(Default, Debug)]
pub struct Counters {
    /// CPU read faults on Device blocks (copied home, now Shared).
    pub read_faults_device: AtomicU64,
    /// CPU write faults on Device blocks (copied home, now Host).
    pub write_faults_device: AtomicU64,
    /// CPU write faults on Shared blocks (device copy invalidated, nothing copied).
    pub write_faults_shared: AtomicU64,
    /// Faults that found the transition already done (raced with another thread).
    pub spurious_faults: AtomicU64,
    /// Bytes copied host -> device.
    pub bytes_to_device: AtomicU64,
    /// Bytes copied device -> host.
    pub bytes_to_host: AtomicU64,
    /// Nanoseconds spent serving CPU faults.
    pub fault_ns: AtomicU64,
    /// Blocks evicted from the device to make room.
    pub evictions: AtomicU64,
    /// Device copies dropped without copying back (discard, free); in place, where there are
    /// none, mapped blocks unmapped so (a program that frees memory counts these).
    pub discards: AtomicU64,
    /// Blocks a kernel wrote while it ran, that the CPU had written and not merged (no twin:
    /// the device's version kept). Zero unless the twin pool ran out (`twin.rs`).
    pub write_conflicts: AtomicU64,
    /// Blocks both the CPU and a kernel wrote during the same launch, merged byte by byte
    /// (`twin.rs`).
    pub write_merges: AtomicU64,
    /// Kernel launches (`kernel::Kernel::launch`) that ran invocations, successful or not
    /// (not those refused before running, nor launches of 0 invocations).
    pub launches: AtomicU64,
    /// Device faults: blocks kernels found without a device copy (once per block and round).
    pub device_faults: AtomicU64,
    /// Dispatches that replayed invocations after device faults.
    pub replay_rounds: AtomicU64,
    /// Blocks mapped in place for kernels (in-place mode: nothing copied).
    pub mapped_in_place: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// See [`Counters`].
    pub read_faults_device: u64,
    /// See [`Counters`].
    pub write_faults_device: u64,
    /// See [`Counters`].
    pub write_faults_shared: u64,
    /// See [`Counters`].
    pub spurious_faults: u64,
    /// See [`Counters`].
    pub bytes_to_device: u64,
    /// See [`Counters`].
    pub bytes_to_host: u64,
    /// See [`Counters`].
    pub fault_ns: u64,
    /// See [`Counters`].
    pub evictions: u64,
    /// See [`Counters`].
    pub discards: u64,
    /// See [`Counters`].
    pub write_conflicts: u64,
    /// See [`Counters`].
    pub write_merges: u64,
    /// See [`Counters`].
    pub launches: u64,
    /// See [`Counters`].
    pub device_faults: u64,
    /// See [`Counters`].
    pub replay_rounds: u64,
    /// See [`Counters`].
    pub mapped_in_place: u64,
}

impl Snapshot {
    /// What each counter moved between `earlier` and this snapshot.
    pub fn since(&self, earlier: &Snapshot) -> Snapshot {
        Snapshot {
            read_faults_device: self.read_faults_device - earlier.read_faults_device,
            write_faults_device: self.write_faults_device - earlier.write_faults_device,
            write_faults_shared: self.write_faults_shared - earlier.write_faults_shared,
            spurious_faults: self.spurious_faults - earlier.spurious_faults,
            bytes_to_device: self.bytes_to_device - earlier.bytes_to_device,
            bytes_to_host: self.bytes_to_host - earlier.bytes_to_host,
            fault_ns: self.fault_ns - earlier.fault_ns,
            evictions: self.evictions - earlier.evictions,
            discards: self.discards - earlier.discards,
            write_conflicts: self.write_conflicts - earlier.write_conflicts,
            write_merges: self.write_merges - earlier.write_merges,
            launches: self.launches - earlier.launches,
            device_faults: self.device_faults - earlier.device_faults,
            replay_rounds: self.replay_rounds - earlier.replay_rounds,
            mapped_in_place: self.mapped_in_place - earlier.mapped_in_place,
        }
    }

    /// All CPU faults served.
    pub fn cpu_faults(&self) -> u64 {
        self.read_faults_device + self.write_faults_device + self.write_faults_shared
    }
}

impl Counters {
    /// Read every counter.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            read_faults_device: self.read_faults_device.load(Relaxed),
            write_faults_device: self.write_faults_device.load(Relaxed),
            write_faults_shared: self.write_faults_shared.load(Relaxed),
            spurious_faults: self.spurious_faults.load(Relaxed),
            bytes_to_device: self.bytes_to_device.load(Relaxed),
            bytes_to_host: self.bytes_to_host.load(Relaxed),
            fault_ns: self.fault_ns.load(Relaxed),
            evictions: self.evictions.load(Relaxed),
            discards: self.discards.load(Relaxed),
            write_conflicts: self.write_conflicts.load(Relaxed),
            write_merges: self.write_merges.load(Relaxed),
            launches: self.launches.load(Relaxed),
            device_faults: self.device_faults.load(Relaxed),
            replay_rounds: self.replay_rounds.load(Relaxed),
            mapped_in_place: self.mapped_in_place.load(Relaxed),
        }
    }
}
