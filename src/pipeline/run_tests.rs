//! Tests of the pipeline end to end on the sample inventory and small CSV
//! files: order, every code of a row, and errors on either side.

use super::*;
use crate::domain::{Item, Reject};
use crate::ingest::{InputPath, RecordSource};
use crate::policy::Policy;
use crate::validate::{ValidateOptions, Validator};

/// The sample inventory in chunks of 37 records, failing with an I/O
/// error at the given chunk.
struct Small {
    inner: Box<dyn RecordSource>,
    chunks: usize,
    fail_at: Option<usize>,
}

impl RecordSource for Small {
    fn headers(&self) -> &[String] {
        self.inner.headers()
    }
    fn fill(&mut self, chunk: &mut RecordChunk, _: usize) -> Result<(), IngestError> {
        if Some(self.chunks) == self.fail_at {
            return Err(IngestError::Io(std::io::Error::other(
                "the disk is on fire",
            )));
        }
        self.chunks += 1;
        self.inner.fill(chunk, 37)
    }
}

/// Rows as the sink sees them; fails at the given item.
struct Rows {
    rows: Vec<u64>,
    fail_at: Option<usize>,
}

impl ValidateSink for Rows {
    fn item(&mut self, item: Item) -> anyhow::Result<()> {
        if Some(self.rows.len()) == self.fail_at {
            anyhow::bail!("the report disk is full");
        }
        self.rows.push(item.row);
        Ok(())
    }
    fn reject(&mut self, r: &Reject) -> anyhow::Result<()> {
        if self.rows.last() != Some(&r.row) {
            self.rows.push(r.row);
        }
        Ok(())
    }
    fn warning(&mut self, _: &Reject) -> anyhow::Result<()> {
        Ok(())
    }
}

/// Every layout of the stage's threads: no limit on pools of 1 to 3
/// threads, and limits of 1 to 4 busy threads (see [`Workers`]).
fn layouts() -> Vec<(String, Workers)> {
    let mut all: Vec<(String, Workers)> = (1..=3)
        .map(|n| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .unwrap();
            (format!("no limit, {n} threads"), Workers::on(pool))
        })
        .collect();
    all.extend((1..=4).map(|n| (format!("--threads {n}"), Workers::new(n).unwrap())));
    all
}

fn run_sample(
    workers: &Workers,
    fail_source: Option<usize>,
    fail_sink: Option<usize>,
) -> (anyhow::Result<ValidateStats>, Vec<u64>) {
    let policy = Policy::load(None).unwrap();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-data/inventory.csv");
    let opened = crate::ingest::open(&InputPath::File(path), &Default::default()).unwrap();
    let options = ValidateOptions {
        keep_items: true,
        ..ValidateOptions::default()
    };
    let validator = Validator::new(&policy, options, opened.source.as_ref()).unwrap();
    let source = Small {
        inner: opened.source,
        chunks: 0,
        fail_at: fail_source,
    };
    let mut sink = Rows {
        rows: Vec::new(),
        fail_at: fail_sink,
    };
    let result = run(
        Box::new(source),
        &validator,
        workers,
        0,
        &mut sink,
        &crate::progress::NoProgress,
    );
    (result, sink.rows)
}

/// Rejects, as (row, code), and the valid rows of a CSV inventory.
fn rejects_of(csv: &str) -> (Vec<(u64, RejectCode)>, Vec<u64>) {
    struct Collect(Vec<(u64, RejectCode)>, Vec<u64>);
    impl ValidateSink for Collect {
        fn item(&mut self, item: Item) -> anyhow::Result<()> {
            self.1.push(item.row);
            Ok(())
        }
        fn reject(&mut self, r: &Reject) -> anyhow::Result<()> {
            self.0.push((r.row, r.code));
            Ok(())
        }
        fn warning(&mut self, _: &Reject) -> anyhow::Result<()> {
            Ok(())
        }
    }
    let policy = Policy::load(None).unwrap();
    let source = crate::ingest::CsvSource::new(
        Box::new(std::io::Cursor::new(csv.as_bytes().to_vec())),
        None,
        1024,
    )
    .unwrap();
    let validator = Validator::new(&policy, ValidateOptions::default(), &source).unwrap();
    let pool = super::Workers::new(1).unwrap();
    let mut sink = Collect(Vec::new(), Vec::new());
    run(
        Box::new(source),
        &validator,
        &pool,
        0,
        &mut sink,
        &crate::progress::NoProgress,
    )
    .unwrap();
    (sink.0, sink.1)
}

/// A rejected row whose serial or MAC repeats an earlier valid row's is
/// told so along with its other codes; its own identifiers are not
/// recorded, so the later rows that carry them are valid.
#[test]
fn a_rejected_row_gets_every_code_and_shadows_nothing() {
    let (rejects, valid) = rejects_of(
        "serial_number,mac_address,model,account_id,contract_id,country,deactivated_at\n\
         0004F2000001,00:04:F2:00:00:01,VVX 450,ACME-1,C-1,US,2026-10-01\n\
         0004F2000001,00:04:F2:00:00:02,VVX 450,ACME-1,C-1,US,2026-10-01\n\
         0004F2000003,00:04:F2:00:00:01,VVX 450,ACME-1,C-1,Atlantis,2026-10-01\n\
         0004F2000004,00:04:F2:00:00:05,VVX 450,ACME-1,C-1,US,2026-10-01\n\
         0004F2000004,00:04:F2:00:00:04,VVX 450,ACME-1,C-1,US,2026-10-01\n\
         0004F2000005,00:04:F2:00:00:05,VVX 450,ACME-1,C-1,US,2026-10-01\n",
    );
    use RejectCode::*;
    assert_eq!(
        rejects,
        [
            (2, SerialMacMismatch),
            (2, DuplicateSerial),
            (3, CountryInvalid),
            (3, SerialMacMismatch),
            (3, DuplicateMac),
            (4, SerialMacMismatch),
        ]
    );
    assert_eq!(valid, [1, 5, 6]);
}

/// With many small chunks in flight at once, every row reaches the sink
/// once, in source order, whatever the thread count.
#[test]
fn many_chunks_come_out_whole_and_in_order() {
    let mut first = None;
    for (layout, workers) in layouts() {
        let (stats, rows) = run_sample(&workers, None, None);
        let stats = stats.unwrap();
        assert_eq!(stats.rows, 2000);
        assert_eq!(rows.len(), 2000, "{layout}");
        assert!(rows.windows(2).all(|w| w[0] < w[1]), "{layout}");
        // Every layout gives the same counts, by code too.
        let counts = (
            stats.valid,
            stats.rejected_rows,
            stats.rejects_by_code,
            stats.warnings_by_code,
        );
        assert_eq!(
            first.get_or_insert_with(|| counts.clone()),
            &counts,
            "{layout}"
        );
    }
}

/// A read error part-way ends the run with that error, after the rows
/// before it, in order; a sink error ends it too. Neither hangs.
#[test]
fn errors_of_the_source_or_the_sink_end_the_run() {
    for (layout, workers) in layouts() {
        let (result, rows) = run_sample(&workers, Some(9), None);
        let e = result.unwrap_err();
        assert!(format!("{e:#}").contains("the disk is on fire"), "{e:#}");
        assert_eq!(rows.len(), 9 * 37, "{layout}");
        assert!(rows.windows(2).all(|w| w[0] < w[1]));

        let (result, rows) = run_sample(&workers, None, Some(150));
        let e = result.unwrap_err();
        assert!(
            format!("{e:#}").contains("the report disk is full"),
            "{e:#}"
        );
        assert!(rows.len() >= 150 && rows.len() < 2000, "{}", rows.len());
    }
}

/// A chunk holds as many rows as keep its outputs within the budget,
/// within the bounds: `validate`'s outcomes alone get the most rows, a row
/// that also carries a line slot (as `quote`'s do) fewer.
#[test]
fn chunks_hold_fewer_rows_when_each_row_carries_more() {
    assert_eq!(chunk_records(0), MAX_CHUNK_RECORDS);
    assert_eq!(chunk_records(usize::MAX), MIN_CHUNK_RECORDS);
    let row_bytes = std::mem::size_of::<RowOutcome<Box<Item>>>() + 256;
    let rows = chunk_records(row_bytes);
    assert!(MIN_CHUNK_RECORDS < rows && rows < MAX_CHUNK_RECORDS);
    assert!(rows * row_bytes <= CHUNK_OUTPUT_BYTES);
    assert!((rows + 1) * row_bytes > CHUNK_OUTPUT_BYTES);
    assert_eq!(chunk_records_for::<Items>(), MAX_CHUNK_RECORDS);
}
