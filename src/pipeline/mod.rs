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
use crate::sys::memory::prefetch_whole;
use crate::validate::{RowOutcome, Validator};
use sink::{ItemSink, Items};

/// Records per chunk at most: enough to keep every core busy (a few
/// milliseconds of work per chunk) with few hand-offs between the stages.
const MAX_CHUNK_RECORDS: usize = 4 * 1024;

/// Records per chunk at least, however large each row's outputs.
const MIN_CHUNK_RECORDS: usize = 1024;

/// What a chunk's outputs (each row's outcome and slot) may take: a chunk
/// is written by the validating threads and then read by the walk, and its
/// outputs should stay in the caches in between. `quote`'s rows carry a
/// judgement and a line slot, several times `validate`'s outcome, so its
/// chunks hold fewer rows (benches/RESULTS.md, "Chunks in flight").
const CHUNK_OUTPUT_BYTES: usize = 1 << 20;

/// Records per chunk when each row's outputs take `row_bytes`.
fn chunk_records(row_bytes: usize) -> usize {
    (CHUNK_OUTPUT_BYTES / row_bytes.max(1)).clamp(MIN_CHUNK_RECORDS, MAX_CHUNK_RECORDS)
}

/// Records per chunk for `M`'s outputs.
fn chunk_records_for<M: ItemMap>() -> usize {
    chunk_records(std::mem::size_of::<RowOutcome<M::Out>>() + M::ROW_SCRATCH.max(1))
}

/// Chunk buffers in circulation, each back to the reader only once walked
/// in order: one being read, some queued, some being validated or waiting
/// for an earlier one, one being walked. Too few, and the validating
/// threads run dry while the walk catches up. Too many, and the chunks,
/// outcomes and lines in flight outgrow the caches and are fresh memory
/// that the kernel (and, in a VM, the host) must back on first use: more
/// CPU per row, most of all in `quote`, whose outcomes are larger
/// (benches/RESULTS.md, "Chunks in flight").
const CHUNKS_IN_FLIGHT: usize = 12;

/// How many rows ahead the ordered walk fetches a row's slot into its
/// core's cache ([`fetch_slot_ahead`]): far enough for the fetch to arrive
/// before the row's turn (benches/RESULTS.md, "Slots fetched ahead on the
/// walk").
const ROWS_AHEAD: usize = 8;

/// A validated chunk's outcomes, and its rows' slots ([`ItemMap::ROW_SCRATCH`]).
type Outputs<T> = (Vec<RowOutcome<T>>, Vec<u8>);

/// The threads refleet may keep busy (`--threads`): a rayon pool for the
/// work that splits across threads, and how the validate stage lays out its
/// three steps (read, validate, walk in order).
///
/// With no limit (`--threads 0`, the default), every core validates and the
/// reader and the ordered walk run on threads of their own beside them: the
/// fastest layout. With a limit of `n`, at most `n` threads are busy at
/// once: `n = 1` reads, validates and walks on the calling thread, one
/// chunk after another; `n = 2` adds a reading thread; `n >= 3` has a
/// reading thread, the walk on the calling thread, and `n - 2` validating
/// threads (and one that only hands chunks to them). Other stages use the pool, which has `n` threads (at most `n`
/// busy: they run while the caller waits), or one per core.
pub struct Workers {
    pool: rayon::ThreadPool,
    /// The threads the validate stage may use, when limited.
    limit: Option<usize>,
    /// The validating threads when `limit` is 3 or more.
    validating: Option<rayon::ThreadPool>,
}

impl Workers {
    /// `threads` = 0: no limit, one pool thread per core; else at most
    /// `threads` threads busy (see [`Workers`]).
    pub fn new(threads: usize) -> Result<Workers, rayon::ThreadPoolBuildError> {
        // Thread names show in profiles and `ps -L`; Linux keeps 15 bytes.
        let pool = |n: usize, name: &'static str| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .thread_name(move |i| format!("refleet-{name}{i}"))
                .build()
        };
        let limit = (threads > 0).then_some(threads);
        let validating = match limit {
            Some(n) if n >= 3 => Some(pool(n - 2, "val")?),
            _ => None,
        };
        Ok(Workers {
            pool: pool(threads, "")?,
            limit,
            validating,
        })
    }

    /// No limit, on `pool` (tests and benchmarks).
    pub fn on(pool: rayon::ThreadPool) -> Workers {
        Workers {
            pool,
            limit: None,
            validating: None,
        }
    }
}

impl std::ops::Deref for Workers {
    type Target = rayon::ThreadPool;
    fn deref(&self) -> &rayon::ThreadPool {
        &self.pool
    }
}

/// Runs the stage as a three-step pipeline: one thread reads and splits
/// records, `pool` validates each chunk on all cores, and the calling thread
/// finds duplicates in row order and hands everything to `sink`, so reading,
/// validating and de-duplicating overlap. `expected_rows` (a guess from the
/// file size, 0 if unknown) pre-sizes the duplicate index.
pub fn run(
    source: Box<dyn RecordSource>,
    validator: &Validator<'_>,
    workers: &Workers,
    expected_rows: usize,
    sink: &mut dyn ValidateSink,
    progress: &dyn Progress,
) -> anyhow::Result<ValidateStats> {
    run_mapped(
        source,
        validator,
        workers,
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
    workers: &Workers,
    expected_rows: usize,
    map: &M,
    sink: &mut dyn MappedSink<M::Out>,
    progress: &dyn Progress,
) -> anyhow::Result<ValidateStats> {
    // A chunk validated, with its number in source order and its buffer,
    // which goes back to the reader once the chunk has been walked.
    type Done<T> = (u64, Result<(RecordChunk, Outputs<T>), IngestError>);
    source.read_only(&validator.read_columns());
    let pool = match (workers.limit, &workers.validating) {
        (Some(n), _) if n <= 2 => {
            return run_in_line(source, validator, n, expected_rows, map, sink, progress)
        }
        (_, Some(validating)) => validating,
        _ => &workers.pool,
    };
    let records = chunk_records_for::<M>();
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
                read_chunks(source, records, CHUNKS_IN_FLIGHT, &spare_chunk_rx, &raw_tx)
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
                            validate_chunk(
                                validator,
                                map,
                                &chunk,
                                (&mut outcomes, &mut slots),
                                true,
                            );
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
        let mut walk = Walk::new(
            map,
            sink,
            progress,
            expected_rows,
            pool.current_num_threads(),
        );
        // Chunks validated before an earlier one, by number.
        let mut waiting = BTreeMap::new();
        let mut next = 0u64;
        for (seq, done) in done_rx {
            waiting.insert(seq, done);
            while let Some(done) = waiting.remove(&next) {
                next += 1;
                let (chunk, (mut outcomes, slots)) = done?;
                walk.chunk(&chunk, &mut outcomes, &slots)?;
                let _ = spare_chunk_tx.send(chunk);
                let _ = spare_vec_tx.send((outcomes, slots));
            }
        }
        anyhow::ensure!(
            waiting.is_empty(),
            "internal error: {} validated chunks were never walked in order",
            waiting.len()
        );
        walk.finish()
    })
}

/// [`run_mapped`] with at most `threads` (1 or 2) threads busy: the
/// calling thread validates each chunk and walks it; with 2, another
/// thread reads the next chunks meanwhile.
fn run_in_line<M: ItemMap>(
    mut source: Box<dyn RecordSource>,
    validator: &Validator<'_>,
    threads: usize,
    expected_rows: usize,
    map: &M,
    sink: &mut dyn MappedSink<M::Out>,
    progress: &dyn Progress,
) -> anyhow::Result<ValidateStats> {
    let width = source.headers().len();
    let records = chunk_records_for::<M>();
    let mut walk = Walk::new(map, sink, progress, expected_rows, 1);
    let (mut outcomes, mut slots) = (Vec::new(), Vec::new());
    if threads <= 1 {
        let mut chunk = RecordChunk::with_capacity(records, width);
        loop {
            chunk.clear();
            source.fill(&mut chunk, records)?;
            if chunk.is_empty() {
                break;
            }
            validate_chunk(validator, map, &chunk, (&mut outcomes, &mut slots), false);
            walk.chunk(&chunk, &mut outcomes, &slots)?;
        }
        return walk.finish();
    }
    // One chunk being read while another is validated and walked.
    let (raw_tx, raw_rx) = sync_channel::<Result<RecordChunk, IngestError>>(1);
    let (spare_tx, spare_rx) = std::sync::mpsc::channel::<RecordChunk>();
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("refleet-read".into())
            .spawn_scoped(scope, move || {
                read_chunks(source, records, 3, &spare_rx, &raw_tx)
            })?;
        // Owned here, so that an early return hands the reader an end.
        let spare_tx = spare_tx;
        for chunk in raw_rx {
            let chunk = chunk?;
            validate_chunk(validator, map, &chunk, (&mut outcomes, &mut slots), false);
            walk.chunk(&chunk, &mut outcomes, &slots)?;
            let _ = spare_tx.send(chunk);
        }
        walk.finish()
    })
}

/// The reading step: fills chunks of up to `records` records from `source`
/// and sends them on `raw`, until the source ends, fails (the error is
/// sent) or nobody listens.
/// A fixed set of `buffers` chunk buffers circulates: after the first few,
/// it waits for one to come back on `spare` rather than allocate. Each is
/// made at about its final size: grown by doubling, it would have the
/// kernel clear each step's pages as well.
fn read_chunks(
    mut source: Box<dyn RecordSource>,
    records: usize,
    buffers: usize,
    spare: &std::sync::mpsc::Receiver<RecordChunk>,
    raw: &std::sync::mpsc::SyncSender<Result<RecordChunk, IngestError>>,
) {
    let width = source.headers().len();
    let mut made = 0;
    loop {
        let mut chunk = match spare.try_recv() {
            Ok(c) => c,
            Err(_) if made < buffers => {
                made += 1;
                RecordChunk::with_capacity(records, width)
            }
            Err(_) => match spare.recv() {
                Ok(c) => c,
                Err(_) => break,
            },
        };
        chunk.clear();
        match source.fill(&mut chunk, records) {
            Ok(()) if chunk.is_empty() => break,
            Ok(()) => {
                if raw.send(Ok(chunk)).is_err() {
                    break;
                }
            }
            Err(e) => {
                let _ = raw.send(Err(e));
                break;
            }
        }
    }
}

/// Validates every record of `chunk` into `outcomes`, each valid row's
/// item mapped into its slot of `slots`: split across the current rayon
/// pool's threads when `parallel`, else one after another on this thread.
fn validate_chunk<M: ItemMap>(
    validator: &Validator<'_>,
    map: &M,
    chunk: &RecordChunk,
    (outcomes, slots): (&mut Vec<RowOutcome<M::Out>>, &mut Vec<u8>),
    parallel: bool,
) {
    // Each row's slot: at least a byte, so that the chunks of the slots'
    // buffer line up with the rows.
    let slot_len = M::ROW_SCRATCH.max(1);
    // Grown only: what a slot held before is overwritten by its new row's
    // map, or unused.
    if slots.len() < chunk.len() * slot_len {
        slots.resize(chunk.len() * slot_len, 0);
    }
    let one = |(state, map_state): &mut (_, _), (i, slot): (usize, &mut [u8])| {
        validator.validate_with(state, chunk, chunk.record_at(i), |item, keys| {
            map.map(map_state, item, keys, &mut slot[..M::ROW_SCRATCH])
        })
    };
    if parallel {
        (0..chunk.len())
            .into_par_iter()
            .zip(slots.par_chunks_mut(slot_len))
            .with_min_len(256)
            .map_init(|| (validator.thread_state(), map.state()), one)
            .collect_into_vec(outcomes);
    } else {
        let mut states = (validator.thread_state(), map.state());
        outcomes.clear();
        outcomes.extend(
            (0..chunk.len())
                .zip(slots.chunks_mut(slot_len))
                .map(|row| one(&mut states, row)),
        );
    }
}

/// The ordered walk: each chunk's outcomes, in source order, through the
/// duplicate index and on to the sink, with the counts.
struct Walk<'w, M: ItemMap> {
    map: &'w M,
    sink: &'w mut dyn MappedSink<M::Out>,
    progress: &'w dyn Progress,
    stats: ValidateStats,
    index: DuplicateIndex,
    dups: Vec<Dups>,
    by_code: BTreeMap<RejectCode, u64>,
    warn_by_code: BTreeMap<RejectCode, u64>,
}

impl<'w, M: ItemMap> Walk<'w, M> {
    /// `threads` may share the sizing of the duplicate index.
    fn new(
        map: &'w M,
        sink: &'w mut dyn MappedSink<M::Out>,
        progress: &'w dyn Progress,
        expected_rows: usize,
        threads: usize,
    ) -> Walk<'w, M> {
        let mut index = DuplicateIndex::with_capacity(expected_rows);
        index.threads = threads;
        Walk {
            map,
            sink,
            progress,
            stats: ValidateStats::default(),
            index,
            dups: Vec::new(),
            by_code: BTreeMap::new(),
            warn_by_code: BTreeMap::new(),
        }
    }

    /// Walks one chunk, the next in source order.
    fn chunk(
        &mut self,
        chunk: &RecordChunk,
        outcomes: &mut [RowOutcome<M::Out>],
        slots: &[u8],
    ) -> anyhow::Result<()> {
        let slot_len = M::ROW_SCRATCH.max(1);
        let len = chunk.len();
        self.stats.rows += len as u64;
        let map = self.map;
        check_outcomes(
            &mut self.index,
            outcomes,
            |out| map.mark(out),
            &mut self.dups,
        );
        // By reference: an outcome is a few hundred bytes, and moving each
        // one out of the vector is a copy per row. What is left is dropped
        // on the validating thread when the vector is reused.
        let rows = outcomes
            .iter_mut()
            .zip(&self.dups)
            .zip(slots.chunks(slot_len))
            .enumerate();
        for (i, ((outcome, d), slot)) in rows {
            fetch_slot_ahead::<M>(slots, i + ROWS_AHEAD);
            let rejects = match outcome {
                RowOutcome::Valid {
                    keys,
                    item,
                    warnings,
                } => {
                    if !d.any() {
                        for w in warnings.iter() {
                            *self.warn_by_code.entry(w.code).or_default() += 1;
                            self.sink.warning(w)?;
                        }
                        self.stats.valid += 1;
                        if item.is_some() {
                            self.sink
                                .item(item, keys, &slot[..M::ROW_SCRATCH], &self.index)?;
                        }
                        continue;
                    }
                    let mut rejects = DuplicateIndex::rejects(keys, *d);
                    if let Some(site) = item.as_ref().map(|out| map.site(out)) {
                        for r in &mut rejects {
                            r.site = site.into();
                        }
                    }
                    rejects
                }
                RowOutcome::Rejected { rejects, keys } => {
                    let mut rejects = std::mem::take(rejects);
                    if let Some(keys) = keys.as_ref().filter(|_| d.any()) {
                        rejects.extend(DuplicateIndex::rejects(keys, *d));
                    }
                    rejects
                }
            };
            self.stats.rejected_rows += 1;
            for r in &rejects {
                *self.by_code.entry(r.code).or_default() += 1;
                self.sink.reject(r)?;
            }
        }
        self.progress.rows(len as u64);
        Ok(())
    }

    /// The stage's counts, once the last chunk is walked.
    fn finish(self) -> anyhow::Result<ValidateStats> {
        self.sink.end(&self.index)?;
        let mut stats = self.stats;
        stats.rejects_by_code = self
            .by_code
            .into_iter()
            .map(|(c, n)| (c.to_string(), n))
            .collect();
        stats.warnings_by_code = self
            .warn_by_code
            .into_iter()
            .map(|(c, n)| (c.to_string(), n))
            .collect();
        Ok(stats)
    }
}

/// Fetches row `i`'s slot into this core's cache, if `slots` has one (past
/// a short chunk's end it may be a stale slot: harmless, as a prefetch
/// changes nothing). A slot was written on another core, and reading it
/// (to copy its lines into the reports) would wait for that core's cache
/// at each row: fetched a few rows ahead, it is here when the row's turn
/// comes (benches/RESULTS.md, "Slots fetched ahead on the walk"). The
/// outcomes are not fetched: the duplicate check has just read them.
#[inline]
fn fetch_slot_ahead<M: ItemMap>(slots: &[u8], i: usize) {
    let slot_len = M::ROW_SCRATCH;
    if slot_len == 0 {
        return;
    }
    if let Some(slot) = i
        .checked_mul(slot_len)
        .and_then(|at| slots.get(at..at.checked_add(slot_len)?))
    {
        prefetch_whole(slot);
    }
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
