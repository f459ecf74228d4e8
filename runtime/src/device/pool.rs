//! Frame-pool arithmetic: where frame `f` lives, which frames are free, which block each
//! occupied frame holds, and the least-recently-used order. Plain offset arithmetic and
//! index lists, no Vulkan (the gpu-allocator `SubAllocator` split): `migrate.rs` owns the
//! buffers and calls this under its pool lock.
//!
//! Geometry: the pool is `frames` frames of `block_size` bytes spread over buffers of
//! `frames_per_buffer` frames each (a power of two, so a kernel finds a frame's buffer with
//! one shift and its offset with one mask); the last buffer may be shorter. Frame `f` lives
//! in buffer `f / frames_per_buffer` at byte offset `(f % frames_per_buffer) * block_size`.

/// A frame number, `0..frames`.
pub type FrameId = u32;

/// "No block" in [`FramePool`]'s owner table, and "no frame" in link fields.
const NONE: u32 = u32::MAX;

/// The shape of a frame pool: how many frames, how big, how they split into buffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Bytes per frame (= per block): a power of two.
    pub block_size: usize,
    /// Frames in the pool, at least 1.
    pub frames: u32,
    /// Frames per buffer: a power of two; every buffer but the last holds exactly this many.
    pub frames_per_buffer: u32,
}

impl Geometry {
    /// The geometry for `pool_bytes` of frames (rounded down to whole frames) of `block_size`
    /// bytes in buffers of at most `max_buffer_bytes` (the smaller of `maxStorageBufferRange`
    /// and `maxMemoryAllocationSize`), or of `frames_per_buffer` frames when given (tests use
    /// a small value to cross buffer boundaries cheaply; it is rounded down to a power of two
    /// and still limited by `max_buffer_bytes`).
    ///
    /// `Err` says which input is unusable.
    pub fn new(
        block_size: usize,
        pool_bytes: u64,
        max_buffer_bytes: u64,
        frames_per_buffer: Option<u32>,
    ) -> Result<Geometry, String> {
        if !block_size.is_power_of_two() {
            return Err(format!("the block size {block_size} is not a power of two"));
        }
        let limit = max_buffer_bytes / block_size as u64;
        if limit == 0 {
            return Err(format!(
                "a block of {block_size} bytes does not fit in one device buffer \
                 (at most {max_buffer_bytes} bytes); use a smaller UNIMEM_BLOCK_SIZE"
            ));
        }
        let frames = (pool_bytes / block_size as u64).min(u64::from(u32::MAX - 1));
        if frames == 0 {
            return Err(format!(
                "a frame pool of {pool_bytes} bytes holds no block of {block_size} bytes; \
                 raise UNIMEM_DEVICE_MEMORY"
            ));
        }
        let wanted = frames_per_buffer
            .map(u64::from)
            .unwrap_or(u64::MAX)
            .min(limit)
            .max(1);
        let per_buffer = 1u64 << (63 - wanted.leading_zeros()); // round down to a power of two
        Ok(Geometry {
            block_size,
            frames: frames as u32,
            frames_per_buffer: per_buffer.min(1 << 31) as u32,
        })
    }

    /// log2 of `frames_per_buffer`.
    pub fn buffer_shift(&self) -> u32 {
        self.frames_per_buffer.trailing_zeros()
    }

    /// Number of buffers holding frames.
    pub fn buffers(&self) -> usize {
        self.frames.div_ceil(self.frames_per_buffer) as usize
    }

    /// Frames in buffer `i` (`frames_per_buffer` except maybe for the last one).
    pub fn buffer_frames(&self, i: usize) -> u32 {
        debug_assert!(i < self.buffers());
        let start = i as u64 * u64::from(self.frames_per_buffer);
        (u64::from(self.frames) - start).min(u64::from(self.frames_per_buffer)) as u32
    }

    /// Bytes of buffer `i`.
    pub fn buffer_bytes(&self, i: usize) -> u64 {
        u64::from(self.buffer_frames(i)) * self.block_size as u64
    }

    /// `(buffer, byte offset in it)` of frame `f`.
    pub fn locate(&self, f: FrameId) -> (usize, u64) {
        debug_assert!(f < self.frames, "frame {f} of {}", self.frames);
        let buffer = (f >> self.buffer_shift()) as usize;
        let index = f & (self.frames_per_buffer - 1);
        (buffer, u64::from(index) * self.block_size as u64)
    }

    /// Total bytes of frames.
    pub fn pool_bytes(&self) -> u64 {
        u64::from(self.frames) * self.block_size as u64
    }

    /// The same pool with fewer frames (when the device could not allocate every buffer):
    /// the first `buffers` buffers only.
    pub fn truncated(&self, buffers: usize) -> Geometry {
        let frames =
            (buffers as u64 * u64::from(self.frames_per_buffer)).min(u64::from(self.frames)) as u32;
        Geometry { frames, ..*self }
    }
}

/// Which frames are free, which block each other frame holds, and their LRU order.
///
/// Conservation law (checked by [`FramePool::validate`]): every frame is either on its
/// buffer's free stack, with no owner, or on the LRU list, with an owner; never both, never
/// neither; `free_count` counts the free frames (those of buffer `i` in use are its frames
/// less its free stack); no block owns two frames (the caller guarantees it by allocating only for blocks without a
/// frame). All operations are O(1) except `alloc` and `buffers_in_use` (O(buffers)),
/// `validate` and iteration.
///
/// Frames are handed out from the lowest buffer that has a free one, so that the frames in
/// use crowd into the first buffers: a kernel binds and switches over only the buffers in use
/// ([`FramePool::buffers_in_use`]), and on lavapipe every buffer it switches over costs every
/// access.
///
/// Not synchronised: the owner (`migrate.rs`) keeps it under its pool lock.
#[derive(Clone, Debug)]
pub struct FramePool {
    /// `owner[f]`: the block in frame `f`, or `NONE`.
    owner: Vec<u32>,
    /// Free frames of each buffer; the top is handed out next (recently freed frames are
    /// reused first).
    free: Vec<Vec<FrameId>>,
    /// Free frames in all buffers.
    free_count: usize,
    /// log2 of the frames per buffer.
    buffer_shift: u32,
    /// LRU links, indexed by frame, plus one sentinel at index `frames`:
    /// `next[sentinel]` is the least recently used frame, `prev[sentinel]` the most recent.
    prev: Vec<u32>,
    next: Vec<u32>,
}

impl FramePool {
    /// A pool of `frames` free frames in one buffer; frame 0 is handed out first.
    pub fn new(frames: u32) -> FramePool {
        FramePool::with_buffers(frames, frames.max(1).checked_next_power_of_two().unwrap_or(1 << 31))
    }

    /// A pool of `frames` free frames, `frames_per_buffer` (a power of two) to a buffer, as
    /// in [`Geometry`]; frame 0 is handed out first.
    pub fn with_buffers(frames: u32, frames_per_buffer: u32) -> FramePool {
        assert!(frames_per_buffer.is_power_of_two(), "{frames_per_buffer} frames per buffer");
        let n = frames as usize;
        let shift = frames_per_buffer.trailing_zeros();
        let buffers = (u64::from(frames).div_ceil(u64::from(frames_per_buffer)) as usize).max(1);
        let mut prev = vec![NONE; n + 1];
        let mut next = vec![NONE; n + 1];
        prev[n] = frames;
        next[n] = frames;
        let free = (0..buffers).map(|i| buffer_frames(frames, shift, i).rev().collect()).collect();
        FramePool {
            owner: vec![NONE; n],
            free,
            free_count: n,
            buffer_shift: shift,
            prev,
            next,
        }
    }

    fn sentinel(&self) -> u32 {
        self.owner.len() as u32
    }

    /// Total frames.
    pub fn capacity(&self) -> usize {
        self.owner.len()
    }

    /// Frames holding no block.
    pub fn free_frames(&self) -> usize {
        self.free_count
    }

    /// 1 + the highest buffer holding a frame in use (0 when none is).
    pub fn buffers_in_use(&self) -> usize {
        let frames = self.capacity() as u32;
        (0..self.free.len())
            .rposition(|i| self.free[i].len() < buffer_frames(frames, self.buffer_shift, i).len())
            .map_or(0, |i| i + 1)
    }

    /// The block in frame `f`, if any.
    pub fn owner(&self, f: FrameId) -> Option<u32> {
        let o = self.owner[f as usize];
        (o != NONE).then_some(o)
    }

    /// Takes a free frame for `block` and makes it the most recently used. `None` when full.
    pub fn alloc(&mut self, block: u32) -> Option<FrameId> {
        debug_assert_ne!(block, NONE);
        let f = self.free.iter_mut().find_map(|stack| stack.pop())?;
        debug_assert_eq!(self.owner[f as usize], NONE);
        self.free_count -= 1;
        self.owner[f as usize] = block;
        self.link_newest(f);
        Some(f)
    }

    /// Frees frame `f`, returning the block it held. The frame must be in use.
    pub fn release(&mut self, f: FrameId) -> u32 {
        let block = self.owner[f as usize];
        assert_ne!(block, NONE, "frame {f} released twice");
        self.unlink(f);
        self.owner[f as usize] = NONE;
        self.free[(f >> self.buffer_shift) as usize].push(f);
        self.free_count += 1;
        block
    }

    /// Makes frame `f` (in use) the most recently used.
    pub fn touch(&mut self, f: FrameId) {
        debug_assert_ne!(self.owner[f as usize], NONE, "touch of free frame {f}");
        self.unlink(f);
        self.link_newest(f);
    }

    /// Frames in use, least recently used first.
    pub fn lru(&self) -> impl Iterator<Item = FrameId> + '_ {
        let sentinel = self.sentinel();
        let mut at = self.next[sentinel as usize];
        std::iter::from_fn(move || {
            (at != sentinel).then(|| {
                let f = at;
                at = self.next[f as usize];
                f
            })
        })
    }

    fn unlink(&mut self, f: FrameId) {
        let (p, n) = (self.prev[f as usize], self.next[f as usize]);
        self.next[p as usize] = n;
        self.prev[n as usize] = p;
        self.prev[f as usize] = NONE;
        self.next[f as usize] = NONE;
    }

    fn link_newest(&mut self, f: FrameId) {
        let s = self.sentinel();
        let newest = self.prev[s as usize];
        self.next[newest as usize] = f;
        self.prev[f as usize] = newest;
        self.next[f as usize] = s;
        self.prev[s as usize] = f;
    }

    /// Checks the conservation law; panics with the first violation. O(frames).
    pub fn validate(&self) {
        let n = self.capacity();
        let mut on_list = vec![false; n];
        let mut count = 0;
        let mut last = self.sentinel();
        for f in self.lru() {
            assert!(!on_list[f as usize], "frame {f} twice on the LRU list");
            assert_eq!(self.prev[f as usize], last, "broken back link at frame {f}");
            assert_ne!(
                self.owner[f as usize], NONE,
                "free frame {f} on the LRU list"
            );
            on_list[f as usize] = true;
            last = f;
            count += 1;
            assert!(count <= n, "LRU list has a cycle");
        }
        let mut free_count = 0;
        for (i, stack) in self.free.iter().enumerate() {
            for &f in stack {
                assert!(!on_list[f as usize], "frame {f} both free and in use");
                assert_eq!(self.owner[f as usize], NONE, "free frame {f} has an owner");
                assert_eq!((f >> self.buffer_shift) as usize, i, "frame {f} on buffer {i}'s free stack");
                on_list[f as usize] = true;
            }
            free_count += stack.len();
        }
        assert_eq!(free_count, self.free_count, "count of free frames");
        assert!(
            on_list.iter().all(|&b| b),
            "a frame is neither free nor in use"
        );
        let mut owners: Vec<u32> = self.owner.iter().copied().filter(|&o| o != NONE).collect();
        owners.sort_unstable();
        assert!(
            owners.windows(2).all(|w| w[0] != w[1]),
            "a block owns two frames"
        );
    }
}

/// The frames of buffer `i` in a pool of `frames` frames, `1 << shift` to a buffer.
fn buffer_frames(frames: u32, shift: u32, i: usize) -> std::ops::Range<u32> {
    let lo = ((i as u64) << shift).min(u64::from(frames));
    let hi = ((i as u64 + 1) << shift).min(u64::from(frames));
    lo as u32..hi as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn lavapipe_geometry() {
        // 512 MiB of 64 KiB frames in 128 MiB storage buffers.
        let g = Geometry::new(64 << 10, 512 * MIB, 128 * MIB, None).unwrap();
        assert_eq!(g.frames, 8192);
        assert_eq!(g.frames_per_buffer, 2048);
        assert_eq!(g.buffers(), 4);
        assert_eq!(g.buffer_bytes(3), 128 * MIB);
        assert_eq!(g.locate(0), (0, 0));
        assert_eq!(g.locate(2047), (0, 2047 * 65536));
        assert_eq!(g.locate(2048), (1, 0));
        assert_eq!(g.locate(8191), (3, 2047 * 65536));
        assert_eq!(g.pool_bytes(), 512 * MIB);
    }

    #[test]
    fn partial_last_buffer_and_override() {
        let g = Geometry::new(4096, 10 * 4096 + 100, 128 * MIB, Some(3)).unwrap();
        assert_eq!(g.frames, 10);
        assert_eq!(g.frames_per_buffer, 2, "3 rounds down to a power of two");
        assert_eq!(g.buffers(), 5);
        assert_eq!(g.buffer_frames(4), 2);
        let g = Geometry::new(4096, 9 * 4096, 128 * MIB, Some(4)).unwrap();
        assert_eq!(g.buffers(), 3);
        assert_eq!(g.buffer_frames(2), 1);
        assert_eq!(g.buffer_bytes(2), 4096);
        assert_eq!(g.locate(8), (2, 0));
        assert_eq!(g.locate(7), (1, 3 * 4096));
        // The override cannot exceed the device limit.
        let g = Geometry::new(4096, 64 * 4096, 8 * 4096, Some(64)).unwrap();
        assert_eq!(g.frames_per_buffer, 8);
        // A non-power-of-two limit rounds down too.
        let g = Geometry::new(4096, 64 * 4096, 12 * 4096, None).unwrap();
        assert_eq!(g.frames_per_buffer, 8);
        assert_eq!(g.truncated(2).frames, 16);
        assert_eq!(g.truncated(100).frames, 64);
    }

    #[test]
    fn every_frame_has_one_distinct_location() {
        let g = Geometry::new(8192, 1000 * 8192, 64 * 8192, Some(16)).unwrap();
        let mut seen = std::collections::HashSet::new();
        for f in 0..g.frames {
            let (b, off) = g.locate(f);
            assert!(b < g.buffers());
            assert!(off + g.block_size as u64 <= g.buffer_bytes(b));
            assert_eq!(off % g.block_size as u64, 0);
            assert!(seen.insert((b, off)));
        }
    }

    #[test]
    fn unusable_inputs_are_refused() {
        assert!(Geometry::new(3000, MIB, MIB, None).is_err());
        assert!(Geometry::new(4096, 4095, MIB, None)
            .unwrap_err()
            .contains("UNIMEM_DEVICE_MEMORY"));
        assert!(Geometry::new(1 << 20, 4 * MIB, MIB / 2, None)
            .unwrap_err()
            .contains("UNIMEM_BLOCK_SIZE"));
    }

    #[test]
    fn alloc_release_and_lru_order() {
        let mut p = FramePool::new(4);
        assert_eq!(p.free_frames(), 4);
        let a = p.alloc(10).unwrap();
        let b = p.alloc(11).unwrap();
        let c = p.alloc(12).unwrap();
        assert_eq!((a, b, c), (0, 1, 2), "frame 0 first");
        assert_eq!(p.lru().collect::<Vec<_>>(), vec![a, b, c]);
        p.touch(a);
        assert_eq!(p.lru().collect::<Vec<_>>(), vec![b, c, a]);
        assert_eq!(p.release(c), 12);
        assert_eq!(p.owner(c), None);
        assert_eq!(p.lru().collect::<Vec<_>>(), vec![b, a]);
        assert_eq!(
            p.alloc(13),
            Some(c),
            "recently freed frames are reused first"
        );
        assert_eq!(p.alloc(14), Some(3));
        assert_eq!(p.alloc(15), None);
        assert_eq!(p.free_frames(), 0);
        p.validate();
    }

    #[test]
    fn frames_crowd_into_the_first_buffers() {
        // 10 frames, 4 to a buffer: buffers 0..4, 4..8, 8..10.
        let mut p = FramePool::with_buffers(10, 4);
        assert_eq!(p.buffers_in_use(), 0);
        let f: Vec<FrameId> = (0..6).map(|b| p.alloc(b).unwrap()).collect();
        assert_eq!(f, vec![0, 1, 2, 3, 4, 5]);
        assert_eq!(p.buffers_in_use(), 2);
        // A frame freed in buffer 0 is handed out before buffer 1's free ones.
        p.release(2);
        assert_eq!(p.alloc(6), Some(2));
        // Emptying buffer 1 shrinks what is in use, even with buffer 0 full.
        p.release(4);
        p.release(5);
        assert_eq!(p.buffers_in_use(), 1);
        for b in 7..13 {
            p.alloc(b).unwrap();
        }
        assert_eq!(p.buffers_in_use(), 3);
        assert_eq!(p.free_frames(), 0);
        assert_eq!(p.alloc(13), None);
        p.validate();
    }

    #[test]
    #[should_panic(expected = "released twice")]
    fn double_release_panics() {
        let mut p = FramePool::new(2);
        let f = p.alloc(1).unwrap();
        p.release(f);
        p.release(f);
    }

    #[test]
    fn random_operations_keep_the_law_and_match_a_model() {
        // A tiny xorshift so the test needs no dependency.
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rand = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut p = FramePool::with_buffers(16, 4);
        let mut model: Vec<(u32, FrameId)> = Vec::new(); // LRU order, oldest first
        let mut next_block = 0;
        for step in 0..5000 {
            match rand(3) {
                0 => match p.alloc(next_block) {
                    Some(f) => {
                        model.push((next_block, f));
                        next_block += 1;
                    }
                    None => assert_eq!(model.len(), 16),
                },
                1 if !model.is_empty() => {
                    let (block, f) = model.remove(rand(model.len() as u64) as usize);
                    assert_eq!(p.release(f), block);
                }
                _ if !model.is_empty() => {
                    let entry = model.remove(rand(model.len() as u64) as usize);
                    p.touch(entry.1);
                    model.push(entry);
                }
                _ => {}
            }
            let lru: Vec<_> = p.lru().collect();
            let expect: Vec<_> = model.iter().map(|e| e.1).collect();
            assert_eq!(lru, expect, "step {step}");
            assert_eq!(p.free_frames(), 16 - model.len());
            let highest = model.iter().map(|e| e.1 as usize / 4 + 1).max().unwrap_or(0);
            assert_eq!(p.buffers_in_use(), highest, "step {step}");
            if step % 97 == 0 {
                p.validate();
            }
        }
        p.validate();
    }
}
