//! Where the pipeline's output goes, in source order: the sink traits, the
//! map a caller may run on the validating threads, and the counts.

use std::collections::BTreeMap;

use crate::dedupe::{DuplicateIndex, RowKeys};
use crate::domain::{Item, Reject};

/// Receives the stage's output in source order.
pub trait ValidateSink {
    fn item(&mut self, item: Item) -> anyhow::Result<()>;
    fn reject(&mut self, reject: &Reject) -> anyhow::Result<()>;
    fn warning(&mut self, warning: &Reject) -> anyhow::Result<()>;
}

/// Work on each valid row's item done on the validating threads, in
/// parallel, before duplicate detection: so it also runs for a row that
/// turns out to be a duplicate, whose output is then dropped. Whatever
/// depends on the rows before (the duplicate rule, running totals) belongs
/// in the [`MappedSink`], which sees the outputs in source order.
pub trait ItemMap: Sync {
    /// Scratch space of one worker (buffers, caches).
    type State: Send;
    type Out: Send;
    /// Bytes of scratch output each valid row gets beside its outcome:
    /// [`ItemMap::map`] may write there what the sink reads back
    /// ([`MappedSink::item`]'s `slot`). A chunk's slots are one buffer that
    /// circulates with it, so a small per-row output (a report line) costs
    /// no allocation of its own. They are not cleared between chunks.
    const ROW_SCRATCH: usize = 0;
    fn state(&self) -> Self::State;
    /// The item comes as it is made (an output that keeps it should box
    /// it, so that outcomes move a pointer); `keys` are the row's keys, as
    /// the duplicate index sees them; `slot` is the row's [`ItemMap::ROW_SCRATCH`]
    /// bytes.
    fn map(
        &self,
        state: &mut Self::State,
        item: Item,
        keys: &RowKeys,
        slot: &mut [u8],
    ) -> Self::Out;
    /// Whether the duplicate index records this row's serial marked, for
    /// the sink to ask with [`DuplicateIndex::is_marked`]: one bit in a
    /// table that is there anyway, instead of a set of its own.
    fn mark(&self, _out: &Self::Out) -> bool {
        false
    }
    /// The row's site, as the output keeps it, for the rejects of a valid
    /// row that repeats an earlier one ("" when it keeps none).
    fn site<'o>(&self, _out: &'o Self::Out) -> &'o str {
        ""
    }
}

/// [`ValidateSink`] for the outputs of an [`ItemMap`].
pub trait MappedSink<T> {
    /// One valid row's output (always `Some`). The sink may take it or only
    /// read it: whatever it leaves is dropped later on another thread, off
    /// the one that walks the rows in order. `keys` are the row's
    /// identifiers (so the output need not repeat them), `seen` holds the
    /// serials of the valid rows so far, and of the rest of this row's
    /// chunk. `slot` is the row's [`ItemMap::ROW_SCRATCH`] bytes, as the
    /// map left them.
    fn item(
        &mut self,
        out: &mut Option<T>,
        keys: &RowKeys,
        slot: &[u8],
        seen: &DuplicateIndex,
    ) -> anyhow::Result<()>;
    fn reject(&mut self, reject: &Reject) -> anyhow::Result<()>;
    fn warning(&mut self, warning: &Reject) -> anyhow::Result<()>;
    /// After the last row, with the serials of every valid row.
    fn end(&mut self, _seen: &DuplicateIndex) -> anyhow::Result<()> {
        Ok(())
    }
}

/// The identity [`ItemMap`], for [`run`](super::run).
pub(super) struct Items;

impl ItemMap for Items {
    type State = ();
    type Out = Box<Item>;
    fn state(&self) {}
    fn map(&self, _: &mut (), item: Item, _: &RowKeys, _: &mut [u8]) -> Box<Item> {
        Box::new(item)
    }
    fn site<'o>(&self, item: &'o Box<Item>) -> &'o str {
        &item.site
    }
}

pub(super) struct ItemSink<'s>(pub(super) &'s mut dyn ValidateSink);

impl MappedSink<Box<Item>> for ItemSink<'_> {
    fn item(
        &mut self,
        item: &mut Option<Box<Item>>,
        _: &RowKeys,
        _: &[u8],
        _: &DuplicateIndex,
    ) -> anyhow::Result<()> {
        match item.take() {
            Some(item) => self.0.item(*item),
            None => Ok(()),
        }
    }
    fn reject(&mut self, reject: &Reject) -> anyhow::Result<()> {
        self.0.reject(reject)
    }
    fn warning(&mut self, warning: &Reject) -> anyhow::Result<()> {
        self.0.warning(warning)
    }
}

/// Counts that the summary prints.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ValidateStats {
    pub rows: u64,
    pub valid: u64,
    pub rejected_rows: u64,
    pub rejects_by_code: BTreeMap<String, u64>,
    pub warnings_by_code: BTreeMap<String, u64>,
}

impl ValidateStats {
    /// A hint for the whole file when most of its rows are not UTF-8: it
    /// was saved in another encoding, most often Windows-1252 (Excel's
    /// "CSV" in much of Europe), and each row would otherwise only say
    /// ENCODING_INVALID.
    pub fn encoding_hint(&self) -> Option<String> {
        let bad = self
            .rejects_by_code
            .get(crate::domain::RejectCode::EncodingInvalid.as_str())
            .copied()?;
        (bad > self.rows / 2).then(|| {
            format!(
                "{bad} of {} rows are not UTF-8: the file was probably saved as Windows-1252 (Excel's \"CSV\" in much of Europe); run again with --encoding windows-1252, or save it as \"CSV UTF-8\"",
                self.rows
            )
        })
    }
}
