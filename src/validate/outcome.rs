//! What validating one row gives: its item (or what a map made of it) and
//! warnings, or its rejects; with the keys the duplicate index checks.

use crate::dedupe::RowKeys;
use crate::domain::{Item, Reject};

/// The result for one row, before duplicate detection. The item itself is
/// built only when a sink wants items (`keep_items`): the duplicate index
/// needs just the keys, and building and dropping an item per row that
/// nobody reads was a sizeable part of `validate`'s time.
///
/// `T` is what the row's item became on the validating thread: the boxed
/// item itself from [`Validator::validate`](super::Validator::validate), or
/// an `ItemMap`'s output in the pipeline's `run_mapped`.
#[derive(Debug)]
pub enum RowOutcome<T = Box<Item>> {
    Valid {
        keys: RowKeys,
        item: Option<T>,
        warnings: Vec<Reject>,
    },
    /// `keys` are the identifiers of the row that did parse, so that the
    /// row is also reported when one repeats an earlier valid row's (it
    /// gets every code that applies); a rejected row's keys are never
    /// recorded, so it shadows no later row.
    Rejected {
        rejects: Vec<Reject>,
        keys: Option<RowKeys>,
    },
}

impl<T> RowOutcome<T> {
    /// Turns the item (when there is one) into something else.
    pub fn map_item<U>(self, f: impl FnOnce(T) -> U) -> RowOutcome<U> {
        match self {
            RowOutcome::Valid {
                keys,
                item,
                warnings,
            } => RowOutcome::Valid {
                keys,
                item: item.map(f),
                warnings,
            },
            RowOutcome::Rejected { rejects, keys } => RowOutcome::Rejected { rejects, keys },
        }
    }
}
