//! A binary search tree of boxed nodes, looked up by a kernel: invocation `i` searches for
//! `keys[i]` from the root and writes the value found (or `u32::MAX`). The CPU then inserts
//! and changes nodes and the kernel runs again.

use unimem::{Args, Kernel, LaunchReport};

/// A tree node as the kernel sees it: key at byte 0, value at 4, left at 8, right at 16.
#[repr(C)]
pub struct Tree {
    /// The key.
    pub key: u32,
    /// The value.
    pub value: u32,
    /// Keys below `key`.
    pub left: Option<Box<Tree>>,
    /// Keys above `key`.
    pub right: Option<Box<Tree>>,
}

/// A binary search tree (unbalanced; insert in random order). Dropped iteratively.
#[derive(Default)]
pub struct Bst {
    root: Option<Box<Tree>>,
    len: usize,
}

impl Bst {
    /// An empty tree.
    pub fn new() -> Bst {
        Bst::default()
    }

    /// Inserts or replaces `key`.
    pub fn insert(&mut self, key: u32, value: u32) {
        let mut slot = &mut self.root;
        while let Some(node) = slot {
            if key == node.key {
                node.value = value;
                return;
            }
            slot = if key < node.key { &mut node.left } else { &mut node.right };
        }
        *slot = Some(Box::new(Tree { key, value, left: None, right: None }));
        self.len += 1;
    }

    /// The value of `key`.
    pub fn get(&self, key: u32) -> Option<u32> {
        let mut n = self.root.as_deref();
        while let Some(node) = n {
            if key == node.key {
                return Some(node.value);
            }
            n = if key < node.key { node.left.as_deref() } else { node.right.as_deref() };
        }
        None
    }

    /// Nodes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The root node (`None` when empty), for walks on the CPU.
    pub fn root(&self) -> Option<&Tree> {
        self.root.as_deref()
    }

    /// The root's address (0 when empty), as a kernel argument.
    pub fn root_addr(&self) -> u64 {
        self.root.as_deref().map_or(0, |r| r as *const Tree as u64)
    }
}

impl Drop for Bst {
    fn drop(&mut self) {
        let mut stack: Vec<Box<Tree>> = self.root.take().into_iter().collect();
        while let Some(mut n) = stack.pop() {
            stack.extend(n.left.take());
            stack.extend(n.right.take());
        }
    }
}

/// The kernel: `out[id]` = value of `keys[id]` in the tree at `root`, or `u32::MAX`.
pub const LOOKUP: &str = "
fn lookup(id: u32) {
    let keys = unimem_arg_ptr(0u);
    let out = unimem_arg_ptr(2u);
    var p = unimem_arg_ptr(4u);
    let key = unimem_load_u32(keys + u64(id) * 4lu);
    var value = 0xffffffffu;
    while (p != 0lu) {
        let k = unimem_load_u32(p);
        if (k == key) {
            value = unimem_load_u32(p + 4lu);
            break;
        }
        if (key < k) {
            p = unimem_load_ptr(p + 8lu);
        } else {
            p = unimem_load_ptr(p + 16lu);
        }
    }
    unimem_store_u32(out + u64(id) * 4lu, value);
}
";

/// Deterministic pseudo-random keys.
pub fn key(i: usize) -> u32 {
    (i as u32).wrapping_mul(2_654_435_761).rotate_left(13) ^ 0x5bd1_e995
}

/// A tree, the keys to look up and the kernel.
pub struct Lookups {
    /// The tree.
    pub tree: Bst,
    /// Keys looked up (some absent).
    pub keys: Vec<u32>,
    /// The kernel's results.
    pub out: Vec<u32>,
    kernel: Kernel,
}

impl Lookups {
    /// A tree of `nodes` random keys (value = index) and `lookups` keys to find, one in eight
    /// absent.
    pub fn new(nodes: usize, lookups: usize) -> Result<Lookups, unimem::Error> {
        let kernel = Kernel::new(LOOKUP, "lookup")?;
        let mut tree = Bst::new();
        for i in 0..nodes {
            tree.insert(key(i), i as u32);
        }
        let keys: Vec<u32> = (0..lookups)
            .map(|j| {
                let i = j.wrapping_mul(7919) % nodes.max(1);
                if j % 8 == 7 { key(nodes + j) } else { key(i) }
            })
            .collect();
        let out = vec![0; lookups];
        Ok(Lookups { tree, keys, out, kernel })
    }

    /// Runs the lookups once (results in `out`).
    pub fn launch(&mut self) -> Result<LaunchReport, unimem::Error> {
        let args = Args::new().ptr(&self.keys[..]).ptr(&self.out[..]).u64(self.tree.root_addr());
        self.kernel.launch(self.keys.len() as u32, &args)
    }

    /// Runs the lookups once and checks them against the CPU (panics on a mismatch).
    pub fn launch_and_check(&mut self) -> Result<LaunchReport, unimem::Error> {
        let r = self.launch()?;
        for (i, (&k, &got)) in self.keys.iter().zip(&self.out).enumerate() {
            assert_eq!(got, self.tree.get(k).unwrap_or(u32::MAX), "lookup {i} of key {k}");
        }
        Ok(r)
    }
}
