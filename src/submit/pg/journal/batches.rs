//! Batches on the shared ledger: claimed by one runner under a lease, sent,
//! answered, lost, re-sent, taken over when their runner dies; and accepted
//! batches followed until their items are done.

use std::time::Instant;

use chrono::{DateTime, Utc};

use super::{Conn, PgJournal};
use crate::api;
use crate::submit::journal::{
    features_bits, fmt_time, status_changes, Batch, BatchGroup, BatchItem, BatchLedger, ItemState,
    JournalError, StatusLedger, Tracked,
};
use crate::submit::pg::{coverage_of, form_batch, planned_of, LedgerError, ITEM_COLUMNS};

/// Items still on their way.
const ON_THEIR_WAY: &str = "('submitted', 'accepted', 'provisioning')";

/// Closes batch `$1` once none of its items is on its way: no runner needs
/// to hold it any longer.
const CLOSE_IF_DONE: &str = "UPDATE batches SET open = FALSE WHERE id = $1 AND open
     AND state <> 'submitted'
     AND NOT EXISTS (SELECT 1 FROM items
                     WHERE batch_id = $1 AND state IN ('submitted', 'accepted', 'provisioning'))";

/// A batch as the ledger holds it, to send (again).
fn load_batch(c: &mut Conn, id: i64) -> Result<Batch, JournalError> {
    let label = c.ledger.label.clone();
    let row = c.query_one(
        "SELECT idempotency_key, contract_id, region, quote_id, coverage FROM batches WHERE id = $1",
        &[&id],
    )?;
    let items = c
        .query(
            &format!("SELECT {ITEM_COLUMNS} FROM items WHERE batch_id = $1 ORDER BY batch_pos"),
            &[&id],
        )?
        .iter()
        .map(|r| planned_of(r, &label))
        .collect::<Result<Vec<_>, _>>()?;
    let group = BatchGroup {
        contract_id: row.get(1),
        region: row.get(2),
        quote_id: row.get(3),
        coverage: coverage_of(row.get(4), &label)?,
    };
    Ok(Batch::of(id, row.get(0), group, &items))
}

fn int(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

impl PgJournal {
    /// Claims the batches in `state` that this runner holds already
    /// (`mine`) or whose runner's lease ran out, renewing their lease;
    /// accepted ones only while items are on their way. Returns their ids.
    fn claim(&self, state: &'static str, mine: bool) -> Result<Vec<i64>, JournalError> {
        let (runner, lease) = (self.runner.clone(), self.lease_secs());
        let rows = self.call(move |c| {
            c.query(
                "UPDATE batches b SET runner = $1,
                     lease_until = clock_timestamp() + make_interval(secs => $2),
                     takeovers = takeovers + (b.runner <> $1)::int
                 WHERE b.state = $3 AND b.open
                   AND ((b.runner = $1 AND $4) OR b.lease_until < clock_timestamp())
                   AND (b.state = 'submitted' OR EXISTS (
                        SELECT 1 FROM items i WHERE i.batch_id = b.id
                          AND i.state IN ('accepted', 'provisioning')))
                 RETURNING b.id",
                &[&runner, &lease, &state, &mine],
            )
        })?;
        let mut ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
        ids.sort_unstable();
        if !ids.is_empty() && !mine {
            tracing::warn!(
                ledger = %self.label,
                batches = ids.len(),
                state,
                "took over batches whose runner stopped renewing its lease"
            );
        }
        Ok(ids)
    }

    fn load(&self, ids: Vec<i64>) -> Result<Vec<Batch>, JournalError> {
        self.call(move |c| ids.iter().map(|&id| load_batch(c, id)).collect())
    }

    fn tracked_of(&self, ids: Vec<i64>) -> Result<Vec<Tracked>, JournalError> {
        let rows = self.call(move |c| {
            c.query(
                "SELECT id, request_id FROM batches WHERE id = ANY($1) ORDER BY id",
                &[&ids],
            )
        })?;
        Ok(rows
            .iter()
            .map(|r| Tracked {
                batch_id: r.get(0),
                request_id: r.get::<_, Option<String>>(1).unwrap_or_default(),
            })
            .collect())
    }
}

impl BatchLedger for PgJournal {
    fn unsent_batches(&self) -> Result<Vec<Batch>, JournalError> {
        let ids = self.claim("submitted", true)?;
        self.load(ids)
    }

    fn next_batch(&self, max: usize) -> Result<Option<Batch>, JournalError> {
        self.fresh_statistics()?;
        let (runner, lease, run_id) = (self.runner.clone(), self.lease_secs(), self.run_id());
        let form = |from: i64| {
            let runner = runner.clone();
            self.in_transaction(move |c| {
                let formed = form_batch(
                    &c.ledger.client,
                    &c.ledger.label,
                    &runner,
                    lease,
                    max,
                    Some(run_id),
                    from,
                );
                Ok(c.rt.block_on(formed)?)
            })
        };
        // From where the last batch began; once more from the start before
        // saying there is none (an item skipped while another runner held
        // it, or given back, may be planned again before that point).
        let from = self.claim_from.get();
        let formed = match form(from)? {
            None if from > 0 => form(0)?,
            formed => formed,
        };
        Ok(formed.map(|(batch, first)| {
            self.claim_from.set(first);
            batch
        }))
    }

    fn batch_accepted(
        &self,
        batch: &Batch,
        attempts: u32,
        answer: &api::ReactivationAccepted,
    ) -> Result<(), JournalError> {
        let pos: std::collections::HashMap<&str, i32> = batch
            .request
            .items
            .iter()
            .enumerate()
            .map(|(i, it)| (it.item_key.as_str(), i32::try_from(i).unwrap_or(i32::MAX)))
            .collect();
        let (mut ps, mut states, mut reasons, mut etas) = (vec![], vec![], vec![], vec![]);
        for d in &answer.items {
            let Some(&p) = pos.get(d.item_key.as_str()) else {
                continue;
            };
            ps.push(p);
            states.push(match d.status {
                api::Decision::Accepted => ItemState::Accepted.as_str(),
                api::Decision::Rejected => ItemState::Rejected.as_str(),
            });
            reasons.push(d.reason.clone());
            etas.push(d.eta.map(|e| e.to_string()));
        }
        let (id, request_id, attempts) = (batch.id, answer.request_id.clone(), int(attempts));
        self.in_transaction(move |c| {
            // A re-sent batch answered under a new request id is a new
            // order for the audit log.
            c.execute(
                "UPDATE batches SET state = 'accepted', request_id = $2, attempts = attempts + $3,
                     last_error = NULL, updated_at = clock_timestamp(),
                     audited = CASE WHEN request_id IS NOT DISTINCT FROM $2 THEN audited ELSE FALSE END
                 WHERE id = $1",
                &[&id, &request_id, &attempts],
            )?;
            // Only items waiting for this answer: those of a re-sent batch
            // that the vendor had settled already keep their state.
            c.execute(
                "UPDATE items SET state = u.s, reason = u.r, eta = u.e
                 FROM UNNEST($2::int[], $3::text[], $4::text[], $5::text[]) AS u(p, s, r, e)
                 WHERE items.batch_id = $1 AND items.batch_pos = u.p AND items.state = 'submitted'",
                &[&id, &ps, &states, &reasons, &etas],
            )?;
            c.execute(CLOSE_IF_DONE, &[&id])
        })?;
        Ok(())
    }

    fn batch_refused(
        &self,
        batch_id: i64,
        attempts: u32,
        reason: &str,
    ) -> Result<(), JournalError> {
        let (reason, attempts) = (reason.to_string(), int(attempts));
        self.in_transaction(move |c| {
            c.execute(
                "UPDATE batches SET state = 'refused', open = FALSE, attempts = attempts + $2,
                     last_error = $3, updated_at = clock_timestamp()
                 WHERE id = $1",
                &[&batch_id, &attempts, &reason],
            )?;
            c.execute(
                "UPDATE items SET state = 'failed', reason = $2 WHERE batch_id = $1",
                &[&batch_id, &reason],
            )
        })?;
        Ok(())
    }

    fn batch_unanswered(
        &self,
        batch_id: i64,
        attempts: u32,
        error: &str,
    ) -> Result<(), JournalError> {
        let (error, attempts) = (error.to_string(), int(attempts));
        self.call(move |c| {
            c.execute(
                "UPDATE batches SET attempts = attempts + $2, last_error = $3,
                     updated_at = clock_timestamp()
                 WHERE id = $1",
                &[&batch_id, &attempts, &error],
            )
        })?;
        Ok(())
    }

    fn batch_never_sent(&self, batch_id: i64, run_id: i64) -> Result<bool, JournalError> {
        let runner = self.runner.clone();
        self.in_transaction(move |c| {
            // Attempts are logged when a call ends: only a batch this run
            // formed, and that no other runner ever held (whose call may be
            // on its way with nothing logged yet), is judged by them.
            let judged = c.query_opt(
                "SELECT (SELECT COUNT(*) FROM attempts
                         WHERE kind = 'submit' AND target = 'batch ' || b.id
                           AND (status IS NOT NULL OR error IS DISTINCT FROM $2))
                 FROM batches b
                 WHERE b.id = $1 AND b.state = 'submitted' AND b.run_id = $3
                   AND b.runner = $4 AND b.takeovers = 0
                   AND b.lease_until >= clock_timestamp()
                 FOR UPDATE",
                &[
                    &batch_id,
                    &crate::submit::client::NOT_CONNECTED,
                    &run_id,
                    &runner,
                ],
            )?;
            if judged.map(|r| r.get::<_, i64>(0)) != Some(0) {
                return Ok(false);
            }
            c.execute(
                "UPDATE items SET state = 'planned', batch_id = NULL, batch_pos = NULL
                 WHERE batch_id = $1",
                &[&batch_id],
            )?;
            c.execute("DELETE FROM batches WHERE id = $1", &[&batch_id])?;
            Ok(true)
        })
    }

    fn batch_items(&self, batch_id: i64) -> Result<Vec<BatchItem>, JournalError> {
        let rows = self.call(move |c| {
            c.query(
                "SELECT event_key, batch_pos, state FROM items WHERE batch_id = $1
                 ORDER BY batch_pos",
                &[&batch_id],
            )
        })?;
        rows.iter()
            .map(|r| {
                let state: &str = r.get(2);
                Ok(BatchItem {
                    event_key: r.get(0),
                    pos: i64::from(r.get::<_, i32>(1)),
                    state: ItemState::parse(state).ok_or_else(|| LedgerError::Damaged {
                        ledger: self.label.clone(),
                        why: format!("an item is in the unknown state {state:?}"),
                    })?,
                })
            })
            .collect()
    }

    fn record_loss(&self, run_id: i64, batch_id: i64, why: &str) -> Result<u32, JournalError> {
        let target = format!("batch {batch_id}");
        self.record_attempt(run_id, Utc::now(), "lost", &target, None, Some(why), 0)?;
        let n: i64 = self
            .call(move |c| {
                c.query_one(
                    "SELECT COUNT(*) FROM attempts WHERE kind = 'lost' AND target = $1",
                    &[&target],
                )
            })?
            .get(0);
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    fn batch_resend(&self, batch_id: i64, why: &str) -> Result<Batch, JournalError> {
        let (why, runner, lease) = (why.to_string(), self.runner.clone(), self.lease_secs());
        self.in_transaction(move |c| {
            c.execute(
                "UPDATE batches SET state = 'submitted', open = TRUE, last_error = $2,
                     updated_at = clock_timestamp(), runner = $3,
                     lease_until = clock_timestamp() + make_interval(secs => $4)
                 WHERE id = $1",
                &[&batch_id, &why, &runner, &lease],
            )?;
            c.execute(
                "UPDATE items SET state = 'submitted', reason = NULL, eta = NULL
                 WHERE batch_id = $1
                   AND state IN ('submitted', 'accepted', 'provisioning', 'rejected')",
                &[&batch_id],
            )?;
            load_batch(c, batch_id)
        })
    }

    fn batch_lost(&self, batch_id: i64, reason: &str, why: &str) -> Result<(), JournalError> {
        let (reason, why) = (reason.to_string(), why.to_string());
        self.in_transaction(move |c| {
            c.execute(
                "UPDATE batches SET state = 'lost', open = FALSE, last_error = $2,
                     updated_at = clock_timestamp()
                 WHERE id = $1",
                &[&batch_id, &why],
            )?;
            c.execute(
                &format!(
                    "UPDATE items SET state = 'failed', reason = $2
                     WHERE batch_id = $1 AND state IN {ON_THEIR_WAY}"
                ),
                &[&batch_id, &reason],
            )
        })?;
        Ok(())
    }

    fn record_attempt(
        &self,
        run_id: i64,
        at: DateTime<Utc>,
        kind: &str,
        target: &str,
        status: Option<u16>,
        error: Option<&str>,
        millis: u64,
    ) -> Result<(), JournalError> {
        let at = at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let (kind, target, error) = (
            kind.to_string(),
            target.to_string(),
            error.map(str::to_string),
        );
        let (status, millis) = (
            status.map(i32::from),
            i64::try_from(millis).unwrap_or(i64::MAX),
        );
        self.call(move |c| {
            c.execute(
                "INSERT INTO attempts (run_id, at, kind, target, status, error, millis)
                 VALUES ($1, $2::text::timestamptz, $3, $4, $5, $6, $7)",
                &[&run_id, &at, &kind, &target, &status, &error, &millis],
            )
        })?;
        Ok(())
    }

    fn keep_alive(&self) -> Result<(), JournalError> {
        let due = self
            .renewed
            .get()
            .is_none_or(|at| at.elapsed() >= self.lease / 4);
        if !due {
            return Ok(());
        }
        let (runner, lease) = (self.runner.clone(), self.lease_secs());
        self.call(move |c| {
            // A lease that ran out is never revived: another runner may
            // have its batch on the way already.
            c.execute(
                "UPDATE batches SET lease_until = clock_timestamp() + make_interval(secs => $2)
                 WHERE open AND runner = $1 AND lease_until >= clock_timestamp()",
                &[&runner, &lease],
            )
        })?;
        self.renewed.set(Some(Instant::now()));
        Ok(())
    }

    fn held_elsewhere(&self, run_id: i64) -> Result<u64, JournalError> {
        let n: i64 = self
            .call(move |c| {
                // Planned items (another runner may be forming a batch of
                // them) and items in batches. Not items a lookup found on
                // their way at the vendor: no batch holds them, and a run
                // that stops following them leaves them as a journal does.
                c.query_one(
                    "SELECT COUNT(*) FROM run_items r JOIN items i ON i.seq = r.seq
                     WHERE r.run_id = $1
                       AND (i.state = 'planned'
                            OR (i.batch_id IS NOT NULL
                                AND i.state IN ('submitted', 'accepted', 'provisioning')))",
                    &[&run_id],
                )
            })?
            .get(0);
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Called when this runner has nothing in hand: so a batch of its own
    /// still open is one it lost track of (a commit whose answer the lost
    /// connection took), and is taken back too.
    fn take_over(&self) -> Result<(Vec<Batch>, Vec<Tracked>), JournalError> {
        let resend = self.claim("submitted", true)?;
        let follow = self.claim("accepted", true)?;
        Ok((self.load(resend)?, self.tracked_of(follow)?))
    }
}

impl StatusLedger for PgJournal {
    fn tracked(&self) -> Result<Vec<Tracked>, JournalError> {
        let ids = self.claim("accepted", true)?;
        self.tracked_of(ids)
    }

    fn record_status(
        &self,
        batch_id: i64,
        items: &[BatchItem],
        status: &api::ReactivationStatus,
    ) -> Result<usize, JournalError> {
        let (open, changes) = status_changes(items, status);
        let mut rows = Changes::default();
        for (item, state, it) in changes {
            rows.pos.push(i32::try_from(item.pos).unwrap_or(i32::MAX));
            rows.state.push(state.as_str());
            rows.reason.push(it.reason.clone());
            rows.eta.push(it.eta.map(|e| e.to_string()));
            rows.confirmation.push(it.confirmation_id.clone());
            rows.features
                .push(it.features_verified.map(|f| features_bits(&f) as i32));
            rows.activated.push(it.activated_at.map(fmt_time));
        }
        if rows.pos.is_empty() {
            return Ok(open);
        }
        self.in_transaction(move |c| {
            // The batch first, then its items, as every other writer of
            // both: two runners never wait on each other the other way.
            c.query_opt(
                "SELECT 1 FROM batches WHERE id = $1 FOR UPDATE",
                &[&batch_id],
            )?;
            let r = &rows;
            c.execute(
                "UPDATE items SET state = u.s, reason = COALESCE(u.r, reason),
                     eta = COALESCE(u.e, eta), confirmation_id = u.c, features = u.f,
                     activated_at = u.a
                 FROM UNNEST($2::int[], $3::text[], $4::text[], $5::text[], $6::text[],
                             $7::int[], $8::text[]) AS u(p, s, r, e, c, f, a)
                 WHERE items.batch_id = $1 AND items.batch_pos = u.p
                   AND items.state IN ('accepted', 'provisioning')",
                &[
                    &batch_id,
                    &r.pos,
                    &r.state,
                    &r.reason,
                    &r.eta,
                    &r.confirmation,
                    &r.features,
                    &r.activated,
                ],
            )?;
            c.execute(CLOSE_IF_DONE, &[&batch_id])
        })?;
        Ok(open)
    }
}

/// The items a status answer changes, as columns.
#[derive(Default)]
struct Changes {
    pos: Vec<i32>,
    state: Vec<&'static str>,
    reason: Vec<Option<String>>,
    eta: Vec<Option<String>>,
    confirmation: Vec<Option<String>>,
    features: Vec<Option<i32>>,
    activated: Vec<Option<String>>,
}
