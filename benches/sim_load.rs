//! Throughput of the simulator on loopback with every fault off: it must
//! never be the bottleneck of a client benchmark (issue #4 asks for at least
//! 5,000 requests/s on 2 cores). N concurrent reqwest clients, each posting
//! one-item batches under fresh keys and reading each request back three
//! times, for a few seconds; prints requests/s.
//!
//! `cargo bench --bench sim_load` (env `SIM_LOAD_SECS`, default 5, and
//! `SIM_LOAD_CLIENTS`, default 64).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use refleet::policy::Policy;
use refleet::sim::{Sim, SimConfig};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let secs = env_or("SIM_LOAD_SECS", 5);
    let clients = env_or("SIM_LOAD_CLIENTS", 64);
    let policy = Arc::new(Policy::load(None).expect("built-in policy"));
    let sim = Sim::start_in_background(SimConfig::default(), policy).expect("sim starts");
    let url = sim.url();
    // The clients get a runtime of their own, as a real client process would.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let ok = Arc::new(AtomicU64::new(0));
    let bad = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(secs);
    rt.block_on(async {
        refleet::submit::client::install_tls_provider();
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(clients as usize)
            .build()
            .expect("client");
        let mut tasks = Vec::new();
        for c in 0..clients {
            let (client, url, ok, bad) = (client.clone(), url.clone(), ok.clone(), bad.clone());
            tasks.push(tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < deadline {
                    n += 1;
                    let key = format!("SN{c:04}{n:08}|C-1|2026-10-01");
                    let body = serde_json::json!({
                        "contract_id": "C-1", "region": "EMEA", "quote_id": "Q-1",
                        "coverage": "standard",
                        "items": [{"item_key": key, "item_type": "device",
                                   "serial_number": format!("SN{c:04}{n:08}"),
                                   "country": "DE", "deactivated_at": "2026-10-01"}]
                    });
                    let r = client
                        .post(format!("{url}/v1/reactivations"))
                        .bearer_auth("bench")
                        .header("Idempotency-Key", format!("k-{c}-{n}"))
                        .json(&body)
                        .send()
                        .await;
                    let Ok(r) = r else {
                        bad.fetch_add(1, Ordering::Relaxed);
                        continue;
                    };
                    let location = r
                        .headers()
                        .get("location")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    let good = r.status().as_u16() == 202 && r.bytes().await.is_ok();
                    (if good { &ok } else { &bad }).fetch_add(1, Ordering::Relaxed);
                    let Some(location) = location else { continue };
                    for _ in 0..3 {
                        let r = client
                            .get(format!("{url}{location}"))
                            .bearer_auth("bench")
                            .send()
                            .await;
                        let good = match r {
                            Ok(r) => r.status().as_u16() == 200 && r.bytes().await.is_ok(),
                            Err(_) => false,
                        };
                        (if good { &ok } else { &bad }).fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
    let elapsed = started.elapsed().as_secs_f64();
    let ok = ok.load(Ordering::Relaxed);
    let bad = bad.load(Ordering::Relaxed);
    let stats = sim.stats();
    println!(
        "sim_load: {clients} clients, {elapsed:.1} s: {ok} ok + {bad} failed requests = {:.0} requests/s (server counted {}; {} activations, {} duplicates)",
        (ok + bad) as f64 / elapsed,
        stats.requests,
        stats.activations,
        stats.duplicate_activations
    );
    sim.shutdown();
}
