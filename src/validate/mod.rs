//! Validate: raw records → [`Item`]s or rejects (SPEC §3), one row at a
//! time. The [`Validator`] matches an input's header row once, then turns
//! any record into a [`RowOutcome`] on whichever thread asks, with no state
//! shared between rows: what depends on the rows before (duplicates, source
//! order) is the duplicate index's (`dedupe`) and the pipeline's, which
//! run this on all cores.
//!
//! [`Item`]: crate::domain::Item

mod columns;
mod ids;
mod outcome;
mod rules;

pub(crate) use columns::field_text;
pub use columns::INVENTORY_COLUMNS;
pub(crate) use ids::IdPattern;
pub use outcome::RowOutcome;

use crate::domain::DateFormat;
use crate::ingest::{
    match_headers, FieldEnds, HeaderMap, IngestError, RecordChunk, RecordIdx, RecordSource,
};
use crate::policy::Policy;
use columns::Col;

/// Settings of the validate stage that do not come from the policy.
#[derive(Debug, Clone)]
pub struct ValidateOptions {
    pub date_format: Option<DateFormat>,
    /// Build an [`Item`](crate::domain::Item) for each valid row (false when
    /// only rejects are wanted).
    pub keep_items: bool,
}

impl Default for ValidateOptions {
    fn default() -> Self {
        ValidateOptions {
            date_format: None,
            keep_items: true,
        }
    }
}

/// The validate stage, built once for one input's header row.
pub struct Validator<'p> {
    policy: &'p Policy,
    options: ValidateOptions,
    columns: HeaderMap,
}

/// What one validating thread keeps for itself.
pub struct ThreadState {
    account: IdPattern,
    contract: IdPattern,
    ends: FieldEnds,
}

impl<'p> Validator<'p> {
    /// Matches the header row of `source`; a missing required column is a
    /// fatal error naming it and the aliases tried. `serial_number` and
    /// `model` may be absent only in a license-only export (one with
    /// `license_id`). A column refleet reads that the source cannot give as
    /// text is a fatal error naming it and its type; an unknown column of
    /// that kind is left out of the reports, with a warning.
    pub fn new(
        policy: &'p Policy,
        options: ValidateOptions,
        source: &dyn RecordSource,
    ) -> Result<Validator<'p>, IngestError> {
        let mut columns =
            match_headers(source.headers(), &INVENTORY_COLUMNS, &policy.header_aliases)?;
        let mut required = vec!["account_id", "contract_id", "country", "deactivated_at"];
        if columns.canonical[Col::License as usize].is_none() {
            required.extend(["serial_number", "model"]);
        }
        columns.require(&INVENTORY_COLUMNS, &required, &policy.header_aliases)?;
        for u in source.unreadable_columns() {
            if let Some(c) = columns.canonical.iter().position(|&i| i == Some(u.index)) {
                return Err(IngestError::Unreadable {
                    column: u.name.clone(),
                    kind: u.kind.clone(),
                    means: INVENTORY_COLUMNS[c].to_string(),
                });
            }
            if let Some(at) = columns.extras.iter().position(|&i| i == u.index) {
                tracing::warn!(
                    "column `{}` holds {} values, which have no single text form: it is not carried to the reports",
                    u.name,
                    u.kind
                );
                columns.extras.remove(at);
            }
        }
        Ok(Validator {
            policy,
            options,
            columns,
        })
    }

    /// Names of the carried (unknown) columns, in file order.
    pub fn extra_columns(&self) -> Vec<String> {
        self.columns
            .extras
            .iter()
            .map(|&i| self.columns.names[i].clone())
            .collect()
    }

    /// The columns of the file that validation reads: the known ones, and
    /// the carried ones when items are kept.
    pub fn read_columns(&self) -> Vec<usize> {
        let known = self.columns.canonical.iter().flatten().copied();
        let carried = self
            .columns
            .extras
            .iter()
            .copied()
            .filter(|_| self.options.keep_items);
        let mut used: Vec<usize> = known.chain(carried).collect();
        used.sort_unstable();
        used
    }

    /// Per-thread copies of the patterns (a shared `Regex` hands its search
    /// cache between threads through a pool, which showed in profiles) and
    /// room to split lines in.
    pub fn thread_state(&self) -> ThreadState {
        ThreadState {
            account: IdPattern::new(&self.policy.account_pattern),
            contract: IdPattern::new(&self.policy.contract_pattern),
            ends: FieldEnds::default(),
        }
    }

    /// Validates one record. Pure: safe to call from many threads, each with
    /// its own [`ThreadState`].
    pub fn validate(
        &self,
        state: &mut ThreadState,
        chunk: &RecordChunk,
        r: RecordIdx,
    ) -> RowOutcome {
        self.validate_with(state, chunk, r, |item, _| Box::new(item))
    }
}
