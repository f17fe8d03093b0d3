//! The CSV reader: `csv-core`'s parser driven by hand, so that a record can be
//! capped in size and a broken record can be reported at the row where it
//! starts and parsing can resume on the next line, instead of one stray quote
//! swallowing the rest of the file. BOM, CRLF and any one-byte delimiter are
//! handled; decompression happens below this reader (see `open`).
//!
//! Lines with no quote and no CR skip `csv-core`: kept whole and split on
//! the validating threads ([`CsvSource::take_lines`]), or split here with
//! `memchr` ([`CsvSource::read_plain_line`]). Sending every line through
//! `csv-core` instead costs 1.50× the wall time of `validate` at 10 M rows
//! (`benches/RESULTS.md`).

use std::io::{Read, Seek, SeekFrom};

use csv_core::{ReadRecordResult, Reader as CoreReader, ReaderBuilder};

use super::{IngestError, RecordChunk, RecordProblem, RecordSource};
use crate::domain::RejectCode;

const READ_BUF: usize = 256 * 1024;
/// How much of a file is looked at to guess its delimiter.
const SNIFF_BYTES: usize = 64 * 1024;

pub struct CsvSource {
    input: Layers,
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
    /// Over the cap; `done` when the record's end was read too.
    TooLarge {
        done: bool,
    },
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
            input: Layers(vec![input]),
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
            Raw::TooLarge { .. } => {
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
                .map_err(|_| {
                    IngestError::Header(format!(
                        "header {} is not valid UTF-8: the file is in another encoding; run again with --encoding windows-1252 (Excel's \"CSV\" in much of Europe) or the file's own, or save it as \"CSV UTF-8\"",
                        i + 1
                    ))
                })?;
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
                let done = matches!(res, ReadRecordResult::Record | ReadRecordResult::End);
                return Ok(Raw::TooLarge { done });
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

    /// Reads the rest of a record over the size cap without keeping it:
    /// csv-core goes on to the record's end, as for any record, so that a
    /// long quoted field spanning many lines is one record and reading
    /// resumes at the next. When its quoting turns out broken, as
    /// [`CsvSource::fill`] judges a record under the cap, the record was an
    /// unterminated quote: what followed its first line is handed back
    /// ([`Skipped::Broken`]) to be read again as records. That part is kept
    /// in a spooled file, in memory up to the cap and on disk beyond.
    fn skip_record(&mut self, done: bool) -> Result<Skipped, IngestError> {
        let mut shape = Shape::default();
        let mut quotes = QuoteState::default();
        let mut spill = tempfile::spooled_tempfile(self.max_record);
        quotes.feed(&self.raw, self.delimiter);
        shape.feed(&self.raw, &mut spill)?;
        let mut done = done;
        while !done {
            if self.pos == self.len && !self.eof {
                self.refill()?;
            }
            let input = &self.buf[self.pos..self.len];
            let (res, nin, _, _) = self.core.read_record(input, &mut self.out, &mut self.ends);
            quotes.feed(&input[..nin], self.delimiter);
            shape.feed(&input[..nin], &mut spill)?;
            self.pos += nin;
            // The fields are not kept: the buffers are written over.
            done = matches!(res, ReadRecordResult::Record | ReadRecordResult::End);
        }
        let at_eof = self.eof && self.pos == self.len;
        Ok(if (at_eof || shape.spans) && quotes.broken_at_end() {
            Skipped::Broken(spill)
        } else {
            Skipped::Whole
        })
    }

    /// Reads `spill` again before the rest of the input, from a fresh parse.
    fn replay(&mut self, mut spill: tempfile::SpooledTempFile) -> Result<(), IngestError> {
        spill.seek(SeekFrom::Start(0))?;
        let unread = self.buf[self.pos..self.len].to_vec();
        self.input.0.push(Box::new(std::io::Cursor::new(unread)));
        self.input.0.push(Box::new(spill));
        self.pos = 0;
        self.len = 0;
        self.eof = false;
        self.core.reset();
        self.raw.clear();
        Ok(())
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
                Raw::TooLarge { done } => {
                    // The rest of the record is read without being kept.
                    let preview = self.preview();
                    let problem = match self.skip_record(done)? {
                        Skipped::Whole => RecordProblem {
                            code: RejectCode::RecordTooLarge,
                            message: format!(
                                "record is over the limit of {} (--max-record-bytes); skipped it and resumed at the next record",
                                limit_text(self.max_record)
                            ),
                        },
                        Skipped::Broken(spill) => {
                            self.replay(spill)?;
                            RecordProblem {
                                code: RejectCode::UnterminatedQuote,
                                message: UNTERMINATED.into(),
                            }
                        }
                    };
                    chunk.push_problem(row, problem, preview);
                    self.next_row += 1;
                    continue;
                }
                Raw::Record {
                    at_eof,
                    plain: false,
                } if (at_eof || spans_lines(&self.raw))
                    && quotes_broken(&self.raw, self.delimiter) =>
                {
                    Some(RecordProblem {
                        code: RejectCode::UnterminatedQuote,
                        message: UNTERMINATED.into(),
                    })
                }
                Raw::Record { plain, .. } if self.ends_len != width => {
                    let problem = RecordProblem {
                        code: RejectCode::FieldCountMismatch,
                        message: format!(
                            "row has {} fields, the header has {width}",
                            self.ends_len
                        ),
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

const UNTERMINATED: &str = "a quoted field opened in this row is not closed where it should be; skipped the row and resumed at the next line";

/// A size in bytes as `--max-record-bytes` reads.
fn limit_text(bytes: usize) -> String {
    if bytes.is_multiple_of(1024) {
        format!("{} KiB", bytes / 1024)
    } else {
        format!("{bytes} bytes")
    }
}

/// How a record over the cap ended.
enum Skipped {
    /// A whole record, read to its end.
    Whole,
    /// An unterminated quote: what followed its first line.
    Broken(tempfile::SpooledTempFile),
}

/// The input, with what is to be read again before it on top: each reader
/// is read to its end, then the one below.
struct Layers(Vec<Box<dyn Read + Send>>);

impl Read for Layers {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let Some(top) = self.0.last_mut() else {
                return Ok(0);
            };
            let n = top.read(buf)?;
            if n > 0 || self.0.len() == 1 || buf.is_empty() {
                return Ok(n);
            }
            self.0.pop();
        }
    }
}

/// [`spans_lines`] of a record fed a piece at a time, keeping what follows
/// its first line (what [`CsvSource::resync`] would read again).
#[derive(Default)]
struct Shape {
    /// A byte other than CR and LF has been seen.
    started: bool,
    /// A line break has followed it: the bytes now are the record's later lines.
    broken_line: bool,
    /// Text has followed that line break.
    spans: bool,
}

impl Shape {
    /// Feeds the next bytes of the record, writing those after its first
    /// line to `rest`.
    fn feed(&mut self, bytes: &[u8], rest: &mut impl std::io::Write) -> std::io::Result<()> {
        if self.broken_line {
            self.spans |= bytes.iter().any(|&b| b != b'\n' && b != b'\r');
            return rest.write_all(bytes);
        }
        for (i, &b) in bytes.iter().enumerate() {
            if b != b'\n' && b != b'\r' {
                self.started = true;
            } else if self.started {
                // The LF of a CRLF goes with the rest: a blank line, which
                // reads as nothing.
                self.broken_line = true;
                return self.feed(&bytes[i + 1..], rest);
            }
        }
        Ok(())
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
    let mut q = QuoteState::default();
    q.feed(raw, delimiter);
    q.broken_at_end()
}

/// [`quotes_broken`] over a record fed a piece at a time.
#[derive(Default)]
struct QuoteState {
    at: Quoting,
    broken: bool,
}

#[derive(Default, PartialEq)]
enum Quoting {
    #[default]
    FieldStart,
    Unquoted,
    Quoted,
    QuoteInQuoted,
}

impl QuoteState {
    fn feed(&mut self, bytes: &[u8], delimiter: u8) {
        use Quoting as S;
        if self.broken {
            return;
        }
        for &b in bytes {
            let end = b == delimiter || b == b'\n' || b == b'\r';
            self.at = match self.at {
                S::FieldStart if b == b'"' => S::Quoted,
                S::FieldStart | S::Unquoted if end => S::FieldStart,
                S::FieldStart | S::Unquoted => S::Unquoted,
                S::Quoted if b == b'"' => S::QuoteInQuoted,
                S::Quoted => S::Quoted,
                S::QuoteInQuoted if b == b'"' => S::Quoted,
                S::QuoteInQuoted if end => S::FieldStart,
                S::QuoteInQuoted => {
                    self.broken = true;
                    return;
                }
            };
        }
    }

    /// Broken so far, or ended inside a quoted field.
    fn broken_at_end(&self) -> bool {
        self.broken || self.at == Quoting::Quoted
    }
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
#[path = "csv_tests.rs"]
mod tests;
