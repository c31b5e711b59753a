//! The real `handoff serve` as a child process: finding (and building) the binary, starting it with
//! a clean environment, reading its port from the `"handoff ready"` JSON line, counting its log
//! lines, and stopping it with SIGTERM (SIGKILL after a grace period, or when dropped).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde::Serialize;

/// How many warning/error lines of the service the report quotes.
const QUOTED_LINES: usize = 5;

/// The `handoff` binary to benchmark: `explicit` if given, else the one next to this executable
/// (`target/<profile>/handoff`), built first with the same profile unless `no_build`, so a run never
/// measures a stale binary.
pub(crate) fn locate_binary(explicit: Option<&Path>, no_build: bool) -> anyhow::Result<PathBuf> {
    if let Some(path) = explicit {
        if !path.is_file() {
            bail!("--binary {} does not exist", path.display());
        }
        return Ok(path.to_path_buf());
    }
    let exe = std::env::current_exe().context("failed to find the benchmark's own path")?;
    let dir = exe.parent().context("the benchmark binary has no directory")?;
    let bin = dir.join(format!("handoff{}", std::env::consts::EXE_SUFFIX));
    if !no_build {
        let profile = dir.file_name().and_then(|n| n.to_str()).unwrap_or("debug");
        let mut cmd = Command::new(option_env!("CARGO").unwrap_or("cargo"));
        cmd.args(["build", "-q", "-p", "handoff-app", "--bin", "handoff"]);
        match profile {
            "debug" => {}
            "release" => {
                cmd.arg("--release");
            }
            other => {
                cmd.args(["--profile", other]);
            }
        }
        cmd.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
        eprintln!("building the handoff binary ({profile}) …");
        match cmd.status() {
            Ok(status) if status.success() => {}
            Ok(status) => bail!("building the handoff binary failed ({status})"),
            Err(e) if bin.is_file() => eprintln!("cargo is unavailable ({e}); using the existing {}", bin.display()),
            Err(e) => bail!("cargo is unavailable ({e}) and {} does not exist", bin.display()),
        }
    }
    if !bin.is_file() {
        bail!(
            "{} does not exist; build it with `cargo build --release -p handoff-app` or pass --binary",
            bin.display()
        );
    }
    Ok(bin)
}

/// What the service wrote to stdout (its JSON log).
#[derive(Debug, Default, Clone, Serialize)]
pub(crate) struct LogStats {
    /// Lines written.
    pub(crate) lines: u64,
    /// Lines at `WARN`.
    pub(crate) warnings: u64,
    /// Lines at `ERROR`.
    pub(crate) errors: u64,
    /// The first few warning and error lines.
    pub(crate) quoted: Vec<String>,
}

/// A running `handoff serve`.
#[derive(Debug)]
pub(crate) struct Service {
    child: Child,
    port: u16,
    log: Arc<Mutex<LogStats>>,
    reader: Option<JoinHandle<()>>,
    ready_after: Duration,
}

impl Service {
    /// Starts `binary serve` with exactly `env` (nothing inherited, so no proxy or `.env` leaks in)
    /// in `workdir`, and waits up to `ready_timeout` for its `"handoff ready"` line.
    ///
    /// # Errors
    /// When the binary cannot start, exits, or does not report its port in time.
    pub(crate) fn start(
        binary: &Path,
        env: &[(String, String)],
        workdir: &Path,
        ready_timeout: Duration,
    ) -> anyhow::Result<Self> {
        let started = Instant::now();
        let mut child = Command::new(binary)
            .arg("serve")
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir(workdir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("failed to start {}", binary.display()))?;
        let stdout = child.stdout.take().context("the child has no stdout")?;
        let log = Arc::new(Mutex::new(LogStats::default()));
        let (port_tx, port_rx) = std::sync::mpsc::channel::<u16>();
        let reader_log = log.clone();
        let reader = std::thread::Builder::new()
            .name("bench-log".to_owned())
            .spawn(move || read_log(stdout, &port_tx, &reader_log))
            .context("failed to start the log reader")?;
        let mut service = Self { child, port: 0, log, reader: Some(reader), ready_after: Duration::ZERO };
        match port_rx.recv_timeout(ready_timeout) {
            Ok(port) => {
                service.port = port;
                service.ready_after = started.elapsed();
                Ok(service)
            }
            Err(_) => {
                let exited = service.child.try_wait().ok().flatten();
                service.kill();
                match exited {
                    Some(status) => bail!("handoff serve exited before it was ready ({status}); see its stderr above"),
                    None => bail!("handoff serve did not report \"handoff ready\" within {ready_timeout:?}"),
                }
            }
        }
    }

    /// The child's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The port it listens on (127.0.0.1).
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// From spawn to the ready line.
    pub(crate) fn ready_after(&self) -> Duration {
        self.ready_after
    }

    /// What the log reader has counted so far.
    pub(crate) fn log_stats(&self) -> LogStats {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Sends SIGTERM, waits up to `grace` for a clean exit (SIGKILL after that) and returns the
    /// exit status (`None` when it had to be killed).
    pub(crate) fn stop(mut self, grace: Duration) -> Option<ExitStatus> {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).stdout(Stdio::null()).stderr(Stdio::null()).status();
        let deadline = Instant::now() + grace;
        let mut status = None;
        // Bounded: at most grace / 20 ms polls.
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                status = Some(s);
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if status.is_none() {
            eprintln!("handoff serve did not stop within {grace:?}; killing it");
            self.kill();
        }
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        status
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill();
        }
    }
}

/// Reads the child's stdout to its end: reports the port of the ready line once, counts the rest.
fn read_log(stdout: impl std::io::Read, port_tx: &std::sync::mpsc::Sender<u16>, log: &Mutex<LogStats>) {
    let mut reported = false;
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        if !reported {
            if let Some(port) = ready_port(&line) {
                let _ = port_tx.send(port);
                reported = true;
            }
        }
        let Ok(mut stats) = log.lock() else { continue };
        stats.lines += 1;
        let level = line_level(&line);
        if level == Some("WARN") {
            stats.warnings += 1;
        }
        if level == Some("ERROR") {
            stats.errors += 1;
        }
        if matches!(level, Some("WARN" | "ERROR")) && stats.quoted.len() < QUOTED_LINES {
            stats.quoted.push(line.chars().take(400).collect());
        }
    }
}

/// The port of a `{"message":"handoff ready","port":N}` line.
pub(crate) fn ready_port(line: &str) -> Option<u16> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    if v.get("message")?.as_str()? != "handoff ready" {
        return None;
    }
    u16::try_from(v.get("port")?.as_u64()?).ok()
}

fn line_level(line: &str) -> Option<&'static str> {
    ["WARN", "ERROR", "INFO", "DEBUG", "TRACE"].into_iter().find(|l| line.contains(&format!("\"level\":\"{l}\"")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_port_is_read_from_the_ready_line_only() {
        let ready = r#"{"timestamp":"t","level":"INFO","message":"handoff ready","port":41234,"target":"handoff_app::startup"}"#;
        assert_eq!(ready_port(ready), Some(41234));
        assert_eq!(ready_port(r#"{"level":"INFO","message":"other","port":1}"#), None);
        assert_eq!(ready_port(r#"{"message":"handoff ready","port":70000}"#), None);
        assert_eq!(ready_port("not json"), None);
    }

    #[test]
    fn log_lines_are_counted_by_level_and_warnings_quoted() {
        // Arrange
        let text = "{\"level\":\"WARN\",\"message\":\"a\"}\n{\"level\":\"INFO\",\"message\":\"handoff ready\",\"port\":9}\n{\"level\":\"ERROR\",\"message\":\"b\"}\n";
        let (tx, rx) = std::sync::mpsc::channel();
        let log = Mutex::new(LogStats::default());

        // Act
        read_log(text.as_bytes(), &tx, &log);

        // Assert
        let stats = log.into_inner().unwrap();
        assert_eq!((stats.lines, stats.warnings, stats.errors, stats.quoted.len()), (3, 1, 1, 2));
        assert_eq!(rx.try_recv().ok(), Some(9));
    }
}
