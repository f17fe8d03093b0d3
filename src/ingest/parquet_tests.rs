//! Tests of the Parquet reader: columns, types and bad input.

use chrono::NaiveDate;

use super::text::civil;
use super::*;

/// Every record of a source, as (row, fields), chunk by chunk.
fn records(source: &mut ParquetSource, chunk_rows: usize) -> Vec<(u64, Vec<Vec<u8>>)> {
    let mut out = Vec::new();
    loop {
        let mut chunk = RecordChunk::default();
        source.fill(&mut chunk, chunk_rows).unwrap();
        if chunk.is_empty() {
            return out;
        }
        let mut ends = crate::ingest::FieldEnds::default();
        for r in chunk.records() {
            let view = chunk.view_in(r, &mut ends);
            let fields = (0..view.len()).map(|i| view.field(i).to_vec()).collect();
            out.push((chunk.row(r), fields));
        }
    }
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

fn text(fields: &[Vec<u8>]) -> Vec<String> {
    fields
        .iter()
        .map(|f| String::from_utf8(f.clone()).unwrap())
        .collect()
}

/// Decimals read from the file's own integers, across row groups of
/// three rows, in slices and chunks of any size, are the same text;
/// the map column is listed, never decoded, and reads as empty.
#[test]
fn own_columns_come_out_whole_across_row_groups_and_slices() {
    let path = fixture("exotic.parquet");
    let mut whole = ParquetSource::open(&path).unwrap();
    assert_eq!(
        whole.unreadable_columns(),
        [UnreadableColumn {
            index: 3,
            name: "tags".into(),
            kind: "map".into()
        }]
    );
    let want = records(&mut whole, 1000);
    assert_eq!(want.len(), 8);
    assert_eq!(
        text(&want[0].1),
        [
            "S1",
            "1.25",
            "-1000000000000000000000000000000",
            "",
            "1972-09-27"
        ]
    );
    assert_eq!(text(&want[3].1)[1], "");
    assert_eq!(text(&want[7].1)[1], "10.00");
    for slice_rows in [1, 2, 3, 4, 5, 8, 100] {
        for chunk_rows in [1, 2, 3, 7] {
            let mut source = ParquetSource::open(&path).unwrap();
            source.slice_rows = slice_rows;
            assert_eq!(
                records(&mut source, chunk_rows),
                want,
                "{slice_rows} {chunk_rows}"
            );
        }
    }
    // Only the columns asked for are decoded.
    let mut source = ParquetSource::open(&path).unwrap();
    source.read_only(&[1, 3]);
    let got = records(&mut source, 1000);
    assert_eq!(text(&got[0].1), ["", "1.25", "", "", ""]);
}

#[test]
fn decimals_are_written_exactly() {
    assert_eq!(decimal_text(1250, 2), "12.50");
    assert_eq!(decimal_text(-5, 2), "-0.05");
    assert_eq!(decimal_text(0, 3), "0.000");
    assert_eq!(decimal_text(-7, 0), "-7");
    assert_eq!(
        decimal_text(i128::MIN, 38),
        "-1.70141183460469231731687303715884105728"
    );
    assert_eq!(big_decimal_text(&[0xFF, 0x85], 1), "-12.3");
    assert_eq!(big_decimal_text(&[0x00, 0x7B], 0), "123");
    assert_eq!(big_decimal_text(&[], 2), "0.00");
    // Wider than 128 bits: 2^136 and its negative.
    let mut wide = vec![0u8; 18];
    wide[0] = 1;
    assert_eq!(
        big_decimal_text(&wide, 2),
        "871122859317602466466238995025326621327.36"
    );
    let mut negative = vec![0u8; 18];
    negative[0] = 0xFF;
    assert_eq!(
        big_decimal_text(&negative, 0),
        "-87112285931760246646623899502532662132736"
    );
}

/// A hostile decimal (a scale or a value wider than any real one) is
/// refused, not written out digit by digit.
#[test]
fn decimals_wider_than_256_bits_are_refused() {
    let huge = ArrowDataType::Decimal(38, 1_000_000_000);
    assert_eq!(decode_of(&huge, None), Decode::Unreadable);
    assert!(kind_of(&huge, None).contains("scale 1000000000"));
    let wide: &[u8] = &[1; 33];
    let s = Series::new("price".into(), &[wide]);
    let e = own_text(&s, Decode::Decimal { scale: 2 }, &mut Vec::new()).unwrap_err();
    assert!(
        e.to_string()
            .contains("`price` holds a decimal wider than 32 bytes"),
        "{e}"
    );
}

#[test]
fn dates_outside_chrono_are_text_not_panics() {
    assert_eq!(date_text(0), "1970-01-01");
    assert_eq!(date_text(i32::MAX), "+5881580-07-11");
    assert_eq!(date_text(i32::MIN), "-5877641-06-23");
    assert_eq!(
        datetime_text(i64::MAX, TimeUnit::Microseconds, true),
        "+294247-01-10T04:00:54Z"
    );
    assert_eq!(
        datetime_text(i64::MIN, TimeUnit::Milliseconds, false),
        "-292275055-05-16T16:47:04"
    );
    assert_eq!(time_text(3_600_000_000_001), "01:00:00.000000001");
    assert_eq!(time_text(-1), "-1");
}

proptest::proptest! {
    /// The hand-written calendar agrees with chrono wherever chrono goes.
    #[test]
    fn civil_dates_match_chrono(days in -96_000_000i64..96_000_000) {
        let (y, m, d) = civil(days);
        let chrono = NaiveDate::from_ymd_opt(1970, 1, 1)
            .unwrap()
            .checked_add_signed(chrono::Duration::days(days));
        if let Some(c) = chrono {
            use chrono::Datelike;
            proptest::prop_assert_eq!((y, m, d), (i64::from(c.year()), c.month(), c.day()));
        }
    }
}

#[test]
fn a_panic_in_the_reader_is_an_error() {
    let e = contained::<()>(|| panic!("activate a feature")).unwrap_err();
    assert!(e.to_string().contains("activate a feature"), "{e}");
}

/// Slices smaller than, larger than and not a multiple of the chunks
/// hand out every row once, in order, with its row number.
#[test]
fn rows_come_out_whole_across_slices_and_chunks() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/typed.parquet");
    let mut whole = ParquetSource::open(&path).unwrap();
    let want = records(&mut whole, 1000);
    assert_eq!(
        want.iter().map(|(row, _)| *row).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    for slice_rows in [1, 3, 4, 10] {
        for chunk_rows in [1, 2, 3, 5] {
            let mut source = ParquetSource::open(&path).unwrap();
            source.slice_rows = slice_rows;
            assert_eq!(
                records(&mut source, chunk_rows),
                want,
                "{slice_rows} {chunk_rows}"
            );
        }
    }
}
