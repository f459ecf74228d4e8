//! Size classes and span geometry.
//!
//! Small sizes (<= [`MAX_SMALL`]) are rounded up to one of [`NUM_CLASSES`] classes:
//! multiples of 16 up to 128, then four classes per doubling (waste <= 25%, typically
//! < 12.5%). Every power of two from 16 to 128 KiB is a class, which is what aligned
//! allocation relies on. Objects of one class live in a *span* of whole 64 KiB slices;
//! a span holds at least 8 objects and at most [`MAX_OBJECTS`].

/// The arena's allocation granule: spans and large runs are whole slices, and the page
/// map has one entry per slice. Slice starts are `SLICE`-aligned.
pub const SLICE_SHIFT: usize = 16;
pub const SLICE: usize = 1 << SLICE_SHIFT;

pub const NUM_CLASSES: usize = 48;
pub const MAX_SMALL: usize = 128 * 1024;
/// 16-byte objects in one slice.
pub const MAX_OBJECTS: usize = SLICE / 16;
pub const BITMAP_WORDS: usize = MAX_OBJECTS / 64;
/// Alignment every allocation gets without asking.
pub const MIN_ALIGN: usize = 16;

/// A class's reciprocal, `magic = ceil(2^64 / size)` (it fits in 64 bits: sizes are >= 16),
/// divides by one 64 x 64 -> 128-bit multiply: for an offset `off = q * size + r` inside a
/// span (`off` < 2^20: spans are at most 16 slices), `off * magic = q * 2^64 + f` with the
/// fraction `f = q * e + r * magic` (`e = magic * size - 2^64 < size`) below 2^64, so the
/// high half is the quotient `q`, and the low half `f` is below `magic` iff `r == 0` (`q * e`
/// < 2^20 <= `magic`; for `r >= 1`, `f >= magic`). Both are checked exhaustively by
/// `magic_division_is_exact`. The free path gets the object index and the object-start
/// test from the one multiply.
#[inline(always)]
pub fn divide(offset: usize, magic: u64) -> (usize, bool) {
    let product = offset as u128 * magic as u128;
    ((product >> 64) as usize, (product as u64) < magic)
}

/// Everything the allocator needs to know about one class, precomputed.
#[derive(Clone, Copy, Debug)]
pub struct Class {
    pub size: u32,
    pub slices: u32,
    pub capacity: u32,
    pub magic: u64,
}

impl Class {
    /// `offset / size` for an offset inside a span of this class.
    #[inline(always)]
    pub fn index_of(&self, offset: usize) -> usize {
        divide(offset, self.magic).0
    }
}

const fn class_size(c: usize) -> usize {
    if c < 8 {
        (c + 1) * 16
    } else {
        let k = 7 + (c - 8) / 4; // the doubling 2^k .. 2^(k+1)
        let step = 1usize << (k - 2);
        (1usize << k) + ((c - 8) % 4 + 1) * step
    }
}

const fn build() -> [Class; NUM_CLASSES] {
    let mut t = [Class { size: 0, slices: 0, capacity: 0, magic: 0 }; NUM_CLASSES];
    let mut c = 0;
    while c < NUM_CLASSES {
        let size = class_size(c);
        let slices = {
            let s = (size * 8).div_ceil(SLICE);
            if s == 0 {
                1
            } else {
                s
            }
        };
        let mut capacity = slices * SLICE / size;
        if capacity > MAX_OBJECTS {
            capacity = MAX_OBJECTS;
        }
        let magic = (1u128 << 64).div_ceil(size as u128) as u64;
        t[c] = Class { size: size as u32, slices: slices as u32, capacity: capacity as u32, magic };
        c += 1;
    }
    t
}

pub static CLASSES: [Class; NUM_CLASSES] = build();

/// The class for `size` (<= MAX_SMALL). `class_of(0)` is the smallest class. Sizes up to
/// [`TABLE_MAX`] read [`CLASS_TABLE`]: one load, and one shape of code for all of them.
#[inline(always)]
pub fn class_of(size: usize) -> usize {
    debug_assert!(size <= MAX_SMALL);
    if size <= TABLE_MAX {
        CLASS_TABLE[size.div_ceil(16) % CLASS_TABLE.len()] as usize
    } else {
        class_of_computed(size)
    }
}

/// [`class_of`] computed: multiples of 16 up to 128, then four classes per doubling.
#[inline(always)]
const fn class_of_computed(size: usize) -> usize {
    if size <= 128 {
        size.saturating_sub(1) >> 4
    } else {
        let s = size - 1;
        let k = (usize::BITS - 1 - s.leading_zeros()) as usize;
        8 + (k - 7) * 4 + ((s >> (k - 2)) & 3)
    }
}

/// The largest size [`class_of`] looks up in [`CLASS_TABLE`].
pub const TABLE_MAX: usize = 1024;

/// `CLASS_TABLE[k]` is the class of sizes `16 * k - 15 ..= 16 * k` (every class up to
/// [`TABLE_MAX`] is a multiple of 16, so one entry per 16 bytes is exact); entry 0 is size 0's.
static CLASS_TABLE: [u8; TABLE_MAX / 16 + 1] = {
    let mut t = [0u8; TABLE_MAX / 16 + 1];
    let mut k = 0;
    while k < t.len() {
        t[k] = class_of_computed(k * 16) as u8;
        k += 1;
    }
    t
};

/// The smallest class of at least `size` bytes whose objects are all `align`-aligned
/// (span starts are slice-aligned, so `size % align == 0` suffices). `None` when no small
/// class qualifies (`align` above a slice or size too large).
pub fn class_for_aligned(size: usize, align: usize) -> Option<usize> {
    if size > MAX_SMALL || align > SLICE {
        return None;
    }
    (class_of(size.max(1))..NUM_CLASSES).find(|&c| (CLASSES[c].size as usize).is_multiple_of(align))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_are_increasing_and_cover_powers_of_two() {
        assert_eq!(CLASSES[0].size, 16);
        assert_eq!(CLASSES[NUM_CLASSES - 1].size as usize, MAX_SMALL);
        for w in CLASSES.windows(2) {
            assert!(w[0].size < w[1].size);
        }
        let mut p = 16;
        while p <= MAX_SMALL {
            assert!(CLASSES.iter().any(|c| c.size as usize == p), "{p} is not a class");
            p *= 2;
        }
        for c in CLASSES.iter() {
            assert!(c.capacity >= 8 && c.capacity as usize <= MAX_OBJECTS, "{c:?}");
            assert!(c.slices <= 16);
            assert!(c.size % 16 == 0);
        }
    }

    #[test]
    fn class_table_matches_the_computation() {
        for size in 0..=TABLE_MAX + 16 {
            assert_eq!(class_of(size), class_of_computed(size), "size {size}");
        }
    }

    #[test]
    fn class_of_is_the_smallest_fit() {
        for size in 0..=MAX_SMALL {
            let c = class_of(size);
            assert!(CLASSES[c].size as usize >= size, "size {size} -> class {c}");
            if c > 0 {
                assert!((CLASSES[c - 1].size as usize) < size.max(1), "size {size} -> class {c} not smallest");
            }
        }
    }

    #[test]
    fn magic_division_is_exact() {
        for c in CLASSES.iter() {
            let span = c.slices as usize * SLICE;
            for off in 0..span {
                let (idx, start) = divide(off, c.magic);
                assert_eq!(idx, off / c.size as usize, "class {} offset {off}", c.size);
                assert_eq!(start, off % c.size as usize == 0, "class {} offset {off}", c.size);
            }
        }
    }

    #[test]
    fn aligned_classes() {
        assert_eq!(CLASSES[class_for_aligned(1, 64).unwrap()].size, 64);
        assert_eq!(CLASSES[class_for_aligned(100, 64).unwrap()].size, 128);
        assert_eq!(CLASSES[class_for_aligned(5000, 4096).unwrap()].size, 8192);
        assert_eq!(CLASSES[class_for_aligned(1, 65536).unwrap()].size, 65536);
        assert!(class_for_aligned(1, 1 << 17).is_none());
        assert!(class_for_aligned(MAX_SMALL + 1, 16).is_none());
    }
}
