//! A JSON array written as `serde_json::to_writer_pretty` writes it, byte
//! for byte, with its items serialised on the current rayon pool.
//!
//! `quotes.json` holds tens of thousands of quotes of a few KB each: one
//! thread serialising them all was most of `quote`'s end, with the other
//! cores idle. It pays: `quote` at 10 M rows takes 0.96× the wall time of
//! serde_json on one thread (benches/RESULTS.md, "quotes.json on every
//! core").

use std::io::Write;

use rayon::prelude::*;
use serde::Serialize;

/// Items serialised together before they are written: the text in memory
/// stays bounded (a few MB of quotes) whatever the number of items.
const BATCH: usize = 2048;
/// Items one rayon task serialises: enough to outweigh the task's cost.
const PER_TASK: usize = 32;

/// Writes `items` as `serde_json::to_writer_pretty` would.
pub fn write_pretty_array<T: Serialize + Sync>(
    w: &mut dyn Write,
    items: &[T],
) -> serde_json::Result<()> {
    write_in_batches(w, items, BATCH)
}

/// [`write_pretty_array`] with batches of `batch` items (tests cross batch
/// boundaries with small ones).
fn write_in_batches<T: Serialize + Sync>(
    w: &mut dyn Write,
    items: &[T],
    batch: usize,
) -> serde_json::Result<()> {
    if items.is_empty() {
        return w.write_all(b"[]").map_err(serde_json::Error::io);
    }
    w.write_all(b"[").map_err(serde_json::Error::io)?;
    let mut first = true;
    for items in items.chunks(batch.max(1)) {
        let texts = items
            .par_chunks(PER_TASK)
            .map(|part| {
                let mut text = Vec::new();
                let mut one = Vec::new();
                for item in part {
                    one.clear();
                    serde_json::to_writer_pretty(&mut one, item)?;
                    push_item(&mut text, &one);
                }
                Ok(text)
            })
            .collect::<serde_json::Result<Vec<Vec<u8>>>>()?;
        for text in &texts {
            // Every item but the very first follows a comma.
            let text = if first { &text[1..] } else { &text[..] };
            first = false;
            w.write_all(text).map_err(serde_json::Error::io)?;
        }
    }
    w.write_all(b"\n]").map_err(serde_json::Error::io)
}

/// Appends `,\n  ` and `item` (pretty JSON of one item, at the top level)
/// indented one level, as the array's item: pretty JSON breaks lines only
/// between tokens (a newline in a string is written `\n`), so indenting
/// every line break by two spaces is the same as serialising the item one
/// level deeper.
fn push_item(text: &mut Vec<u8>, item: &[u8]) {
    text.extend_from_slice(b",\n  ");
    let mut start = 0;
    for nl in memchr::memchr_iter(b'\n', item) {
        text.extend_from_slice(&item[start..=nl]);
        text.extend_from_slice(b"  ");
        start = nl + 1;
    }
    text.extend_from_slice(&item[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[derive(Serialize)]
    struct Thing {
        name: String,
        lines: Vec<BTreeMap<String, Option<f64>>>,
        empty: Vec<u8>,
        nested: BTreeMap<String, Vec<u32>>,
    }

    fn thing(i: usize) -> Thing {
        let mut line = BTreeMap::new();
        line.insert("a\nb \"quoted\"".to_string(), Some(i as f64 / 4.0));
        line.insert("none".to_string(), None);
        let mut nested = BTreeMap::new();
        nested.insert(format!("k{i}"), (0..(i % 3) as u32).collect());
        Thing {
            name: format!("thing {i}\twith a tab, a newline\n and unicode é"),
            lines: vec![line; i % 3],
            empty: Vec::new(),
            nested,
        }
    }

    /// Byte for byte what serde_json writes, for 0, 1 and many items,
    /// across batch and task boundaries.
    #[test]
    fn same_bytes_as_serde_json_pretty() {
        for n in [0, 1, 2, 31, 32, 33, 100, 257] {
            let items: Vec<Thing> = (0..n).map(thing).collect();
            let want = serde_json::to_vec_pretty(&items).unwrap();
            for batch in [1, 7, 32, 64, BATCH] {
                let mut got = Vec::new();
                write_in_batches(&mut got, &items, batch).unwrap();
                assert_eq!(
                    String::from_utf8_lossy(&got),
                    String::from_utf8_lossy(&want),
                    "{n} items, batches of {batch}"
                );
            }
        }
    }
}
