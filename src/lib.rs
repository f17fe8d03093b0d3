//! refleet: bulk reactivation of Poly device fleets and their licenses.
//!
//! The pipeline, one module per stage (SPEC §1):
//!
//! 1. [`ingest`] reads CSV (plain, gzip, zstd), Parquet or stdin into raw records;
//! 2. [`validate`] turns each into a typed [`domain::Item`] or rejects, and
//!    [`dedupe`] finds repeated identifiers; [`pipeline`] runs the two,
//!    validating in parallel and de-duplicating in row order;
//! 3. [`eligibility`] decides, [`quote`] prices, [`plan`] puts them
//!    together, and [`submit`] sends, journals and tracks;
//! 4. [`report`] writes every output atomically and spreadsheet-safe.
//!
//! [`sim`] serves the vendor API (SPEC §6, §8) on loopback for tests and
//! `refleet run`. [`policy`] holds the rules every stage reads; [`gen`] makes realistic test
//! inventories; [`app`] holds the steps the commands share; [`cli`] is the
//! command line and nothing else.

#![deny(unsafe_code)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod api;
pub mod app;
pub mod audit;
pub mod cli;
pub mod contracts;
pub mod dedupe;
pub mod domain;
pub mod eligibility;
pub mod gen;
pub mod ingest;
pub mod logging;
pub mod pipeline;
pub mod plan;
pub mod policy;
pub mod progress;
pub mod quote;
pub mod report;
pub mod sim;
pub mod submit;
// The one place `unsafe` and target-specific code may live (see its docs).
#[allow(unsafe_code)]
pub mod sys;
pub mod validate;
