//! What a bad address is, for the messages of kernel errors: the argument word that held it,
//! a null pointer, the launching thread's stack, the allocation it overran, and otherwise
//! what holds it: a segment of the program or a library (`dl_iterate_phdr`: its globals, its
//! string literals and constants, its code), else a mapping of the process
//! (`/proc/self/maps`: a stack, another allocator's memory, an mmap'ed file, nothing).
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
    } else if let Some(m) = image_segment(address) {
        s.push_str(&mapping_text(&m));
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
    /// Writable static data of a program or library (globals, `.data` and `.bss`).
    Data(String),
    /// Read-only data of a program or library (string literals, constants, relocated
    /// read-only data).
    ReadOnly(String),
    /// A file mapped outside every loaded segment: mapped by the program.
    File(String),
    /// Anonymous memory: mmap, another thread's stack, another allocator's large blocks, a
    /// language runtime's arenas.
    Anonymous,
    /// A kernel-provided mapping such as `[vdso]`, by its name.
    Special(String),
}

/// One line of `/proc/<pid>/maps`: `start-end perms offset dev inode [path]`.
struct MapLine<'a> {
    start: u64,
    end: u64,
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
    for _ in 0..4 {
        field(); // permissions, offset, device, inode
    }
    let (start, end) = (u64::from_str_radix(start, 16).ok()?, u64::from_str_radix(end, 16).ok()?);
    Some(MapLine { start, end, path: rest.trim() })
}

/// The mapping of `maps` (the text of `/proc/self/maps`) that holds `address`, for an address
/// in no loaded segment ([`image_segment`] first).
fn classify(maps: &str, address: u64) -> Mapping {
    let Some(l) = maps.lines().filter_map(parse_line).find(|l| (l.start..l.end).contains(&address)) else { return Mapping::Unmapped };
    match l.path {
        "[stack]" => Mapping::MainStack,
        "[heap]" => Mapping::Brk,
        p if p.starts_with('[') => Mapping::Special(p.to_owned()),
        "" => Mapping::Anonymous,
        p => Mapping::File(p.to_owned()),
    }
}

/// The segment of the program or of a loaded library that holds `address`, from the dynamic
/// linker's list of loaded objects: its exact extent, `.bss` included (a `/proc/self/maps`
/// guess would take an anonymous mapping that happens to follow a library's data for it).
/// Code, writable data, or read-only data (which includes the part of the writable segment
/// the linker made read-only after relocation, `PT_GNU_RELRO`).
fn image_segment(address: u64) -> Option<Mapping> {
    struct Search {
        address: u64,
        /// The object's name (empty: the program) and the segment's flags (`PF_*`).
        found: Option<(String, u32)>,
    }
    unsafe extern "C" fn visit(info: *mut libc::dl_phdr_info, _size: usize, data: *mut libc::c_void) -> libc::c_int {
        // SAFETY: `data` is the `Search` that `image_segment` passed, alive and not otherwise
        // used during the call; `info` is valid during the callback, and its `dlpi_phdr`
        // points to `dlpi_phnum` headers.
        let (search, info) = unsafe { (&mut *data.cast::<Search>(), &*info) };
        let headers = match info.dlpi_phdr.is_null() {
            true => &[][..],
            // SAFETY: as above: `dlpi_phnum` headers at `dlpi_phdr`, valid during the call.
            false => unsafe { std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum)) },
        };
        let holds = |h: &libc::Elf64_Phdr| (info.dlpi_addr + h.p_vaddr..info.dlpi_addr + h.p_vaddr + h.p_memsz).contains(&search.address);
        let Some(load) = headers.iter().find(|h| h.p_type == libc::PT_LOAD && holds(h)) else { return 0 };
        let relro = headers.iter().any(|h| h.p_type == libc::PT_GNU_RELRO && holds(h));
        let flags = if relro { load.p_flags & !libc::PF_W } else { load.p_flags };
        // SAFETY: a non-null `dlpi_name` is a NUL-terminated string the linker keeps.
        let name = if info.dlpi_name.is_null() { String::new() } else { unsafe { std::ffi::CStr::from_ptr(info.dlpi_name) }.to_string_lossy().into_owned() };
        search.found = Some((name, flags));
        1
    }
    let mut search = Search { address, found: None };
    // SAFETY: `visit` matches the callback's type and only uses `search` through `data`,
    // during this call.
    unsafe { libc::dl_iterate_phdr(Some(visit), (&mut search as *mut Search).cast()) };
    let (name, flags) = search.found?;
    let name = match name.as_str() {
        "" => std::fs::read_link("/proc/self/exe").map_or_else(|_| "the program".into(), |p| p.to_string_lossy().into_owned()),
        _ => name,
    };
    Some(if flags & libc::PF_X != 0 {
        Mapping::Code(name)
    } else if flags & libc::PF_W != 0 {
        Mapping::Data(name)
    } else {
        Mapping::ReadOnly(name)
    })
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
            ", in anonymous memory outside unimem's heap (mmap'ed memory, another thread's stack, another allocator's memory, or a language runtime's own arenas, such as CPython's pymalloc, which PYTHONMALLOC=malloc turns off): {REACH}"
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
        // A program's segments are found by `image_segment`; here they are files like any.
        assert_eq!(c(0x55d0c0a06008), Mapping::File("/usr/bin/prog".into()));
        // No guess from neighbours: anonymous is anonymous.
        assert_eq!(c(0x55d0c0a07000), Mapping::Anonymous);
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
    fn this_process_segments_are_named() {
        static GLOBAL: [u32; 4] = [1, 2, 3, 4];
        static mut ZEROED: [u64; 2] = [0; 2];
        static mut DATA: [u64; 2] = [1, 2];
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let exe = || exe.to_str().unwrap().to_string();
        let code = this_process_segments_are_named as fn() as usize as u64;
        assert_eq!(image_segment(code), Some(Mapping::Code(exe())));
        assert_eq!(image_segment(GLOBAL.as_ptr() as u64), Some(Mapping::ReadOnly(exe())));
        assert_eq!(image_segment("a literal".as_ptr() as u64), Some(Mapping::ReadOnly(exe())));
        // .bss (zero-initialised) and .data.
        assert_eq!(image_segment(std::ptr::addr_of!(ZEROED) as u64), Some(Mapping::Data(exe())));
        assert_eq!(image_segment(std::ptr::addr_of!(DATA) as u64), Some(Mapping::Data(exe())));
        // A library's code, by its name.
        match image_segment(libc::getpid as unsafe extern "C" fn() -> libc::pid_t as usize as u64) {
            Some(Mapping::Code(lib)) => assert!(lib.contains("libc.so"), "{lib}"),
            other => panic!("{other:?}"),
        }
        // Heap memory and the stack are in no segment.
        let boxed = Box::new(5u64);
        assert_eq!(image_segment(&*boxed as *const u64 as u64), None);
        let local = 5u64;
        assert_eq!(image_segment(&local as *const u64 as u64), None);
        let text = mapping_text(&Mapping::Data(exe()));
        assert!(text.contains("static data of") && text.contains("#[global_allocator]"), "{text}");
    }
}
