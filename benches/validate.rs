//! Per-row validation hot path: a chunk of generated rows through
//! `Validator::validate`, and the identifier parsers alone.
//! Run with `cargo bench --bench validate`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use refleet::domain::{parse_timestamp, LicenseId, Mac, Serial};
use refleet::gen::{self, GenOptions};
use refleet::ingest::{CsvSource, RecordSource};
use refleet::policy::Policy;
use refleet::validate::{ValidateOptions, Validator};

fn bench(c: &mut Criterion) {
    let opts = GenOptions {
        rows: 32 * 1024,
        seed: 3,
        defects: 0.03,
        as_of: chrono::NaiveDate::from_ymd_opt(2026, 11, 24).expect("date"),
        account_rows: gen::ACCOUNT_ROWS,
    };
    let mut csv = Vec::new();
    gen::write_inventory_csv(&opts, &mut csv).expect("generate");
    let policy = Policy::load(None).expect("policy");
    let mut source =
        CsvSource::new(Box::new(std::io::Cursor::new(csv.clone())), None, 64 * 1024).expect("csv");
    let validator = Validator::new(&policy, ValidateOptions::default(), &source).expect("headers");
    let chunk = source
        .next_chunk(opts.rows as usize)
        .expect("read")
        .expect("rows");

    let mut state = validator.thread_state();
    let mut g = c.benchmark_group("validate");
    g.throughput(Throughput::Elements(chunk.len() as u64));
    g.bench_function("validate_row x32768 (one thread)", |b| {
        b.iter(|| {
            chunk
                .records()
                .map(|r| std::hint::black_box(validator.validate(&mut state, &chunk, r)))
                .fold(0usize, |n, _| n + 1)
        })
    });
    g.bench_function("csv split x32768", |b| {
        b.iter(|| {
            let mut s =
                CsvSource::new(Box::new(std::io::Cursor::new(csv.clone())), None, 64 * 1024)
                    .expect("csv");
            s.next_chunk(opts.rows as usize)
                .expect("read")
                .map_or(0, |c| c.len())
        })
    });
    g.finish();

    let mut g = c.benchmark_group("parsers");
    g.bench_function("mac", |b| {
        b.iter(|| Mac::parse(std::hint::black_box("00-04-f2-ab-cd-ef")))
    });
    g.bench_function("serial", |b| {
        b.iter(|| Serial::parse(std::hint::black_box("0004F2ABCDEF"), 8, 20))
    });
    g.bench_function("license", |b| {
        b.iter(|| LicenseId::parse(std::hint::black_box("abcd-efgh-1234-5678")))
    });
    g.bench_function("date", |b| {
        b.iter(|| parse_timestamp(std::hint::black_box("2026-10-01"), None))
    });
    g.bench_function("country", |b| {
        b.iter(|| policy.countries.parse(std::hint::black_box("Germany")))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
