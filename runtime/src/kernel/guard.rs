//! Loop guards: every loop of the user's code counts its iterations, so that no kernel can
//! run for ever.
//!
//! The accessors count their calls (the step limit catches a walk around a cycle of
//! pointers), but a loop that never calls one, `loop { }` or a counter that overflows past its
//! bound, would run until the driver gives up: on a GPU, a dispatch timeout that marks the
//! device lost, taking every buffer and the data migrated to the device with it. So before
//! validation, [`loops`] puts at the top of the body of every loop in the user's functions
//! (WGSL's `loop`, `for` and `while` are all a naga `Loop`):
//!
//! ```text
//! if (unimem_loop_step()) { break; }
//! ```
//!
//! `unimem_loop_step` (prelude) counts the iteration and, past `Round::max_steps` iterations
//! in the round, stops the invocation as a runaway (`KERNEL_ERROR_RUNAWAY_LOOP`, unless it
//! had stopped already) and returns true, which ends the loop (and every later loop at its
//! first iteration). So a loop that only an accessor's value would end also ends after a
//! fault, when the accessors return 0 (the invocation is replayed anyway). Ending loops as
//! soon as the invocation stops would be tidier but costs a second test per iteration: on
//! lavapipe a loop of two ALU operations ran 1.8x slower guarded this way, 2.4x with both
//! tests (a pointer chase, +3%). `UNIMEM_LOOP_GUARD=off` leaves loops unguarded.
//! The prelude's own loops (the store-log flush, the loop-budget probe) are not the user's
//! and stay as they are.
//!
//! The count is per invocation and per round, over all its loops: a body entered counts one
//! (so a `for` loop of `n` iterations counts `n + 1`, its last test included).
//!
//! naga validates a function only after those it calls, and its WGSL front end orders them
//! so (the user's functions come after the accessors they call); nothing called the guard
//! when the source was parsed, so [`loops`] moves it to the front of the function arena,
//! renumbering every call. It calls no function itself, only reads and writes globals.

use naga::{Block, Expression, Function, Handle, Module, Span, Statement};

use super::check::in_users_part;

/// The prelude function every user loop calls at the top of its body.
pub const LOOP_STEP: &str = "unimem_loop_step";

/// Inserts the guard into every loop of the functions defined in the user's part of
/// `module` (spans before `user_len`). Returns how many loops it guarded. Panics if the
/// module has no [`LOOP_STEP`] function: the prelude always defines it.
pub fn loops(module: &mut Module, user_len: usize) -> usize {
    let step = guard_first(module);
    let users: Vec<Handle<Function>> = module
        .functions
        .iter()
        .map(|(h, _)| h)
        .filter(|&h| in_users_part(module.functions.get_span(h), user_len))
        .collect();
    let mut guarded = 0;
    for h in users {
        let f = &mut module.functions[h];
        let exprs = &mut f.expressions;
        walk(&mut f.body, &mut |statement, span| {
            if let Statement::Loop { body, .. } = statement {
                // The loop's own span: an error in its guard names the loop (`sites.rs`).
                let stopped = exprs.append(Expression::CallResult(step), span);
                let mut guard = Block::with_capacity(2);
                guard.push(Statement::Call { function: step, arguments: Vec::new(), result: Some(stopped) }, span);
                guard.push(Statement::If { condition: stopped, accept: Block::from_vec(vec![Statement::Break]), reject: Block::new() }, span);
                body.splice(0..0, guard);
                guarded += 1;
            }
        });
    }
    guarded
}

/// Moves [`LOOP_STEP`] to the front of `module`'s functions, so that every function may call
/// it, and renumbers the calls; returns its new handle.
fn guard_first(module: &mut Module) -> Handle<Function> {
    let mut all: Vec<(Handle<Function>, Function, Span)> = module.functions.drain().collect();
    let at = all.iter().position(|(_, f, _)| f.name.as_deref() == Some(LOOP_STEP)).expect("the prelude defines the loop guard");
    let (old, f, span) = all.remove(at);
    let step = module.functions.append(f, span);
    let mut new: Vec<Option<Handle<Function>>> = vec![None; all.len() + 1];
    new[old.index()] = Some(step);
    for (old, f, span) in all {
        new[old.index()] = Some(module.functions.append(f, span));
    }
    let renumber = |f: &mut Function| {
        let map = |h: &mut Handle<Function>| *h = new[h.index()].expect("every function was moved");
        for (_, e) in f.expressions.iter_mut() {
            if let Expression::CallResult(h) = e {
                map(h);
            }
        }
        walk(&mut f.body, &mut |statement, _| {
            if let Statement::Call { function, .. } = statement {
                map(function);
            }
        });
    };
    for (_, f) in module.functions.iter_mut() {
        renumber(f);
    }
    for ep in module.entry_points.iter_mut() {
        renumber(&mut ep.function);
    }
    // Doc comments are kept by function handle; SPIR-V does not use them.
    module.doc_comments = None;
    step
}

/// Calls `visit` on every statement of `block` and of the blocks nested in it, with its span,
/// each after the statements nested in it (so `visit` may change a statement's blocks).
pub(super) fn walk(block: &mut Block, visit: &mut dyn FnMut(&mut Statement, Span)) {
    for (statement, span) in block.span_iter_mut() {
        let span = span.map_or(Span::UNDEFINED, |s| *s);
        match statement {
            Statement::Block(b) => walk(b, visit),
            Statement::If { accept, reject, .. } => {
                walk(accept, visit);
                walk(reject, visit);
            }
            Statement::Switch { cases, .. } => cases.iter_mut().for_each(|c| walk(&mut c.body, visit)),
            Statement::Loop { body, continuing, .. } => {
                walk(body, visit);
                walk(continuing, visit);
            }
            _ => {}
        }
        visit(statement, span);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use naga::valid::{Capabilities, ValidationFlags, Validator};

    /// The user's part (first), then a stand-in for the prelude: its own loop, and the guard.
    const USER: &str = "
fn helper(n: u32) -> u32 {
    var s = 0u;
    for (var i = 0u; i < n; i++) {
        var j = 0u;
        while (j < i) {
            switch (j % 3u) {
                case 0u: { loop { s += 1u; if (s > 9u) { break; } } }
                default: { s += j; }
            }
            j++;
        }
    }
    return s;
}
fn entry(id: u32) {
    if (id > 2u) {
        loop {
            if (helper(id) > 5u) { break; }
        }
    }
}
";
    const PRELUDE: &str = "
var<private> unimem_iterations: u32;
fn unimem_flush(n: u32) -> u32 {
    var k = 0u;
    loop { if (k >= n) { break; } k++; }
    return k;
}
fn unimem_loop_step() -> bool {
    unimem_iterations += 1u;
    return unimem_iterations > 100u;
}
@compute @workgroup_size(1) fn main(@builtin(global_invocation_id) g: vec3<u32>) {
    entry(g.x + unimem_flush(2u));
}
";

    /// Calls of the guard in `block`, nested blocks included.
    fn guards(block: &mut Block, step: Handle<Function>) -> usize {
        let mut n = 0;
        walk(block, &mut |s, _| n += usize::from(matches!(s, Statement::Call { function, .. } if *function == step)));
        n
    }

    #[test]
    fn every_loop_of_the_users_functions_is_guarded_and_only_those() {
        let source = format!("{USER}{PRELUDE}");
        let mut module = naga::front::wgsl::parse_str(&source).unwrap();
        // naga puts the guard after the functions that do not call it.
        let first = module.functions.iter().next().unwrap().1.name.clone();
        assert_ne!(first.as_deref(), Some(LOOP_STEP));
        assert_eq!(loops(&mut module, USER.len()), 4, "for, while and loop in a switch case (helper), loop in an if (entry)");
        Validator::new(ValidationFlags::all(), Capabilities::empty()).validate(&module).expect("valid after the rewrite");
        let (step, _) = module.functions.iter().next().unwrap();
        assert_eq!(module.functions[step].name.as_deref(), Some(LOOP_STEP), "moved first");
        let mut counts: Vec<(String, usize)> = Vec::new();
        for (_, f) in module.functions.iter_mut() {
            let name = f.name.clone().unwrap_or_default();
            counts.push((name, guards(&mut f.body, step)));
        }
        counts.sort();
        let want = [("entry", 1), ("helper", 3), ("unimem_flush", 0), ("unimem_loop_step", 0)];
        assert_eq!(counts, want.map(|(n, c)| (n.to_string(), c)).to_vec());
        // The entry point still calls the functions it called, renumbered.
        let mut called = Vec::new();
        walk(&mut module.entry_points[0].function.body, &mut |s, _| {
            if let Statement::Call { function, .. } = s {
                called.push(function.index());
            }
        });
        let names: Vec<_> = called.iter().map(|&i| module.functions.iter().nth(i).unwrap().1.name.clone().unwrap()).collect();
        assert_eq!(names, ["unimem_flush", "entry"]);
    }

    /// `continue`, `break if`, a loop in a `continuing` block, `while` in a `switch` in a
    /// `loop`, `return` in loops, helpers calling each other, one defined after the entry.
    const TRICKY: &str = "
fn entry(id: u32) {
    var s = 0u;
    for (var i = 0u; i < id; i++) {
        if (i == 3u) { continue; }
        s += a(i);
    }
    loop {
        switch (s % 4u) {
            case 0u: { while (s < 100u) { s += 3u; if (s == 50u) { break; } } }
            case 1u: { s += 1u; }
            default: { return; }
        }
        if (s > 1000u) { break; }
    }
    loop {
        s += 1u;
        continuing {
            var k = 0u;
            loop { k += 1u; if (k > 2u) { break; } }
            break if s > 20u;
        }
    }
}
fn a(x: u32) -> u32 {
    var i = 0u;
    loop {
        if (i > x) { return b(i); }
        i++;
    }
    return 0u;
}
fn b(x: u32) -> u32 {
    var r = x;
    while (r > 1u) { r = r / 2u; }
    return r;
}
";

    #[test]
    fn loops_in_any_control_flow_are_guarded_and_the_module_compiles() {
        let source = format!("{TRICKY}{PRELUDE}");
        let mut module = naga::front::wgsl::parse_str(&source).unwrap();
        let mut user_loops = 0;
        for (_, f) in module.functions.iter_mut().filter(|(_, f)| f.name.as_deref().is_some_and(|n| !n.starts_with("unimem_"))) {
            walk(&mut f.body, &mut |s, _| user_loops += usize::from(matches!(s, Statement::Loop { .. })));
        }
        assert_eq!(user_loops, 7);
        assert_eq!(loops(&mut module, TRICKY.len()), user_loops);
        let info = Validator::new(ValidationFlags::all(), Capabilities::empty()).validate(&module).expect("valid after the rewrite");
        let spirv = naga::back::spv::write_vec(&module, &info, &naga::back::spv::Options::default(), None).expect("SPIR-V");
        assert!(spirv.len() > 100);
    }
}
