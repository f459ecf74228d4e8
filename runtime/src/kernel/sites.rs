//! Sites: the place in the user's source where an invocation stopped, for error messages.
//!
//! A *site* is a call in the user's functions that can stop an invocation: an accessor that
//! touches memory (`unimem_load_*`, `unimem_store_*`, `unimem_atomic_*`) or a loop's guard
//! (`guard.rs`, which gives the call the loop's span). Before validation, [`mark`] puts
//!
//! ```text
//! unimem_site = <id>;
//! ```
//!
//! before each of them. The prelude copies `unimem_site` into `unimem_stop_site` when the
//! invocation stops, and reports it with the stop (prelude.rs, "Id buffer"; a spill round's
//! error, in the fault buffer's error-kind word). Each id is a constant at its call, and the
//! accessors are inlined, so the store and the copy fold away: nothing is paid until an
//! invocation stops.
//!
//! Ids are the sites' ranks in source order (1 for the first), so they depend on the user's
//! text alone, not on the round mode or anything else the prelude varies with: an error's
//! id is turned back into a line by parsing the source again ([`collect`]), only when an
//! error is reported. Sites after the [`MAX_SITES`]-th get id 0 (unknown), which the
//! output list's spare bits limit.

use naga::{Arena, Block, Expression, Handle, Literal, Module, Span, Statement};

use super::check::in_users_part;
use super::guard::{walk, LOOP_STEP};

/// The prelude's variable the user's code sets before each site.
pub const SITE_VAR: &str = "unimem_site";
/// The most sites that get an id (ids `1..=MAX_SITES`; 0 is unknown). With a slot below
/// 2^23 in the entry's low bits, 510 keeps `slot | site << 23` from reading as `NO_SLOT`.
pub const MAX_SITES: usize = 510;

/// True for the functions whose calls are sites.
fn is_site(name: &str) -> bool {
    ["unimem_load_", "unimem_store_", "unimem_atomic_", "unimem_arg_"].iter().any(|p| name.starts_with(p)) || name == LOOP_STEP
}

/// Which of `module`'s functions are sites (by function index), and the user's functions
/// (spans before `user_len`).
fn sites_and_users(module: &Module, user_len: usize) -> (Vec<bool>, Vec<Handle<naga::Function>>) {
    let sites = module.functions.iter().map(|(_, f)| f.name.as_deref().is_some_and(is_site)).collect();
    let users = module.functions.iter().map(|(h, _)| h).filter(|&h| in_users_part(module.functions.get_span(h), user_len)).collect();
    (sites, users)
}

/// The spans of the sites in the functions of `module`'s user part (spans before
/// `user_len`), in source order: site id `i + 1` is at `spans[i]`. (`&mut` for
/// `guard::walk` only: nothing changes.)
pub fn collect(module: &mut Module, user_len: usize) -> Vec<Span> {
    let (sites, users) = sites_and_users(module, user_len);
    let mut spans = Vec::new();
    for h in users {
        walk(&mut module.functions[h].body, &mut |s, span| {
            if matches!(s, Statement::Call { function, .. } if sites[function.index()]) {
                spans.push(span);
            }
        });
    }
    spans.sort_by_key(|s| s.to_range().map(|r| (r.start, r.end)));
    spans.dedup();
    spans
}

/// Sets `unimem_site` before every site of the user's functions (see the module docs);
/// returns how many sites there are. Run after `guard::loops`, whose calls are sites. Panics
/// if the module has no [`SITE_VAR`]: the prelude always declares it.
pub fn mark(module: &mut Module, user_len: usize) -> usize {
    let spans = collect(module, user_len);
    let var = module.global_variables.iter().find(|(_, g)| g.name.as_deref() == Some(SITE_VAR)).map(|(h, _)| h).expect("the prelude declares unimem_site");
    let (sites, users) = sites_and_users(module, user_len);
    for h in users {
        let f = &mut module.functions[h];
        let pointer = f.expressions.append(Expression::GlobalVariable(var), Span::UNDEFINED);
        let id_of = |function: Handle<naga::Function>, span: Span| -> Option<u32> {
            if !sites[function.index()] {
                return None;
            }
            let rank = spans.binary_search_by_key(&span.to_range().map(|r| (r.start, r.end)), |s| s.to_range().map(|r| (r.start, r.end))).ok()?;
            Some(if rank < MAX_SITES { rank as u32 + 1 } else { 0 })
        };
        insert(&mut f.body, &mut f.expressions, pointer, &id_of);
    }
    spans.len()
}

/// Puts `unimem_site = id` before every call in `block` (and in the blocks nested in it) for
/// which `id_of` gives an id.
fn insert(block: &mut Block, exprs: &mut Arena<Expression>, pointer: Handle<Expression>, id_of: &dyn Fn(Handle<naga::Function>, Span) -> Option<u32>) {
    let old = std::mem::take(block);
    let mut new = Block::with_capacity(old.len());
    for (mut statement, span) in old.span_into_iter() {
        match &mut statement {
            Statement::Block(b) => insert(b, exprs, pointer, id_of),
            Statement::If { accept, reject, .. } => {
                insert(accept, exprs, pointer, id_of);
                insert(reject, exprs, pointer, id_of);
            }
            Statement::Switch { cases, .. } => cases.iter_mut().for_each(|c| insert(&mut c.body, exprs, pointer, id_of)),
            Statement::Loop { body, continuing, .. } => {
                insert(body, exprs, pointer, id_of);
                insert(continuing, exprs, pointer, id_of);
            }
            Statement::Call { function, .. } => {
                if let Some(id) = id_of(*function, span) {
                    // A literal needs no `Emit`: naga evaluates it where it is used.
                    let value = exprs.append(Expression::Literal(Literal::U32(id)), span);
                    new.push(Statement::Store { pointer, value }, span);
                }
            }
            _ => {}
        }
        new.push(statement, span);
    }
    *block = new;
}

/// Where site `span` is in `user` (the user's source), for a message: ` at line N (`text`)`,
/// or for a loop's guard ` in the loop at line N (`text`)`; the text is the site's first line,
/// shortened. Empty if the span is not in `user`.
pub fn describe(user: &str, span: Span) -> String {
    let Some(r) = span.to_range().filter(|r| r.start < user.len()) else { return String::new() };
    let line = line_of(user, r.start);
    let text = user[r.start..r.end.min(user.len())].lines().next().unwrap_or("").trim();
    let text = match text.char_indices().nth(60) {
        Some((cut, _)) => format!("{} ...", &text[..cut]),
        None => text.to_owned(),
    };
    let is_loop = ["for", "while", "loop"].iter().any(|k| text.starts_with(k) && !text[k.len()..].starts_with(|c: char| c.is_alphanumeric() || c == '_'));
    format!("{} line {line} of its source (`{text}`)", if is_loop { " in the loop at" } else { " at" })
}

/// The line (1-based) of byte `at` of `user`.
fn line_of(user: &str, at: usize) -> usize {
    user[..at].matches('\n').count() + 1
}

/// For a site at `span` in a function of `module`'s user part other than `entry`: `, in
/// `fn helper`, called at line N` (lines, when several calls of the user's code call it), so
/// that an error inside a helper also says where the kernel called it from. Empty for a site
/// in `entry` or outside the user's part. (`&mut` for `guard::walk` only: nothing changes.)
pub fn callers(module: &mut Module, user: &str, span: Span, entry: &str) -> String {
    let Some(at) = span.to_range().filter(|r| r.start < user.len()) else { return String::new() };
    let (_, users) = sites_and_users(module, user.len());
    let inside = |h: Handle<naga::Function>| module.functions.get_span(h).to_range().is_some_and(|r| r.start <= at.start && at.end <= r.end);
    let Some(helper) = users.iter().copied().find(|&h| inside(h)) else { return String::new() };
    let name = module.functions[helper].name.clone().unwrap_or_default();
    if name == entry {
        return String::new();
    }
    let mut lines = Vec::new();
    for h in users {
        walk(&mut module.functions[h].body, &mut |s, span| {
            if let (Statement::Call { function, .. }, Some(r)) = (s, span.to_range()) {
                if *function == helper && r.start < user.len() {
                    lines.push(line_of(user, r.start));
                }
            }
        });
    }
    lines.sort_unstable();
    lines.dedup();
    let list: Vec<String> = lines.iter().map(usize::to_string).collect();
    match list.len() {
        0 => format!(", in `fn {name}`"),
        1 => format!(", in `fn {name}`, called at line {}", list[0]),
        n => format!(", in `fn {name}`, called at lines {} and {}", list[..n - 1].join(", "), list[n - 1]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const USER: &str = "fn helper(p: u64) -> u32 {
    return unimem_load_u32(p) + unimem_load_u32(p + 4lu);
}
fn entry(id: u32) {
    var p = unimem_arg_ptr(0u);
    while (p != 0lu) {
        p = unimem_load_ptr(p + 8lu);
    }
    if (id > 2u) {
        unimem_store_u32(unimem_arg_ptr(2u), helper(p));
    }
}
";
    const PRELUDE: &str = "
var<private> unimem_site: u32;
var<private> unimem_stop_site: u32;
var<private> unimem_iterations: u32;
fn unimem_loop_step() -> bool { unimem_iterations += 1u; return unimem_iterations > 100u; }
fn unimem_arg_ptr(i: u32) -> u64 { return u64(i); }
fn unimem_load_u32(p: u64) -> u32 { unimem_stop_site = unimem_site; return u32(p); }
fn unimem_load_ptr(p: u64) -> u64 { return u64(unimem_load_u32(p)); }
fn unimem_store_u32(p: u64, v: u32) { unimem_stop_site = unimem_site + v; }
@compute @workgroup_size(1) fn main(@builtin(global_invocation_id) g: vec3<u32>) {
    entry(g.x);
}
";

    fn texts(spans: &[Span]) -> Vec<String> {
        spans.iter().map(|s| describe(USER, *s)).collect()
    }

    #[test]
    fn sites_are_the_users_accesses_and_loops_in_source_order() {
        let source = format!("{USER}{PRELUDE}");
        let mut module = naga::front::wgsl::parse_str(&source).unwrap();
        let unguarded = collect(&mut module, USER.len());
        assert_eq!(
            texts(&unguarded),
            [
                " at line 2 of its source (`unimem_load_u32(p)`)",
                " at line 2 of its source (`unimem_load_u32(p + 4lu)`)",
                " at line 5 of its source (`unimem_arg_ptr(0u)`)",
                " at line 7 of its source (`unimem_load_ptr(p + 8lu)`)",
                " at line 10 of its source (`unimem_store_u32(unimem_arg_ptr(2u), helper(p))`)",
                " at line 10 of its source (`unimem_arg_ptr(2u)`)",
            ]
            .map(String::from),
            "not the prelude's own calls"
        );
        super::super::guard::loops(&mut module, USER.len());
        let spans = collect(&mut module, USER.len());
        assert_eq!(spans.len(), 7);
        assert!(texts(&spans)[3].starts_with(" in the loop at line 6 of its source (`while (p != 0lu) {`)"), "{:?}", texts(&spans));
        assert_eq!(mark(&mut module, USER.len()), 7);
        // Valid, and each site's store comes right before its call, with its rank.
        let info = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::SHADER_INT64).validate(&module).expect("valid after marking");
        assert!(naga::back::spv::write_vec(&module, &info, &naga::back::spv::Options::default(), None).is_ok());
        let mut ids = Vec::new();
        for h in sites_and_users(&module, USER.len()).1 {
            let f = &mut module.functions[h];
            let exprs = &f.expressions;
            walk(&mut f.body, &mut |s, span| {
                if let Statement::Store { value, .. } = s {
                    if let Expression::Literal(Literal::U32(id)) = exprs[*value] {
                        ids.push((id, spans.iter().position(|t| *t == span).map(|i| i + 1)));
                    }
                }
            });
        }
        ids.sort();
        assert_eq!(ids, (1..=7).map(|i| (i, Some(i as usize))).collect::<Vec<_>>());
    }

    #[test]
    fn a_site_in_a_helper_names_the_helper_and_the_lines_that_call_it() {
        let source = format!("{USER}{PRELUDE}");
        let mut module = naga::front::wgsl::parse_str(&source).unwrap();
        let spans = collect(&mut module, USER.len());
        assert_eq!(callers(&mut module, USER, spans[0], "entry"), ", in `fn helper`, called at line 10");
        assert_eq!(callers(&mut module, USER, spans[3], "entry"), "", "a site of the entry itself");
        // Two callers, one of them another helper.
        let user = USER.replace("fn entry(id: u32) {", "fn twice(p: u64) -> u32 {\n    return helper(p) * 2u;\n}\nfn entry(id: u32) {\n    let t = twice(0lu);");
        let source = format!("{user}{PRELUDE}");
        let mut module = naga::front::wgsl::parse_str(&source).unwrap();
        let spans = collect(&mut module, user.len());
        assert_eq!(callers(&mut module, &user, spans[0], "entry"), ", in `fn helper`, called at lines 5 and 14");
        assert_eq!(callers(&mut module, &user, Span::UNDEFINED, "entry"), "");
    }

    #[test]
    fn a_span_outside_the_users_part_describes_nothing() {
        assert_eq!(describe(USER, Span::new(USER.len() as u32 + 3, USER.len() as u32 + 9)), "");
        assert_eq!(describe(USER, Span::UNDEFINED), "");
    }
}
