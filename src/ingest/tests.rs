//! Tests of ingest: formats, sniffing, stdin and raw records.

use super::*;

proptest::proptest! {
    #[test]
    fn split_line_equals_splitting_at_each_delimiter(
        line in proptest::collection::vec(
            proptest::sample::select(vec![b',', b';', b'a', 0x80, 0xFF, 0x2B, 0x2D, 0xAC]),
            0..200,
        ),
        semicolon in proptest::bool::ANY,
    ) {
        let d = if semicolon { b';' } else { b',' };
        let mut ends = FieldEnds::default();
        let view = FieldView {
            bytes: &line,
            ends: split_line(&line, d, &mut ends),
            gap: 1,
        };
        let got: Vec<&[u8]> = (0..view.len()).map(|i| view.field(i)).collect();
        let want: Vec<&[u8]> = line.split(|b| *b == d).collect();
        proptest::prop_assert_eq!(got, want);
    }

    /// `FieldView::text` equals checking each field on its own, for
    /// lines (which skip the check) and for fields stored back to back.
    #[test]
    fn field_text_equals_checking_each_field(
        fields in proptest::collection::vec(
            proptest::collection::vec(
                proptest::sample::select(vec![b'a', b' ', 0xC3, 0xA9, 0xE2, 0x82, 0xAC, 0xFF]),
                0..6,
            ),
            1..6,
        ),
    ) {
        let widths = fields.iter().map(|f| f.len());
        let mut chunk = RecordChunk::default();
        chunk.set_line_format(b',', fields.len());
        let line = fields.join(&b',');
        chunk.append_lines(&[&line[..], b"\n"].concat(), 1, usize::MAX, usize::MAX);
        let ends: Vec<usize> = widths
            .scan(0, |end, w| {
                *end += w;
                Some(*end)
            })
            .collect();
        chunk.push_record(2, &fields.concat(), &ends);
        // An empty line is no record.
        for r in 0..chunk.len() {
            let mut ends = FieldEnds::default();
            let view = chunk.view_in(chunk.record_at(r), &mut ends);
            let Ok(record) = std::str::from_utf8(view.bytes()) else {
                continue;
            };
            for (i, field) in fields.iter().enumerate() {
                proptest::prop_assert_eq!(
                    view.text(record, i),
                    std::str::from_utf8(field).ok()
                );
            }
        }
    }
}

proptest::proptest! {
    /// A line's text comes from the check of its whole block of lines:
    /// the same as checking the line alone, whether the blocks are
    /// UTF-8 or not.
    #[test]
    fn record_text_equals_checking_each_line(
        lines in proptest::collection::vec(
            proptest::collection::vec(
                proptest::sample::select(vec![b'a', b',', 0xC3, 0xA9, 0xE2, 0x82, 0xAC, 0xFF]),
                1..8,
            ),
            1..8,
        ),
        blocks in 1usize..4,
    ) {
        let mut chunk = RecordChunk::default();
        chunk.set_line_format(b',', 2);
        let mut row = 1;
        for group in lines.chunks(lines.len().div_ceil(blocks)) {
            let block: Vec<u8> = group.iter().flat_map(|l| l.iter().copied().chain([b'\n'])).collect();
            let (taken, used) = chunk.append_lines(&block, row, usize::MAX, usize::MAX);
            proptest::prop_assert_eq!((taken, used), (group.len(), block.len()));
            row += taken as u64;
        }
        let mut ends = FieldEnds::default();
        for (i, line) in lines.iter().enumerate() {
            let r = chunk.record_at(i);
            let view = chunk.view_in(r, &mut ends);
            proptest::prop_assert_eq!(view.bytes(), &line[..]);
            proptest::prop_assert_eq!(chunk.record_text(r), std::str::from_utf8(line).ok());
        }
    }
}

#[test]
fn a_non_ascii_delimiter_keeps_the_boundary_check() {
    // "é" is C3 A9; split at A9 as a delimiter, its first field is C3.
    let mut chunk = RecordChunk::default();
    chunk.set_line_format(0xA9, 2);
    chunk.append_lines("é\n".as_bytes(), 1, usize::MAX, usize::MAX);
    let mut ends = FieldEnds::default();
    let view = chunk.view_in(chunk.record_at(0), &mut ends);
    let record = std::str::from_utf8(view.bytes()).unwrap();
    assert_eq!(view.len(), 2);
    assert_eq!(view.text(record, 0), None);
}

#[test]
fn a_character_split_between_fields_is_not_text() {
    // "é" is C3 A9: valid across the two fields, in neither alone.
    let mut chunk = RecordChunk::default();
    chunk.push_record(1, b"a\xC3\xA9b", &[2, 4]);
    let mut ends = FieldEnds::default();
    let view = chunk.view_in(chunk.record_at(0), &mut ends);
    let record = std::str::from_utf8(view.bytes()).unwrap();
    assert_eq!(view.text(record, 0), None);
    assert_eq!(view.text(record, 1), None);
}

#[test]
fn an_empty_field_inside_a_split_character_is_empty_text() {
    // "©" is C2 A9, its halves in the fields around an empty one; the
    // empty field's place is inside the character, but it is "".
    let mut chunk = RecordChunk::default();
    chunk.push_record(1, b"\xC2\xA9", &[1, 1, 2]);
    let mut ends = FieldEnds::default();
    let view = chunk.view_in(chunk.record_at(0), &mut ends);
    let record = std::str::from_utf8(view.bytes()).unwrap();
    assert_eq!(view.text(record, 0), None);
    assert_eq!(view.text(record, 1), Some(""));
    assert_eq!(view.text(record, 2), None);
}
