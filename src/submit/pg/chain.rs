//! The ledger's one audit hash chain: appended under a lock on its head, exported as JSONL.

use serde_json::{Map, Value};

use super::{LedgerError, PgLedger};
use crate::audit;

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
        let (mut seq, mut hash): (i64, String) = (head.get(0), head.get(1));
        let (mut seqs, mut hashes, mut lines) = (Vec::new(), Vec::new(), Vec::new());
        for record in records {
            seq += 1;
            let next = u64::try_from(seq).map_err(|_| LedgerError::Damaged {
                ledger: self.label.clone(),
                why: format!("its audit chain is at record {seq}"),
            })?;
            let (line, h) = audit::seal(record, next, &hash);
            seqs.push(seq);
            hashes.push(h.clone());
            lines.push(line);
            hash = h;
        }
        tx.execute(
            "INSERT INTO audit SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[])",
            &[&seqs, &hashes, &lines],
        )
        .await
        .map_err(db)?;
        tx.execute("UPDATE audit_head SET seq = $1, hash = $2", &[&seq, &hash])
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(u64::try_from(seq).unwrap_or(0))
    }

    /// Writes the audit chain as JSONL, the format of a journal's log.
    pub async fn export_audit(&self, out: &mut impl std::io::Write) -> Result<u64, anyhow::Error> {
        let rows = self
            .client
            .query("SELECT line FROM audit ORDER BY seq", &[])
            .await
            .map_err(self.db())?;
        for r in &rows {
            out.write_all(r.get::<_, &str>(0).as_bytes())?;
            out.write_all(b"\n")?;
        }
        Ok(rows.len() as u64)
    }
}
