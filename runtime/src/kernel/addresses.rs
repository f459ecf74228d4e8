//! Physical addresses for in-place kernels: a pass over naga's SPIR-V that gives the
//! prelude's address functions (`unimem_addr_*`, declared in WGSL with placeholder bodies,
//! [`WGSL`]) bodies that load, store and run atomics through `PhysicalStorageBuffer`
//! pointers made from the address (`OpConvertUToPtr`; SPV_KHR_physical_storage_buffer,
//! which Vulkan 1.2's `bufferDeviceAddress` feature enables).
//!
//! Why: WGSL has no pointer made from an integer, so in place a kernel otherwise reaches the
//! heap through windows bound as storage buffers: a switch over the windows on every access,
//! and no more heap than the device lets a shader bind (lavapipe: 32 storage buffers of at
//! most 128 MiB). Where the device addresses of the imported heap are the host addresses
//! (lavapipe), an access is one load from the host pointer itself (`launch.rs` chooses;
//! docs/ARCHITECTURE.md, "In-place mode").
//!
//! The pass is word-level and touches only what it adds: the capability and extension, the
//! addressing model (`PhysicalStorageBuffer64`), two pointer types and two constants before
//! the first function, and the placeholders' bodies (everything between a placeholder's
//! parameters and its `OpFunctionEnd`). A placeholder is found by its `OpName`, so the module
//! must be written with naga's debug names (`compile.rs` always asks for them). Safety of the
//! addresses is the prelude's business: it only passes addresses inside the imported heap
//! (`prelude.rs`, `IN_PLACE`).

use spirv::Op;

/// What a placeholder does. Every access is to a naturally aligned word (the prelude masks
/// the address's low bits), relaxed, at device scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Access {
    /// `(a: u64) -> u32`.
    Load32,
    /// `(a: u64) -> u64`.
    Load64,
    /// `(a: u64, v: u32)`.
    Store32,
    /// `(a: u64, v: u32) -> u32`: an atomic read-modify-write (`OpAtomicIAdd`, ...).
    Atomic(Op),
    /// `(a: u64, c: u32, v: u32) -> u32`: strong compare-exchange, the old value.
    CompareExchange,
}

/// The placeholders, by name.
const PLACEHOLDERS: [(&str, Access); 8] = [
    ("unimem_addr_load32", Access::Load32),
    ("unimem_addr_load64", Access::Load64),
    ("unimem_addr_store32", Access::Store32),
    ("unimem_addr_add", Access::Atomic(Op::AtomicIAdd)),
    ("unimem_addr_min", Access::Atomic(Op::AtomicUMin)),
    ("unimem_addr_max", Access::Atomic(Op::AtomicUMax)),
    ("unimem_addr_exchange", Access::Atomic(Op::AtomicExchange)),
    ("unimem_addr_cas", Access::CompareExchange),
];

/// The placeholders in WGSL: their signatures, with bodies that only type-check (this pass
/// replaces them; a module not passed through it would read the address as data).
pub const WGSL: &str = r#"
// Placeholders: kernel/addresses.rs gives them bodies that access memory at address a.
fn unimem_addr_load32(a: u64) -> u32 { return u32(a & 0xfffffffflu); }
fn unimem_addr_load64(a: u64) -> u64 { return a; }
fn unimem_addr_store32(a: u64, v: u32) { }
fn unimem_addr_add(a: u64, v: u32) -> u32 { return v; }
fn unimem_addr_min(a: u64, v: u32) -> u32 { return v; }
fn unimem_addr_max(a: u64, v: u32) -> u32 { return v; }
fn unimem_addr_exchange(a: u64, v: u32) -> u32 { return v; }
fn unimem_addr_cas(a: u64, c: u32, v: u32) -> u32 { return c; }
"#;

/// Whether a module's WGSL uses the placeholders (so that its SPIR-V needs [`resolve`]).
pub fn uses_addresses(wgsl: &str) -> bool {
    wgsl.contains("fn unimem_addr_load32(")
}

/// One instruction: its words, the first holding the word count and the opcode.
type Inst<'a> = &'a [u32];

fn opcode(i: Inst<'_>) -> u32 {
    i[0] & 0xffff
}

fn word(op: Op, operands: &[u32]) -> Vec<u32> {
    let mut v = Vec::with_capacity(operands.len() + 1);
    v.push(((operands.len() as u32 + 1) << 16) | op as u32);
    v.extend_from_slice(operands);
    v
}

/// A literal string operand: UTF-8, NUL-terminated, padded to whole words.
fn string_words(s: &str) -> Vec<u32> {
    let mut bytes = s.as_bytes().to_vec();
    bytes.push(0);
    bytes.resize(bytes.len().div_ceil(4) * 4, 0);
    bytes.chunks(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

/// The literal string at the start of `words` (up to its NUL).
fn string_of(words: &[u32]) -> String {
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).take_while(|&b| b != 0).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Splits a module's instruction stream (after the 5-word header) into instructions.
fn instructions(words: &[u32]) -> Result<Vec<Inst<'_>>, String> {
    let mut out = Vec::new();
    let mut at = 5;
    while at < words.len() {
        let n = (words[at] >> 16) as usize;
        if n == 0 || at + n > words.len() {
            return Err(format!("malformed SPIR-V: an instruction of {n} words at word {at} of {}", words.len()));
        }
        out.push(&words[at..at + n]);
        at += n;
    }
    Ok(out)
}

/// `words` (a module naga wrote from WGSL that includes [`WGSL`], with debug names) with the
/// placeholders' bodies accessing memory through physical addresses. `Err` says what the
/// module lacked (a bug of the runtime's, never of a user's kernel).
pub fn resolve(words: &[u32]) -> Result<Vec<u32>, String> {
    if words.len() < 5 || words[0] != spirv::MAGIC_NUMBER {
        return Err("not a SPIR-V module".into());
    }
    let insts = instructions(words)?;
    // Placeholder function ids, and the 32- and 64-bit unsigned integer types.
    let mut targets = Vec::new();
    let (mut u32_ty, mut u64_ty) = (None, None);
    for i in &insts {
        match opcode(i) {
            o if o == Op::Name as u32 && i.len() >= 3 => {
                let name = string_of(&i[2..]);
                if let Some((_, access)) = PLACEHOLDERS.iter().find(|(n, _)| *n == name) {
                    targets.push((i[1], *access));
                }
            }
            o if o == Op::TypeInt as u32 && i.len() == 4 && i[3] == 0 => match i[2] {
                32 => u32_ty = Some(i[1]),
                64 => u64_ty = Some(i[1]),
                _ => {}
            },
            _ => {}
        }
    }
    let (Some(u32_ty), Some(u64_ty)) = (u32_ty, u64_ty) else {
        return Err("the module declares no u32 or no u64 type".into());
    };
    if targets.len() != PLACEHOLDERS.len() {
        return Err(format!("{} of the {} address placeholders are named in the module (written without debug names?)", targets.len(), PLACEHOLDERS.len()));
    }
    let mut bound = words[3];
    let mut fresh = || {
        bound += 1;
        bound - 1
    };
    let (ptr32, ptr64, scope, relaxed) = (fresh(), fresh(), fresh(), fresh());
    let psb = spirv::StorageClass::PhysicalStorageBuffer as u32;
    let aligned = spirv::MemoryAccess::ALIGNED.bits();

    let mut out: Vec<u32> = words[..5].to_vec();
    let last_capability = insts.iter().rposition(|i| opcode(i) == Op::Capability as u32).ok_or("the module declares no capability")?;
    let mut typed = false;
    let mut k = 0;
    while k < insts.len() {
        let i = insts[k];
        let op = opcode(i);
        if op == Op::MemoryModel as u32 {
            out.extend(word(Op::MemoryModel, &[spirv::AddressingModel::PhysicalStorageBuffer64 as u32, i[2]]));
        } else if op == Op::Function as u32 {
            if !typed {
                typed = true;
                out.extend(word(Op::TypePointer, &[ptr32, psb, u32_ty]));
                out.extend(word(Op::TypePointer, &[ptr64, psb, u64_ty]));
                out.extend(word(Op::Constant, &[u32_ty, scope, spirv::Scope::Device as u32]));
                out.extend(word(Op::Constant, &[u32_ty, relaxed, spirv::MemorySemantics::RELAXED.bits()]));
            }
            out.extend_from_slice(i);
            if let Some(&(_, access)) = targets.iter().find(|(id, _)| *id == i[2]) {
                let ret_ty = i[1];
                let mut params = Vec::new();
                while insts.get(k + 1).is_some_and(|i| opcode(i) == Op::FunctionParameter as u32) {
                    k += 1;
                    out.extend_from_slice(insts[k]);
                    params.push(insts[k][2]);
                }
                while opcode(insts[k]) != Op::FunctionEnd as u32 {
                    k += 1;
                    if k == insts.len() {
                        return Err("a function without its end".into());
                    }
                }
                let expect = match access {
                    Access::Load32 | Access::Load64 => 1,
                    Access::Store32 | Access::Atomic(_) => 2,
                    Access::CompareExchange => 3,
                };
                if params.len() != expect {
                    return Err(format!("an address placeholder ({access:?}) takes {} parameters, not {expect}", params.len()));
                }
                out.extend(word(Op::Label, &[fresh()]));
                let p = fresh();
                let (ptr_ty, align) = if access == Access::Load64 { (ptr64, 8) } else { (ptr32, 4) };
                out.extend(word(Op::ConvertUToPtr, &[ptr_ty, p, params[0]]));
                let result = match access {
                    Access::Load32 | Access::Load64 => {
                        let v = fresh();
                        out.extend(word(Op::Load, &[ret_ty, v, p, aligned, align]));
                        Some(v)
                    }
                    Access::Store32 => {
                        out.extend(word(Op::Store, &[p, params[1], aligned, align]));
                        None
                    }
                    Access::Atomic(atomic) => {
                        let r = fresh();
                        out.extend(word(atomic, &[ret_ty, r, p, scope, relaxed, params[1]]));
                        Some(r)
                    }
                    Access::CompareExchange => {
                        // Operands: pointer, scope, semantics when equal and when unequal,
                        // the value to store, then the comparator.
                        let r = fresh();
                        out.extend(word(Op::AtomicCompareExchange, &[ret_ty, r, p, scope, relaxed, relaxed, params[2], params[1]]));
                        Some(r)
                    }
                };
                match result {
                    Some(v) => out.extend(word(Op::ReturnValue, &[v])),
                    None => out.extend(word(Op::Return, &[])),
                }
                out.extend(word(Op::FunctionEnd, &[]));
            }
        } else {
            out.extend_from_slice(i);
        }
        if k == last_capability {
            out.extend(word(Op::Capability, &[spirv::Capability::PhysicalStorageBufferAddresses as u32]));
            out.extend(word(Op::Extension, &string_words("SPV_KHR_physical_storage_buffer")));
        }
        k += 1;
    }
    if !typed {
        return Err("the module has no function".into());
    }
    out[3] = bound;
    Ok(out)
}

/// How many instructions of `words` (a whole module) have opcode `op`: for tests.
#[cfg(test)]
pub(super) fn count_op(words: &[u32], op: Op) -> usize {
    instructions(words).expect("a well-formed module").iter().filter(|i| opcode(i) == op as u32).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A module over the placeholders, written as `compile.rs` writes kernels.
    fn module() -> Vec<u32> {
        let src = format!(
            "{WGSL}
@group(0) @binding(0) var<storage, read_write> out: array<u32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3<u32>) {{
    let a = u64(out[0]) | (u64(out[1]) << 32u);
    out[2] = unimem_addr_load32(a) + u32(unimem_addr_load64(a) >> 3u);
    unimem_addr_store32(a, 1u);
    out[3] = unimem_addr_add(a, 1u) + unimem_addr_min(a, 2u) + unimem_addr_max(a, 3u) + unimem_addr_exchange(a, 4u) + unimem_addr_cas(a, 5u, 6u);
}}
"
        );
        crate::kernel::compile_wgsl(&src, "main").unwrap_or_else(|e| panic!("{e}")).spirv
    }

    fn ops(words: &[u32]) -> Vec<u32> {
        instructions(words).unwrap().iter().map(|i| opcode(i)).collect()
    }

    #[test]
    fn placeholders_get_physical_accesses_and_the_module_its_addressing_model() {
        let before = module();
        let after = resolve(&before).unwrap_or_else(|e| panic!("{e}"));
        let insts = instructions(&after).unwrap();
        assert_eq!(count_op(&after, Op::ConvertUToPtr), PLACEHOLDERS.len());
        for op in [Op::AtomicIAdd, Op::AtomicUMin, Op::AtomicUMax, Op::AtomicExchange, Op::AtomicCompareExchange] {
            assert_eq!(count_op(&after, op), 1, "{op:?}");
        }
        let model = insts.iter().find(|i| opcode(i) == Op::MemoryModel as u32).unwrap();
        assert_eq!(model[1], spirv::AddressingModel::PhysicalStorageBuffer64 as u32);
        assert!(insts.iter().any(|i| opcode(i) == Op::Capability as u32 && i[1] == spirv::Capability::PhysicalStorageBufferAddresses as u32));
        assert!(insts.iter().any(|i| opcode(i) == Op::Extension as u32 && string_of(&i[1..]) == "SPV_KHR_physical_storage_buffer"));
        // Capabilities, then extensions, before the memory model; every id below the bound.
        let o = ops(&after);
        let cap = o.iter().rposition(|&x| x == Op::Capability as u32).unwrap();
        let ext = o.iter().position(|&x| x == Op::Extension as u32).unwrap();
        let model_at = o.iter().position(|&x| x == Op::MemoryModel as u32).unwrap();
        assert!(cap < ext && ext < model_at, "{o:?}");
        assert!(after[3] > before[3]);
        // The placeholders' own bodies are gone: the user's part is unchanged in size.
        assert_eq!(count_op(&after, Op::Function), count_op(&before, Op::Function));
    }

    #[test]
    fn a_module_without_the_placeholders_is_refused() {
        let src = "@group(0) @binding(0) var<storage, read_write> out: array<u32>;
@compute @workgroup_size(1) fn main() { out[0] = u32(u64(out[1])); }";
        let words = crate::kernel::compile_wgsl(src, "main").unwrap().spirv;
        let e = resolve(&words).unwrap_err();
        assert!(e.contains("0 of the 8 address placeholders"), "{e}");
        assert!(resolve(&words[..3]).is_err());
        let mut cut = words.clone();
        cut.truncate(words.len() - 1);
        assert!(resolve(&cut).is_err());
    }
}
