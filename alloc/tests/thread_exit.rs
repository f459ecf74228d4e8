//! Thread exit: spans of exited threads become orphans and are adopted, not leaked.
//! Alone in its test binary because it measures the heap's high-water mark, which other
//! tests running concurrently would disturb.

use unimem_alloc as ua;

#[global_allocator]
static A: ua::Allocator = ua::Allocator;

#[test]
fn exited_threads_spans_are_adopted_not_leaked() {
    // Each round a thread allocates 2000 objects and exits holding them; the main thread
    // frees them (remote frees into orphan spans). Without adoption the heap would grow
    // by ~2000*96 bytes per round.
    let used_after = |rounds: usize| {
        for _ in 0..rounds {
            let ptrs = std::thread::spawn(|| (0..2000).map(|i| Box::into_raw(Box::new([i as u8; 96])) as usize).collect::<Vec<_>>())
                .join()
                .unwrap();
            for (i, p) in ptrs.into_iter().enumerate() {
                // SAFETY: p came from Box::into_raw of this type.
                let b = unsafe { Box::from_raw(p as *mut [u8; 96]) };
                assert_eq!(b[95], i as u8);
            }
        }
        ua::stats().managed_used
    };
    let warm = used_after(5);
    let later = used_after(60);
    assert!(later <= warm + (4 << 20), "heap grew from {warm} to {later} bytes over 60 thread lifetimes");
}

