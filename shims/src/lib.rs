//! libunimem.so
