//! Object checks (`UNIMEM_CHECK_OBJECTS=on`): kernel accesses checked against the
//! allocations that were live when the launch began, not only against whole blocks.
//!
//! Without them a kernel faults on freed memory only when its whole block holds no live
//! allocation: a freed list node among live ones, or the free slot after a `Vec`'s last
//! element, reads and writes as memory. With them every access also tests one bit of the
//! *live map*, and a clear bit stops the invocation with `KERNEL_ERROR_FREED`.
//!
//! # The live map (contract with the prelude)
//!
//! One bit per [`GRANULE`] bytes of the managed heap from its base: bit `g % 32` of `u32`
//! word `g / 32` is set when granule `g` overlaps a live allocation (a small object's whole
//! size class, slack included; a large allocation's whole run). The allocator hands out
//! 16-byte-aligned objects whose sizes are multiples of 16, so a granule belongs to one
//! allocation or to none. The map covers the first `granules` granules (the heap committed
//! when it was filled, argument-buffer word `ARGS_LIVE_AT`); granules past them read as live
//! (memory committed later, which the block-level checks still cover).
//!
//! The runtime fills the map before each chunk's first dispatch (a launch's, unless it runs
//! over 2^23 invocations in chunks), from the allocator's
//! bitmaps ([`fill`]); a launch binds it at `UNIMEM_FIRST_ARG_BINDING + 4`. It is a snapshot:
//! memory another thread allocates while the launch runs reads as freed (the error message
//! says so, after asking the allocator again), and memory it frees meanwhile as live.

/// Bytes per bit of the live map (the allocator's minimum alignment and size step).
pub const GRANULE: usize = 16;
const GRANULE_SHIFT: u32 = GRANULE.trailing_zeros();

/// Words of a live map covering `bytes` of heap.
pub fn words_for(bytes: usize) -> usize {
    bytes.div_ceil(GRANULE * 32)
}

/// Fills `map` for the `bytes` of heap from `base` (`map` has [`words_for`]`(bytes)` words):
/// every granule overlapping a live allocation is set, every other clear. Racy against other
/// threads' allocations and frees meanwhile, as the allocator's walk is (a snapshot).
pub fn fill(map: &mut [u32], base: usize, bytes: usize) {
    map.fill(0);
    unimem_alloc::for_each_live_run(base, bytes, |start, len| {
        let lo = start.saturating_sub(base) >> GRANULE_SHIFT;
        let hi = (start + len - base).div_ceil(GRANULE).min(map.len() * 32);
        set_bits(map, lo, hi);
    });
}

/// Sets bits `lo..hi` of `map` (bit `i % 32` of word `i / 32`).
fn set_bits(map: &mut [u32], lo: usize, hi: usize) {
    if lo >= hi {
        return;
    }
    let (wl, wh) = (lo / 32, (hi - 1) / 32);
    let first = u32::MAX << (lo % 32);
    let last = u32::MAX >> (31 - (hi - 1) % 32);
    if wl == wh {
        map[wl] |= first & last;
        return;
    }
    map[wl] |= first;
    map[wl + 1..wh].fill(u32::MAX);
    map[wh] |= last;
}

/// The prelude's test of heap offset `off` (`in_range`: inside the arena), for a module that
/// checks objects (`unimem_live` at `binding`) or not (always false: compiled out).
pub fn wgsl(checked: bool, binding: usize) -> String {
    if !checked {
        return "\nfn unimem_dead(off: u64, in_range: bool) -> bool {\n    return false;\n}\n".to_owned();
    }
    format!(
        "
@group(0) @binding({binding}) var<storage, read> unimem_live: array<u32>;

// True when the live map (kernel/objects.rs) says the granule at heap offset off holds no
// live allocation. Granules past the map read as live. Branch-free; the map's word is loaded
// beside the data, from the pointer alone.
fn unimem_dead(off: u64, in_range: bool) -> bool {{
    let g = off >> {GRANULE_SHIFT}u;
    let covered = in_range && g < u64(unimem_args_word(UNIMEM_ARGS_LIVE_AT));
    let w = unimem_live[select(0u, u32(g >> 5u), covered)];
    return covered && ((w >> (u32(g & 31lu))) & 1u) == 0u;
}}
"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bits(map: &[u32]) -> Vec<usize> {
        (0..map.len() * 32).filter(|&i| map[i / 32] >> (i % 32) & 1 != 0).collect()
    }

    #[test]
    fn set_bits_covers_exactly_the_range() {
        for (lo, hi) in [(0, 1), (3, 9), (31, 33), (0, 64), (5, 5), (30, 97), (32, 64), (63, 64)] {
            let mut map = [0u32; 4];
            set_bits(&mut map, lo, hi);
            assert_eq!(bits(&map), (lo..hi).collect::<Vec<_>>(), "{lo}..{hi}");
        }
    }

    #[test]
    fn the_map_follows_allocations_and_frees() {
        unimem_alloc::init();
        let (base, _) = unimem_alloc::managed_range();
        let bytes = unimem_alloc::managed_committed();
        // Three neighbours of one class; the middle one freed.
        let p: Vec<*mut u8> = (0..3).map(|_| unimem_alloc::alloc(48)).collect();
        let committed = unimem_alloc::managed_committed().max(bytes);
        let mut map = vec![0u32; words_for(committed)];
        let live = |map: &[u32], a: usize| {
            let g = (a - base) / GRANULE;
            map[g / 32] >> (g % 32) & 1 != 0
        };
        fill(&mut map, base, committed);
        for &q in &p {
            for off in [0, 16, 32, 47] {
                assert!(live(&map, q as usize + off), "{q:?}+{off} live");
            }
        }
        // SAFETY: p[1] came from unimem_alloc::alloc and is freed once.
        unsafe { unimem_alloc::free(p[1]) };
        fill(&mut map, base, committed);
        assert!(live(&map, p[0] as usize) && live(&map, p[2] as usize));
        if unimem_alloc::lookup(p[1]).is_none() {
            for off in [0, 16, 32] {
                assert!(!live(&map, p[1] as usize + off), "freed {:?}+{off} dead", p[1]);
            }
        }
        // SAFETY: as above, each once.
        unsafe {
            unimem_alloc::free(p[0]);
            unimem_alloc::free(p[2]);
        }
    }
}
