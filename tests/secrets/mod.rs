//! Secrets stay secret and messages name the real cause once: an `--api-url`
//! with user-info or a query never appears verbatim in any file of `--out`,
//! the journal or the logs; plain http off loopback is refused; the
//! simulator takes its token without showing it in `ps` and guards every
//! route with it; a full disk, a missing file and a dangling `--out` say
//! what happened, once.

use std::path::Path;

use refleet::sim::{Sim, SimConfig};

use super::run::TOKEN;
use super::{journal_of, refleet, refleet_for, sample};

const AS_OF: &str = "2026-11-24";

/// A simulator on loopback that takes the tests' token.
fn sim() -> Sim {
    super::run::sim(SimConfig::default())
}

/// `refleet run` on the sample data into `out` against `api_url`, with
/// trace logging on.
fn run(api_url: &str, out: &Path, extra: &[&str]) -> std::process::Output {
    run_cmd(api_url, out, extra).output().expect("refleet runs")
}

fn run_cmd(api_url: &str, out: &Path, extra: &[&str]) -> assert_cmd::Command {
    let mut cmd = refleet_for(out);
    cmd.args(["run"])
        .arg(sample("inventory.csv"))
        .arg("--contracts")
        .arg(sample("contracts.csv"))
        .args(["--as-of", AS_OF, "--api-url", api_url, "--out"])
        .arg(out)
        .args(extra)
        .env("REFLEET_API_TOKEN", TOKEN)
        .env("REFLEET_LOG", "trace")
        .env_remove("REFLEET_API_URL")
        .env_remove("REFLEET_ALLOW_INSECURE_HTTP")
        // Killed (no exit code) if it neither refuses nor finishes in time.
        .timeout(std::time::Duration::from_secs(60));
    cmd
}

/// Every file under `dir`, recursively, with its bytes.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("a folder") {
        let path = entry.expect("an entry").path();
        if path.is_dir() {
            out.extend(files(&path));
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.push((path.display().to_string(), bytes));
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// Fails naming the place where any of `secrets` was found.
fn assert_nowhere(secrets: &[&str], output: &std::process::Output, out: &Path) {
    let mut places = files(out);
    places.push(("stdout".into(), output.stdout.clone()));
    places.push(("stderr".into(), output.stderr.clone()));
    for (place, bytes) in &places {
        for s in secrets {
            assert!(!contains(bytes, s), "`{s}` leaked into {place}");
        }
    }
}

#[test]
fn a_query_secret_in_the_api_url_is_masked_everywhere() {
    let sim = sim();
    let out = tempfile::tempdir().unwrap();
    let url = format!("{}/?code=QVal-5ecret&tenant=TVal-5ecret", sim.url());
    let output = run(&url, out.path(), &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("TRACE") || stderr.contains("DEBUG"),
        "logs on"
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("summary.json")).unwrap()).unwrap();
    assert_eq!(
        summary["api"],
        format!("{}/?code=***&tenant=***", sim.url()),
        "the label says where requests went, not the secret"
    );
    assert!(journal_of(out.path()).exists());
    assert_nowhere(&["QVal-5ecret", "TVal-5ecret", TOKEN], &output, out.path());
}

/// A server that accepts each connection and closes it unanswered: every
/// attempt fails with a transport error, which reqwest words with the URL.
fn hang_up_server() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let mut buf = [0u8; 4096];
            let _ = stream.and_then(|mut s| std::io::Read::read(&mut s, &mut buf));
        }
    });
    format!("http://{addr}")
}

#[test]
fn transport_errors_recorded_in_the_journal_do_not_carry_the_query() {
    let out = tempfile::tempdir().unwrap();
    let url = format!("{}/api?api_key=KVal-5ecret", hang_up_server());
    let output = run(&url, out.path(), &["--track-timeout", "2s"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(4), "{stderr}");
    assert_nowhere(&["KVal-5ecret", TOKEN], &output, out.path());
    let journal = std::fs::read(journal_of(out.path())).unwrap();
    assert!(
        contains(&journal, "api_key=***"),
        "the journal recorded the transport errors, redacted"
    );
}

#[test]
fn credentials_in_the_api_url_are_refused_and_not_repeated() {
    let sim = sim();
    let out = tempfile::tempdir().unwrap();
    let url = sim
        .url()
        .replace("http://", "http://alice-5ecret:pa55-5ecret@")
        + "/?token=TVal-5ecret";
    let output = run(&url, out.path(), &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("http://***@127.0.0.1:"), "{stderr}");
    assert!(stderr.contains("?token=***"), "{stderr}");
    assert_eq!(sim.stats().requests, 0, "nothing was sent");
    assert_nowhere(
        &["alice-5ecret", "pa55-5ecret", "TVal-5ecret"],
        &output,
        out.path(),
    );
}

#[test]
fn plain_http_off_loopback_is_refused_unless_allowed() {
    let out = tempfile::tempdir().unwrap();
    // 192.0.2.0/24 is TEST-NET-1: never routed, and never reached here
    // because the refusal comes before any request.
    let output = run("http://192.0.2.1:9/api", out.path(), &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert_eq!(
        stderr.lines().filter(|l| l.starts_with("refleet:")).count(),
        1,
        "{stderr}"
    );
    assert!(stderr.contains("in clear") && stderr.contains("--allow-insecure-http"));
    assert!(!journal_of(out.path()).exists(), "refused first");

    // Allowed by the flag or its variable: it goes ahead (a dry run, so
    // nothing is sent).
    for allowed in [
        run(
            "http://192.0.2.1:9/api",
            out.path(),
            &["--allow-insecure-http", "--dry-run", "--no-reconcile"],
        ),
        run_cmd(
            "http://192.0.2.1:9/api",
            out.path(),
            &["--dry-run", "--no-reconcile"],
        )
        .env("REFLEET_ALLOW_INSECURE_HTTP", "true")
        .output()
        .unwrap(),
    ] {
        assert_eq!(
            allowed.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&allowed.stderr)
        );
    }
    // Loopback over http needs nothing.
    let sim = sim();
    let out = tempfile::tempdir().unwrap();
    let url = sim.url().replace("127.0.0.1", "localhost");
    let output = run(&url, out.path(), &["--dry-run"]);
    assert_eq!(output.status.code(), Some(0));
}

/// `refleet sim` as a child process, killed when dropped.
struct SimProcess {
    child: std::process::Child,
    addr: String,
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `refleet sim --listen 127.0.0.1:0` with `args` and `env`, and
/// reads where it listens from its first line.
fn sim_process(args: &[&str], env: &[(&str, &str)]) -> SimProcess {
    use std::io::BufRead;
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_refleet"));
    cmd.args(["sim", "--listen", "127.0.0.1:0"])
        .args(args)
        .env_remove("REFLEET_SIM_TOKEN")
        .env_remove("REFLEET_POLICY")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("refleet sim starts");
    let mut line = String::new();
    let stdout = child.stdout.take().expect("stdout");
    let _ = std::io::BufReader::new(stdout).read_line(&mut line);
    let addr = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("http://"))
        .unwrap_or_default()
        .to_string();
    let sim = SimProcess { child, addr };
    assert!(!sim.addr.is_empty(), "no address in `{line}`");
    sim
}

/// The status code of one GET, with a bearer token if given.
fn status_of(addr: &str, path: &str, token: Option<&str>) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connects");
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: sim\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[test]
fn the_sim_takes_its_token_from_a_file_or_the_environment_and_guards_the_stats() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "from-file-Kx9\n").unwrap();
    let from_file = sim_process(&["--token-file", file.to_str().unwrap()], &[]);
    let from_env = sim_process(&[], &[("REFLEET_SIM_TOKEN", "from-env-Kx9")]);
    for (sim, token) in [(&from_file, "from-file-Kx9"), (&from_env, "from-env-Kx9")] {
        for path in ["/v1/_sim/stats", "/v1/reactivations/rq-1"] {
            assert_eq!(status_of(&sim.addr, path, None), 401, "{path}");
            assert_eq!(status_of(&sim.addr, path, Some("wrong")), 401, "{path}");
        }
        assert_eq!(status_of(&sim.addr, "/v1/_sim/stats", Some(token)), 200);
        assert_eq!(
            status_of(&sim.addr, "/v1/reactivations/rq-1", Some(token)),
            404,
            "authenticated, and no such request"
        );
    }
    // The token is in neither process's command line.
    for sim in [&from_file, &from_env] {
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", sim.child.id()));
        if let Ok(cmdline) = cmdline {
            assert!(!contains(&cmdline, "Kx9"));
        }
    }
}

#[test]
fn a_token_typed_on_the_sim_command_line_draws_a_warning() {
    let mut sim = sim_process(&["--token", "typed-Kx9"], &[]);
    assert_eq!(
        status_of(&sim.addr, "/v1/_sim/stats", Some("typed-Kx9")),
        200
    );
    let _ = sim.child.kill();
    let mut stderr = String::new();
    let _ = std::io::Read::read_to_string(&mut sim.child.stderr.take().unwrap(), &mut stderr);
    assert!(
        stderr.contains("--token is visible") && stderr.contains("--token-file"),
        "{stderr}"
    );
    assert!(!stderr.contains("typed-Kx9"), "{stderr}");
    // From the environment: no warning.
    let mut quiet = sim_process(&[], &[("REFLEET_SIM_TOKEN", "env-Kx9")]);
    let _ = quiet.child.kill();
    let mut stderr = String::new();
    let _ = std::io::Read::read_to_string(&mut quiet.child.stderr.take().unwrap(), &mut stderr);
    assert!(!stderr.contains("warning"), "{stderr}");
}

#[test]
fn sim_help_shows_the_safe_ways_to_pass_the_token() {
    let out = refleet().args(["sim", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("REFLEET_SIM_TOKEN=") && help.contains("--token-file"),
        "{help}"
    );
    assert!(!help.contains("--token secret"), "{help}");
}

#[test]
fn an_empty_sim_token_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "\n").unwrap();
    let out = refleet()
        .args(["sim", "--listen", "127.0.0.1:0", "--token-file"])
        .arg(&file)
        .timeout(std::time::Duration::from_secs(30))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("empty"));
}

/// The `refleet: ...` line of a failed command.
fn error_line(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr)
        .lines()
        .find(|l| l.starts_with("refleet: "))
        .unwrap_or_default()
        .to_string()
}

/// No part of an error line (between `: `) is said twice.
fn assert_said_once(line: &str) {
    let parts: Vec<&str> = line.split(": ").map(str::trim).collect();
    for (i, p) in parts.iter().enumerate() {
        assert!(
            !parts[i + 1..]
                .iter()
                .any(|q| q.contains(p) || p.contains(q)),
            "`{p}` said twice in `{line}`"
        );
    }
}

#[test]
fn a_missing_inventory_is_said_once() {
    let out = tempfile::tempdir().unwrap();
    let missing = out.path().join("nope.csv");
    let contracts = sample("contracts.csv");
    let contracts = contracts.to_str().unwrap();
    for extra in [
        &["validate"][..],
        &["quote", "--contracts", contracts, "--as-of", AS_OF],
    ] {
        let output = refleet()
            .args(&extra[..1])
            .arg(&missing)
            .args(&extra[1..])
            .arg("--out")
            .arg(out.path())
            .output()
            .unwrap();
        let line = error_line(&output);
        assert_eq!(
            line,
            format!(
                "refleet: cannot open {}: {}",
                missing.display(),
                std::io::Error::from_raw_os_error(2)
            ),
            "{extra:?}"
        );
        assert_said_once(&line);
    }
}

#[cfg(unix)]
#[test]
fn a_dangling_out_symlink_says_what_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("out");
    let gone = dir.path().join("mounted-elsewhere");
    std::os::unix::fs::symlink(&gone, &link).unwrap();
    let output = refleet()
        .arg("validate")
        .arg(sample("inventory.csv"))
        .arg("--out")
        .arg(&link)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        error_line(&output),
        format!(
            "refleet: --out {} is a symbolic link to {}, which does not exist",
            link.display(),
            gone.display()
        )
    );
}

/// A tmpfs of a few KiB mounted on a temporary folder, unmounted when
/// dropped (whatever the test did).
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// `None` (skipped, said on stderr) where mounting is not permitted,
    /// except in CI, which runs as root and must run these tests.
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if mounted {
            return Some(Tmpfs { dir });
        }
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI must be able to mount a tmpfs (run as root)"
        );
        eprintln!("SKIPPED: cannot mount a tmpfs here (not root?); the full-disk test did not run");
        None
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            // Busy: detach it now, it goes when its last user does.
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }
}

#[test]
fn a_full_out_disk_names_the_report_not_the_input() {
    let Some(disk) = Tmpfs::mount("256k") else {
        return;
    };
    let journal = tempfile::tempdir().unwrap();
    let out = disk.path().join("out");
    let nospace = std::io::Error::from_raw_os_error(28).to_string();
    // Reports of validate, quote and run.
    let validate = refleet()
        .arg("validate")
        .arg(sample("inventory.csv"))
        .arg("--emit-valid")
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let run = run_cmd("http://127.0.0.1:9", &out, &["--dry-run", "--state"])
        .arg(journal.path().join("j.sqlite"))
        .output()
        .unwrap();
    for output in [validate, run] {
        let line = error_line(&output);
        assert_eq!(output.status.code(), Some(1), "{line}");
        assert!(
            line.starts_with(&format!("refleet: cannot write {}/", out.display())),
            "{line}"
        );
        assert!(line.ends_with(&nospace), "{line}");
        assert!(
            !line.contains("reading") && !line.contains("inventory.csv"),
            "{line}"
        );
        assert_said_once(&line);
        assert!(!line.contains(" at path "), "{line}");
    }
}

#[test]
fn a_full_journal_disk_is_said_once() {
    let Some(disk) = Tmpfs::mount("64k") else {
        return;
    };
    let out = tempfile::tempdir().unwrap();
    let output = run_cmd("http://127.0.0.1:9", out.path(), &["--dry-run", "--state"])
        .arg(disk.path().join("j.sqlite"))
        .output()
        .unwrap();
    let line = error_line(&output);
    assert_eq!(output.status.code(), Some(1), "{line}");
    assert!(line.starts_with("refleet: journal: "), "{line}");
    assert_said_once(&line);
}
