//! The memory allocator of every lark-bridge binary: mimalloc.
//!
//! Each callback allocates many short-lived buffers (the body, the decrypted
//! JSON, header values, the log line). Under glibc's malloc that was 16 % of
//! the ingress's CPU, with fragmentation work (`malloc_consolidate`) on top;
//! mimalloc's per-thread free lists make each allocation a few instructions.
//! Set here, in the crate every binary links, so it is chosen in one place.
//! `deploy/bench/instructions` shows the difference; BENCHMARKS.md has it.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
