//! A throwaway PostgreSQL cluster for one test: its own data directory, its
//! own loopback port, trust authentication, removed on drop.
//!
//! The server comes from Debian's `postgresql` package (15 preferred), found
//! in `/usr/lib/postgresql/*/bin` or through `pg_config --bindir`, or taken
//! from `REFLEET_PG_BINDIR`. Without it a test is skipped loudly, except in
//! CI, where it fails. PostgreSQL refuses to run as root, and tests run as
//! root in CI, so as root the server runs as a dedicated system user
//! (`refleet-pg`, created on first use) through `runuser`.
//!
//! For the PostgreSQL ledger's tests (issue 18); `harness` tests it here,
//! so CI shows that `.ci/run` installed a server these tests can start.
//!
//! ```text
//! let Some(pg) = Pg::start_or_skip("journal_survives_a_restart") else { return };
//! pg.psql("create table t (x int); insert into t values (1)");
//! pg.restart();
//! assert_eq!(pg.psql("select x from t"), "1");
//! ```

mod audit;
mod harness;
mod ledger;
mod tls;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};
use std::{fs, thread};

use tempfile::TempDir;

/// The system user the server runs as when the tests run as root.
const SERVER_USER: &str = "refleet-pg";
/// The superuser `initdb` creates; trust authentication, so no password.
const SUPERUSER: &str = "postgres";
/// The database each cluster gets for the test.
const DATABASE: &str = "refleet";
/// What a directory must hold to be usable as the PostgreSQL bin directory.
const TOOLS: [&str; 5] = ["initdb", "pg_ctl", "postgres", "pg_isready", "psql"];
/// How long the server may take to start or stop.
const TIMEOUT: Duration = Duration::from_secs(60);

/// Ports handed to the clusters of this process and not yet released. The
/// port is free when picked but only taken once the server binds it; this
/// keeps two clusters starting at once from being given the same one. Other
/// processes are handled by retrying on "address already in use".
static PORTS: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A running (or deliberately stopped) PostgreSQL cluster. Dropping it
/// stops the server at once and removes its files.
pub struct Pg {
    bin: PathBuf,
    /// The user the server runs as, when that is not us (we are root).
    user: Option<&'static ServerUser>,
    port: u16,
    /// Holds the data directory, the socket and the server log; it is
    /// removed after `Drop::drop` has stopped the server.
    dir: TempDir,
}

impl Pg {
    /// Starts a fresh cluster with an empty database, or returns `None` after
    /// printing a skip notice naming `test` when PostgreSQL is not installed.
    /// In CI (`CI` set, and not `false` or `0`) a missing PostgreSQL panics
    /// instead: there the tests must run. Any other failure panics.
    pub fn start_or_skip(test: &str) -> Option<Pg> {
        let Some(bin) = bin_dir() else {
            let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
            assert!(
                !ci,
                "{test}: CI needs PostgreSQL (Debian's postgresql package, which .ci/run \
                 installs); none in /usr/lib/postgresql/*/bin, `pg_config --bindir` or \
                 REFLEET_PG_BINDIR"
            );
            // Straight to the stream, not `eprintln!`: the test harness
            // captures that and shows it only for failing tests.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test}: PostgreSQL 15 not found (install Debian's postgresql \
                 package); these tests run in CI"
            );
            return None;
        };
        Some(Pg::init(bin))
    }

    fn init(bin: PathBuf) -> Pg {
        let user = server_user();
        // Owner only: tempfile's default is 0o777 less the umask.
        let dir = tempfile::Builder::new()
            .prefix("refleet-pg-")
            .permissions(fs::Permissions::from_mode(0o700))
            .tempdir()
            .unwrap_or_else(|e| panic!("creating a temporary directory for PostgreSQL: {e}"));
        if let Some(user) = user {
            std::os::unix::fs::chown(dir.path(), Some(user.uid), None).unwrap_or_else(|e| {
                panic!("giving {} to {}: {e}", dir.path().display(), user.name)
            });
        }
        // From here on, a panic drops `pg`, which cleans up after itself.
        let mut pg = Pg {
            bin,
            user,
            port: 0,
            dir,
        };

        // `--locale=C`: the environment's locale may not exist on this
        // machine, and initdb refuses to run with one it cannot load.
        let data = pg.data_dir();
        let mut initdb = pg.server_command("initdb");
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", SUPERUSER, "-A", "trust", "-E", "UTF8", "--locale=C"])
            .args(["--no-sync", "--no-instructions"]);
        run(&mut initdb).unwrap_or_else(|e| panic!("{e}"));
        pg.configure();

        // Another process may take the port between our pick and the
        // server's bind; then pick again.
        for attempt in 1.. {
            pg.port = pick_port();
            match pg.launch() {
                Ok(()) => break,
                Err(e) if e.port_taken && attempt < 5 => release_port(pg.port),
                Err(e) => panic!("starting PostgreSQL on port {}: {}", pg.port, e.message),
            }
        }
        pg.psql_in(SUPERUSER, &format!("CREATE DATABASE {DATABASE}"));
        pg
    }

    /// The connection URL of the test database.
    pub fn url(&self) -> String {
        self.url_for(DATABASE)
    }

    /// The loopback TCP port; it stays the same across restarts.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The cluster's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Runs `sql` (one or more statements) in the test database with `psql`
    /// and returns what it printed: rows one per line, columns separated by
    /// `|`, no headers, no trailing newline. Panics if `psql` fails.
    pub fn psql(&self, sql: &str) -> String {
        self.psql_in(DATABASE, sql)
    }

    /// Stops the server with a fast shutdown (clients disconnected, a clean
    /// checkpoint); `start` brings it back.
    pub fn stop(&self) {
        self.pg_ctl_stop("fast")
            .unwrap_or_else(|e| panic!("stopping PostgreSQL: {e}"));
    }

    /// Starts the server again after `stop`, on the same port and data.
    pub fn start(&self) {
        self.launch().unwrap_or_else(|e| {
            panic!("restarting PostgreSQL on port {}: {}", self.port, e.message)
        });
    }

    /// Turns TLS on with the server certificate and key at `cert` and `key`
    /// (PEM), and logs each connection (with whether it used TLS); then
    /// restarts the server.
    pub fn enable_tls(&self, cert: &Path, key: &Path) {
        let data = self.data_dir();
        for (from, to) in [(cert, "server.crt"), (key, "server.key")] {
            let to = data.join(to);
            fs::copy(from, &to).unwrap_or_else(|e| panic!("copying {}: {e}", from.display()));
            // The server refuses a key others can read, or that is not its own.
            fs::set_permissions(&to, fs::Permissions::from_mode(0o600)).unwrap();
            if let Some(user) = self.user {
                std::os::unix::fs::chown(&to, Some(user.uid), None)
                    .unwrap_or_else(|e| panic!("chown {}: {e}", to.display()));
            }
        }
        let conf = data.join("postgresql.conf");
        fs::OpenOptions::new()
            .append(true)
            .open(&conf)
            .and_then(|mut f| {
                f.write_all(
                    b"ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\nlog_connections = on\n",
                )
            })
            .unwrap_or_else(|e| panic!("appending to {}: {e}", conf.display()));
        self.restart();
    }

    /// What the server has logged so far.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&fs::read(self.log_file()).unwrap_or_default()).into_owned()
    }

    /// `stop`, then `start`.
    pub fn restart(&self) {
        self.stop();
        self.start();
    }

    fn url_for(&self, database: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{database}", self.port)
    }

    fn log_file(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// Settings every start needs; the port alone is given at start, as it
    /// may change while the first start looks for a free one.
    fn configure(&self) {
        // `unix_socket_directories`: the Debian default, /var/run/postgresql,
        // is not writable by our user; ours is 0700, so only we (and root)
        // can use the socket. `fsync = off`: speed; the machine does not
        // crash under a test, so a killed server still loses nothing.
        let socket_dir = self.dir.path().to_string_lossy();
        let settings = format!(
            "\n# Set by the refleet test harness.\n\
             listen_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{}'\n\
             fsync = off\n",
            socket_dir.replace('\\', "\\\\").replace('\'', "''")
        );
        let conf = self.data_dir().join("postgresql.conf");
        fs::OpenOptions::new()
            .append(true)
            .open(&conf)
            .and_then(|mut f| f.write_all(settings.as_bytes()))
            .unwrap_or_else(|e| panic!("appending to {}: {e}", conf.display()));
    }

    /// Starts the server and waits until it accepts connections.
    fn launch(&self) -> Result<(), LaunchError> {
        let log = self.log_file();
        // The log is appended to; what this start wrote begins here.
        let log_start = fs::metadata(&log).map_or(0, |m| m.len());
        let mut pg_ctl = self.server_command("pg_ctl");
        pg_ctl
            .args(["start", "-w", "-t"])
            .arg(TIMEOUT.as_secs().to_string())
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(&log)
            .args(["-o", &format!("-p {}", self.port)]);
        if let Err(message) = run(&mut pg_ctl) {
            let log = fs::read(&log).unwrap_or_default();
            let log = String::from_utf8_lossy(log.get(log_start as usize..).unwrap_or_default());
            return Err(LaunchError {
                port_taken: log.contains("Address already in use"),
                message: format!("{message}\nserver log:\n{log}"),
            });
        }
        // `pg_ctl -w` has seen the server ready; this makes sure it is on TCP.
        let deadline = Instant::now() + TIMEOUT;
        let mut ready = Command::new(self.bin.join("pg_isready"));
        ready
            .args(["-q", "-h", "127.0.0.1", "-U", SUPERUSER, "-t", "1", "-p"])
            .arg(self.port.to_string());
        while !ready.status().is_ok_and(|s| s.success()) {
            if Instant::now() > deadline {
                return Err(LaunchError {
                    port_taken: false,
                    message: format!("not accepting connections after {TIMEOUT:?}"),
                });
            }
            thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    fn pg_ctl_stop(&self, mode: &str) -> Result<Output, String> {
        let mut pg_ctl = self.server_command("pg_ctl");
        pg_ctl
            .args(["stop", "-w", "-m", mode, "-t"])
            .arg(TIMEOUT.as_secs().to_string())
            .arg("-D")
            .arg(self.data_dir());
        run(&mut pg_ctl)
    }

    fn psql_in(&self, database: &str, sql: &str) -> String {
        // -X: no ~/.psqlrc; -q -A -t: bare rows.
        let mut psql = Command::new(self.bin.join("psql"));
        psql.args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-d",
            &self.url_for(database),
            "-c",
            sql,
        ]);
        let out = run(&mut psql).unwrap_or_else(|e| panic!("{e}"));
        String::from_utf8_lossy(&out.stdout)
            .trim_end_matches('\n')
            .to_owned()
    }

    /// A command for a server-side tool, run as the server's user.
    fn server_command(&self, tool: &str) -> Command {
        let program = self.bin.join(tool);
        let mut cmd = match self.user {
            // `runuser -u` runs the program directly (no shell, no login),
            // keeping the environment but HOME, SHELL, USER and LOGNAME.
            Some(user) => {
                let mut cmd = Command::new("runuser");
                cmd.args(["-u", user.name, "--"]).arg(program);
                cmd
            }
            None => Command::new(program),
        };
        // The tools change to their working directory, and ours (under
        // /root, say) may be closed to the server's user. English messages
        // keep "Address already in use" recognisable in the log.
        cmd.current_dir(self.dir.path()).env("LC_ALL", "C");
        cmd
    }
}

impl Drop for Pg {
    /// Stops the server at once (no checkpoint: the files are going away);
    /// the `TempDir` field then removes them. Failure is ignored: the server
    /// may already be stopped, or never have started.
    fn drop(&mut self) {
        let _ = self.pg_ctl_stop("immediate");
        release_port(self.port);
    }
}

/// Why a start failed, and whether picking another port may help.
struct LaunchError {
    port_taken: bool,
    message: String,
}

/// The PostgreSQL bin directory: `REFLEET_PG_BINDIR` if set; otherwise
/// Debian's 15, `pg_config --bindir`, then Debian's other versions, newest
/// first; the first holding all of `TOOLS`.
pub fn bin_dir() -> Option<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(dir) = std::env::var_os("REFLEET_PG_BINDIR") {
        candidates.push(PathBuf::from(dir));
    } else {
        let debian = Path::new("/usr/lib/postgresql");
        candidates.push(debian.join("15/bin"));
        if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
            if out.status.success() {
                let dir = String::from_utf8_lossy(&out.stdout);
                candidates.push(PathBuf::from(dir.trim()));
            }
        }
        let mut versions: Vec<u32> = fs::read_dir(debian)
            .into_iter()
            .flatten()
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        versions.sort_unstable_by(|a, b| b.cmp(a));
        candidates.extend(versions.iter().map(|v| debian.join(format!("{v}/bin"))));
    }
    candidates
        .into_iter()
        .find(|dir| TOOLS.iter().all(|tool| dir.join(tool).is_file()))
}

/// The user the server runs as when we are root.
struct ServerUser {
    name: &'static str,
    uid: u32,
}

/// `None` when we are not root: the server then runs as us. As root, the
/// dedicated user, created the first time.
fn server_user() -> Option<&'static ServerUser> {
    static USER: OnceLock<Option<ServerUser>> = OnceLock::new();
    USER.get_or_init(|| {
        let root = uid_of(None).expect("`id -u` failed: cannot tell whether we are root") == 0;
        root.then(|| ServerUser {
            name: SERVER_USER,
            uid: ensure_user(SERVER_USER),
        })
    })
    .as_ref()
}

/// The uid of `name`, creating it as a system user (no home, no login) if
/// it does not exist. Test processes running at once would race here, and
/// concurrent `useradd`s all "succeed", overwriting each other's entry
/// (Debian 12): so the look-up and the creation happen under a file lock.
fn ensure_user(name: &str) -> u32 {
    let lock_path = std::env::temp_dir().join("refleet-pg-useradd.lock");
    let _lock = fs::File::create(&lock_path)
        .and_then(|file| file.lock().map(|()| file))
        .unwrap_or_else(|e| panic!("locking {}: {e}", lock_path.display()));
    if let Some(uid) = uid_of(Some(name)) {
        return uid;
    }
    let mut useradd = Command::new("useradd");
    useradd
        .args(["--system", "--no-create-home", "--home-dir", "/nonexistent"])
        .args(["--shell", "/usr/sbin/nologin", name]);
    run(&mut useradd).unwrap_or_else(|e| {
        panic!("creating the system user {name} (PostgreSQL refuses to run as root): {e}")
    });
    uid_of(Some(name)).unwrap_or_else(|| panic!("{name} missing right after useradd"))
}

/// The uid of `user`, or our own; `None` if `id` fails (no such user).
fn uid_of(user: Option<&str>) -> Option<u32> {
    let out = Command::new("id").arg("-u").args(user).output().ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// A loopback port free right now and not handed to another cluster of ours.
fn pick_port() -> u16 {
    loop {
        let port = TcpListener::bind(("127.0.0.1", 0))
            .and_then(|listener| listener.local_addr())
            .unwrap_or_else(|e| panic!("finding a free port on 127.0.0.1: {e}"))
            .port();
        if PORTS
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(port)
        {
            return port;
        }
    }
}

fn release_port(port: u16) {
    PORTS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(&port);
}

/// Runs `cmd` to completion; on failure, a message with the command line,
/// its exit status and its output.
fn run(cmd: &mut Command) -> Result<Output, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if out.status.success() {
        return Ok(out);
    }
    let mut message = format!("{cmd:?} failed ({})", out.status);
    for stream in [&out.stdout, &out.stderr] {
        let text = String::from_utf8_lossy(stream);
        if !text.trim().is_empty() {
            let _ = write!(message, "\n{}", text.trim_end());
        }
    }
    Err(message)
}
