//! Everything refleet does that the compiler cannot check: `unsafe` code
//! and code for one target (CPU or operating system), each behind a safe
//! API that holds for any input, with tests beside it.
//!
//! The rest of the crate is `#![deny(unsafe_code)]`; CI fails when
//! `unsafe` appears outside this folder (`.ci/run`). What is here, and why
//! it is not plain safe Rust:
//! - [`memory`]: a prefetch hint and having the kernel back large tables
//!   with pages up front, on several threads (the duplicate index).
//! - [`ascii`]: short ASCII strings read as text without a UTF-8 check
//!   (serial numbers).
//! - [`fs`]: asking whether a process exists, starting the write-out of a
//!   file's dirty pages, and turning `O_DIRECT` on and off (the report
//!   writer and its clean-up of dead runs' temporary files).

pub mod ascii;
pub mod fs;
pub mod memory;
