//! The CSV reader: `csv-core`'s parser driven by hand, so that a record can be
//! capped in size and a broken record can be reported at the row where it
//! starts and parsing can resume on the next line, instead of one stray quote
//! swallowing the rest of the file. BOM, CRLF and any one-byte delimiter are
//! handled; decompression happens below this reader (see `open`).

use std::io::Read;

use csv_core::{ReadRecordResult, Reader as CoreReader, ReaderBuilder};

use super::{IngestError, RecordChunk, RecordProblem, RecordSource};
use crate::validate::RejectCode;

const READ_BUF: usize = 256 * 1024;
/// How much of a file is looked at to guess its delimiter.
const SNIFF_BYTES: usize = 64 * 1024;

pub struct CsvSource {
    input: Box<dyn Read + Send>,
    buf: Vec<u8>,
    pos: usize,
    len: usize,
    eof: bool,
    core: CoreReader,
    delimiter: u8,
    max_record: usize,
    /// Raw bytes of the record being read, kept so that a broken record can
    /// be re-read from its second line. Never longer than `max_record` plus
    /// one read.
    raw: Vec<u8>,
    out: Vec<u8>,
    ends: Vec<usize>,
    out_len: usize,
    ends_len: usize,
    headers: Vec<String>,
    next_row: u64,
    /// Whether [`CsvSource::take_lines`] is used (tests compare both ways).
    line_records: bool,
}

enum Raw {
    /// `plain`: one line without quotes, so nothing about it can be broken
    /// but its field count.
    Record {
        at_eof: bool,
        plain: bool,
    },
    TooLarge,
    End,
}

impl CsvSource {
    /// Reads the header row. `delimiter` of `None` sniffs it from the first
    /// 64 KiB.
    pub fn new(
        input: Box<dyn Read + Send>,
        delimiter: Option<u8>,
        max_record: usize,
    ) -> Result<CsvSource, IngestError> {
        let mut source = CsvSource {
            input,
            buf: vec![0; READ_BUF.max(SNIFF_BYTES)],
            pos: 0,
            len: 0,
            eof: false,
            core: CoreReader::new(),
            delimiter: b',',
            max_record,
            raw: Vec::new(),
            out: vec![0; 4096],
            ends: vec![0; 64],
            out_len: 0,
            ends_len: 0,
            headers: Vec::new(),
            next_row: 1,
            line_records: true,
        };
        source.fill_at_least(SNIFF_BYTES)?;
        source.delimiter = match delimiter {
            Some(d) => d,
            None => sniff_delimiter(&source.buf[..source.len]),
        };
        source.core = ReaderBuilder::new().delimiter(source.delimiter).build();
        // The fast path does not know about byte-order marks: drop it here.
        if source.buf[..source.len].starts_with(b"\xEF\xBB\xBF") {
            source.pos = 3;
        }
        match source.read_raw()? {
            Raw::End => return Err(IngestError::Empty),
            Raw::TooLarge => {
                return Err(IngestError::Header(format!(
                    "the header row is longer than {} bytes",
                    max_record
                )))
            }
            Raw::Record { .. } => {}
        }
        let mut headers = Vec::with_capacity(source.ends_len);
        for i in 0..source.ends_len {
            let field = source.field(i);
            let name = std::str::from_utf8(field)
                .map_err(|_| IngestError::Header(format!("header {} is not valid UTF-8", i + 1)))?;
            headers.push(name.trim().to_string());
        }
        source.headers = headers;
        Ok(source)
    }

    pub fn delimiter(&self) -> u8 {
        self.delimiter
    }

    fn field(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.out[start..self.ends[i]]
    }

    fn fill_at_least(&mut self, want: usize) -> Result<(), IngestError> {
        while self.len < want && !self.eof {
            let n = read_retrying(&mut self.input, &mut self.buf[self.len..])?;
            if n == 0 {
                self.eof = true;
            }
            self.len += n;
        }
        Ok(())
    }

    fn refill(&mut self) -> Result<(), IngestError> {
        debug_assert_eq!(self.pos, self.len);
        if self.buf.len() > READ_BUF * 2 {
            // A resync may have grown the buffer; give the memory back.
            self.buf.truncate(READ_BUF);
            self.buf.shrink_to_fit();
        }
        let n = read_retrying(&mut self.input, &mut self.buf)?;
        self.pos = 0;
        self.len = n;
        if n == 0 {
            self.eof = true;
        }
        Ok(())
    }

    /// Parses one record into `out`/`ends`, remembering its raw bytes.
    fn read_raw(&mut self) -> Result<Raw, IngestError> {
        if let Some(raw) = self.read_plain_line() {
            return Ok(raw);
        }
        self.raw.clear();
        let (mut olen, mut elen) = (0, 0);
        loop {
            if self.pos == self.len && !self.eof {
                self.refill()?;
            }
            let input = &self.buf[self.pos..self.len];
            let (res, nin, nout, nend) =
                self.core
                    .read_record(input, &mut self.out[olen..], &mut self.ends[elen..]);
            self.raw.extend_from_slice(&input[..nin]);
            self.pos += nin;
            olen += nout;
            elen += nend;
            if self.raw.len() > self.max_record {
                return Ok(Raw::TooLarge);
            }
            match res {
                ReadRecordResult::InputEmpty => {}
                ReadRecordResult::OutputFull => {
                    let n = self.out.len() * 2;
                    self.out.resize(n, 0);
                }
                ReadRecordResult::OutputEndsFull => {
                    let n = self.ends.len() * 2;
                    self.ends.resize(n, 0);
                }
                ReadRecordResult::Record => {
                    self.out_len = olen;
                    self.ends_len = elen;
                    return Ok(Raw::Record {
                        at_eof: self.eof && self.pos == self.len,
                        plain: false,
                    });
                }
                ReadRecordResult::End => return Ok(Raw::End),
            }
        }
    }

    /// The fast path: a whole line already in the buffer, with no quote and
    /// no bare CR, is split with memchr. Everything else (quotes, a line cut
    /// by the buffer end, an over-long line) goes through csv-core, which
    /// this path matches byte for byte on the lines it takes.
    fn read_plain_line(&mut self) -> Option<Raw> {
        loop {
            let input = &self.buf[self.pos..self.len];
            let nl = memchr::memchr(b'\n', input)?;
            let mut line = &input[..nl];
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            if line.is_empty() {
                // A blank line is no record, as in csv-core.
                self.pos += nl + 1;
                continue;
            }
            if line.len() > self.max_record || memchr::memchr2(b'"', b'\r', line).is_some() {
                return None;
            }
            self.raw.clear();
            self.raw.extend_from_slice(&input[..=nl]);
            if self.out.len() < line.len() {
                self.out.resize(line.len().next_power_of_two(), 0);
            }
            // Fields are stored back to back without delimiters, as csv-core does.
            let (mut n, mut olen, mut start) = (0, 0, 0);
            for end in memchr::memchr_iter(self.delimiter, line).chain(std::iter::once(line.len()))
            {
                let field = &line[start..end];
                self.out[olen..olen + field.len()].copy_from_slice(field);
                olen += field.len();
                if n == self.ends.len() {
                    self.ends.resize(n * 2, 0);
                }
                self.ends[n] = olen;
                n += 1;
                start = end + 1;
            }
            self.out_len = olen;
            self.ends_len = n;
            self.pos += nl + 1;
            return Some(Raw::Record {
                at_eof: self.eof && self.pos == self.len,
                plain: true,
            });
        }
    }

    /// The fastest path: every whole line in the buffer up to the first
    /// one with a quote or a CR (or an over-long one) becomes a record
    /// stored as the line itself, split into fields later, on the
    /// validating threads ([`RecordChunk::view_in`]). The lines are the ones
    /// [`CsvSource::read_plain_line`] would take, and split the same way;
    /// the rest is left to it and to csv-core. Returns the records added.
    fn take_lines(&mut self, chunk: &mut RecordChunk, limit: usize) -> usize {
        if !self.line_records
            || !self.delimiter.is_ascii()
            || matches!(self.delimiter, b'\n' | b'\r' | b'"')
        {
            return 0;
        }
        let input = &self.buf[self.pos..self.len];
        let Some(last) = memchr::memrchr(b'\n', input) else {
            return 0;
        };
        let mut block = &input[..=last];
        if let Some(q) = memchr::memchr2(b'"', b'\r', block) {
            match memchr::memrchr(b'\n', &block[..q]) {
                Some(nl) => block = &block[..=nl],
                None => return 0,
            }
        }
        let (taken, used) = chunk.append_lines(block, self.next_row, limit, self.max_record);
        self.next_row += taken as u64;
        self.pos += used;
        taken
    }

    /// Drops the first line of the broken record and parses again from the
    /// second, so that the rows after an unterminated quote are not lost.
    fn resync(&mut self) {
        let raw = &self.raw;
        let start = raw
            .iter()
            .position(|b| *b != b'\r' && *b != b'\n')
            .unwrap_or(raw.len());
        let cut = match raw[start..].iter().position(|b| *b == b'\n' || *b == b'\r') {
            Some(i) => {
                let mut j = start + i + 1;
                if raw[start + i] == b'\r' && raw.get(j) == Some(&b'\n') {
                    j += 1;
                }
                j
            }
            None => raw.len(),
        };
        let mut rebuilt = Vec::with_capacity(raw.len() - cut + (self.len - self.pos));
        rebuilt.extend_from_slice(&raw[cut..]);
        rebuilt.extend_from_slice(&self.buf[self.pos..self.len]);
        if rebuilt.len() < READ_BUF {
            rebuilt.resize(READ_BUF, 0);
            self.len = raw.len() - cut + (self.len - self.pos);
        } else {
            self.len = rebuilt.len();
        }
        self.buf = rebuilt;
        self.pos = 0;
        self.core.reset();
        self.raw.clear();
    }

    fn preview(&self) -> String {
        let start = self
            .raw
            .iter()
            .position(|b| *b != b'\r' && *b != b'\n')
            .unwrap_or(0);
        let line_end = self.raw[start..]
            .iter()
            .position(|b| *b == b'\n' || *b == b'\r')
            .map_or(self.raw.len(), |i| start + i);
        let end = line_end.min(start + 120);
        String::from_utf8_lossy(&self.raw[start..end]).into_owned()
    }
}

impl RecordSource for CsvSource {
    fn headers(&self) -> &[String] {
        &self.headers
    }

    fn fill(&mut self, chunk: &mut RecordChunk, max_records: usize) -> Result<(), IngestError> {
        let start = chunk.len();
        let width = self.headers.len();
        chunk.set_line_format(self.delimiter, width);
        while chunk.len() - start < max_records {
            if self.take_lines(chunk, max_records - (chunk.len() - start)) > 0 {
                continue;
            }
            let row = self.next_row;
            let problem = match self.read_raw()? {
                Raw::End => break,
                Raw::TooLarge => Some(RecordProblem {
                    code: RejectCode::RecordTooLarge,
                    message: format!(
                        "record is over the {} KiB limit (often an unterminated quote); skipped it and resumed at the next line",
                        self.max_record / 1024
                    ),
                }),
                Raw::Record { at_eof, plain: false }
                    if (at_eof || spans_lines(&self.raw)) && quotes_broken(&self.raw, self.delimiter) =>
                {
                    Some(RecordProblem {
                    code: RejectCode::UnterminatedQuote,
                    message: "a quoted field opened in this row is not closed where it should be; skipped the row and resumed at the next line".into(),
                })
                }
                Raw::Record { plain, .. } if self.ends_len != width => {
                    let problem = RecordProblem {
                        code: RejectCode::FieldCountMismatch,
                        message: format!("row has {} fields, the header has {width}", self.ends_len),
                    };
                    if !plain && spans_lines(&self.raw) {
                        Some(problem)
                    } else {
                        chunk.push_problem(row, problem, self.preview());
                        self.next_row += 1;
                        continue;
                    }
                }
                Raw::Record { .. } => None,
            };
            self.next_row += 1;
            match problem {
                None => {
                    chunk.push_record(row, &self.out[..self.out_len], &self.ends[..self.ends_len])
                }
                Some(p) => {
                    chunk.push_problem(row, p, self.preview());
                    self.resync();
                }
            }
        }
        Ok(())
    }
}

fn read_retrying(input: &mut dyn Read, buf: &mut [u8]) -> Result<usize, IngestError> {
    loop {
        match input.read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(IngestError::Io(e)),
        }
    }
}

/// True when the record has a line break inside it (not counting its end).
fn spans_lines(raw: &[u8]) -> bool {
    let start = raw
        .iter()
        .position(|b| *b != b'\r' && *b != b'\n')
        .unwrap_or(raw.len());
    let end = raw
        .iter()
        .rposition(|b| *b != b'\r' && *b != b'\n')
        .map_or(start, |i| i + 1);
    raw[start..end.max(start)]
        .iter()
        .any(|b| *b == b'\n' || *b == b'\r')
}

/// True when the record's quoting is broken (RFC 4180 with doubled quotes as
/// escapes, as `csv-core` reads it): it ends inside a quoted field, or a
/// closing quote is followed by stray text, the mark of a quote that was
/// never closed and got paired with a later row's quote.
fn quotes_broken(raw: &[u8], delimiter: u8) -> bool {
    #[derive(PartialEq)]
    enum S {
        FieldStart,
        Unquoted,
        Quoted,
        QuoteInQuoted,
    }
    let mut s = S::FieldStart;
    for &b in raw {
        s = match s {
            S::FieldStart if b == b'"' => S::Quoted,
            S::FieldStart | S::Unquoted if b == delimiter || b == b'\n' || b == b'\r' => {
                S::FieldStart
            }
            S::FieldStart | S::Unquoted => S::Unquoted,
            S::Quoted if b == b'"' => S::QuoteInQuoted,
            S::Quoted => S::Quoted,
            S::QuoteInQuoted if b == b'"' => S::Quoted,
            S::QuoteInQuoted if b == delimiter || b == b'\n' || b == b'\r' => S::FieldStart,
            S::QuoteInQuoted => return true,
        };
    }
    s == S::Quoted
}

/// Picks the delimiter that splits the first lines most consistently.
/// Candidates: comma, semicolon, tab, pipe; a tie or no evidence gives comma.
pub fn sniff_delimiter(head: &[u8]) -> u8 {
    let head = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
    let candidates = [b',', b';', b'\t', b'|'];
    let lines: Vec<&[u8]> = head
        .split(|b| *b == b'\n')
        .take(20)
        .filter(|l| !l.is_empty())
        .collect();
    // The last line may be cut mid-way by the sniff window.
    let complete = if lines.len() > 2 {
        &lines[..lines.len() - 1]
    } else {
        &lines[..]
    };
    let mut best = (b',', 0usize, 0usize);
    for d in candidates {
        let counts: Vec<usize> = complete
            .iter()
            .map(|l| count_outside_quotes(l, d))
            .collect();
        let Some(&first) = counts.first() else {
            continue;
        };
        if first == 0 {
            continue;
        }
        let consistent = counts.iter().filter(|c| **c == first).count();
        if (consistent, first) > (best.1, best.2) {
            best = (d, consistent, first);
        }
    }
    best.0
}

fn count_outside_quotes(line: &[u8], d: u8) -> usize {
    let mut quoted = false;
    line.iter()
        .filter(|&&b| {
            if b == b'"' {
                quoted = !quoted;
            }
            !quoted && b == d
        })
        .count()
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn long_plain_lines_and_blank_lines_around_line_records() {
        let mut data = b"a,b\n1,x\n\n2,y,extra\n".to_vec();
        data.extend(std::iter::repeat_n(b'z', 300));
        data.extend(b",w\n3,v\n");
        for line_records in [true, false] {
            let (_, rows) = read_with(&data, 100, 2, line_records, None).unwrap();
            let got: Vec<_> = rows.iter().map(|(n, v, _)| (*n, v.clone())).collect();
            assert_eq!(got[0], (1, ok(&["1", "x"])));
            assert_eq!(got[1], (2, Err(RejectCode::FieldCountMismatch)));
            assert_eq!(rows[1].2, "2,y,extra");
            assert_eq!(got[2].1, Err(RejectCode::RecordTooLarge));
            assert_eq!(got.last().unwrap().1, ok(&["3", "v"]));
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

    #[test]
    fn oversized_record_is_rejected_not_buffered() {
        let mut data = b"a,b\n1,x\n2,\"".to_vec();
        data.extend(std::iter::repeat_n(b'z', 5000));
        data.extend(b"\n3,y\n");
        let (_, rows) = read_all(&data, 1024);
        assert_eq!(rows[0], (1, ok(&["1", "x"])));
        assert_eq!(rows[1], (2, Err(RejectCode::RecordTooLarge)));
        assert_eq!(rows.last().unwrap().1, ok(&["3", "y"]));
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
}
