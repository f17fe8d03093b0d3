//! Tests of `refleet run`: its arguments, the vendor session, endings and texts.

use super::*;
use crate::submit::journal::ItemState;

/// Regression: the outcome came from how the submission returned, so
/// a crashed task or a lost request ended "finished" with items still
/// submitted or accepted. It comes from the journal's states now.
#[test]
fn the_outcome_comes_from_the_items_states() {
    use ItemState::*;
    let done = SubmitReport::default();
    let end = |states: &[(ItemState, u64)], escalate: bool, failed: u64| {
        ending(
            &done,
            &unfinished_items(states, escalate),
            failed,
            false,
            false,
        )
    };
    for st in [Planned, Submitted, Accepted, Provisioning] {
        assert_eq!(end(&[(Active, 9), (st, 1)], true, 0), Ending::Stopped);
        assert_eq!(end(&[(Active, 9), (st, 1)], false, 0), Ending::Stopped);
    }
    // A failed item or a manual review waits for its case when cases are on.
    for st in [Failed, ManualReview] {
        assert_eq!(end(&[(st, 1)], true, 1), Ending::Stopped);
        assert_eq!(end(&[(st, 1)], false, 1), Ending::FinishedWithFailures);
    }
    assert_eq!(end(&[(Active, 9), (Planned, 0)], true, 0), Ending::Finished);
    assert_eq!(
        end(&[(Active, 9), (Escalated, 1)], true, 1),
        Ending::FinishedWithFailures
    );
    assert_eq!(Ending::Stopped.exit_code(), 4);
    assert_eq!(Ending::FinishedWithFailures.exit_code(), 3);
    assert_eq!(Ending::Finished.exit_code(), 0);
    // A crashed task is a failure whatever the states say.
    let crashed = SubmitReport {
        aborted: Some("a request task panicked".into()),
        ..SubmitReport::default()
    };
    let e = ending(&crashed, &[], 0, false, false);
    assert_eq!(
        (e, e.exit_code(), e.name()),
        (Ending::Aborted, 1, "aborted")
    );
    assert_eq!(
        unfinished_text(&unfinished_items(&[(Accepted, 3), (ManualReview, 2)], true)),
        "5 items not finished (accepted 3, manual_review 2)"
    );
}

#[test]
fn durations() {
    assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
    assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
    assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
    assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
    assert_eq!(parse_duration("12"), Ok(Duration::from_secs(12)));
    assert!(parse_duration("soon").is_err());
    assert!(parse_duration("5d").is_err());
}

#[test]
fn plain_http_is_refused_off_loopback_unless_allowed() {
    for ok in [
        "http://127.0.0.1:8080",
        "http://127.3.4.5/api",
        "http://[::1]:9/",
        "http://localhost:8080/api",
        "http://LOCALHOST./",
        "https://vendor.example/api",
    ] {
        assert!(api_url(ok, false).is_ok(), "{ok}");
    }
    for bad in [
        "http://vendor.example/api?code=s3cret",
        "http://10.1.2.3:8080/",
        "http://[::ffff:10.0.0.1]/",
        "http://localhost.evil.example/",
    ] {
        let e = api_url(bad, false).unwrap_err().0;
        assert!(
            e.contains("in clear") && e.contains("--allow-insecure-http"),
            "{e}"
        );
        assert!(!e.contains("s3cret"), "{e}");
        assert!(api_url(bad, true).is_ok(), "{bad}");
    }
}

#[test]
fn credentials_in_the_url_are_refused_without_being_repeated() {
    let e = api_url(
        "https://alice:pa55word@vendor.example/api?token=t0ken",
        false,
    )
    .unwrap_err()
    .0;
    assert!(
        !e.contains("alice") && !e.contains("pa55word") && !e.contains("t0ken"),
        "{e}"
    );
    assert!(
        e.contains("https://***@vendor.example/api?token=***"),
        "{e}"
    );
    let e = api_url("ftp://vendor.example/?key=t0ken", true)
        .unwrap_err()
        .0;
    assert!(!e.contains("t0ken") && e.contains("http"), "{e}");
    let e = api_url("not a url t0ken", true).unwrap_err().0;
    assert!(!e.contains("t0ken"), "{e}");
}

#[test]
fn the_label_masks_query_values() {
    assert_eq!(
        api_label("https://vendor.example:8443/api/?code=K1&region=eu&flag"),
        "https://vendor.example:8443/api/?code=***&region=***&***"
    );
    assert_eq!(api_label("http://127.0.0.1:80/"), "http://127.0.0.1/");
}
