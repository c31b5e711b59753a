//! PostgreSQL over TLS (rustls): `sslmode=require`, `verify-ca` and `verify-full` with
//! `sslrootcert`, and no plaintext fallback.
//!
//! - The no-fallback cases run against a stand-in server on 127.0.0.1 that refuses TLS (`N` to the
//!   SSLRequest) and records whether a plaintext startup message follows.
//! - The handshake cases run against a **throwaway** PostgreSQL (the machine's `initdb` and
//!   `pg_ctl` under `/usr/lib/postgresql/*/bin`, as the `postgres` user when the tests run as
//!   root) on a free port with `ssl=on`, a certificate authority and server certificate that the
//!   test generates with `openssl`, all in a temporary directory that is removed afterwards. The
//!   shared cluster on 5432 is not touched. Without the binaries or `openssl` the test says
//!   "skipped: …" and passes, unless `CI=true`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use handoff_domain::ports::LedgerPort;
use handoff_ledger::{LedgerOptions, LedgerSetupError, SqlLedger};
use sqlx::{Connection, PgConnection};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The SSLRequest message: length 8, code 80877103.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

fn quick() -> LedgerOptions {
    LedgerOptions { max_connections: 1, acquire_timeout: Duration::from_secs(3) }
}

/// What the stand-in server saw.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Seen {
    /// SSLRequests answered `N`.
    tls_requests: usize,
    /// Connections that sent a plaintext startup message (first, or after the `N`).
    plaintext_startups: usize,
}

/// A server that speaks just enough PostgreSQL to refuse TLS, then closes each connection.
async fn server_without_tls() -> (u16, Arc<Mutex<Seen>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
    let port = listener.local_addr().expect("bound").port();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let record = seen.clone();
    tokio::spawn(async move {
        // Bounded: a handful of connections per test at most.
        for _ in 0..64 {
            let Ok((mut socket, _)) = listener.accept().await else { return };
            let record = record.clone();
            tokio::spawn(async move {
                let mut first = [0u8; 8];
                if socket.read_exact(&mut first).await.is_err() {
                    return;
                }
                if first != SSL_REQUEST {
                    record.lock().expect("lock").plaintext_startups += 1;
                    return;
                }
                record.lock().expect("lock").tls_requests += 1;
                if socket.write_all(b"N").await.is_err() {
                    return;
                }
                let mut next = [0u8; 1];
                let after = tokio::time::timeout(Duration::from_secs(2), socket.read(&mut next)).await;
                if matches!(after, Ok(Ok(n)) if n > 0) {
                    record.lock().expect("lock").plaintext_startups += 1;
                }
            });
        }
    });
    (port, seen)
}

#[tokio::test]
async fn a_url_that_asks_for_tls_never_falls_back_to_plaintext() {
    for mode in ["require", "verify-ca", "verify-full"] {
        // Arrange
        let (port, seen) = server_without_tls().await;
        let url = format!("postgres://app:s3cret@127.0.0.1:{port}/handoff?sslmode={mode}");

        // Act
        let err = SqlLedger::connect_with(&url, &quick()).await.expect_err("a server without TLS must be refused");

        // Assert
        let message = err.to_string();
        assert!(matches!(err, LedgerSetupError::ConnectPostgres { .. }), "{mode}: {message}");
        assert!(message.contains("TLS") && message.contains(&format!("sslmode={mode}")), "{mode}: {message}");
        assert!(!message.contains("s3cret"), "{message}");
        let seen = *seen.lock().expect("lock");
        assert!(seen.tls_requests >= 1, "{mode}: no SSLRequest was sent: {seen:?}");
        assert_eq!(seen.plaintext_startups, 0, "{mode}: fell back to plaintext");
    }

    // The stand-in does notice a plaintext startup (so the zero above means something).
    let (port, seen) = server_without_tls().await;
    let url = format!("postgres://app@127.0.0.1:{port}/handoff?sslmode=disable");
    assert!(SqlLedger::connect_with(&url, &quick()).await.is_err());
    assert!(seen.lock().expect("lock").plaintext_startups >= 1);
}

#[tokio::test]
async fn an_unreadable_sslrootcert_is_refused_naming_the_file() {
    // Act
    let err = SqlLedger::connect_with(
        "postgres://app@127.0.0.1:1/handoff?sslmode=verify-full&sslrootcert=/nonexistent/ca.crt",
        &quick(),
    )
    .await
    .expect_err("refused");

    // Assert
    let message = err.to_string();
    assert!(matches!(err, LedgerSetupError::InvalidUrl { .. }), "{message}");
    assert!(message.contains("sslrootcert /nonexistent/ca.crt cannot be read"), "{message}");
}

// ---- a throwaway PostgreSQL with ssl=on ----------------------------------------------------

fn skip_or_fail(why: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("the PostgreSQL TLS test cannot run ({why}) and CI=true");
    }
    eprintln!("skipped: PostgreSQL TLS test ({why})");
}

/// The newest `/usr/lib/postgresql/<version>/bin` with `initdb` and `pg_ctl`.
fn postgres_bin() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("pg_ctl").is_file()).then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

fn output(command: &mut Command) -> Result<String, String> {
    let out = command.output().map_err(|e| format!("{command:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(format!("{command:?}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    }
}

/// A PostgreSQL instance in a temporary directory; stopped (and the directory removed) on drop.
struct ThrowawayPostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// `Some((uid, gid))` of `postgres` when the tests run as root (initdb refuses root).
    run_as: Option<(u32, u32)>,
    port: u16,
    started: bool,
}

impl ThrowawayPostgres {
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        match self.run_as {
            Some(_) => {
                let mut c = Command::new("runuser");
                c.args(["-u", "postgres", "--"]).arg(path);
                c
            }
            None => Command::new(path),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Gives `path` to the server's user (when running as root) with `mode`.
    fn hand_over(&self, path: &Path, mode: u32) -> Result<(), String> {
        use std::os::unix::fs::PermissionsExt;
        if let Some((uid, gid)) = self.run_as {
            std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(|e| format!("chown {path:?}: {e}"))?;
        }
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| format!("chmod {path:?}: {e}"))
    }

    /// Generates the certificates, initialises a cluster and starts it with `ssl=on`.
    fn start() -> Result<Self, String> {
        let bin = postgres_bin().ok_or("no initdb/pg_ctl under /usr/lib/postgresql/*/bin")?;
        output(Command::new("openssl").arg("version")).map_err(|e| format!("openssl is missing: {e}"))?;
        let run_as = if output(Command::new("id").arg("-u"))? == "0" {
            let uid =
                output(Command::new("id").args(["-u", "postgres"])).map_err(|e| format!("no postgres user: {e}"))?;
            let gid = output(Command::new("id").args(["-g", "postgres"]))?;
            Some((uid.parse().map_err(|_| "uid")?, gid.parse().map_err(|_| "gid")?))
        } else {
            None
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        let dir = tempfile::Builder::new().prefix("handoff-pg-tls-").tempdir().map_err(|e| e.to_string())?;
        let pg = Self { dir, bin, run_as, port, started: false };
        pg.hand_over(pg.dir.path(), 0o755)?;
        pg.certificates()?;
        output(pg.command("initdb").arg("-D").arg(pg.path("data")).args([
            "-U",
            "postgres",
            "-A",
            "trust",
            "--no-sync",
        ]))?;
        let options = format!(
            "-c port={port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={dir} -c ssl=on \
             -c ssl_cert_file={dir}/server.crt -c ssl_key_file={dir}/server.key -c fsync=off",
            dir = pg.dir.path().display()
        );
        let mut pg = pg;
        output(
            pg.command("pg_ctl")
                .arg("-D")
                .arg(pg.path("data"))
                .arg("-l")
                .arg(pg.path("server.log"))
                .args(["-w", "-t", "60", "-o", &options, "start"]),
        )
        .map_err(|e| format!("{e}\n{}", std::fs::read_to_string(pg.path("server.log")).unwrap_or_default()))?;
        pg.started = true;
        Ok(pg)
    }

    /// `ca.crt` (signs the server), `other-ca.crt` (signs nothing here), and `server.crt` for
    /// `IP:127.0.0.1` only (so `localhost` does not match it).
    fn certificates(&self) -> Result<(), String> {
        let dir = self.dir.path();
        let openssl = |args: &[&str]| output(Command::new("openssl").current_dir(dir).args(args));
        for (name, cn) in [("ca", "handoff test CA"), ("other-ca", "unrelated test CA")] {
            openssl(&[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.crt"),
                "-days",
                "2",
                "-subj",
                &format!("/CN={cn}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ])?;
        }
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=serverAuth\n",
        )
        .map_err(|e| e.to_string())?;
        openssl(&[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=handoff test server",
        ])?;
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ])?;
        self.hand_over(&dir.join("server.key"), 0o600)?;
        self.hand_over(&dir.join("server.crt"), 0o644)
    }

    fn url(&self, host: &str, query: &str) -> String {
        format!("postgres://postgres@{host}:{}/postgres?{query}", self.port)
    }

    fn cert(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }
}

impl Drop for ThrowawayPostgres {
    fn drop(&mut self) {
        if self.started {
            let _ = self
                .command("pg_ctl")
                .arg("-D")
                .arg(self.path("data"))
                .args(["-m", "immediate", "-w", "stop"])
                .output();
        }
    }
}

/// Whether a plain connection with `url` works and uses TLS.
async fn uses_tls(url: &str) -> Result<bool, String> {
    let mut conn = PgConnection::connect(url).await.map_err(|e| e.to_string())?;
    let ssl: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    let _ = conn.close().await;
    Ok(ssl)
}

#[tokio::test]
async fn the_ledger_speaks_tls_to_postgres_with_require_verify_ca_and_verify_full() {
    // Arrange
    let pg = match tokio::task::spawn_blocking(ThrowawayPostgres::start).await.expect("setup ran") {
        Ok(pg) => pg,
        Err(why) => return skip_or_fail(&why),
    };
    let ca = pg.cert("ca.crt");
    let other = pg.cert("other-ca.crt");

    // Act / Assert: the ledger itself over verify-full, migrations and all.
    let full = pg.url("127.0.0.1", &format!("sslmode=verify-full&sslrootcert={ca}"));
    let ledger = SqlLedger::connect_with(&full, &quick()).await.unwrap_or_else(|e| panic!("verify-full: {e}"));
    ledger.ping().await.expect("the ledger answers over TLS");
    ledger.close().await;
    assert_eq!(uses_tls(&full).await, Ok(true), "verify-full");

    // What each mode accepts.
    let accepted = [
        ("verify-ca with the right CA", pg.url("127.0.0.1", &format!("sslmode=verify-ca&sslrootcert={ca}"))),
        ("require without a root certificate", pg.url("127.0.0.1", "sslmode=require")),
        ("require with the right root certificate", pg.url("127.0.0.1", &format!("sslmode=require&sslrootcert={ca}"))),
    ];
    for (case, url) in &accepted {
        assert_eq!(uses_tls(url).await, Ok(true), "{case}");
        let ledger = SqlLedger::connect_with(url, &quick()).await.unwrap_or_else(|e| panic!("{case}: {e}"));
        ledger.close().await;
    }

    // What each mode refuses, through the ledger's own connect.
    let refused = [
        (
            "verify-full on a host name the certificate does not name",
            pg.url("localhost", &format!("sslmode=verify-full&sslrootcert={ca}")),
        ),
        ("verify-full with another CA", pg.url("127.0.0.1", &format!("sslmode=verify-full&sslrootcert={other}"))),
        ("verify-full with only the public roots", pg.url("127.0.0.1", "sslmode=verify-full")),
        ("verify-ca with another CA", pg.url("127.0.0.1", &format!("sslmode=verify-ca&sslrootcert={other}"))),
        (
            "require with another CA (checked, as libpq does)",
            pg.url("127.0.0.1", &format!("sslmode=require&sslrootcert={other}")),
        ),
    ];
    for (case, url) in &refused {
        let err = SqlLedger::connect_with(url, &quick()).await.expect_err(case);
        let message = err.to_string();
        assert!(matches!(err, LedgerSetupError::ConnectPostgres { .. }), "{case}: {message}");
        assert!(message.contains("TLS") || message.contains("certificate"), "{case}: {message}");
    }

    // verify-ca on a host name the certificate does not name: libpq accepts it. sqlx 0.8.6 with
    // rustls >= 0.23.24 still checks the name there (launchbadge/sqlx#3793, fixed upstream by
    // #3861 after 0.8.6), so for now it is refused: stricter, never weaker. Either way it must
    // be TLS and never a wrong CA (refused above).
    let by_name = pg.url("localhost", &format!("sslmode=verify-ca&sslrootcert={ca}"));
    match uses_tls(&by_name).await {
        Ok(ssl) => assert!(ssl, "verify-ca by name connected without TLS"),
        Err(e) => assert!(e.contains("not valid for name"), "verify-ca by name failed for another reason: {e}"),
    }
    drop(pg);
}
