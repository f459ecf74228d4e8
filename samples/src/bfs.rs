//! Breadth-first search over adjacency lists: a `Vec` of vertices, each pointing to its own
//! boxed slice of neighbours. One launch per level, over that level's frontier: each
//! invocation claims its vertex's unvisited neighbours with `unimem_atomic_min_u32` and
//! appends those it claimed to the next frontier. Checked against a CPU BFS.

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

    /// The vertices' levels as they are now (what [`gpu_bfs`] left).
    pub fn levels(&self) -> Vec<u32> {
        self.vertices.iter().map(|v| v.level).collect()
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

/// One BFS level over a frontier: invocation `i` takes the `i`-th vertex of the current
/// level's frontier and claims its unreached neighbours for `level + 1` with
/// `unimem_atomic_min_u32`; the invocation whose atomic saw the neighbour unreached (exactly
/// one) appends it to the next frontier, at a slot taken with `unimem_atomic_add_u32`. So
/// each vertex is visited once over the whole search (work-efficient), not once per level.
///
/// No plain load of a neighbour's level comes before its atomic (an explicit kernel would
/// test it first to skip the atomic): other invocations change that word during the launch,
/// so a replayed invocation (migrating mode, after a device fault) could see its own earlier
/// claim there and skip the append, which docs/MEMORY-MODEL.md rule 4 excludes. The
/// atomic's result is remembered across replays, so the claim decides the same way each run.
pub const BFS_STEP: &str = "
fn bfs_step(id: u32) {
    let verts = unimem_arg_ptr(0u);
    let frontier = unimem_arg_ptr(2u);
    let next = unimem_arg_ptr(4u);
    let count = unimem_arg_ptr(6u);
    let level = unimem_arg_u32(8u);
    let v = verts + u64(unimem_load_u32(frontier + u64(id) * 4lu)) * 16lu;
    let degree = unimem_load_u32(v + 4lu);
    let edges = unimem_load_ptr(v + 8lu);
    for (var i = 0u; i < degree; i++) {
        let u = unimem_load_u32(edges + u64(i) * 4lu);
        let lu = verts + u64(u) * 16lu;
        if (unimem_atomic_min_u32(lu, level + 1u) == 0xffffffffu) {
            unimem_store_u32(next + u64(unimem_atomic_add_u32(count, 1u)) * 4lu, u);
        }
    }
}
";

/// Runs the BFS from `source` on the device: one launch per level, over that level's
/// frontier (kept in two `Vec`s the kernel fills and the next launch reads, never copied).
/// Returns the number of levels (launches).
pub fn gpu_bfs(g: &mut Graph, source: usize) -> Result<u32, unimem::Error> {
    let kernel = Kernel::new(BFS_STEP, "bfs_step")?;
    for v in g.vertices.iter_mut() {
        v.level = UNREACHED;
    }
    g.vertices[source].level = 0;
    let n = g.vertices.len();
    let (mut frontier, mut next) = (vec![0u32; n], vec![0u32; n]);
    frontier[0] = source as u32;
    let (mut len, mut count) = (1u32, Box::new(0u32));
    let mut level = 0;
    while len != 0 {
        *count = 0;
        let args = Args::new().ptr_mut(&mut g.vertices[..]).ptr(&frontier[..]).ptr_mut(&mut next[..]).ptr_mut(&mut *count).u32(level);
        kernel.launch(len, &args)?;
        std::mem::swap(&mut frontier, &mut next);
        len = *count;
        level += 1;
    }
    Ok(level)
}
