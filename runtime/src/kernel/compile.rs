//! WGSL -> SPIR-V with naga: parse, validate, reflect the interface, write SPIR-V for one
//! compute entry point.
//!
//! The result, [`CompiledKernel`], carries what the device layer needs to build a pipeline
//! without looking at the shader again: the SPIR-V words, the workgroup size, the storage
//! bindings the entry point uses and the size of its `var<immediate>` (push constants).
//!
//! Supported interface (grows with the prelude): storage buffers in `@group(0)`, at most one
//! `var<immediate>`; no uniforms, textures or pipeline-overridable constants yet.
//! Errors carry naga's message with the source location rendered (`emit_to_string` style).

use naga::valid::{Capabilities, ValidationFlags, Validator};

/// naga capabilities kernels may use: 64-bit integers (host pointers), immediates and 64-bit
/// floats (emitted into SPIR-V only by modules that use them; `Kernel::new` refuses those on
/// a device without `shaderFloat64`).
pub const CAPABILITIES: Capabilities = Capabilities::SHADER_INT64.union(Capabilities::IMMEDIATES).union(Capabilities::FLOAT64);

/// SPIR-V version emitted: 1.3 is what every Vulkan 1.1+ device accepts.
pub const SPIRV_VERSION: (u8, u8) = (1, 3);

/// A storage buffer binding of a kernel (`@group(0) @binding(n) var<storage, ...>`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageBinding {
    /// The binding number `n`.
    pub binding: u32,
    /// The variable's name in the source, if any.
    pub name: Option<String>,
    /// True for `var<storage, read>` and `var<uniform>`.
    pub read_only: bool,
    /// For a `var<uniform>`: its size in bytes (it is bound as a uniform buffer of at least
    /// that size); `None` for a storage buffer.
    pub uniform_bytes: Option<u64>,
}

/// A compute kernel ready for `Device::create_pipeline`.
#[derive(Clone, Debug)]
pub struct CompiledKernel {
    /// The source's name (a path or a label) used in messages.
    pub source_name: String,
    /// The entry point's name.
    pub entry_point: String,
    /// The SPIR-V module, containing only this entry point.
    pub spirv: Vec<u32>,
    /// `@workgroup_size(x, y, z)`.
    pub workgroup_size: [u32; 3],
    /// The storage bindings the entry point uses, sorted by binding number.
    /// `Device::dispatch` binds its `i`-th buffer to `bindings[i]`.
    pub bindings: Vec<StorageBinding>,
    /// Size in bytes of the entry point's `var<immediate>` (0 when it has none).
    pub immediate_size: u32,
}

impl CompiledKernel {
    /// The number of workgroups needed along x to cover `invocations` invocations.
    pub fn groups_for(&self, invocations: u32) -> u32 {
        invocations.div_ceil(self.workgroup_size[0].max(1))
    }
}

/// Why a kernel did not compile. Messages name the source and show the offending line.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// The WGSL did not parse.
    #[error("WGSL parse error in {source_name}:\n{rendered}")]
    Parse {
        /// The source's name.
        source_name: String,
        /// naga's message with the source excerpt.
        rendered: String,
    },
    /// The WGSL parsed but is not a valid module (types, uses, capabilities).
    #[error("WGSL validation error in {source_name}:\n{rendered}")]
    Validation {
        /// The source's name.
        source_name: String,
        /// naga's message with the source excerpt.
        rendered: String,
    },
    /// The source broke a rule of the caller's (a user kernel's rules: `check.rs`).
    #[error("{source_name}, line {line}: {what}")]
    Rule {
        /// The source's name.
        source_name: String,
        /// The line (1-based) of the caller's source.
        line: usize,
        /// What is wrong, and what to do instead.
        what: String,
    },
    /// No compute entry point of that name.
    #[error(
        "{source_name} has no compute entry point `{entry_point}`; its compute entry points are: \
         {available}. To fix: pass one of those names, or add `@compute @workgroup_size(..) fn {entry_point}`"
    )]
    EntryPoint {
        /// The source's name.
        source_name: String,
        /// The name asked for.
        entry_point: String,
        /// The compute entry points that exist.
        available: String,
    },
    /// The kernel uses something the device layer cannot bind yet.
    #[error("{source_name}, entry point `{entry_point}`: {what}")]
    Unsupported {
        /// The source's name.
        source_name: String,
        /// The entry point.
        entry_point: String,
        /// What is unsupported and what to do instead.
        what: String,
    },
    /// naga could not write SPIR-V for a validated module.
    #[error("SPIR-V generation failed for `{entry_point}` in {source_name}: {message}")]
    Spirv {
        /// The source's name.
        source_name: String,
        /// The entry point.
        entry_point: String,
        /// naga's message.
        message: String,
    },
}

/// Compiles `entry_point` of a WGSL `source` (named `"kernel.wgsl"` in messages).
pub fn compile_wgsl(source: &str, entry_point: &str) -> Result<CompiledKernel, CompileError> {
    compile_wgsl_named("kernel.wgsl", source, entry_point)
}

/// Compiles `entry_point` of a WGSL `source`; `source_name` (a path or label) appears in errors.
pub fn compile_wgsl_named(
    source_name: &str,
    source: &str,
    entry_point: &str,
) -> Result<CompiledKernel, CompileError> {
    compile_wgsl_checked(source_name, source, entry_point, &|_| Ok(()))
}

/// What naga's validation message leaves out, as a line to add to it, for the mistakes WGSL
/// newcomers make most: a call with an argument of the wrong type (naga numbers the function
/// and the types: "Call to [12] is invalid ... Argument 0 value [0] doesn't match the type
/// [1]"): the function's name and the type it takes; an operator on two types (naga prints
/// its IR: "Operation Add can't work with [0] (of type Scalar(Scalar { kind: Uint, width: 4 }))
/// ..."): the operator and the types in WGSL; an `if` on a number; a literal that could not
/// take its operand's type. For a `u64` (an address, as the accessors take), how to write one.
fn hint(module: &naga::Module, e: &naga::valid::ValidationError) -> Option<String> {
    use naga::common::wgsl::TypeContext;
    use naga::valid::{CallError, EntryPointError, ExpressionError, FunctionError, LiteralError, ValidationError, WidthError};
    const ADDRESS: &str = " (addresses are `u64`: convert with `u64(x)` and write offsets as `4lu`, e.g. `p + u64(id) * 4lu`)";
    let source = match e {
        ValidationError::Function { source, .. } | ValidationError::EntryPoint { source: EntryPointError::Function(source), .. } => source,
        _ => return None,
    };
    let ctx = module.to_ctx();
    match source {
        FunctionError::InvalidCall { function, error: CallError::ArgumentType { index, required, .. } } => {
            let callee = module.functions[*function].name.as_deref()?;
            let ty = ctx.type_to_string(*required);
            let how = if ty == "u64" { ADDRESS } else { "" };
            Some(format!("argument {} of `{callee}` must be a `{ty}`{how}", index + 1))
        }
        FunctionError::Expression { source: ExpressionError::InvalidBinaryOperandTypes { op, lhs_type, rhs_type, .. }, .. } => {
            let name = |t: &naga::TypeInner| ctx.type_resolution_to_string(&naga::proc::TypeResolution::Value(t.clone()));
            let (lhs, rhs) = (name(lhs_type), name(rhs_type));
            let op = operator(*op);
            Some(if lhs == rhs {
                format!("`{op}` does not apply to `{lhs}`")
            } else if lhs == "u64" || rhs == "u64" {
                format!("`{op}` takes two values of one type, here `{lhs}` and `{rhs}`: WGSL converts nothing implicitly; addresses are `u64`, so convert the other side with `u64(x)` and write offsets as `4lu`, e.g. `p + u64(id) * 4lu`")
            } else {
                format!("`{op}` takes two values of one type, here `{lhs}` and `{rhs}`: WGSL converts nothing implicitly, so convert one side, `{lhs}(x)` or `{rhs}(x)`")
            })
        }
        FunctionError::InvalidIfType(_) => {
            Some("a condition must be a `bool`: WGSL does not test numbers for zero, so compare, e.g. `if (x != 0u)` or `if (p != 0lu)`".into())
        }
        FunctionError::Expression { source: ExpressionError::Literal(LiteralError::Width(WidthError::Abstract)), .. } => Some(
            "a literal could not take the type of the value it meets (`1.0` with a `u32`?): write it in that type (`1u`, `1i`, `1.0f`, `4lu`) or convert the value (`f32(x)`)".into(),
        ),
        _ => None,
    }
}

/// naga's rendered validation error without the IR's names, which mean nothing to the
/// author of the WGSL: the labels `naga::ir::Expression [3]` under the code become `here`,
/// `naga::ir::Function [18]` goes, `Function [18] 'f' is invalid` becomes `function 'f' is
/// invalid`, `condition [3]` loses its number, and the note `Expression [3] is invalid` goes; with `hinted` (a [`hint`] says it
/// in WGSL terms), so does the note that prints the operand types as IR
/// (`Operation Add can't work with ...`).
fn without_ir_names(rendered: &str, hinted: bool) -> String {
    /// `s` with every `name [digits]` replaced by `with`.
    fn replace_handle(s: &str, name: &str, with: &str) -> String {
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while let Some(at) = rest.find(name) {
            let after = &rest[at + name.len()..];
            let digits = after.strip_prefix(" [").map(|a| a.bytes().take_while(u8::is_ascii_digit).count()).unwrap_or(0);
            if digits > 0 && after.as_bytes().get(2 + digits) == Some(&b']') {
                out.push_str(&rest[..at]);
                out.push_str(with);
                rest = &after[3 + digits..];
            } else {
                out.push_str(&rest[..at + name.len()]);
                rest = after;
            }
        }
        out.push_str(rest);
        out
    }
    let mut out = Vec::new();
    for line in rendered.lines() {
        let note = line.trim_start();
        let ir_note = note.starts_with("= Expression [") && note.ends_with("] is invalid");
        if ir_note || (hinted && note.starts_with("= Operation ") && note.contains("can't work with")) {
            continue;
        }
        let line = replace_handle(line, "naga::ir::Expression", "here");
        let line = replace_handle(&line, " naga::ir::Function", "");
        let line = replace_handle(&line, "condition", "condition");
        out.push(replace_handle(&line, "error: Function", "error: function"));
    }
    out.join("\n")
}

/// An operator as WGSL writes it.
fn operator(op: naga::BinaryOperator) -> &'static str {
    use naga::BinaryOperator as B;
    match op {
        B::Add => "+",
        B::Subtract => "-",
        B::Multiply => "*",
        B::Divide => "/",
        B::Modulo => "%",
        B::Equal => "==",
        B::NotEqual => "!=",
        B::Less => "<",
        B::LessEqual => "<=",
        B::Greater => ">",
        B::GreaterEqual => ">=",
        B::And => "&",
        B::ExclusiveOr => "^",
        B::InclusiveOr => "|",
        B::LogicalAnd => "&&",
        B::LogicalOr => "||",
        B::ShiftLeft => "<<",
        B::ShiftRight => ">>",
    }
}

/// A source's broken rule, for [`compile_wgsl_checked`]: the line (1-based) and what is wrong.
pub type Violation = (usize, String);

/// [`compile_wgsl_named`], with `prepare` run on the parsed module before validation: it
/// checks rules (its error `(line, what)` becomes [`CompileError::Rule`]) and may rewrite
/// the module (the loop guards, `guard.rs`), which is then validated as rewritten.
pub fn compile_wgsl_checked(
    source_name: &str,
    source: &str,
    entry_point: &str,
    prepare: &dyn Fn(&mut naga::Module) -> Result<(), Violation>,
) -> Result<CompiledKernel, CompileError> {
    let mut module = naga::front::wgsl::parse_str(source).map_err(|e| CompileError::Parse {
        source_name: source_name.to_owned(),
        rendered: e.emit_to_string_with_path(source, source_name).trim_end().to_owned(),
    })?;
    prepare(&mut module).map_err(|(line, what)| CompileError::Rule { source_name: source_name.to_owned(), line, what })?;
    let info = Validator::new(ValidationFlags::all(), CAPABILITIES)
        .validate(&module)
        .map_err(|e| {
            let rendered = e.emit_to_string_with_path(source, source_name);
            let hint = hint(&module, &e.into_inner());
            let mut rendered = without_ir_names(rendered.trim_end(), hint.is_some());
            if let Some(hint) = hint {
                rendered.push_str("\n  = ");
                rendered.push_str(&hint);
            }
            CompileError::Validation { source_name: source_name.to_owned(), rendered }
        })?;

    let unsupported = |what: String| CompileError::Unsupported {
        source_name: source_name.to_owned(),
        entry_point: entry_point.to_owned(),
        what,
    };

    let Some((ep_index, ep)) = module
        .entry_points
        .iter()
        .enumerate()
        .find(|(_, ep)| ep.name == entry_point && ep.stage == naga::ShaderStage::Compute)
    else {
        let available: Vec<&str> = module
            .entry_points
            .iter()
            .filter(|ep| ep.stage == naga::ShaderStage::Compute)
            .map(|ep| ep.name.as_str())
            .collect();
        return Err(CompileError::EntryPoint {
            source_name: source_name.to_owned(),
            entry_point: entry_point.to_owned(),
            available: if available.is_empty() {
                "(none)".into()
            } else {
                available.join(", ")
            },
        });
    };
    if ep.workgroup_size_overrides.is_some() || !module.overrides.is_empty() {
        return Err(unsupported(
            "pipeline-overridable constants (`override`) are not supported yet; use `const`".into(),
        ));
    }

    let ep_info = info.get_entry_point(ep_index);
    let mut layouter = naga::proc::Layouter::default();
    layouter
        .update(module.to_ctx())
        .map_err(|e| unsupported(format!("type layout failed: {e}")))?;

    let mut bindings = Vec::new();
    let mut immediate_size = 0u32;
    for (handle, var) in module.global_variables.iter() {
        if ep_info[handle].is_empty() {
            continue; // not used by this entry point
        }
        let name = var.name.clone();
        let label = name.as_deref().unwrap_or("<unnamed>");
        match var.space {
            naga::AddressSpace::Storage { .. } | naga::AddressSpace::Uniform => {
                let (what, read_only, uniform_bytes) = match var.space {
                    naga::AddressSpace::Storage { access } => {
                        ("storage", !access.contains(naga::StorageAccess::STORE), None)
                    }
                    _ => ("uniform", true, Some(u64::from(layouter[var.ty].size))),
                };
                let binding = var
                    .binding
                    .as_ref()
                    .expect("validated: storage and uniform globals have bindings");
                if binding.group != 0 {
                    return Err(unsupported(format!(
                        "{what} buffer `{label}` is in @group({}); only @group(0) is supported",
                        binding.group
                    )));
                }
                bindings.push(StorageBinding { binding: binding.binding, name, read_only, uniform_bytes });
            }
            naga::AddressSpace::Immediate => {
                if immediate_size != 0 {
                    return Err(unsupported("more than one `var<immediate>` is used".into()));
                }
                immediate_size = layouter[var.ty].size;
            }
            naga::AddressSpace::Handle => {
                return Err(unsupported(format!(
                    "`{label}` is a texture, sampler or other handle; kernels take storage and uniform buffers only"
                )));
            }
            // Private and workgroup variables need no binding.
            _ => {}
        }
    }
    bindings.sort_by_key(|b| b.binding);
    if let Some(w) = bindings.windows(2).find(|w| w[0].binding == w[1].binding) {
        return Err(unsupported(format!(
            "two buffers use @binding({})",
            w[0].binding
        )));
    }

    let options = naga::back::spv::Options {
        lang_version: SPIRV_VERSION,
        // A bad index never touches memory out of bounds: a bug in a kernel must never lose
        // the device. Fixed-size arrays read zero / skip the write; storage buffers clamp the
        // index (`Restrict`), because naga's SPIR-V writer cannot guard atomics with
        // `ReadZeroSkipWrite` ("Atomics out-of-bounds handling" is unimplemented), and the
        // dirty bitmap and fault buffer are updated with atomics.
        bounds_check_policies: naga::proc::BoundsCheckPolicies {
            index: naga::proc::BoundsCheckPolicy::ReadZeroSkipWrite,
            buffer: naga::proc::BoundsCheckPolicy::Restrict,
            ..Default::default()
        },
        // Debug names in every build: `addresses.rs` finds its placeholders by name (and
        // release and debug builds hand the driver the same module).
        flags: naga::back::spv::WriterFlags::DEBUG | naga::back::spv::Options::default().flags,
        ..Default::default()
    };
    let pipeline_options = naga::back::spv::PipelineOptions {
        shader_stage: naga::ShaderStage::Compute,
        entry_point: entry_point.to_owned(),
    };
    let spirv_error = |message: String| CompileError::Spirv { source_name: source_name.to_owned(), entry_point: entry_point.to_owned(), message };
    let mut spirv = naga::back::spv::write_vec(&module, &info, &options, Some(&pipeline_options)).map_err(|e| spirv_error(e.to_string()))?;
    if super::addresses::uses_addresses(source) {
        spirv = super::addresses::resolve(&spirv).map_err(spirv_error)?;
    }

    Ok(CompiledKernel {
        source_name: source_name.to_owned(),
        entry_point: entry_point.to_owned(),
        spirv,
        workgroup_size: ep.workgroup_size,
        bindings,
        immediate_size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCALE: &str = r#"
struct Params { n: u32, factor: u32 }
var<immediate> params: Params;
@group(0) @binding(1) var<storage, read_write> dst: array<u32>;
@group(0) @binding(0) var<storage, read> src: array<u32>;
@group(0) @binding(5) var<storage, read_write> unused: array<u32>;

@compute @workgroup_size(64)
fn scale(@builtin(global_invocation_id) id: vec3<u32>) {
    if id.x < params.n {
        dst[id.x] = src[id.x] * params.factor;
    }
}

@compute @workgroup_size(8, 2)
fn wide(@builtin(global_invocation_id) id: vec3<u32>) {
    let x: u64 = u64(id.x) << 40u;
    unused[id.x] = u32(x >> 40u);
}
"#;

    /// naga's validation errors on types are said in WGSL terms, without IR handles.
    #[test]
    fn type_mistakes_are_explained_in_wgsl_terms() {
        let error = |body: &str| {
            let src = format!("@compute @workgroup_size(1)\nfn main(@builtin(global_invocation_id) id: vec3<u32>) {{\n{body}\n}}");
            compile_wgsl(&src, "main").err().unwrap_or_else(|| panic!("accepted: {body}")).to_string()
        };
        let cases: &[(&str, &[&str])] = &[
            ("    let p = 8lu;\n    let q = p + id.x;", &["`+` takes two values of one type, here `u64` and `u32`", "convert the other side with `u64(x)`", "let q = p + id.x;"]),
            ("    let f = 1.5f;\n    let g = f * id.x;", &["`*` takes two values of one type, here `f32` and `u32`", "convert one side, `f32(x)` or `u32(x)`"]),
            ("    let b = true + false;", &["`+` does not apply to `bool`"]),
            ("    if (id.x) { }", &["a condition must be a `bool`", "`if (x != 0u)`", "The `if` condition is not a boolean scalar"]),
            ("    let v = f32(id.x);\n    let w = u32(v) + 1.5;", &["a literal could not take the type of the value it meets"]),
        ];
        for (body, want) in cases {
            let e = error(body);
            for w in *want {
                assert!(e.contains(w), "{body:?}: {e}\nlacks {w:?}");
            }
            for ir in ["naga::ir", "Scalar(Scalar", "Expression [", "Function [", "] is invalid", "condition ["] {
                assert!(!e.contains(ir), "{body:?}: {e}\nholds {ir:?}");
            }
        }
        assert_eq!(without_ir_names("naga::ir::Expression [12] naga::ir::Expression [x] [3]", false), "here naga::ir::Expression [x] [3]");
    }

    #[test]
    fn reflects_the_interface_of_one_entry_point() {
        let k = compile_wgsl(SCALE, "scale").unwrap();
        assert_eq!(k.workgroup_size, [64, 1, 1]);
        assert_eq!(k.immediate_size, 8);
        let b: Vec<_> = k
            .bindings
            .iter()
            .map(|b| (b.binding, b.name.as_deref(), b.read_only))
            .collect();
        assert_eq!(b, [(0, Some("src"), true), (1, Some("dst"), false)]);
        assert_eq!(k.spirv[0], 0x0723_0203, "SPIR-V magic");
        assert_eq!(k.groups_for(65), 2);
        assert_eq!(k.groups_for(64), 1);

        let w = compile_wgsl(SCALE, "wide").unwrap();
        assert_eq!(w.workgroup_size, [8, 2, 1]);
        assert_eq!(w.immediate_size, 0);
        assert_eq!(w.bindings.len(), 1);
        assert_eq!(w.bindings[0].binding, 5);
    }

    #[test]
    fn parse_errors_show_the_line() {
        let src = "@compute @workgroup_size(1)\nfn main() {\n    let x = ;\n}\n";
        let e = compile_wgsl_named("bad.wgsl", src, "main").unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, CompileError::Parse { .. }));
        assert!(msg.contains("bad.wgsl:3:"), "{msg}");
        assert!(msg.contains("let x = ;"), "{msg}");
    }

    #[test]
    fn validation_errors_show_the_line() {
        let src = "@group(0) @binding(0) var<storage, read> o: array<u32>;\n\
                   @compute @workgroup_size(1)\n\
                   fn main() {\n    o[0] = 1u;\n}\n";
        let e = compile_wgsl_named("readonly.wgsl", src, "main").unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, CompileError::Validation { .. }), "{msg}");
        assert!(msg.contains("readonly.wgsl:4:"), "{msg}");
        assert!(msg.contains("o[0] = 1u;"), "{msg}");
    }

    #[test]
    fn missing_entry_point_lists_the_others() {
        let e = compile_wgsl(SCALE, "nope").unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, CompileError::EntryPoint { .. }));
        assert!(msg.contains("scale, wide"), "{msg}");
    }

    #[test]
    fn uniforms_are_reflected_with_their_size_and_other_groups_rejected() {
        let src = "@group(0) @binding(0) var<uniform> u: vec4<u32>;\n\
                   @group(0) @binding(1) var<storage, read_write> o: array<u32>;\n\
                   @compute @workgroup_size(1) fn main() { o[0] = u.x; }\n";
        let k = compile_wgsl(src, "main").unwrap();
        assert_eq!((k.bindings[0].uniform_bytes, k.bindings[0].read_only), (Some(16), true));
        assert_eq!(k.bindings[1].uniform_bytes, None);
        let msg = compile_wgsl(&src.replace("@group(0) @binding(0)", "@group(1) @binding(0)"), "main").unwrap_err().to_string();
        assert!(msg.contains("uniform buffer `u` is in @group(1)"), "{msg}");
    }
}
