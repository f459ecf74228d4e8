//! Breadth-first search over adjacency lists: a `Vec` of vertices, each pointing to its own
//! boxed slice of neighbours. One launch per level: invocation `v` of a vertex on the current
//! level claims its unvisited neighbours with `unimem_atomic_min_u32`. Checked against a CPU
//! BFS.

use std::collections::VecDeque;

use unimem::{Args, Kernel};

/// Level of a vertex not reached.
pub const UNREACHED: u32 = u32::MAX;

/// A vertex as the kernel sees it: level at byte 0, degree at 4, neighbours at 8.
#[repr(C)]
#[derive(Debug)]
pub struct Vertex {
    /// BFS level (`UNREACHED` until reached).
    pub level: u32,
    /// Number of neighbours.
    pub degree: u32,
    /// The neighbours (`degree` vertex indices), in `Graph::adjacency`.
    pub edges: *const u32,
}

/// A directed graph: vertices and their adjacency lists (one boxed slice each).
pub struct Graph {
    /// The vertices.
    pub vertices: Vec<Vertex>,
    adjacency: Vec<Box<[u32]>>,
}

impl Graph {
    /// `n` vertices; vertex `i` has an edge to `i + 1` and `extra` pseudo-random others.
    pub fn random(n: usize, extra: usize) -> Graph {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let adjacency: Vec<Box<[u32]>> = (0..n)
            .map(|i| {
                let mut e = vec![((i + 1) % n) as u32];
                for _ in 0..extra {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    e.push((x % n as u64) as u32);
                }
                e.into_boxed_slice()
            })
            .collect();
        let vertices = adjacency
            .iter()
            .map(|a| Vertex { level: UNREACHED, degree: a.len() as u32, edges: a.as_ptr() })
            .collect();
        Graph { vertices, adjacency }
    }

    /// The neighbours of vertex `v`.
    pub fn neighbours(&self, v: usize) -> &[u32] {
        &self.adjacency[v]
    }

    /// Adds the edge `from -> to`: `from` gets a new, longer adjacency list (a new boxed
    /// slice; the old one is freed). Panics if `to` is not a vertex.
    pub fn add_edge(&mut self, from: usize, to: u32) {
        assert!((to as usize) < self.vertices.len(), "no vertex {to}");
        let mut e = self.adjacency[from].to_vec();
        e.push(to);
        self.adjacency[from] = e.into_boxed_slice();
        let (a, v) = (&self.adjacency[from], &mut self.vertices[from]);
        v.degree = a.len() as u32;
        v.edges = a.as_ptr();
    }

    /// Levels from `source` computed on the CPU.
    pub fn cpu_levels(&self, source: usize) -> Vec<u32> {
        let mut level = vec![UNREACHED; self.vertices.len()];
        let mut queue = VecDeque::from([source]);
        level[source] = 0;
        while let Some(v) = queue.pop_front() {
            for &u in self.adjacency[v].iter() {
                if level[u as usize] == UNREACHED {
                    level[u as usize] = level[v] + 1;
                    queue.push_back(u as usize);
                }
            }
        }
        level
    }
}

/// One BFS level: vertices on `level` claim their unreached neighbours for `level + 1`.
/// Neighbours are all read before any is claimed, so a device fault (replay) can only happen
/// before the invocation's first atomic.
pub const BFS_LEVEL: &str = "
fn bfs_level(id: u32) {
    let verts = unimem_arg_ptr(0u);
    let level = unimem_arg_u32(2u);
    let changed = unimem_arg_ptr(4u);
    let v = verts + u64(id) * 16lu;
    if (unimem_load_u32(v) != level) {
        return;
    }
    let degree = unimem_load_u32(v + 4lu);
    let edges = unimem_load_ptr(v + 8lu);
    var todo = 0u;
    for (var i = 0u; i < degree; i++) {
        let u = unimem_load_u32(edges + u64(i) * 4lu);
        if (unimem_load_u32(verts + u64(u) * 16lu) == 0xffffffffu) {
            todo += 1u;
        }
    }
    if (todo == 0u || !unimem_running()) {
        return;
    }
    for (var i = 0u; i < degree; i++) {
        let u = unimem_load_u32(edges + u64(i) * 4lu);
        let lu = verts + u64(u) * 16lu;
        if (unimem_load_u32(lu) == 0xffffffffu) {
            unimem_atomic_min_u32(lu, level + 1u);
        }
    }
    unimem_store_u32(changed, 1u);
}
";

/// Runs the BFS from `source` on the device: one launch per level. Returns the number of
/// levels (launches).
pub fn gpu_bfs(g: &mut Graph, source: usize) -> Result<u32, unimem::Error> {
    let kernel = Kernel::new(BFS_LEVEL, "bfs_level")?;
    for v in g.vertices.iter_mut() {
        v.level = UNREACHED;
    }
    g.vertices[source].level = 0;
    let mut changed = Box::new(1u32);
    let mut level = 0;
    while *changed != 0 {
        *changed = 0;
        let args = Args::new().ptr(&g.vertices[..]).u32(level).ptr(&*changed);
        kernel.launch(g.vertices.len() as u32, &args)?;
        level += 1;
    }
    Ok(level)
}
