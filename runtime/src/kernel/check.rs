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
//!   page table, logs, control counters) would bypass translation and replay;
//! - no declaration of a name with a prefix of the runtime's (`unimem_`, `UNIMEM_`,
//!   `Unimem`): not at module scope, where it would collide with the prelude's names, nor as
//!   a parameter or local ([`reserved_names`], checked on the text, before parsing);
//! - no module-scope declaration of a WGSL built-in the runtime's code uses (`fn min`,
//!   `alias u64`): it would replace the built-in in the runtime's code too, which then
//!   fails to compile at a line the user never wrote, or compiles and computes something
//!   else ([`shadowed_builtins`], checked on the text, before parsing).
//!
//! The user's part of a module is the source before `prelude::USER_END` (`prelude::module`
//! puts it first): what has a span there is the user's.

use naga::{AddressSpace, Block, Expression, Function, Module, Scalar, Span, Statement, TypeInner};

use super::compile::Violation;
use super::prelude::{ACCESSORS, ENTRY_POINT};

/// True when `span` lies in the user's part of the module's source, its first `user_len`
/// bytes (the prelude comes after it).
pub fn in_users_part(span: Span, user_len: usize) -> bool {
    span.to_range().is_some_and(|r| r.start < user_len)
}

/// The line (1-based) of byte `at` of `src` (at most `src.len()`).
fn line_at(src: &str, at: usize) -> usize {
    src[..at].matches('\n').count() + 1
}

/// Checks the user's part of `module` (the first `user.len()` bytes of its source), whose
/// entry function is `entry`; `float64` is `Err(device name)` when the device has no 64-bit
/// floats, and then a kernel that uses `f64` (a type or a literal) is refused.
pub fn user_kernel(module: &Module, user: &str, entry: &str, float64: Result<(), &str>) -> Result<(), Violation> {
    let mine = |span: Span| in_users_part(span, user.len());
    let line = |span: Span| line_at(user, span.to_range().map_or(0, |r| r.start.min(user.len())));
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

/// WGSL's predeclared names that a module-scope declaration can shadow: types, type
/// generators and their aliases, and built-in functions (naga's 64-bit types included).
const PREDECLARED: &[&str] = &[
    "bool", "i32", "u32", "f32", "f16", "i64", "u64", "f64", "vec2", "vec3", "vec4", "mat2x2", "mat2x3", "mat2x4",
    "mat3x2", "mat3x3", "mat3x4", "mat4x2", "mat4x3", "mat4x4", "array", "atomic", "ptr", "vec2i", "vec3i", "vec4i",
    "vec2u", "vec3u", "vec4u", "vec2f", "vec3f", "vec4f", "vec2h", "vec3h", "vec4h", "bitcast", "all", "any",
    "select", "arrayLength", "abs", "acos", "acosh", "asin", "asinh", "atan", "atanh", "atan2", "ceil", "clamp",
    "cos", "cosh", "countLeadingZeros", "countOneBits", "countTrailingZeros", "cross", "degrees", "determinant",
    "distance", "dot", "dot4U8Packed", "dot4I8Packed", "exp", "exp2", "extractBits", "faceForward",
    "firstLeadingBit", "firstTrailingBit", "floor", "fma", "fract", "frexp", "insertBits", "inverseSqrt", "ldexp",
    "length", "log", "log2", "max", "min", "mix", "modf", "normalize", "pow", "quantizeToF16", "radians",
    "reflect", "refract", "reverseBits", "round", "saturate", "sign", "sin", "sinh", "smoothstep", "sqrt", "step",
    "tan", "tanh", "transpose", "trunc", "atomicLoad", "atomicStore", "atomicAdd", "atomicSub", "atomicMax",
    "atomicMin", "atomicAnd", "atomicOr", "atomicXor", "atomicExchange", "atomicCompareExchangeWeak",
    "pack4x8snorm", "pack4x8unorm", "pack4xI8", "pack4xU8", "pack4xI8Clamp", "pack4xU8Clamp", "pack2x16snorm",
    "pack2x16unorm", "pack2x16float", "unpack4x8snorm", "unpack4x8unorm", "unpack4xI8", "unpack4xU8",
    "unpack2x16snorm", "unpack2x16unorm", "unpack2x16float", "storageBarrier", "workgroupBarrier",
    "textureBarrier", "workgroupUniformLoad", "subgroupBallot", "subgroupBroadcast", "subgroupAdd", "subgroupAll",
    "subgroupAny", "subgroupMin", "subgroupMax", "subgroupAnd", "subgroupOr", "subgroupXor", "subgroupShuffle",
];

/// Refuses a module-scope declaration in `user` of a WGSL built-in that `runtime` (the rest
/// of the module) uses, at the declaration's line. Runs before parsing: a shadowed type
/// makes the module fail to parse at the runtime's line, and a shadowed function can parse
/// and silently change what the runtime's code computes. `entry` is the user's entry
/// function, which the runtime calls once by name (an entry named `all` or `step` is fine).
pub fn shadowed_builtins(user: &str, runtime: &str, entry: &str) -> Result<(), Violation> {
    for (name, at) in module_scope_names(user) {
        if !PREDECLARED.contains(&name) {
            continue;
        }
        // Uses in code (not comments), not as a member (`.x`), not the call of the entry.
        let mut prev = None;
        let uses = tokens(runtime)
            .filter(|t| {
                let member = prev == Some(Token::Punct(b'.'));
                prev = Some(*t);
                !member && matches!(t, Token::Word(w, _) if *w == name)
            })
            .count();
        if uses > usize::from(name == entry) {
            return Err((
                line_at(user, at),
                format!("`{name}` is a WGSL built-in that the runtime's code uses: a kernel cannot declare its own at module scope (it would replace the built-in there too); rename it"),
            ));
        }
    }
    Ok(())
}

/// Refuses a shader stage attribute (`@compute`, `@vertex`, `@fragment`) in `user`, at its
/// line, naming the function it makes an entry point. Runs before parsing: on the user's entry
/// function itself (a kernel written as a WebGPU compute shader), the parser fails at the
/// generated entry point's call of it, a line of the prelude the user never wrote;
/// [`user_kernel`] refuses the same for other functions once the module is built.
pub fn entry_points(user: &str, entry: &str) -> Result<(), Violation> {
    let t: Vec<Token> = tokens(user).collect();
    for (i, w) in t.windows(2).enumerate() {
        let [Token::Punct(b'@'), Token::Word(stage @ ("compute" | "vertex" | "fragment"), at)] = *w else { continue };
        let name = t[i..].windows(2).find_map(|w| match w {
            [Token::Word("fn", _), Token::Word(name, _)] => Some(*name),
            _ => None,
        });
        let name = name.unwrap_or("<unnamed>");
        return Err((
            line_at(user, at),
            format!("`{name}` is an entry point (`@{stage}`); the runtime adds the entry point and calls `fn {entry}(id: u32)` once per invocation: declare that plain function instead, without `@{stage}` or `@workgroup_size`"),
        ));
    }
    Ok(())
}

/// True when `src` has `fn <entry>` followed by `(` in its code (not in a comment): the check
/// before the module is built, so that a missing entry is named as such rather than as an
/// unknown identifier in the generated entry point ([`user_kernel`] then checks the function
/// itself).
pub fn defines(src: &str, entry: &str) -> bool {
    functions(src).contains(&entry)
}

/// The names of the functions `src` defines (`fn name(`), in source order, outside comments.
pub fn functions(src: &str) -> Vec<&str> {
    let t: Vec<Token> = tokens(src).collect();
    t.windows(3)
        .filter_map(|w| match w {
            [Token::Word("fn", _), Token::Word(name, _), Token::Punct(b'(')] => Some(*name),
            _ => None,
        })
        .collect()
}

/// A token of WGSL source outside comments: an identifier or keyword (with its byte offset),
/// or any other character that is not white space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Token<'a> {
    Word(&'a str, usize),
    Punct(u8),
}

/// The tokens of `src`, skipping `//` and (nested) `/* */` comments. Numbers come out as
/// words (`1u`), which is all the callers need.
fn tokens(src: &str) -> impl Iterator<Item = Token<'_>> + '_ {
    let b = src.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80;
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < b.len() {
            let rest = &b[i..];
            if rest.starts_with(b"//") {
                i += rest.iter().position(|&c| c == b'\n').unwrap_or(rest.len());
            } else if rest.starts_with(b"/*") {
                let mut nest = 0;
                while i < b.len() {
                    if b[i..].starts_with(b"/*") {
                        nest += 1;
                        i += 2;
                    } else if b[i..].starts_with(b"*/") {
                        nest -= 1;
                        i += 2;
                        if nest == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
            } else if ident(b[i]) {
                let len = rest.iter().position(|&c| !ident(c)).unwrap_or(rest.len());
                let word = Token::Word(&src[i..i + len], i);
                i += len;
                return Some(word);
            } else {
                i += 1;
                if !b[i - 1].is_ascii_whitespace() {
                    return Some(Token::Punct(b[i - 1]));
                }
            }
        }
        None
    })
}

/// A name a WGSL source declares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Declaration<'a> {
    /// The name.
    pub name: &'a str,
    /// Its byte offset in the source.
    pub at: usize,
    /// What declares it: `fn`, `alias`, `struct`, `const`, `override`, `var`, `let`, or
    /// `parameter` (of a function).
    pub kind: &'a str,
    /// Declared outside braces (a module-scope item); parameters and locals are not.
    pub module_scope: bool,
}

/// The names `src` declares, in order: the identifier after `fn`, `alias`, `struct`,
/// `const`, `override`, `var` (and its `<...>`) or `let`, at any depth, and the parameters of
/// each `fn` (an identifier followed by `:` inside its parentheses); comments skipped. Not
/// struct members (they are reached as `.name` only, and shadow nothing). A malformed
/// declaration is skipped: the parser reports it.
pub(crate) fn declarations(src: &str) -> Vec<Declaration<'_>> {
    const KEYWORDS: [&str; 7] = ["fn", "alias", "struct", "const", "override", "var", "let"];
    let t: Vec<Token> = tokens(src).collect();
    let (mut found, mut depth, mut i) = (Vec::new(), 0usize, 0);
    while i < t.len() {
        match t[i] {
            Token::Punct(b'{') => depth += 1,
            Token::Punct(b'}') => depth = depth.saturating_sub(1),
            Token::Word(kind, _) if KEYWORDS.contains(&kind) => {
                // `var<private>`: the template comes between the keyword and the name.
                let named = match t.get(i + 1) {
                    Some(Token::Punct(b'<')) => t[i..].iter().position(|&x| x == Token::Punct(b'>')).map_or(t.len(), |p| i + p + 1),
                    _ => i + 1,
                };
                if let Some(&Token::Word(name, at)) = t.get(named) {
                    found.push(Declaration { name, at, kind, module_scope: depth == 0 });
                    if kind == "fn" {
                        found.extend(parameters(&t[named + 1..]));
                    }
                    i = named;
                }
            }
            _ => {}
        }
        i += 1;
    }
    found
}

/// The parameters of the parenthesised list `t` starts with (a function's, after its name):
/// the identifiers followed by `:` directly inside it (attribute arguments are nested).
fn parameters<'a>(t: &[Token<'a>]) -> Vec<Declaration<'a>> {
    let mut found = Vec::new();
    if t.first() != Some(&Token::Punct(b'(')) {
        return found;
    }
    let mut depth = 0usize;
    for (k, tok) in t.iter().enumerate() {
        match *tok {
            Token::Punct(b'(') => depth += 1,
            Token::Punct(b')') if depth == 1 => break,
            Token::Punct(b')') => depth -= 1,
            Token::Word(name, at) if depth == 1 && t.get(k + 1) == Some(&Token::Punct(b':')) => {
                found.push(Declaration { name, at, kind: "parameter", module_scope: false });
            }
            _ => {}
        }
    }
    found
}

/// The names `src` declares at module scope, with their byte offsets ([`declarations`]
/// outside braces).
pub(crate) fn module_scope_names(src: &str) -> Vec<(&str, usize)> {
    declarations(src).into_iter().filter(|d| d.module_scope).map(|d| (d.name, d.at)).collect()
}

/// The prefixes of the runtime's names in a kernel's module (its functions, accessors and
/// variables, its constants, its types): every name the prelude declares has one, and a
/// kernel declares none ([`reserved_names`]).
pub const RESERVED_PREFIXES: [&str; 3] = ["unimem_", "UNIMEM_", "Unimem"];

/// True when `name` starts with one of the [`RESERVED_PREFIXES`].
pub fn is_reserved(name: &str) -> bool {
    RESERVED_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// Refuses a declaration in `user` of a name with a reserved prefix, at the declaration's
/// line, naming it. Any declaration: at module scope it would collide with the prelude's
/// (naga then reports a redefinition at a line of the prelude) or with a name a later
/// prelude adds; a parameter or local would shadow an accessor in the user's own code, and
/// the prefix stays the runtime's, as in C's reserved identifiers. Uses are fine (calling
/// `unimem_load_u32(p)` is the point), and so are struct members. Runs before parsing, since
/// the parser stops at a redefinition.
pub fn reserved_names(user: &str) -> Result<(), Violation> {
    let Some(d) = declarations(user).into_iter().find(|d| is_reserved(d.name)) else {
        return Ok(());
    };
    let what = match d.kind {
        "fn" => "function",
        "alias" => "type alias",
        "const" => "constant",
        "var" | "override" => "variable",
        "let" => "local",
        other => other,
    };
    Err((
        line_at(user, d.at),
        format!(
            "`{}`: names beginning with `unimem_`, `UNIMEM_` or `Unimem` are reserved for the runtime's prelude, which the kernel is compiled with; rename this {what} (a kernel calls the prelude's accessors, such as `unimem_load_u32(p)`, but declares none of these names)",
            d.name
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_defined_by_fn_its_name_and_a_parenthesis() {
        assert!(defines("fn f(id: u32) {}", "f"));
        assert!(defines("x\nfn  sum_list (id: u32) {}", "sum_list"));
        assert!(!defines("fn f2(id: u32) {}", "f"));
        assert!(!defines("fn g(id: u32) { f(1u); }", "f"));
        assert!(!defines("fnf(id: u32) {}", "f"));
        assert!(!defines("myfn f(id: u32) {}", "f"));
        assert!(!defines("fn f", "f"));
        assert!(!defines("// fn f(id: u32) {}\n/* fn f( */", "f"));
    }

    #[test]
    fn module_scope_names_skip_bodies_comments_and_templates() {
        let src = "// fn not_me() {}\n/* struct nor /* nested */ me */ const a = 1u;\nvar<private> b: u32;\n@compute @workgroup_size(1) fn c(x: u32) {\n  let d = 1u;\n  var e = 2u;\n  { const f = 3u; }\n}\nalias g = u32;\nstruct h { i: u32 }\noverride j: u32;\nconst_assert 1 < 2;\nfn\n  k() {}\n";
        let names: Vec<&str> = module_scope_names(src).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["a", "b", "c", "g", "h", "j", "k"]);
        let at = module_scope_names(src).iter().find(|(n, _)| *n == "k").unwrap().1;
        assert_eq!(&src[at..at + 1], "k");
    }

    #[test]
    fn declarations_include_parameters_and_locals_but_not_members() {
        let src = "struct S { m: u32 }\n@compute @workgroup_size(1) fn f(@builtin(global_invocation_id) g: vec3<u32>, p: ptr<function, u32>) -> u32 {\n  let a = 1u;\n  for (var<function> b = 0u; b < 2u; b++) { const c = 3u; }\n  return s.m;\n}\nfn h() {}\n/* let d = 4u; */";
        let found: Vec<(&str, &str, bool)> = declarations(src).into_iter().map(|d| (d.name, d.kind, d.module_scope)).collect();
        assert_eq!(
            found,
            [("S", "struct", true), ("f", "fn", true), ("g", "parameter", false), ("p", "parameter", false), ("a", "let", false), ("b", "var", false), ("c", "const", false), ("h", "fn", true)]
        );
        let at = declarations(src)[4].at;
        assert_eq!(&src[at..at + 1], "a");
    }

    #[test]
    fn the_runtimes_prefixes_cannot_be_declared() {
        let cases = [
            ("struct UnimemRound { x: u32 }", 1, "`UnimemRound`", "struct"),
            ("fn f(id: u32) {}\nfn unimem_load_u32(p: u64) -> u32 { return 0u; }", 2, "`unimem_load_u32`", "function"),
            ("var<private> unimem_round: u32;", 1, "`unimem_round`", "variable"),
            ("\nconst UNIMEM_FAIL = 1u;", 2, "`UNIMEM_FAIL`", "constant"),
            ("alias UnimemPtr = u64;", 1, "`UnimemPtr`", "type alias"),
            ("fn f(id: u32) {\n  let unimem_x = id;\n}", 2, "`unimem_x`", "local"),
            ("fn f(id: u32) {\n  var unimem_x = id;\n}", 2, "`unimem_x`", "variable"),
            ("fn f(unimem_id: u32) {}", 1, "`unimem_id`", "parameter"),
        ];
        for (user, line, name, kind) in cases {
            let (l, what) = reserved_names(user).expect_err(user);
            assert_eq!(l, line, "{user}");
            assert!(what.starts_with(name) && what.contains(&format!("rename this {kind} ")), "{user}: {what}");
            assert!(what.contains("reserved for the runtime's prelude"), "{what}");
        }
        // Uses of the accessors, members, names that only contain the prefix, comments.
        for user in [
            "fn f(id: u32) { unimem_store_u32(unimem_arg_ptr(0u), unimem_load_u32(unimem_arg_ptr(2u))); }",
            "struct S { unimem_x: u32 }\nfn f(id: u32) { let s = S(1u); let y = s.unimem_x; }",
            "const my_unimem = 1u;\nfn unimemory() {}\nalias UNIMEMx = u32;",
            "// fn unimem_load_u32(p: u64) -> u32\n/* struct UnimemRound {} */ fn f(id: u32) {}",
        ] {
            assert_eq!(reserved_names(user), Ok(()), "{user}");
        }
    }

    #[test]
    fn builtins_the_runtime_uses_cannot_be_redeclared() {
        let runtime = "fn unimem_x(a: u32) -> u64 { return u64(min(a, 3u)) + select(0lu, 1lu, a > 2u) + v.max; }";
        let cases = [("const q = 1u;\nfn min(a: u32, b: u32) -> u32 { return a; }", Some((2, "min"))), ("alias u64 = u32;", Some((1, "u64"))), ("fn select() {}", Some((1, "select")))];
        for (user, want) in cases {
            let got = shadowed_builtins(user, runtime, "f");
            let (line, name) = want.unwrap();
            let (l, what) = got.expect_err(user);
            assert_eq!(l, line, "{user}");
            assert!(what.starts_with(&format!("`{name}` is a WGSL built-in")), "{what}");
        }
        // Built-ins the runtime does not use (`max` only as a member), other names, locals.
        for user in ["fn max(a: u32) -> u32 { return a; }", "fn sqrt() {}", "fn f(id: u32) { let min = 1u; }", "const minimum = 2u;"] {
            assert_eq!(shadowed_builtins(user, runtime, "f"), Ok(()), "{user}");
        }
        // Named in the runtime's comments only, or the entry the runtime calls once.
        let runtime = "// all rounds step through the log\n/* any */ fn unimem_main() { step(1u); }";
        for (user, entry) in [("fn log(x: u32) -> u32 { return x; }", "f"), ("const round = 3u;", "f"), ("fn step(id: u32) {}", "step"), ("fn any(id: u32) {}", "any")] {
            assert_eq!(shadowed_builtins(user, runtime, entry), Ok(()), "{user}");
        }
        assert!(shadowed_builtins("fn step(id: u32) {}", &format!("{runtime} fn g() {{ step(2u); }}"), "step").is_err());
    }

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
