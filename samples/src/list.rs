//! A linked list of boxed nodes, summed by a kernel: invocation `i` walks the `i`-th segment
//! from a start pointer found in an array of pointers. The CPU then changes a few nodes and
//! the kernel runs again: only the changed blocks move.

use std::time::{Duration, Instant};

use unimem::{Args, Kernel, LaunchReport};

/// A list node as the kernel sees it: `value` at byte 0, `next` at byte 8 (0 = end).
#[repr(C)]
pub struct Node {
    /// The payload.
    pub value: u32,
    /// The next node.
    pub next: Option<Box<Node>>,
}

/// A list of boxed nodes. Dropped iteratively (a recursive drop of a million nodes would
/// overflow the stack).
pub struct List {
    head: Option<Box<Node>>,
    len: usize,
}

impl List {
    /// A list of `len` nodes with values `value(i)`.
    pub fn new(len: usize, value: impl Fn(usize) -> u32) -> List {
        let mut head = None;
        for i in (0..len).rev() {
            head = Some(Box::new(Node { value: value(i), next: head }));
        }
        List { head, len }
    }

    /// Nodes in list order.
    pub fn iter(&self) -> impl Iterator<Item = &Node> {
        std::iter::successors(self.head.as_deref(), |n| n.next.as_deref())
    }

    /// The node at position `i` (a walk).
    pub fn nth_mut(&mut self, i: usize) -> Option<&mut Node> {
        let mut n = self.head.as_deref_mut();
        for _ in 0..i {
            n = n?.next.as_deref_mut();
        }
        n
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for List {
    fn drop(&mut self) {
        let mut n = self.head.take();
        while let Some(mut b) = n {
            n = b.next.take();
        }
    }
}

/// The kernel: invocation `id` sums `seg` nodes from `starts[id]` into `out[id]`.
pub const SUM_SEGMENTS: &str = "
fn sum_segments(id: u32) {
    let starts = unimem_arg_ptr(0u);
    let out = unimem_arg_ptr(2u);
    let seg = unimem_arg_u32(4u);
    var p = unimem_load_ptr(starts + u64(id) * 8lu);
    var s = 0u;
    for (var k = 0u; k < seg && p != 0lu; k++) {
        s += unimem_load_u32(p);
        p = unimem_load_ptr(p + 8lu);
    }
    unimem_store_u32(out + u64(id) * 4lu, s);
}
";

/// A list and its segment table, ready to launch on.
pub struct SegmentSums {
    /// The list.
    pub list: List,
    /// `starts[i]`: address of the first node of segment `i`.
    pub starts: Vec<u64>,
    /// Nodes per segment.
    pub seg: u32,
    /// The kernel's output: one sum per segment.
    pub out: Vec<u32>,
    kernel: Kernel,
}

impl SegmentSums {
    /// A list of `len` nodes cut in `segments` segments, and the compiled kernel.
    pub fn new(len: usize, segments: usize) -> Result<SegmentSums, unimem::Error> {
        let kernel = Kernel::new(SUM_SEGMENTS, "sum_segments")?;
        let list = List::new(len, |i| (i as u32).wrapping_mul(2_654_435_761) >> 20);
        let seg = len.div_ceil(segments.max(1)).max(1);
        let starts: Vec<u64> = list.iter().step_by(seg).map(|n| n as *const Node as u64).collect();
        let out = vec![0; starts.len()];
        Ok(SegmentSums { list, starts, seg: seg as u32, out, kernel })
    }

    /// Runs the kernel once.
    pub fn launch(&mut self) -> Result<LaunchReport, unimem::Error> {
        let args = Args::new().ptr(&self.starts[..]).ptr(&self.out[..]).u32(self.seg);
        self.kernel.launch(self.starts.len() as u32, &args)
    }

    /// The sums computed on the CPU.
    pub fn cpu_sums(&self) -> Vec<u32> {
        let mut sums = Vec::with_capacity(self.starts.len());
        let mut it = self.list.iter().peekable();
        while it.peek().is_some() {
            sums.push(it.by_ref().take(self.seg as usize).fold(0u32, |s, n| s.wrapping_add(n.value)));
        }
        sums
    }

    /// Adds 1 to every `stride`-th node (a small CPU change). Returns how many changed.
    pub fn mutate(&mut self, stride: usize) -> usize {
        let mut n = self.list.head.as_deref_mut();
        let mut i = 0;
        let mut changed = 0;
        while let Some(node) = n {
            if i % stride == 0 {
                node.value = node.value.wrapping_add(1);
                changed += 1;
            }
            i += 1;
            n = node.next.as_deref_mut();
        }
        changed
    }
}

/// One step of the demo: what it did and what moved.
#[derive(Clone, Copy, Debug)]
pub struct Step {
    /// The launch.
    pub launch: LaunchReport,
    /// Wall time of the launch.
    pub time: Duration,
    /// Counters moved during the launch.
    pub stats: unimem::coherence::Snapshot,
    /// Counters moved while the CPU checked the result (CPU faults bring results home).
    pub check_stats: unimem::coherence::Snapshot,
}

/// Launches, checks against the CPU (panicking on a mismatch), and records what moved.
pub fn launch_and_check(s: &mut SegmentSums) -> Result<Step, unimem::Error> {
    let before = unimem::stats();
    let t = Instant::now();
    let launch = s.launch()?;
    let time = t.elapsed();
    let after = unimem::stats();
    let expect = s.cpu_sums();
    assert_eq!(s.out.len(), expect.len());
    for (i, (&got, &want)) in s.out.iter().zip(&expect).enumerate() {
        assert_eq!(got, want, "segment {i}: the kernel's sum differs from the CPU's");
    }
    let checked = unimem::stats();
    Ok(Step { launch, time, stats: after.since(&before), check_stats: checked.since(&after) })
}
