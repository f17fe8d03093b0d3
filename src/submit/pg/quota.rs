//! One vendor quota for every runner on the ledger: GCRA on the server's clock.

use std::time::Duration;

use super::{LedgerError, PgLedger};
use crate::submit::client::SharedQuota;
use crate::submit::retry::RETRY_AFTER_CAP;

impl PgLedger {
    /// Takes `n` requests from the vendor quota of `account`, shared by
    /// every runner on the ledger: `rate` requests a second with bursts of
    /// up to `burst` (GCRA on the server's clock, its state one row read
    /// and written under that row's lock). Returns `None` when taken, else
    /// how long to wait before asking again. `rate` must be positive and
    /// `n` at most `burst` ([`LedgerError::Quota`]).
    pub async fn take_quota(
        &mut self,
        account: &str,
        rate: f64,
        burst: u32,
        n: u32,
    ) -> Result<Option<Duration>, LedgerError> {
        if !(rate.is_finite() && rate > 0.0) || n == 0 || n > burst {
            return Err(LedgerError::Quota { rate, burst, n });
        }
        let (cost, tolerance) = gcra(rate, burst, n);
        let label = self.label.clone();
        let db = |e| LedgerError::Db(label.clone(), e);
        let tx = self.client.transaction().await.map_err(db)?;
        tx.execute(
            "INSERT INTO quota VALUES ($1, EXTRACT(EPOCH FROM clock_timestamp())::float8)
             ON CONFLICT (account) DO NOTHING",
            &[&account],
        )
        .await
        .map_err(db)?;
        let row = tx
            .query_one(
                "SELECT tat, EXTRACT(EPOCH FROM clock_timestamp())::float8
                 FROM quota WHERE account = $1 FOR UPDATE",
                &[&account],
            )
            .await
            .map_err(db)?;
        let (tat, now): (f64, f64) = (row.get(0), row.get(1));
        let next = tat.max(now) + cost;
        let wait = next - tolerance - now;
        if wait > 0.0 {
            tx.commit().await.map_err(db)?;
            return Ok(Some(Duration::from_secs_f64(wait.clamp(0.001, 3600.0))));
        }
        tx.execute(
            "UPDATE quota SET tat = $2 WHERE account = $1",
            &[&account, &next],
        )
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(None)
    }

    /// The vendor said `429` (or asked to wait `pause`): no runner takes
    /// from `account`'s quota before `pause` has passed. `rate` and `burst`
    /// as for [`PgLedger::take_quota`]; `pause` is cut to the cap refleet
    /// puts on a `Retry-After` ([`RETRY_AFTER_CAP`]), so no quota is shut
    /// for good.
    pub async fn pause_quota(
        &self,
        account: &str,
        rate: f64,
        burst: u32,
        pause: Duration,
    ) -> Result<(), LedgerError> {
        if !(rate.is_finite() && rate > 0.0) || burst == 0 {
            return Err(LedgerError::Quota { rate, burst, n: 1 });
        }
        let pause = pause.min(RETRY_AFTER_CAP);
        let (_, tolerance) = gcra(rate, burst, 1);
        self.client
            .execute(
                "INSERT INTO quota VALUES ($1, EXTRACT(EPOCH FROM clock_timestamp())::float8 + $2)
                 ON CONFLICT (account) DO UPDATE SET tat = GREATEST(quota.tat, EXCLUDED.tat)",
                &[&account, &(pause.as_secs_f64() + tolerance)],
            )
            .await
            .map_err(self.db())?;
        Ok(())
    }
}

/// GCRA's emission interval times `n` (the cost of `n` requests) and its
/// tolerance (`burst` requests' worth), in seconds.
pub(super) fn gcra(rate: f64, burst: u32, n: u32) -> (f64, f64) {
    let interval = 1.0 / rate.max(f64::MIN_POSITIVE);
    (interval * f64::from(n), interval * f64::from(burst.max(1)))
}

/// The vendor quota of one account on the ledger, for the client
/// ([`SharedQuota`]): its own connection, on the run's runtime.
pub struct PgQuota {
    ledger: tokio::sync::Mutex<PgLedger>,
    account: String,
    rate: f64,
    burst: u32,
}

impl PgQuota {
    /// Connects to the ledger at `url` for the quota of `account` (how the
    /// runners name the vendor account they share: the API's URL without
    /// secrets): `rate` requests a second with bursts of `burst`.
    pub async fn connect(
        url: &str,
        runner: &str,
        account: &str,
        rate: f64,
        burst: u32,
    ) -> Result<PgQuota, LedgerError> {
        let ledger = PgLedger::connect(url, runner).await?;
        Ok(PgQuota {
            ledger: tokio::sync::Mutex::new(ledger),
            account: account.to_string(),
            rate,
            burst: burst.max(1),
        })
    }
}

impl SharedQuota for PgQuota {
    fn take(
        &self,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Option<Duration>, String>> + Send + '_>,
    > {
        Box::pin(async move {
            let mut ledger = self.ledger.lock().await;
            let taken = ledger
                .take_quota(&self.account, self.rate, self.burst, 1)
                .await;
            match taken {
                Err(e) if e.is_connection_lost() => {
                    let _ = ledger.reconnect(QUOTA_RECONNECT).await;
                    Err(e.to_string())
                }
                other => other.map_err(|e| e.to_string()),
            }
        })
    }

    fn pause(
        &self,
        pause: Duration,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            let ledger = self.ledger.lock().await;
            if let Err(e) = ledger
                .pause_quota(&self.account, self.rate, self.burst, pause)
                .await
            {
                tracing::warn!(error = %e, "could not pause the shared vendor quota");
            }
        })
    }
}

/// How long one quota request waits for a lost ledger to come back before
/// it asks again.
const QUOTA_RECONNECT: Duration = Duration::from_secs(2);
