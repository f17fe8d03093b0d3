//! Tests of the CSV reader: dialects, compression, headers and bad input.

use super::*;

type Rows = Vec<(u64, Result<Vec<String>, RejectCode>)>;

fn read_all(data: &[u8], cap: usize) -> (Vec<String>, Rows) {
    read_with(data, cap, 3, true, None)
        .into_iter()
        .map(|(h, rows)| (h, rows.into_iter().map(|(n, v, _)| (n, v)).collect()))
        .next()
        .unwrap()
}

/// Headers, and each record's row, fields or problem, and preview.
#[allow(clippy::type_complexity)]
fn read_with(
    data: &[u8],
    cap: usize,
    chunk_records: usize,
    line_records: bool,
    delimiter: Option<u8>,
) -> Option<(
    Vec<String>,
    Vec<(u64, Result<Vec<String>, RejectCode>, String)>,
)> {
    let mut src = CsvSource::new(
        Box::new(std::io::Cursor::new(data.to_vec())),
        delimiter,
        cap,
    )
    .ok()?;
    src.line_records = line_records;
    let headers = src.headers().to_vec();
    let mut rows = Vec::new();
    while let Some(chunk) = src.next_chunk(chunk_records).unwrap() {
        for r in chunk.records() {
            let v = match chunk.problem(r) {
                Some(p) => Err(p.code),
                None => Ok((0..chunk.width(r))
                    .map(|i| String::from_utf8_lossy(chunk.field(r, i)).into_owned())
                    .collect()),
            };
            rows.push((chunk.row(r), v, chunk.problem_preview(r).into_owned()));
        }
    }
    Some((headers, rows))
}

proptest::proptest! {
    /// Records stored as lines and split later read exactly as the
    /// records split by the reader: same rows, fields, problems and
    /// previews, whatever the quotes, CRs, blank lines, field counts,
    /// record cap and chunk size.
    #[test]
    fn line_records_read_as_split_records(
        text in "[ab,;\"\r\n]{0,300}",
        cap in 4usize..64,
        chunk_records in 1usize..8,
        semicolon in proptest::bool::ANY,
    ) {
        let data = format!("h1,h2,h3\n{text}");
        let d = semicolon.then_some(b';');
        proptest::prop_assert_eq!(
            read_with(data.as_bytes(), cap, chunk_records, true, d),
            read_with(data.as_bytes(), cap, chunk_records, false, d)
        );
    }
}

proptest::proptest! {
    /// Well-formed records, some far over the cap (long unquoted
    /// lines, long quoted fields over many lines), with LF or CRLF
    /// line ends: each record over the cap is one reject and every
    /// record keeps its row number, read every way.
    #[test]
    fn records_over_the_cap_keep_every_row_number(
        records in proptest::collection::vec(
            proptest::collection::vec(
                proptest::prop_oneof![
                    3 => "[ab,\"\n ]{0,6}",
                    1 => "[ab]{200,300}",
                    1 => "[ab\n\"]{200,300}",
                ],
                2,
            ),
            1..10,
        ),
        crlf in proptest::bool::ANY,
    ) {
        let cap = 64;
        let mut w = ::csv::WriterBuilder::new()
            .terminator(if crlf { ::csv::Terminator::CRLF } else { ::csv::Terminator::Any(b'\n') })
            .from_writer(Vec::new());
        w.write_record(["h1", "h2"]).unwrap();
        let mut want: Rows = Vec::new();
        for (i, fields) in records.iter().enumerate() {
            let mut one = ::csv::WriterBuilder::new().from_writer(Vec::new());
            one.write_record(fields).unwrap();
            let size = one.into_inner().unwrap().len();
            w.write_record(fields).unwrap();
            let row = i as u64 + 1;
            want.push(if size > cap {
                (row, Err(RejectCode::RecordTooLarge))
            } else {
                (row, Ok(fields.clone()))
            });
        }
        let data = w.into_inner().unwrap();
        proptest::prop_assert_eq!(read_every_way(&data, cap), want);
    }
}

#[test]
fn long_plain_lines_and_blank_lines_around_line_records() {
    let mut data = b"a,b\n1,x\n\n2,y,extra\n".to_vec();
    data.extend(std::iter::repeat_n(b'z', 300));
    data.extend(b",w\n3,v\n");
    for line_records in [true, false] {
        let (_, rows) = read_with(&data, 100, 2, line_records, None).unwrap();
        let got: Vec<_> = rows.iter().map(|(n, v, _)| (*n, v.clone())).collect();
        assert_eq!(
            got,
            [
                (1, ok(&["1", "x"])),
                (2, Err(RejectCode::FieldCountMismatch)),
                (3, Err(RejectCode::RecordTooLarge)),
                (4, ok(&["3", "v"])),
            ]
        );
        assert_eq!(rows[1].2, "2,y,extra");
    }
}

fn ok(v: &[&str]) -> Result<Vec<String>, RejectCode> {
    Ok(v.iter().map(|s| s.to_string()).collect())
}

#[test]
fn bom_crlf_quotes_and_blank_lines() {
    let (h, rows) = read_all(
        b"\xEF\xBB\xBFa,b\r\n1,\"x\r\ny\"\r\n\r\n2,\"say \"\"hi\"\"\"\r\n",
        1024,
    );
    assert_eq!(h, vec!["a", "b"]);
    assert_eq!(
        rows,
        vec![(1, ok(&["1", "x\r\ny"])), (2, ok(&["2", "say \"hi\""]))]
    );
}

#[test]
fn sniffs_semicolon_tab_and_pipe() {
    assert_eq!(sniff_delimiter(b"a;b;c\n1;2,5;3\n"), b';');
    assert_eq!(sniff_delimiter(b"a\tb\n1\t2\n"), b'\t');
    assert_eq!(sniff_delimiter(b"a|b|c\n1|2|3\n"), b'|');
    assert_eq!(sniff_delimiter(b"a,b\n1,2\n"), b',');
    assert_eq!(sniff_delimiter(b"\"x;y\",b\n1,2\n"), b',');
    assert_eq!(sniff_delimiter(b"single\n1\n"), b',');
}

#[test]
fn unterminated_quote_in_the_middle_is_reported_and_the_rest_is_kept() {
    let (_, rows) = read_all(b"a,b\n1,x\n2,\"oops\n3,y\n4,z\n", 1024);
    assert_eq!(
        rows,
        vec![
            (1, ok(&["1", "x"])),
            (2, Err(RejectCode::UnterminatedQuote)),
            (3, ok(&["3", "y"])),
            (4, ok(&["4", "z"])),
        ]
    );
}

#[test]
fn unterminated_quote_that_meets_a_later_quote_is_still_caught() {
    let (_, rows) = read_all(b"a,b\n1,\"oops\n2,y\n3,\"q\"\n4,z\n", 1024);
    assert_eq!(rows[0], (1, Err(RejectCode::UnterminatedQuote)));
    assert!(rows.contains(&(4, ok(&["4", "z"]))), "{rows:?}");
}

/// Every way of reading (lines split later or not), in chunks of 1 to
/// 4 records: (row, fields or problem) of each record, the same for all.
fn read_every_way(data: &[u8], cap: usize) -> Rows {
    let mut seen: Option<Rows> = None;
    for line_records in [true, false] {
        for chunk_records in 1..5 {
            let (_, rows) = read_with(data, cap, chunk_records, line_records, None).unwrap();
            let rows: Rows = rows.into_iter().map(|(n, v, _)| (n, v)).collect();
            if let Some(seen) = &seen {
                assert_eq!(&rows, seen, "{line_records} {chunk_records}");
            }
            seen = Some(rows);
        }
    }
    seen.unwrap()
}

#[test]
fn an_unquoted_line_over_the_cap_is_one_record() {
    let mut data = b"a,b\n1,x\n2,".to_vec();
    data.extend(std::iter::repeat_n(b'z', 5000));
    data.extend(b",more\n3,y\n4,w\n");
    assert_eq!(
        read_every_way(&data, 1024),
        vec![
            (1, ok(&["1", "x"])),
            (2, Err(RejectCode::RecordTooLarge)),
            (3, ok(&["3", "y"])),
            (4, ok(&["4", "w"])),
        ]
    );
}

/// A quoted field of thousands of lines is one record too large, not
/// a reject per line.
#[test]
fn a_quoted_field_over_the_cap_spanning_many_lines_is_one_record() {
    for end in ["\n", "\r\n"] {
        let mut data = format!("a,b{end}1,x{end}2,\"").into_bytes();
        for i in 0..3000 {
            data.extend(format!("line {i}, \"\"quoted\"\"{end}").bytes());
        }
        data.extend(format!("end\"{end}3,y{end}4,w{end}").bytes());
        assert_eq!(
            read_every_way(&data, 1024),
            vec![
                (1, ok(&["1", "x"])),
                (2, Err(RejectCode::RecordTooLarge)),
                (3, ok(&["3", "y"])),
                (4, ok(&["4", "w"])),
            ],
            "{end:?}"
        );
    }
}

#[test]
fn a_record_over_the_cap_at_the_end_of_the_file() {
    let long = "z".repeat(5000);
    for tail in [
        format!("2,{long}"),
        format!("2,{long}\n"),
        format!("2,\"{long}\nmore\""),
        format!("2,\"{long}\nmore\"\n"),
    ] {
        let data = format!("a,b\n1,x\n{tail}");
        assert_eq!(
            read_every_way(data.as_bytes(), 1024),
            vec![(1, ok(&["1", "x"])), (2, Err(RejectCode::RecordTooLarge))],
            "{tail:?}"
        );
    }
}

/// A quote never closed makes a record that runs past the cap (here,
/// to the end of the file): it is reported as such at its row, and the
/// lines after its first are read again as records, whether they were
/// kept in memory or spilled to disk.
#[test]
fn an_unterminated_quote_over_the_cap_reads_the_rows_after_it() {
    for rows in [3u64, 300] {
        let mut data = b"a,b\n1,x\n2,\"".to_vec();
        data.extend(std::iter::repeat_n(b'z', 5000));
        data.push(b'\n');
        for n in 3..3 + rows {
            data.extend(format!("{n},y\n").bytes());
        }
        let mut want = vec![
            (1, ok(&["1", "x"])),
            (2, Err(RejectCode::UnterminatedQuote)),
        ];
        want.extend((3..3 + rows).map(|n| (n, ok(&[&n.to_string(), "y"]))));
        assert_eq!(read_every_way(&data, 1024), want, "{rows} rows");
    }
    // Paired with a later row's quote, followed by stray text.
    let mut data = b"a,b\n1,\"oops\n".to_vec();
    for n in 2..200 {
        data.extend(format!("{n},y\n").bytes());
    }
    data.extend(b"200,\"q\"z\n201,w\n");
    let rows = read_every_way(&data, 1024);
    assert_eq!(rows[0], (1, Err(RejectCode::UnterminatedQuote)));
    assert_eq!(rows[1], (2, ok(&["2", "y"])));
    assert_eq!(rows.last(), Some(&(201, ok(&["201", "w"]))));
    assert_eq!(rows.len(), 201);
}

#[test]
fn wrong_field_count_on_one_line() {
    let (_, rows) = read_all(b"a,b\n1,2,3\n4,5\n", 1024);
    assert_eq!(
        rows,
        vec![
            (1, Err(RejectCode::FieldCountMismatch)),
            (2, ok(&["4", "5"]))
        ]
    );
}

#[test]
fn quote_state_machine() {
    assert!(quotes_broken(b"1,\"abc\n", b','));
    assert!(!quotes_broken(b"1,\"a\"\"b\"\n", b','));
    assert!(quotes_broken(b"1,\"a\"\"b\n", b','));
    assert!(!quotes_broken(b"1,5\" screen\n", b','));
    assert!(quotes_broken(b"1,\"oops\n2,\"q\"\n", b','));
    assert!(spans_lines(b"\n1,\"a\nb\"\r\n"));
    assert!(!spans_lines(b"\r\n1,2\r\n"));
}

#[test]
fn empty_input_and_header_only() {
    assert!(matches!(
        CsvSource::new(Box::new(std::io::Cursor::new(Vec::new())), None, 1024),
        Err(IngestError::Empty)
    ));
    let (h, rows) = read_all(b"a,b\r\n", 1024);
    assert_eq!(h, vec!["a", "b"]);
    assert!(rows.is_empty());
}
