//! The allocator's options: one table, read once from `UNIMEM_*` environment variables at
//! initialisation (before `main` under `LD_PRELOAD`, so parsing never allocates).
//! Every option is documented in `docs/OPTIONS.md`; keep the two in step.

use crate::os;

/// How an option's text is read.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    /// A byte count: decimal, optional `K`/`M`/`G`/`T` suffix (powers of 1024).
    Bytes,
    /// `0`/`1` (also `false`/`true`, `no`/`yes`, `off`/`on`).
    Bool,
    /// A duration: decimal milliseconds, no suffix.
    Millis,
}

/// One row of the table.
pub struct Opt {
    pub name: &'static str,
    pub kind: Kind,
    pub default: u64,
    pub min: u64,
    pub max: u64,
    pub doc: &'static str,
}

/// Indices into [`TABLE`].
pub const ARENA_SIZE: usize = 0;
pub const INTERNAL_HEAP_SIZE: usize = 1;
pub const PURGE_THRESHOLD: usize = 2;
pub const PURGE_DELAY: usize = 3;
pub const VERBOSE: usize = 4;

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

pub static TABLE: [Opt; 5] = [
    Opt {
        name: "UNIMEM_ARENA_SIZE",
        kind: Kind::Bytes,
        default: 64 * GIB,
        min: 64 * MIB,
        max: 64 * 1024 * GIB,
        doc: "address space reserved for the managed (migratable) heap",
    },
    Opt {
        name: "UNIMEM_INTERNAL_HEAP_SIZE",
        kind: Kind::Bytes,
        default: 16 * GIB,
        min: 64 * MIB,
        max: 16 * 1024 * GIB,
        doc: "address space reserved for the internal heap (runtime and driver memory)",
    },
    Opt {
        name: "UNIMEM_PURGE_THRESHOLD",
        kind: Kind::Bytes,
        default: 32 * MIB,
        min: 0,
        max: u64::MAX,
        doc: "free-but-resident bytes a heap keeps however long they stay free",
    },
    Opt {
        name: "UNIMEM_PURGE_DELAY",
        kind: Kind::Millis,
        default: 10,
        min: 0,
        max: 3_600_000,
        doc: "milliseconds free memory beyond the purge threshold stays resident before it is returned",
    },
    Opt {
        name: "UNIMEM_VERBOSE",
        kind: Kind::Bool,
        default: 0,
        min: 0,
        max: 1,
        doc: "print the resolved configuration to stderr at start-up",
    },
];

/// Parse `text` as the option `opt` expects. `None` when it is not a valid value.
pub fn parse(opt: &Opt, text: &[u8]) -> Option<u64> {
    let v = match opt.kind {
        Kind::Bool => match text {
            b"1" | b"true" | b"yes" | b"on" => 1,
            b"0" | b"false" | b"no" | b"off" => 0,
            _ => return None,
        },
        Kind::Millis => decimal(text)?,
        Kind::Bytes => {
            let (digits, shift) = match text.last()? {
                b'k' | b'K' => (&text[..text.len() - 1], 10),
                b'm' | b'M' => (&text[..text.len() - 1], 20),
                b'g' | b'G' => (&text[..text.len() - 1], 30),
                b't' | b'T' => (&text[..text.len() - 1], 40),
                _ => (text, 0),
            };
            decimal(digits)?.checked_mul(1u64 << shift)?
        }
    };
    if v < opt.min || v > opt.max {
        return None;
    }
    Some(v)
}

/// A non-empty run of decimal digits that fits in a `u64`.
fn decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    let mut n: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add((d - b'0') as u64)?;
    }
    Some(n)
}

/// The value of option `index`: from the environment if set and valid, else the default.
/// An invalid value is reported on stderr (naming the variable and the accepted range)
/// and the default is used: an allocator cannot refuse to start.
pub fn get(index: usize) -> u64 {
    let opt = &TABLE[index];
    match os::getenv(opt.name) {
        None => opt.default,
        Some(text) => match parse(opt, text) {
            Some(v) => v,
            None => {
                let mut l = os::Line::new();
                l.s("unimem: ignoring invalid ").s(opt.name).s(" (expected ");
                match opt.kind {
                    Kind::Bool => l.s("0 or 1"),
                    Kind::Bytes => l.s("a byte count like 64G, from ").dec(opt.min as usize).s(" bytes"),
                    Kind::Millis => l.s("milliseconds, up to ").dec(opt.max as usize),
                };
                l.s("); using the default ").dec(opt.default as usize);
                l.print();
                opt.default
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sizes_and_rejects_garbage() {
        let o = &TABLE[ARENA_SIZE];
        assert_eq!(parse(o, b"64G"), Some(64 << 30));
        assert_eq!(parse(o, b"128m"), Some(128 << 20));
        assert_eq!(parse(o, b"1T"), Some(1 << 40));
        assert_eq!(parse(o, b"1M"), None, "below the minimum");
        assert_eq!(parse(o, b"12x"), None);
        assert_eq!(parse(o, b""), None);
        assert_eq!(parse(o, b"G"), None);
        assert_eq!(parse(o, b"99999999999999999999999"), None, "overflow");
        let b = &TABLE[VERBOSE];
        assert_eq!(parse(b, b"yes"), Some(1));
        assert_eq!(parse(b, b"2"), None);
        let d = &TABLE[PURGE_DELAY];
        assert_eq!(parse(d, b"0"), Some(0));
        assert_eq!(parse(d, b"250"), Some(250));
        assert_eq!(parse(d, b"10ms"), None, "no suffix");
        assert_eq!(parse(d, b"3600001"), None, "above the maximum");
    }
}
