//! The validate stage as a pipeline (SPEC §3): one thread reads records in
//! chunks from `ingest`, each chunk is validated on all cores with rayon,
//! then walked in source order through the duplicate index, so the rejects
//! come out in row order whatever the thread count. Memory is the chunks in
//! flight plus the duplicate index (a few bytes per distinct serial, MAC
//! and license id), never the file.

mod sink;

#[cfg(test)]
mod outcomes_tests;
#[cfg(test)]
mod run_tests;

pub use sink::{ItemMap, MappedSink, ValidateSink, ValidateStats};

use std::collections::BTreeMap;
use std::sync::mpsc::sync_channel;
use std::sync::Mutex;

use rayon::prelude::*;

use crate::dedupe::{DuplicateIndex, Dups, Role};
use crate::domain::RejectCode;
use crate::ingest::{IngestError, RecordChunk, RecordSource};
use crate::progress::Progress;
use crate::validate::{RowOutcome, Validator};
use sink::{ItemSink, Items};

/// Records per chunk: enough to keep every core busy (a few milliseconds of
/// work per chunk), few enough that a chunk and its outcomes stay in the
/// caches between stages and that the chunks in flight hold little memory,
/// which the kernel must clear on first use. Eight times as many were
/// slower and held more memory; half as many were slower again (more
/// hand-offs).
pub const CHUNK_RECORDS: usize = 4 * 1024;

/// Chunk buffers in circulation, each back to the reader only once walked
/// in order: one being read, some queued, some being validated or waiting
/// for an earlier one, one being walked. The ordered walk runs on a thread
/// of its own, which the workers can get ahead of for a while; with too few
/// buffers they then run dry and spin idle, taking CPU from the walk they
/// wait for. A quarter as many left the cores idle part of the time, for
/// less memory; twice as many were slower again (more memory to clear,
/// fewer cache hits).
const CHUNKS_IN_FLIGHT: usize = 32;

/// A validated chunk's outcomes, and its rows' slots ([`ItemMap::SLOT`]).
type Outputs<T> = (Vec<RowOutcome<T>>, Vec<u8>);

/// Runs the stage as a three-step pipeline: one thread reads and splits
/// records, `pool` validates each chunk on all cores, and the calling thread
/// finds duplicates in row order and hands everything to `sink`, so reading,
/// validating and de-duplicating overlap. `expected_rows` (a guess from the
/// file size, 0 if unknown) pre-sizes the duplicate index.
pub fn run(
    source: Box<dyn RecordSource>,
    validator: &Validator<'_>,
    pool: &rayon::ThreadPool,
    expected_rows: usize,
    sink: &mut dyn ValidateSink,
    progress: &dyn Progress,
) -> anyhow::Result<ValidateStats> {
    run_mapped(
        source,
        validator,
        pool,
        expected_rows,
        &Items,
        &mut ItemSink(sink),
        progress,
    )
}

/// [`run`], with `map` applied to each valid row's item on the validating
/// threads and its outputs handed to `sink` in source order (items are
/// built only when the validator's options keep them).
pub fn run_mapped<M: ItemMap>(
    mut source: Box<dyn RecordSource>,
    validator: &Validator<'_>,
    pool: &rayon::ThreadPool,
    expected_rows: usize,
    map: &M,
    sink: &mut dyn MappedSink<M::Out>,
    progress: &dyn Progress,
) -> anyhow::Result<ValidateStats> {
    // A chunk validated, with its number in source order and its buffer,
    // which goes back to the reader once the chunk has been walked.
    type Done<T> = (u64, Result<(RecordChunk, Outputs<T>), IngestError>);
    source.read_only(&validator.read_columns());
    // Each row's slot: at least a byte, so that the chunks of the slots'
    // buffer line up with the rows.
    let slot_len = M::SLOT.max(1);
    let (raw_tx, raw_rx) = sync_channel::<Result<RecordChunk, IngestError>>(2);
    let (done_tx, done_rx) = sync_channel::<Done<M::Out>>(CHUNKS_IN_FLIGHT);
    // Buffers go back upstream to be refilled: fresh multi-megabyte buffers
    // per chunk cost the kernel more in page clearing than the parsing.
    let (spare_chunk_tx, spare_chunk_rx) = std::sync::mpsc::channel::<RecordChunk>();
    let (spare_vec_tx, spare_vec_rx) = std::sync::mpsc::channel::<Outputs<M::Out>>();
    let spare_vec_rx = Mutex::new(spare_vec_rx);
    std::thread::scope(|scope| {
        // Named, so that profiles tell the stages apart.
        std::thread::Builder::new()
            .name("refleet-read".into())
            .spawn_scoped(scope, move || {
                // A fixed set of chunk buffers circulates: after the first few,
                // the reader waits for one to come back rather than allocate.
                // Each is made at about its final size: grown by doubling, it
                // had the kernel clear each step's pages as well.
                let width = source.headers().len();
                let mut made = 0;
                loop {
                    let mut chunk = match spare_chunk_rx.try_recv() {
                        Ok(c) => c,
                        Err(_) if made < CHUNKS_IN_FLIGHT => {
                            made += 1;
                            RecordChunk::with_capacity(CHUNK_RECORDS, width)
                        }
                        Err(_) => match spare_chunk_rx.recv() {
                            Ok(c) => c,
                            Err(_) => break,
                        },
                    };
                    chunk.clear();
                    match source.fill(&mut chunk, CHUNK_RECORDS) {
                        Ok(()) if chunk.is_empty() => break,
                        Ok(()) => {
                            if raw_tx.send(Ok(chunk)).is_err() {
                                break;
                            }
                        }
                        Err(e) => {
                            let _ = raw_tx.send(Err(e));
                            break;
                        }
                    }
                }
            })?;
        let spare_vec_rx = &spare_vec_rx;
        std::thread::Builder::new()
            .name("refleet-check".into())
            .spawn_scoped(scope, move || {
                // Each chunk is a task of the pool, its rows split across the
                // threads; the next chunk's task is queued before this one
                // ends, so the threads go from one chunk to the next without
                // waiting to be handed it (waiting, then waking, at each
                // chunk left the cores idle part of the time).
                pool.in_place_scope(|tasks| {
                    for (seq, chunk) in (0u64..).zip(raw_rx) {
                        let done_tx = done_tx.clone();
                        let chunk = match chunk {
                            Ok(chunk) => chunk,
                            Err(e) => {
                                let _ = done_tx.send((seq, Err(e)));
                                break;
                            }
                        };
                        tasks.spawn(move |_| {
                            let (mut outcomes, mut slots) = spare_vec_rx
                                .lock()
                                .ok()
                                .and_then(|rx| rx.try_recv().ok())
                                .unwrap_or_default();
                            // Grown only: what a slot held before is
                            // overwritten by its new row's map, or unused.
                            if slots.len() < chunk.len() * slot_len {
                                slots.resize(chunk.len() * slot_len, 0);
                            }
                            (0..chunk.len())
                                .into_par_iter()
                                .zip(slots.par_chunks_mut(slot_len))
                                .with_min_len(256)
                                .map_init(
                                    || (validator.thread_state(), map.state()),
                                    |(state, map_state), (i, slot)| {
                                        validator.validate_with(
                                            state,
                                            &chunk,
                                            chunk.record_at(i),
                                            |item, keys| {
                                                map.map(map_state, item, keys, &mut slot[..M::SLOT])
                                            },
                                        )
                                    },
                                )
                                .collect_into_vec(&mut outcomes);
                            // The walker may have stopped on an error; then
                            // nobody wants it.
                            let _ = done_tx.send((seq, Ok((chunk, (outcomes, slots)))));
                        });
                    }
                });
            })?;
        // Owned here, so that an early return hands the reader an end
        // instead of leaving it waiting for a buffer.
        let (spare_chunk_tx, spare_vec_tx) = (spare_chunk_tx, spare_vec_tx);
        let mut stats = ValidateStats::default();
        let mut index = DuplicateIndex::with_capacity(expected_rows);
        index.threads = pool.current_num_threads();
        let mut dups = Vec::new();
        let mut by_code: BTreeMap<RejectCode, u64> = BTreeMap::new();
        let mut warn_by_code: BTreeMap<RejectCode, u64> = BTreeMap::new();
        // Chunks validated before an earlier one, by number.
        let mut waiting = BTreeMap::new();
        let mut next = 0u64;
        for (seq, done) in done_rx {
            waiting.insert(seq, done);
            while let Some(done) = waiting.remove(&next) {
                next += 1;
                let (chunk, (mut outcomes, slots)) = done?;
                let len = chunk.len();
                stats.rows += len as u64;
                check_outcomes(&mut index, &outcomes, |out| map.mark(out), &mut dups);
                // By reference: an outcome is a few hundred bytes, and moving
                // each one out of the vector showed in profiles. What is left
                // is dropped on the validating thread when the vector is reused.
                let rows = outcomes.iter_mut().zip(&dups).zip(slots.chunks(slot_len));
                for ((outcome, d), slot) in rows {
                    let rejects = match outcome {
                        RowOutcome::Valid {
                            keys,
                            item,
                            warnings,
                        } => {
                            if !d.any() {
                                for w in warnings.iter() {
                                    *warn_by_code.entry(w.code).or_default() += 1;
                                    sink.warning(w)?;
                                }
                                stats.valid += 1;
                                if item.is_some() {
                                    sink.item(item, &slot[..M::SLOT], &index)?;
                                }
                                continue;
                            }
                            DuplicateIndex::rejects(keys, *d)
                        }
                        RowOutcome::Rejected { rejects, keys } => {
                            let mut rejects = std::mem::take(rejects);
                            if let Some(keys) = keys.as_ref().filter(|_| d.any()) {
                                rejects.extend(DuplicateIndex::rejects(keys, *d));
                            }
                            rejects
                        }
                    };
                    stats.rejected_rows += 1;
                    for r in &rejects {
                        *by_code.entry(r.code).or_default() += 1;
                        sink.reject(r)?;
                    }
                }
                progress.rows(len as u64);
                let _ = spare_chunk_tx.send(chunk);
                let _ = spare_vec_tx.send((outcomes, slots));
            }
        }
        anyhow::ensure!(
            waiting.is_empty(),
            "internal error: {} validated chunks were never walked in order",
            waiting.len()
        );
        sink.end(&index)?;
        stats.rejects_by_code = by_code
            .into_iter()
            .map(|(c, n)| (c.to_string(), n))
            .collect();
        stats.warnings_by_code = warn_by_code
            .into_iter()
            .map(|(c, n)| (c.to_string(), n))
            .collect();
        Ok(stats)
    })
}

/// [`DuplicateIndex::check_chunk`] over a chunk's outcomes, one entry
/// per outcome; the serial of a row whose output `mark` picks is
/// recorded marked. A rejected row's keys are looked up, never
/// recorded: it is told which of them repeat an earlier valid row's,
/// and shadows no later row.
fn check_outcomes<T>(
    index: &mut DuplicateIndex,
    outcomes: &[RowOutcome<T>],
    mark: impl Fn(&T) -> bool,
    dups: &mut Vec<Dups>,
) {
    if index.expected_rows > 0 {
        index.size_from(
            outcomes.len(),
            outcomes.iter().filter_map(|o| match o {
                RowOutcome::Valid { keys, .. } => Some(keys),
                RowOutcome::Rejected { .. } => None,
            }),
        );
    }
    index.check_each(
        outcomes.len(),
        |i| match outcomes.get(i) {
            Some(RowOutcome::Valid { keys, item, .. }) => Some((
                keys,
                Role::Record {
                    mark: item.as_ref().is_some_and(&mark),
                },
            )),
            Some(RowOutcome::Rejected {
                keys: Some(keys), ..
            }) => Some((keys, Role::LookUp)),
            _ => None,
        },
        dups,
    );
}
