//! Samples of unimem. Empty until the kernel issue lands the demo; the README runs
//! `unimem info` until then.
