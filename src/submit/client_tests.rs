//! Tests of the API client: URLs, redaction, retries and answers.

use super::*;
use proptest::prelude::*;

/// A server on loopback that answers every request with `answer`.
async fn serve(answer: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, answer).await;
    });
    format!("http://{addr}")
}

fn client(base_url: String) -> ApiClient {
    ApiClient::new(ClientConfig {
        base_url,
        token: Token::new("t"),
        rate: 100.0,
        burst: 1,
        timeout: Duration::from_secs(120),
        retry: RetryPolicy::default(),
    })
    .unwrap()
}

fn stop_after(d: Duration) -> Stop {
    let stop = Stop::new();
    let s = stop.clone();
    tokio::spawn(async move {
        tokio::time::sleep(d).await;
        s.trigger("test");
    });
    stop
}

/// Regression: `Retry-After: 1000000` paused every request for eleven
/// days, and no Ctrl-C or time-out ended the pause.
#[tokio::test]
async fn a_stop_ends_the_pause_of_a_huge_retry_after() {
    let url = serve(axum::Router::new().fallback(|| async {
        (
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            [(axum::http::header::RETRY_AFTER, "1000000")],
            "{}",
        )
    }))
    .await;
    let c = client(url);
    let started = Instant::now();
    let call = c
        .status("rq-1", &stop_after(Duration::from_millis(300)))
        .await;
    assert!(matches!(call.result, Err(CallError::Stopped)));
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(call.attempts.len(), 1, "one 429, then the pause");
    let paused = c.limiter.paused_for();
    assert!(
        paused <= RETRY_AFTER_CAP && paused > RETRY_AFTER_CAP - Duration::from_secs(60),
        "{paused:?}"
    );
}

/// A request in flight that never gets its answer ends with the stop,
/// and is kept as an attempt (it may have been done by the server).
#[tokio::test]
async fn a_stop_ends_a_request_in_flight() {
    let url = serve(axum::Router::new().fallback(|| async {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        "{}"
    }))
    .await;
    let c = client(url);
    let started = Instant::now();
    let call = c
        .status("rq-1", &stop_after(Duration::from_millis(300)))
        .await;
    assert!(matches!(call.result, Err(CallError::Stopped)));
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(call.attempts.len(), 1);
}

/// Regression: a 429 with `Retry-After: 18446744073709551615` made the
/// task panic adding it to an `Instant`.
#[test]
fn the_pause_after_a_429_is_never_past_the_cap() {
    let l = Limiter::new(10.0, 1);
    l.throttled(Some(Duration::MAX));
    let paused = l.paused_for();
    assert!(paused <= RETRY_AFTER_CAP && paused > RETRY_AFTER_CAP - Duration::from_secs(60));
}

proptest! {
    /// No `Retry-After` (any text, any number of seconds, any HTTP
    /// date) makes the parser, the limiter or the retry wait panic or
    /// wait past the cap.
    #[test]
    fn no_retry_after_panics_or_waits_past_the_cap(
        text in "\\PC{0,40}",
        secs in any::<u64>(),
        nanos in 0u32..1_000_000_000,
        at in -62_135_596_800i64..253_402_300_799,
    ) {
        let now = SystemTime::now();
        let date = chrono::DateTime::from_timestamp(at, 0)
            .map(|d| d.format("%a, %d %b %Y %H:%M:%S GMT").to_string())
            .unwrap_or_default();
        let policy = RetryPolicy::default();
        let mut rng = fastrand::Rng::with_seed(secs);
        for value in [text, secs.to_string(), format!(" {secs} "), date] {
            let parsed = parse_retry_after(&value, now);
            prop_assert!(parsed.is_none_or(|d| d <= RETRY_AFTER_CAP), "{value}: {parsed:?}");
            let limiter = Limiter::new(20.0, 1);
            limiter.throttled(parsed);
            prop_assert!(limiter.paused_for() <= RETRY_AFTER_CAP);
            prop_assert!(policy.wait(1, parsed, &mut rng) <= RETRY_AFTER_CAP);
        }
        prop_assert_eq!(
            parse_retry_after(&secs.to_string(), now),
            Some(Duration::from_secs(secs).min(RETRY_AFTER_CAP))
        );
        // Whatever duration reaches the limiter, the pause is bounded.
        let limiter = Limiter::new(20.0, 1);
        limiter.throttled(Some(Duration::new(secs, nanos)));
        prop_assert!(limiter.paused_for() <= RETRY_AFTER_CAP);
    }
}

#[test]
fn the_token_never_prints() {
    let t = Token::new("s3cr3t-token");
    assert_eq!(format!("{t:?}"), "***");
    assert!(t.header().is_some_and(|h| h.is_sensitive()));
}

#[test]
fn urls_are_joined_under_the_base_path_with_its_query_kept() {
    assert_eq!(
        endpoint("https://h.example/api/?code=K#x", "/v1/cases"),
        "https://h.example/api/v1/cases?code=K"
    );
    assert_eq!(
        endpoint("http://127.0.0.1:9", "/v1/reactivations/rq-1"),
        "http://127.0.0.1:9/v1/reactivations/rq-1"
    );
}

#[test]
fn redacted_urls_keep_where_but_not_secrets() {
    let url =
        reqwest::Url::parse("https://u:p@h.example:8443/api?token=T&api_key=K&x#frag").unwrap();
    assert_eq!(
        redact_url(&url),
        "https://***@h.example:8443/api?token=***&api_key=***&***#***"
    );
    let plain = reqwest::Url::parse("http://127.0.0.1:9/v1").unwrap();
    assert_eq!(redact_url(&plain), "http://127.0.0.1:9/v1");
}

/// A server that closes the connection without answering: reqwest's
/// error names the URL, query and all.
#[tokio::test]
async fn transport_errors_do_not_repeat_the_query() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in listener.incoming().take(1) {
            let mut buf = [0u8; 1024];
            let _ = s.and_then(|mut s| std::io::Read::read(&mut s, &mut buf));
        }
    });
    install_tls_provider();
    let err = reqwest::Client::new()
        .get(format!("http://{addr}/v1?token=Qs3cret"))
        .send()
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("Qs3cret"),
        "the case is real: {err}"
    );
    let text = describe(&err);
    assert!(!text.contains("Qs3cret"), "{text}");
    assert!(text.contains("token=***"), "{text}");
}

#[tokio::test]
async fn a_throttle_halves_the_rate_and_successes_bring_it_back() {
    let l = Limiter::new(100.0, 1);
    l.throttled(Some(Duration::from_millis(10)));
    assert!((l.current_rate() - 50.0).abs() < 1e-9);
    // The rest of the same burst's 429s: the pause holds, the rate stays.
    l.throttled(Some(Duration::from_millis(10)));
    assert!((l.current_rate() - 50.0).abs() < 1e-9);
    // The rest of the same burst's 429s: the pause holds, the rate stays.
    l.throttled(Some(Duration::from_millis(10)));
    assert!((l.current_rate() - 50.0).abs() < 1e-9);
    let started = Instant::now();
    l.acquire().await;
    assert!(
        started.elapsed() >= Duration::from_millis(9),
        "the pause is honoured"
    );
    for _ in 0..PROBE_AFTER {
        l.succeeded();
    }
    assert!((l.current_rate() - 62.5).abs() < 1e-9);
    // Below the rate that drew the 429 (100/s) for a long while...
    for _ in 0..PROBE_CEILING_AFTER - 1 {
        l.succeeded();
    }
    assert!(
        (l.current_rate() - 90.0).abs() < 1e-9,
        "{}",
        l.current_rate()
    );
    // ...then probing above it again, never above the configured rate.
    for _ in 0..PROBE_CEILING_AFTER * 2 {
        l.succeeded();
    }
    assert!(
        (l.current_rate() - 100.0).abs() < 1e-9,
        "{}",
        l.current_rate()
    );
}

#[test]
fn the_limiter_keeps_a_tenth_of_the_burst_in_hand() {
    for (burst, paced) in [(100, 90), (10, 9), (5, 4), (2, 1), (1, 1), (0, 1)] {
        assert_eq!(paced_burst(burst).get(), paced, "burst {burst}");
    }
    assert_eq!(paced_burst(u32::MAX).get(), 3_865_470_565);
    // What the limiter lets through at once is the paced burst.
    let l = Limiter::new(1.0, 100);
    let limiter = l.lock().limiter.clone();
    let at_once = (0..200).take_while(|_| limiter.check().is_ok()).count();
    assert_eq!(at_once, 90);
}
