//! Tests of `refleet run`'s arguments.

use super::*;

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
