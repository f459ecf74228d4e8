//! The rules a user kernel follows beyond being valid WGSL, checked on the parsed module
//! before validation, so that a mistake is reported at the user's own line and in the user's
//! terms, instead of as a validation error inside the generated entry point, or not at all
//! (wrong results, or the runtime's buffers written by a kernel that declared them itself):
//!
//! - the entry is `fn <entry>(id: u32)` and returns nothing; the runtime adds the
//!   `@compute` entry point that calls it, so the source declares none;
//! - no module-scope resources of its own (buffers, textures, immediates): memory is reached
//!   through pointers with the accessors, values come as launch arguments; its bindings
//!   would alias the runtime's;
//! - no workgroup memory, barriers or `workgroupUniformLoad`: an invocation that faults is
//!   replayed on its own, in another workgroup of another dispatch, so they would not mean
//!   what they say (and a barrier some invocations of a workgroup skip is undefined);
//! - of the runtime's names, only the accessors (`prelude::ACCESSORS`): the rest (frames,
//!   page table, logs, control counters) would bypass translation and replay.
//!
//! The user's part of a module is the source before `prelude::USER_END` (`prelude::module`
//! puts it first): what has a span there is the user's.

use naga::{AddressSpace, Block, Expression, Function, Module, Scalar, Span, Statement, TypeInner};

use super::compile::Violation;
use super::prelude::{ACCESSORS, ENTRY_POINT};

/// Checks the user's part of `module` (the first `user.len()` bytes of its source), whose
/// entry function is `entry`; `float64` is `Err(device name)` when the device has no 64-bit
/// floats, and then a kernel that uses `f64` (a type or a literal) is refused.
pub fn user_kernel(module: &Module, user: &str, entry: &str, float64: Result<(), &str>) -> Result<(), Violation> {
    let mine = |span: Span| span.to_range().is_some_and(|r| r.start < user.len());
    let line = |span: Span| {
        let at = span.to_range().map_or(0, |r| r.start.min(user.len()));
        user[..at].matches('\n').count() + 1
    };
    if let Some(ep) = module.entry_points.iter().find(|ep| ep.name != ENTRY_POINT) {
        let at = ep.function.body.span_iter().next().map_or(1, |(_, s)| line(*s));
        return Err((at, format!("`{}` is an entry point (`@compute`); the runtime adds the entry point and calls `fn {entry}(id: u32)` once per invocation: declare that plain function instead", ep.name)));
    }
    for (h, var) in module.global_variables.iter() {
        let span = module.global_variables.get_span(h);
        if !mine(span) || var.space == AddressSpace::Private {
            continue;
        }
        let name = var.name.as_deref().unwrap_or("<unnamed>");
        let why = match var.space {
            AddressSpace::WorkGroup => "`var<workgroup>`: workgroup memory is not supported, since an invocation that faults is replayed on its own, outside its workgroup. Share data through heap memory and the unimem_atomic_* accessors",
            AddressSpace::Storage { .. } | AddressSpace::Uniform | AddressSpace::Handle | AddressSpace::Immediate => {
                "a kernel declares no buffers, textures or immediates of its own (their bindings would be the runtime's): it reaches memory through pointers with the unimem_load/store/atomic accessors and takes values as launch arguments (unimem_arg_*)"
            }
            _ => "a kernel declares only `var<private>` variables at module scope",
        };
        return Err((line(span), format!("`{name}`: {why}")));
    }
    if let Err(device) = float64 {
        let f64_type = module.types.iter().find(|(_, t)| match t.inner {
            TypeInner::Scalar(s) | TypeInner::Vector { scalar: s, .. } | TypeInner::Matrix { scalar: s, .. } | TypeInner::Atomic(s) => s == Scalar::F64,
            _ => false,
        });
        let f64_literal = module.functions.iter().filter(|(h, _)| mine(module.functions.get_span(*h))).find_map(|(_, f)| {
            f.expressions.iter().find(|(_, e)| matches!(e, Expression::Literal(naga::Literal::F64(_)))).map(|(h, _)| f.expressions.get_span(h))
        });
        if let Some(span) = f64_type.map(|(h, _)| module.types.get_span(h)).or(f64_literal) {
            return Err((line(span), format!("the kernel uses `f64`, but {device} has no 64-bit floats in shaders (`shaderFloat64`)")));
        }
    }
    let mut found = false;
    for (h, f) in module.functions.iter() {
        let span = module.functions.get_span(h);
        if !mine(span) {
            continue;
        }
        if f.name.as_deref() == Some(entry) {
            found = true;
            let takes_id = f.arguments.len() == 1 && module.types[f.arguments[0].ty].inner == TypeInner::Scalar(Scalar::U32);
            if !takes_id || f.result.is_some() {
                return Err((line(span), format!("`fn {entry}` must take one `u32` (the invocation id) and return nothing: `fn {entry}(id: u32)`")));
            }
        }
        body(module, f, &mine, &line)?;
    }
    if !found {
        return Err((1, format!("the source must define `fn {entry}(id: u32)`, called once per invocation")));
    }
    Ok(())
}

/// The rules inside one of the user's functions: no barriers, no runtime internals.
fn body(module: &Module, f: &Function, mine: &impl Fn(Span) -> bool, line: &impl Fn(Span) -> usize) -> Result<(), Violation> {
    let internal = |what: &str, name: &str| format!("`{name}` is the runtime's {what}, not part of the kernel ABI; use the accessors (unimem_arg_*, unimem_load_*, unimem_store_*, unimem_atomic_*, unimem_running)");
    for (h, e) in f.expressions.iter() {
        if let Expression::GlobalVariable(g) = e {
            if !mine(module.global_variables.get_span(*g)) {
                let name = module.global_variables[*g].name.as_deref().unwrap_or("<unnamed>");
                return Err((line(f.expressions.get_span(h)), internal("variable", name)));
            }
        }
    }
    statements(&f.body, &mut |s, span| match s {
        Statement::ControlBarrier(_) | Statement::MemoryBarrier(_) | Statement::WorkGroupUniformLoad { .. } => Err((
            line(span),
            "barriers and workgroupUniformLoad are not supported: an invocation that faults is replayed on its own, outside its workgroup".to_string(),
        )),
        Statement::Call { function, .. } => {
            let callee = &module.functions[*function];
            let name = callee.name.as_deref().unwrap_or("<unnamed>");
            if mine(module.functions.get_span(*function)) || ACCESSORS.contains(&name) {
                Ok(())
            } else {
                Err((line(span), internal("function", name)))
            }
        }
        _ => Ok(()),
    })
}

/// Calls `check` on every statement of `block`, nested ones included.
fn statements(block: &Block, check: &mut impl FnMut(&Statement, Span) -> Result<(), Violation>) -> Result<(), Violation> {
    for (s, span) in block.span_iter() {
        check(s, *span)?;
        match s {
            Statement::Block(b) => statements(b, check)?,
            Statement::If { accept, reject, .. } => {
                statements(accept, check)?;
                statements(reject, check)?;
            }
            Statement::Switch { cases, .. } => {
                for c in cases {
                    statements(&c.body, check)?;
                }
            }
            Statement::Loop { body, continuing, .. } => {
                statements(body, check)?;
                statements(continuing, check)?;
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(src: &str, float64: Result<(), &str>) -> Result<(), Violation> {
        let m = naga::front::wgsl::parse_str(src).unwrap_or_else(|e| panic!("{e}"));
        user_kernel(&m, src, "f", float64)
    }

    #[test]
    fn f64_is_refused_on_devices_without_it_as_a_type_or_a_literal() {
        for src in ["fn f(id: u32) {\n  let x = 1.5lf * 2.0lf;\n}", "fn f(id: u32) {\n  var x: f64;\n}", "fn f(id: u32) {\n  var x = vec2<f64>();\n}"] {
            let (line, what) = check(src, Err("dev")).unwrap_err();
            assert!(what.contains("uses `f64`, but dev has no 64-bit floats"), "{src}: {what}");
            assert!(line <= 2, "{src}: line {line}");
            assert_eq!(check(src, Ok(())), Ok(()), "{src}");
        }
        // Mentioned in a comment only: fine.
        assert_eq!(check("// no f64 here\nfn f(id: u32) { let x = 1.5f; }", Err("dev")), Ok(()));
    }
}
