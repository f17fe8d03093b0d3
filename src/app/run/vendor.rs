//! The vendor session: the async runtime, the built-in simulator, the client and the signals that stop a run.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;

use super::RunProgress;
use super::{api_label, Endpoint, Settings, Store};
use crate::app::UsageError;
use crate::sim::{Sim, SimConfig};
use crate::submit::client::{ApiClient, ClientConfig, Token, PACING};
use crate::submit::journal::Ledger;
use crate::submit::pg::PgQuota;
use crate::submit::reconcile::{reconcile, LookupBook, Reconciled};
use crate::submit::retry::RetryPolicy;
use crate::submit::{
    submit_and_track, AfterRound, Stop, SubmitError, SubmitReport, SubmitSettings, Vendor,
};

/// Everything that talks to the vendor: the async runtime, the built-in
/// simulator when there is no `--api-url` (its state kept in
/// `JOURNAL.sim.jsonl` beside the journal, so a resumed run meets the
/// simulator that took its requests), the client, and the stop that
/// SIGINT, SIGTERM and SIGHUP trigger.
pub struct VendorSession {
    pub label: String,
    pub client: Arc<ApiClient>,
    pub stop: Stop,
    /// Dropped before the runtime.
    pub _sim: Option<Sim>,
    pub runtime: tokio::runtime::Runtime,
}

impl VendorSession {
    pub fn start(
        settings: &Settings,
        policy: Arc<crate::policy::Policy>,
        progress: &dyn RunProgress,
    ) -> anyhow::Result<VendorSession> {
        // The cores the run was given (`--threads`, 0 = one per core).
        let cores = match settings.plan.threads {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cores)
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        let (label, base_url, token, sim) = runtime.block_on(async {
            anyhow::Ok(match &settings.endpoint {
                Endpoint::Url(url, token) => (api_label(url), url.clone(), token.clone(), None),
                Endpoint::Simulator => {
                    let token = format!("sim-{:016x}", fastrand::u64(..));
                    // Beside the journal; for a shared ledger, in --out.
                    let mut state_file = match &settings.store {
                        Store::Journal(path) => path.clone().into_os_string(),
                        Store::Ledger { .. } => settings.plan.out.join("ledger").into_os_string(),
                    };
                    state_file.push(".sim.jsonl");
                    let sim = Sim::start(
                        SimConfig {
                            token: Some(token.clone()),
                            state_file: Some(PathBuf::from(state_file)),
                            ..SimConfig::default()
                        },
                        policy,
                    )
                    .await
                    .context("cannot start the built-in simulator")?;
                    progress.say(&format!(
                        "no --api-url: using the built-in simulator on {} (a simulation: nothing leaves this machine)",
                        sim.url()
                    ));
                    ("simulator".to_string(), sim.url(), Token::new(token), Some(sim))
                }
            })
        })?;
        let mut client = ApiClient::new(ClientConfig {
            base_url,
            token,
            rate: settings.rate,
            burst: settings.burst,
            timeout: settings.request_timeout,
            retry: RetryPolicy::default(),
        })?;
        // On a shared ledger `--rate` and `--burst` are the vendor's limit
        // for every runner together: each request takes from one quota in
        // the ledger too, paced as the client paces its own.
        if let Store::Ledger { url, .. } = &settings.store {
            let quota = runtime
                .block_on(PgQuota::connect(
                    url,
                    "quota",
                    &label,
                    settings.rate * PACING,
                    settings.burst,
                ))
                .map_err(|e| anyhow::Error::new(e).context("the shared vendor quota"))?;
            client = client.share_quota(Box::new(quota));
        }
        let client = Arc::new(client);
        let stop = Stop::new();
        runtime.block_on(async { stop_on_signals(&stop) })?;
        runtime.spawn(progress.watch(stop.clone()));
        Ok(VendorSession {
            label,
            client,
            stop,
            _sim: sim,
            runtime,
        })
    }

    /// Looks up every item of `book` before any is paid (see
    /// `submit::reconcile`).
    pub fn reconcile(
        &self,
        book: &mut dyn LookupBook,
        settings: &SubmitSettings,
        progress: &dyn RunProgress,
    ) -> anyhow::Result<Reconciled> {
        let found = self
            .runtime
            .block_on(reconcile(
                book,
                &self.client,
                settings,
                &self.stop,
                progress,
            ))
            .map_err(submit_error);
        progress.clear();
        found
    }

    /// Submits and tracks until done, stopped by a signal, or out of time.
    pub fn submit(
        &self,
        journal: &impl Ledger,
        run_id: i64,
        settings: &SubmitSettings,
        progress: &dyn RunProgress,
        after_round: &mut dyn AfterRound,
    ) -> anyhow::Result<SubmitReport> {
        if progress.shows_counts() {
            progress.begin_submission(&journal.counts()?, self.client.sent());
        }
        let report = self.runtime.block_on(submit_and_track(
            journal,
            self.client.clone(),
            run_id,
            settings,
            &self.stop,
            progress,
            after_round,
        ));
        progress.clear();
        report.map_err(submit_error)
    }
}

pub fn submit_error(e: SubmitError) -> anyhow::Error {
    match e {
        SubmitError::Unauthorized { .. } | SubmitError::NoLookup { .. } => {
            UsageError(e.to_string()).into()
        }
        e => anyhow::Error::new(e),
    }
}

/// SIGINT (Ctrl-C), SIGTERM and SIGHUP (what schedulers, systemd and
/// Kubernetes send) all stop a run the same way: nothing more is sent, what
/// came back is recorded, the reports are written, and the exit code is 4.
pub fn stop_on_signals(stop: &Stop) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        for (kind, name) in [
            (SignalKind::interrupt(), "SIGINT (Ctrl-C)"),
            (SignalKind::terminate(), "SIGTERM"),
            (SignalKind::hangup(), "SIGHUP"),
        ] {
            let mut signals = signal(kind).with_context(|| format!("cannot listen for {name}"))?;
            let stop = stop.clone();
            tokio::spawn(async move {
                if signals.recv().await.is_some() {
                    tracing::warn!("{name} received: stopping");
                    stop.trigger(format!("stopped by {name}"));
                }
            });
        }
    }
    #[cfg(not(unix))]
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                stop.trigger("stopped by Ctrl-C");
            }
        });
    }
    Ok(())
}
