//! The ledger's one audit hash chain: appended under a lock on its head, exported as JSONL.

use serde_json::{Map, Value};

use super::{LedgerError, PgLedger};
use crate::audit;

/// Seals `records` after the chain's head `(seq, hash)` and appends them,
/// in the caller's transaction, which holds the head (`FOR UPDATE`).
/// Returns the chain's new length.
pub(super) async fn extend(
    db: &impl tokio_postgres::GenericClient,
    label: &str,
    (mut seq, mut hash): (i64, String),
    records: Vec<Map<String, Value>>,
) -> Result<u64, LedgerError> {
    let db_err = |e| LedgerError::Db(label.to_string(), e);
    let (mut seqs, mut hashes, mut lines) = (Vec::new(), Vec::new(), Vec::new());
    for record in records {
        let next = seq
            .checked_add(1)
            .and_then(|n| u64::try_from(n).ok().map(|u| (n, u)));
        let Some((n, number)) = next else {
            return Err(LedgerError::Damaged {
                ledger: label.to_string(),
                why: format!("its audit chain is at record {seq}"),
            });
        };
        let (line, h) = audit::seal(record, number, &hash);
        seq = n;
        seqs.push(seq);
        hashes.push(h.clone());
        lines.push(line);
        hash = h;
    }
    db.execute(
        "INSERT INTO audit SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[])",
        &[&seqs, &hashes, &lines],
    )
    .await
    .map_err(db_err)?;
    db.execute("UPDATE audit_head SET seq = $1, hash = $2", &[&seq, &hash])
        .await
        .map_err(db_err)?;
    Ok(seq.unsigned_abs())
}

impl PgLedger {
    /// Appends records to the ledger's audit chain, in one transaction that
    /// holds the chain's head: concurrent runners append one after the
    /// other and the chain never forks. Returns the chain's length.
    pub async fn append_audit(
        &mut self,
        records: Vec<Map<String, Value>>,
    ) -> Result<u64, LedgerError> {
        let label = self.label.clone();
        let db = |e| LedgerError::Db(label.clone(), e);
        let tx = self.client.transaction().await.map_err(db)?;
        let head = tx
            .query_one("SELECT seq, hash FROM audit_head FOR UPDATE", &[])
            .await
            .map_err(db)?;
        let seq = extend(&tx, &self.label, (head.get(0), head.get(1)), records).await?;
        tx.commit().await.map_err(db)?;
        Ok(seq)
    }

    /// Writes the audit chain as JSONL, the format of a journal's log, a
    /// page of records at a time (memory stays bounded whatever its
    /// length), from one snapshot: records appended meanwhile are not in
    /// it, and the export ends at a record the chain held.
    pub async fn export_audit(
        &mut self,
        out: &mut impl std::io::Write,
    ) -> Result<u64, anyhow::Error> {
        const PAGE: i64 = 10_000;
        let label = self.label.clone();
        let db = |e| LedgerError::Db(label.clone(), e);
        let tx = self
            .client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(db)?;
        let (mut after, mut written) = (0i64, 0u64);
        loop {
            let rows = tx
                .query(
                    "SELECT seq, line FROM audit WHERE seq > $1 ORDER BY seq LIMIT $2",
                    &[&after, &PAGE],
                )
                .await
                .map_err(db)?;
            let Some(last) = rows.last() else { break };
            after = last.get(0);
            for r in &rows {
                out.write_all(r.get::<_, &str>(1).as_bytes())?;
                out.write_all(b"\n")?;
            }
            written += rows.len() as u64;
        }
        tx.commit().await.map_err(db)?;
        Ok(written)
    }
}
