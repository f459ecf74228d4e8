//! What a bad address is, for the messages of kernel errors: the argument word that held it,
//! a null pointer, the launching thread's stack, the allocation it overran, and otherwise the
//! mapping of the process that holds it (`/proc/self/maps`: a program's globals or string
//! literals, another allocator's memory, an mmap'ed file, nothing at all).
//!
//! Everything here runs on the launching thread after a launch failed, never in a signal
//! handler or on a hot path: it may allocate, lock and read files.

use std::fmt::Write as _;

use super::objects;

/// ` (address ..., what it is)` for an address outside the managed heap, for messages: a null
/// pointer (and why an argument can be one), the launching thread's stack (a `Box` or `Vec`
/// variable passed instead of the heap data it holds), another mapping of the process
/// ([`mapping_text`]), the value of an argument word. Called on the launching thread.
pub(super) fn outside_heap(address: u64, words: &[u32]) -> String {
    let mut s = format!(" (address {address:#x}");
    let argument = words.chunks_exact(2).position(|w| word_pair(w) == address);
    // The same value read from an odd word: a pointer read from the padding before it.
    let straddling = (1..words.len().saturating_sub(1)).step_by(2).find(|&i| word_pair(&words[i..]) == address);
    if address < 4096 {
        s.push_str(if address == 0 { ", a null pointer" } else { ", a null pointer plus an offset?" });
    } else if on_this_threads_stack(address) {
        s.push_str(", on the launching thread's stack: kernels reach heap memory only (malloc, Box, Vec), not local variables");
        if argument.is_some() {
            s.push_str("; pass heap data (in C a malloc'ed buffer; in Rust the data a `Box` or `Vec` holds, `&*b` or `&v[..]`, not the variable)");
        }
    } else if let Ok(maps) = std::fs::read_to_string("/proc/self/maps") {
        s.push_str(&mapping_text(&classify(&maps, address)));
    }
    if let Some(i) = argument {
        let _ = write!(s, "; it is the value of argument word {}", 2 * i);
    } else if let Some(i) = straddling {
        let _ = write!(
            s,
            "; it is argument words {i} and {} read as one 64-bit value: C and Rust put a pointer or a 64-bit field after a 32-bit one at the next even word (8-byte alignment), so read it with unimem_arg_ptr({}u)",
            i + 1,
            i + 1
        );
    }
    s.push(')');
    s
}

/// How far `address` (in no live allocation) is past the end of the nearest live allocation
/// below it, when one ends within [`OVERRUN_REACH`] bytes: `; 12 bytes past the end of the
/// live allocation 0x...+64 (an overrun?)`, else empty. Called to report an error.
pub(super) fn past_the_end(address: u64) -> String {
    let granule = objects::GRANULE as u64;
    // The last byte of each granule below address's own (allocations are whole granules).
    let start = address & !(granule - 1);
    for probe in (0..OVERRUN_REACH / granule).map(|k| start.wrapping_sub(k * granule + 1)) {
        if let Some((b, s)) = unimem_alloc::lookup(probe as *const u8) {
            let end = (b + s) as u64;
            return if end <= address { format!("; {} bytes past the end of the live allocation {b:#x}+{s} (an overrun?)", address - end) } else { String::new() };
        }
    }
    String::new()
}

/// How far below a bad address [`past_the_end`] looks for the allocation it overran.
const OVERRUN_REACH: u64 = 4096;

/// The 64-bit value of argument words `w[0]` (low) and `w[1]`.
pub(super) fn word_pair(w: &[u32]) -> u64 {
    u64::from(w[0]) | u64::from(w[1]) << 32
}

/// Where an argument error happened: the word read, and what the launch passed.
pub(super) fn argument_text(word: u64, passed: usize) -> String {
    format!(
        " (argument word {word}; the launch passed {passed} words, {} bytes. Words are 32-bit: unimem_arg_u64(i) and unimem_arg_ptr(i) read words i and i+1, and the argument struct's size is what counts, with its padding)",
        passed * 4
    )
}

/// True when `address` lies in the calling thread's stack.
fn on_this_threads_stack(address: u64) -> bool {
    let mut attr = std::mem::MaybeUninit::<libc::pthread_attr_t>::uninit();
    // SAFETY: pthread_getattr_np initialises `attr` for the calling thread when it returns 0;
    // only then is it read (by pthread_attr_getstack, into the two locals) and destroyed.
    unsafe {
        if libc::pthread_getattr_np(libc::pthread_self(), attr.as_mut_ptr()) != 0 {
            return false;
        }
        let (mut lo, mut len) = (std::ptr::null_mut(), 0usize);
        let got = libc::pthread_attr_getstack(attr.as_ptr(), &mut lo, &mut len) == 0;
        libc::pthread_attr_destroy(attr.as_mut_ptr());
        got && (lo as u64..lo as u64 + len as u64).contains(&address)
    }
}

/// What holds an address outside the managed heap, from the process's memory map.
#[derive(Debug, PartialEq, Eq)]
enum Mapping {
    /// No mapping: a garbage or stale pointer.
    Unmapped,
    /// The main thread's stack (`[stack]`), seen from another thread.
    MainStack,
    /// The system allocator's brk heap (`[heap]`).
    Brk,
    /// Executable code of a program or library.
    Code(String),
    /// Writable static data of a program or library (globals; `.bss` right after it).
    Data(String),
    /// Read-only data of a program or library (string literals, constants).
    ReadOnly(String),
    /// A file mapped by the program (no executable mapping of it: not a program or library).
    File(String),
    /// Anonymous memory: mmap, another thread's stack, another allocator's large blocks.
    Anonymous,
    /// A kernel-provided mapping such as `[vdso]`, by its name.
    Special(String),
}

/// One line of `/proc/<pid>/maps`: `start-end perms offset dev inode [path]`.
struct MapLine<'a> {
    start: u64,
    end: u64,
    perms: &'a str,
    path: &'a str,
}

fn parse_line(line: &str) -> Option<MapLine<'_>> {
    let mut rest = line;
    let mut field = || {
        let t = rest.trim_start();
        let n = t.find(char::is_whitespace).unwrap_or(t.len());
        rest = &t[n..];
        &t[..n]
    };
    let (start, end) = field().split_once('-')?;
    let perms = field();
    for _ in 0..3 {
        field(); // offset, device, inode
    }
    let (start, end) = (u64::from_str_radix(start, 16).ok()?, u64::from_str_radix(end, 16).ok()?);
    Some(MapLine { start, end, perms, path: rest.trim() })
}

/// The mapping of `maps` (the text of `/proc/self/maps`) that holds `address`.
fn classify(maps: &str, address: u64) -> Mapping {
    let lines: Vec<MapLine> = maps.lines().filter_map(parse_line).collect();
    let Some(i) = lines.iter().position(|l| (l.start..l.end).contains(&address)) else { return Mapping::Unmapped };
    let l = &lines[i];
    // A file some mapping of which is executable is a program or library image.
    let image = |path: &str| lines.iter().any(|m| m.path == path && m.perms.contains('x'));
    let writable = l.perms.starts_with("rw");
    match l.path {
        "[stack]" => Mapping::MainStack,
        "[heap]" => Mapping::Brk,
        p if p.starts_with('[') => Mapping::Special(p.to_owned()),
        "" => match i.checked_sub(1).map(|j| &lines[j]) {
            // .bss: anonymous, writable, right after an image's writable data.
            Some(prev) if writable && prev.end == l.start && prev.perms.starts_with("rw") && image(prev.path) => {
                Mapping::Data(prev.path.to_owned())
            }
            _ => Mapping::Anonymous,
        },
        p if !image(p) => Mapping::File(p.to_owned()),
        p if l.perms.contains('x') => Mapping::Code(p.to_owned()),
        p if writable => Mapping::Data(p.to_owned()),
        p => Mapping::ReadOnly(p.to_owned()),
    }
}

/// How a kernel reaches memory, for the messages about memory it cannot reach.
const REACH: &str = "kernels reach unimem's heap only (malloc under LD_PRELOAD=libunimem.so; Box, Vec and String with `#[global_allocator] static A: unimem::Allocator`)";

/// `, what holds it: what to do` for [`outside_heap`].
fn mapping_text(m: &Mapping) -> String {
    match m {
        Mapping::Unmapped => ", mapped nowhere in this process: an uninitialised, corrupted or stale pointer?".into(),
        Mapping::MainStack => format!(", on the main thread's stack (a local variable?): {REACH}"),
        Mapping::Brk => format!(", in the system allocator's heap, not unimem's: {REACH}"),
        Mapping::Code(p) => format!(", in the code of {p} (a function pointer?)"),
        Mapping::Data(p) => format!(", in the static data of {p} (a global or static variable): {REACH}; copy it there"),
        Mapping::ReadOnly(p) => format!(", in the read-only data of {p} (a string literal or constant?): {REACH}; copy it there"),
        Mapping::File(p) => format!(", in a mapping of the file {p}: {REACH}; read the file into heap memory"),
        Mapping::Anonymous => format!(
            ", in anonymous memory outside unimem's heap (mmap'ed memory, another thread's stack, or memory of another allocator): {REACH}"
        ),
        Mapping::Special(name) => format!(", in the kernel's {name} mapping"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
55d0c0a00000-55d0c0a02000 r--p 00000000 08:01 131 /usr/bin/prog
55d0c0a02000-55d0c0a05000 r-xp 00002000 08:01 131 /usr/bin/prog
55d0c0a05000-55d0c0a06000 r--p 00005000 08:01 131 /usr/bin/prog
55d0c0a06000-55d0c0a07000 rw-p 00006000 08:01 131 /usr/bin/prog
55d0c0a07000-55d0c0a08000 rw-p 00000000 00:00 0 
55d0c1000000-55d0c1021000 rw-p 00000000 00:00 0                          [heap]
7f0000000000-7f0000100000 rw-p 00000000 00:00 0 
7f0000200000-7f0000300000 r--s 00000000 08:01 99   /tmp/data file.bin
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]
7ffd00100000-7ffd00102000 r-xp 00000000 00:00 0                          [vdso]
";

    #[test]
    fn addresses_are_named_by_the_mapping_that_holds_them() {
        let c = |a| classify(MAPS, a);
        let prog = || "/usr/bin/prog".to_string();
        assert_eq!(c(0x55d0c0a00010), Mapping::ReadOnly(prog()));
        assert_eq!(c(0x55d0c0a03000), Mapping::Code(prog()));
        assert_eq!(c(0x55d0c0a05fff), Mapping::ReadOnly(prog()));
        assert_eq!(c(0x55d0c0a06008), Mapping::Data(prog()));
        // .bss: the anonymous mapping right after the image's writable data.
        assert_eq!(c(0x55d0c0a07000), Mapping::Data(prog()));
        assert_eq!(c(0x55d0c1000100), Mapping::Brk);
        assert_eq!(c(0x7f0000000040), Mapping::Anonymous);
        assert_eq!(c(0x7f0000200000), Mapping::File("/tmp/data file.bin".into()));
        assert_eq!(c(0x7ffd00000100), Mapping::MainStack);
        assert_eq!(c(0x7ffd00100000), Mapping::Special("[vdso]".into()));
        // Ends are exclusive; the gaps are unmapped.
        assert_eq!(c(0x55d0c0a08000), Mapping::Unmapped);
        assert_eq!(c(0x7f0000100000), Mapping::Unmapped);
        assert_eq!(c(8), Mapping::Unmapped);
    }

    #[test]
    fn this_process_globals_and_literals_are_named() {
        static GLOBAL: [u32; 4] = [1, 2, 3, 4];
        static mut WRITABLE: [u64; 2] = [0; 2];
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let exe = exe.to_str().unwrap();
        let code = this_process_globals_and_literals_are_named as fn() as usize as u64;
        assert_eq!(classify(&maps, code), Mapping::Code(exe.into()));
        assert_eq!(classify(&maps, GLOBAL.as_ptr() as u64), Mapping::ReadOnly(exe.into()));
        assert_eq!(classify(&maps, "a literal".as_ptr() as u64), Mapping::ReadOnly(exe.into()));
        let writable = std::ptr::addr_of!(WRITABLE) as u64;
        assert_eq!(classify(&maps, writable), Mapping::Data(exe.into()));
        let text = mapping_text(&classify(&maps, writable));
        assert!(text.contains("static data of") && text.contains("#[global_allocator]"), "{text}");
    }
}
