//! Property tests of random alloc/free/realloc/aligned sequences against a model:
//! no two live blocks overlap, alignment holds, realloc preserves contents, usable size
//! covers the request, `lookup` finds every live block from any interior pointer, and the
//! page-heap invariants hold afterwards.

use proptest::prelude::*;
use std::collections::BTreeMap;
use unimem_alloc as ua;

#[derive(Clone, Debug)]
enum Op {
    Alloc(usize),
    Zeroed(usize),
    Aligned(usize, u32),
    Realloc(usize, usize),
    Free(usize),
}

fn size() -> impl Strategy<Value = usize> {
    prop_oneof![
        8 => 0usize..256,
        4 => 256usize..8192,
        2 => 8192usize..200_000,
        1 => 200_000usize..3_000_000,
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => size().prop_map(Op::Alloc),
        1 => size().prop_map(Op::Zeroed),
        2 => (size(), 4u32..22).prop_map(|(s, a)| Op::Aligned(s, a)),
        3 => (any::<usize>(), size()).prop_map(|(i, s)| Op::Realloc(i, s)),
        5 => any::<usize>().prop_map(Op::Free),
    ]
}

struct Live {
    p: usize,
    size: usize,
    align: usize,
    fill: u8,
}

fn fill(l: &Live) {
    // SAFETY: the block is live and at least `size` bytes.
    unsafe { std::ptr::write_bytes(l.p as *mut u8, l.fill, l.size) };
}

fn check(l: &Live) {
    // SAFETY: as above.
    let s = unsafe { std::slice::from_raw_parts(l.p as *const u8, l.size) };
    if let Some(i) = s.iter().position(|&b| b != l.fill) {
        panic!("block {:#x} ({} bytes) byte {i} is {:#x}, expected {:#x}", l.p, l.size, s[i], l.fill);
    }
}

fn admit(live: &mut Vec<Live>, intervals: &mut BTreeMap<usize, usize>, l: Live) {
    assert!(!l.p.is_null_addr(), "allocation failed");
    assert_eq!(l.p % l.align, 0, "{:#x} not aligned to {}", l.p, l.align);
    assert!(ua::contains(l.p as *const u8), "{:#x} outside the managed arena", l.p);
    let usable = ua::usable_size(l.p as *const u8);
    assert!(usable >= l.size, "usable {usable} < requested {}", l.size);
    let end = l.p + l.size.max(1);
    if let Some((&b, &e)) = intervals.range(..end).next_back() {
        assert!(e <= l.p || b >= end, "{:#x}+{} overlaps {b:#x}..{e:#x}", l.p, l.size);
    }
    let interior = l.p + l.size / 2;
    assert_eq!(ua::lookup(interior as *const u8), Some((l.p, usable)), "lookup of {interior:#x}");
    intervals.insert(l.p, end);
    fill(&l);
    live.push(l);
}

trait NullAddr {
    fn is_null_addr(&self) -> bool;
}
impl NullAddr for usize {
    fn is_null_addr(&self) -> bool {
        *self == 0
    }
}

/// Held by each test for its whole run: the single-threaded one checks that a freed block is
/// not live right after its free, which another test's threads allocating meanwhile would
/// break (a large block goes back to the shared page heap, and one of them may get it at
/// once): CI once failed so.
static ALONE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Run `ops` against the model. `alone`: no other thread allocates meanwhile (the caller
/// holds `ALONE`), so a freed block must not be live right after its free (with other
/// threads it may be reused at once).
fn run(ops: &[Op], seed: u8, alone: bool) {
    let mut live: Vec<Live> = Vec::new();
    let mut intervals = BTreeMap::new();
    let mut next_fill = seed;
    let mut fill_byte = || {
        next_fill = next_fill.wrapping_add(37) | 1;
        next_fill
    };
    for op in ops {
        match *op {
            Op::Alloc(s) => {
                let l = Live { p: ua::alloc(s) as usize, size: s, align: 16, fill: fill_byte() };
                admit(&mut live, &mut intervals, l);
            }
            Op::Zeroed(s) => {
                let p = ua::alloc_zeroed(s);
                // SAFETY: fresh block of `s` bytes.
                let z = unsafe { std::slice::from_raw_parts(p, s) };
                assert!(z.iter().all(|&b| b == 0), "calloc block {p:?} not zero");
                let l = Live { p: p as usize, size: s, align: 16, fill: fill_byte() };
                admit(&mut live, &mut intervals, l);
            }
            Op::Aligned(s, a) => {
                let align = 1usize << a;
                let l = Live { p: ua::alloc_aligned(s, align) as usize, size: s, align, fill: fill_byte() };
                admit(&mut live, &mut intervals, l);
            }
            Op::Realloc(i, s) if !live.is_empty() => {
                let old = live.swap_remove(i % live.len());
                check(&old);
                intervals.remove(&old.p);
                let p = unsafe { ua::realloc_aligned(old.p as *mut u8, s, old.align) } as usize;
                let keep = old.size.min(s);
                // SAFETY: the new block holds at least `s` bytes.
                let head = unsafe { std::slice::from_raw_parts(p as *const u8, keep) };
                assert!(head.iter().all(|&b| b == old.fill), "realloc lost contents");
                let l = Live { p, size: s, align: old.align, fill: fill_byte() };
                admit(&mut live, &mut intervals, l);
            }
            Op::Free(i) if !live.is_empty() => {
                let l = live.swap_remove(i % live.len());
                check(&l);
                intervals.remove(&l.p);
                unsafe { ua::free(l.p as *mut u8) };
                if let (true, Some((b, _))) = (alone, ua::lookup(l.p as *const u8)) {
                    assert!(intervals.contains_key(&b), "freed {:#x} still live", l.p);
                }
            }
            _ => {}
        }
    }
    for l in live.drain(..) {
        check(&l);
        unsafe { ua::free(l.p as *mut u8) };
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    #[test]
    fn single_thread_matches_model(ops in prop::collection::vec(op(), 1..400), seed in any::<u8>()) {
        let _alone = ALONE.lock().unwrap_or_else(|p| p.into_inner());
        run(&ops, seed, true);
        ua::validate();
    }

    #[test]
    fn threads_with_cross_thread_frees_match_model(
        ops in prop::collection::vec(prop::collection::vec(op(), 1..200), 3),
        seed in any::<u8>(),
    ) {
        let _alone = ALONE.lock().unwrap_or_else(|p| p.into_inner());
        // Each thread runs its own model; blocks are then handed to another thread to free.
        let handles: Vec<_> = ops.into_iter().enumerate().map(|(t, ops)| {
            std::thread::spawn(move || {
                run(&ops, seed.wrapping_add(t as u8), false);
                (0..500).map(|i| {
                    let s = (i * 37 + t * 11) % 3000;
                    let p = ua::alloc(s);
                    // SAFETY: fresh block of `s` bytes.
                    unsafe { std::ptr::write_bytes(p, t as u8 + 1, s) };
                    (p as usize, s, t as u8 + 1)
                }).collect::<Vec<_>>()
            })
        }).collect();
        let blocks: Vec<Vec<(usize, usize, u8)>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let frees: Vec<_> = blocks.into_iter().map(|bs| std::thread::spawn(move || {
            for (p, s, v) in bs {
                // SAFETY: the block is live and was filled with `v`.
                let data = unsafe { std::slice::from_raw_parts(p as *const u8, s) };
                assert!(data.iter().all(|&b| b == v));
                unsafe { ua::free(p as *mut u8) };
            }
        })).collect();
        for f in frees { f.join().unwrap(); }
        ua::validate();
    }
}
