//! The harness itself: a cluster answers, keeps its data and port across a
//! restart, two clusters start at once without colliding, and dropping one
//! leaves no server and no files behind.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::thread;

use super::Pg;

/// The postmaster's pid, first line of `postmaster.pid`.
fn server_pid(pg: &Pg) -> u32 {
    let pid_file = pg.data_dir().join("postmaster.pid");
    let text = std::fs::read_to_string(&pid_file)
        .unwrap_or_else(|e| panic!("reading {}: {e}", pid_file.display()));
    text.lines()
        .next()
        .and_then(|l| l.parse().ok())
        .expect("a pid")
}

/// Gone, or a zombie nobody reaped (in a container, pid 1 may not reap).
fn process_gone(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
        stat.rsplit(')')
            .next()
            .is_some_and(|s| s.trim_start().starts_with('Z'))
    })
}

/// Drops `pg` and checks that its server and files are gone.
fn drop_and_check(pg: Pg) {
    let (pid, port, dir): (u32, u16, PathBuf) = (
        server_pid(&pg),
        pg.port(),
        pg.data_dir()
            .parent()
            .expect("data dir has a parent")
            .to_owned(),
    );
    drop(pg);
    assert!(process_gone(pid), "postmaster {pid} still running");
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "port {port} still open"
    );
    assert!(!Path::exists(&dir), "{} not removed", dir.display());
}

#[test]
#[cfg_attr(
    no_postgres,
    ignore = "needs PostgreSQL (Debian's postgresql package); runs in CI"
)]
fn a_cluster_keeps_its_data_and_port_across_restarts() {
    let Some(pg) = Pg::start_or_skip("a_cluster_keeps_its_data_and_port_across_restarts") else {
        return;
    };
    assert_eq!(pg.psql("select 1"), "1");
    assert!(pg.url().starts_with("postgres://postgres@127.0.0.1:"));
    pg.psql("create table t (x int, y text); insert into t values (42, 'a'), (43, 'b')");

    let (url, pid) = (pg.url(), server_pid(&pg));
    pg.restart();
    assert_eq!(pg.url(), url);
    assert_ne!(server_pid(&pg), pid, "a new postmaster");
    assert_eq!(pg.psql("select x, y from t order by x"), "42|a\n43|b");

    pg.stop();
    assert!(TcpStream::connect(("127.0.0.1", pg.port())).is_err());
    pg.start();
    assert_eq!(pg.psql("select count(*) from t"), "2");

    drop_and_check(pg);
}

#[test]
#[cfg_attr(
    no_postgres,
    ignore = "needs PostgreSQL (Debian's postgresql package); runs in CI"
)]
fn two_clusters_start_at_once_and_are_independent() {
    let start =
        || thread::spawn(|| Pg::start_or_skip("two_clusters_start_at_once_and_are_independent"));
    let (a, b) = (start(), start());
    // Both joined before either is unwrapped, so that a failed start does
    // not end the test while the other thread still owns a live cluster.
    let (a, b) = (a.join(), b.join());
    let (Some(a), Some(b)) = (a.expect("start a"), b.expect("start b")) else {
        return;
    };
    assert_ne!(a.port(), b.port());
    assert_ne!(a.data_dir(), b.data_dir());

    a.psql("create table only_in_a (x int)");
    assert_eq!(
        a.psql("select count(*) from pg_tables where tablename = 'only_in_a'"),
        "1"
    );
    assert_eq!(
        b.psql("select count(*) from pg_tables where tablename = 'only_in_a'"),
        "0"
    );

    drop_and_check(a);
    assert_eq!(b.psql("select 1"), "1", "b survives a's drop");
    drop_and_check(b);
}
