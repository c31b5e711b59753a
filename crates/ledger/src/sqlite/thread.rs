//! A SQLite connection on its own OS thread, driven by messages, one per ledger operation.
//!
//! The writer **group-commits**: it takes every operation queued since its last batch (at most
//! [`MAX_BATCH`]), runs them in one `BEGIN IMMEDIATE … COMMIT`, each inside its own `SAVEPOINT` so
//! an operation that fails is undone alone, and only then answers each caller. A caller therefore
//! never hears "done" before its write is committed, and a failed commit fails every operation of
//! the batch. Compared with one transaction per operation on a pooled connection, this costs one
//! thread wake-up per batch instead of one per statement, and one WAL commit per batch.
//!
//! The reader runs each operation alone on a second connection (WAL: it never waits for the
//! writer). An in-memory database has no reader: its reads go to the writer.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use handoff_domain::ports::LedgerError;
use rusqlite::Connection;
use tokio::sync::oneshot;

/// Most operations in one write transaction: bounds how long the first caller of a batch waits.
const MAX_BATCH: usize = 256;

/// An operation queued for the connection's thread.
trait Job: Send {
    /// Runs the operation on `conn`; whether it succeeded.
    fn run(&mut self, conn: &Connection) -> bool;
    /// Answers the caller: the operation's result, or `failure` if its batch did not commit.
    fn finish(self: Box<Self>, failure: Option<&LedgerError>);
}

/// One call: the work, then its result until the batch commits.
struct Call<T, F> {
    work: Option<F>,
    result: Option<Result<T, LedgerError>>,
    reply: oneshot::Sender<Result<T, LedgerError>>,
}

impl<T, F> Job for Call<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> Result<T, LedgerError> + Send,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let Some(work) = self.work.take() else { return false };
        // A panic in an operation fails that operation, not the thread and every later caller.
        let result = catch_unwind(AssertUnwindSafe(|| work(conn)))
            .unwrap_or_else(|_| Err(LedgerError::Unavailable("the ledger operation panicked".to_owned())));
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn finish(self: Box<Self>, failure: Option<&LedgerError>) {
        let result = match (self.result, failure) {
            (Some(Ok(_)) | None, Some(failure)) => Err(failure.clone()),
            (Some(result), _) => result,
            (None, None) => Err(LedgerError::Unavailable("the ledger operation did not run".to_owned())),
        };
        // The caller may have gone (its request was cancelled): nothing to tell.
        let _ = self.reply.send(result);
    }
}

enum Message {
    Job(Box<dyn Job>),
    /// Finish what is queued, close the connection, then acknowledge.
    Close(oneshot::Sender<()>),
}

/// How the thread runs its operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    /// Batches in one write transaction, a savepoint each.
    Writer,
    /// One at a time, each its own (read) transaction; and every [`CHECKPOINT_EVERY`] a passive
    /// WAL checkpoint, so the writer never stops to copy the WAL into the database and `fsync`
    /// it (its automatic checkpoint is only a backstop, see `super::WRITER_AUTOCHECKPOINT_PAGES`).
    Reader,
}

/// How often the reader checkpoints the WAL.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(50);

/// A handle on a connection thread. Dropping it lets the thread finish its queue and exit.
#[derive(Debug)]
pub(super) struct ConnectionThread {
    sender: mpsc::Sender<Message>,
    thread: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl ConnectionThread {
    /// Moves `conn` onto a new thread named `name`.
    pub(super) fn spawn(name: &str, conn: Connection, role: Role) -> std::io::Result<Self> {
        let (sender, receiver) = mpsc::channel();
        let thread = std::thread::Builder::new().name(name.to_owned()).spawn(move || match role {
            Role::Writer => write_loop(conn, &receiver),
            Role::Reader => read_loop(conn, &receiver),
        })?;
        Ok(Self { sender, thread: std::sync::Mutex::new(Some(thread)) })
    }

    /// Runs `work` on the connection and waits (asynchronously) for its committed result.
    pub(super) async fn call<T, F>(&self, work: F) -> Result<T, LedgerError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, LedgerError> + Send + 'static,
    {
        self.submit(work)?.await.map_err(|_| closed())?
    }

    /// Queues `work` behind everything already queued and returns at once; the receiver gets
    /// the committed result (dropping it is fine: the work still runs).
    pub(super) fn submit<T, F>(&self, work: F) -> Result<oneshot::Receiver<Result<T, LedgerError>>, LedgerError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, LedgerError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = Box::new(Call { work: Some(work), result: None, reply });
        self.sender.send(Message::Job(job)).map_err(|_| closed())?;
        Ok(answer)
    }

    /// Lets queued operations finish, then closes the connection. Later calls fail with
    /// `LedgerError::Unavailable`.
    pub(super) async fn close(&self) {
        let (ack, done) = oneshot::channel();
        if self.sender.send(Message::Close(ack)).is_ok() {
            let _ = done.await;
        }
        let thread = self.thread.lock().ok().and_then(|mut slot| slot.take());
        if let Some(thread) = thread {
            // The thread has acknowledged (or is gone), so this join does not block for long.
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

fn closed() -> LedgerError {
    LedgerError::Unavailable("the ledger is closed".to_owned())
}

/// Operations to run, and the acknowledgement to send after them if the handle asked to close.
type Batch = (Vec<Box<dyn Job>>, Option<oneshot::Sender<()>>);

/// Takes the first message, waiting (at most `wait` when given: then an empty batch), then
/// whatever else is already queued. `None` once every handle is gone.
fn next_batch(receiver: &mpsc::Receiver<Message>, limit: usize, wait: Option<Duration>) -> Option<Batch> {
    let mut jobs = Vec::new();
    let first = match wait {
        None => receiver.recv().ok(),
        Some(wait) => match receiver.recv_timeout(wait) {
            Ok(message) => Some(message),
            Err(mpsc::RecvTimeoutError::Timeout) => return Some((jobs, None)),
            Err(mpsc::RecvTimeoutError::Disconnected) => None,
        },
    };
    let mut message = first?;
    loop {
        match message {
            Message::Job(job) => jobs.push(job),
            Message::Close(ack) => return Some((jobs, Some(ack))),
        }
        if jobs.len() >= limit {
            return Some((jobs, None));
        }
        match receiver.try_recv() {
            Ok(next) => message = next,
            Err(_) => return Some((jobs, None)),
        }
    }
}

fn write_loop(conn: Connection, receiver: &mpsc::Receiver<Message>) {
    while let Some((jobs, close)) = next_batch(receiver, MAX_BATCH, None) {
        if !jobs.is_empty() {
            commit_batch(&conn, jobs);
        }
        if let Some(ack) = close {
            drop(conn);
            let _ = ack.send(());
            return;
        }
    }
}

fn read_loop(conn: Connection, receiver: &mpsc::Receiver<Message>) {
    let mut last_checkpoint = Instant::now();
    while let Some((jobs, close)) = next_batch(receiver, MAX_BATCH, Some(CHECKPOINT_EVERY)) {
        for mut job in jobs {
            job.run(&conn);
            job.finish(None);
        }
        if last_checkpoint.elapsed() >= CHECKPOINT_EVERY {
            // PASSIVE: copies what it can without waiting for (or blocking) the writer. A failure
            // is retried at the next turn; the writer's backstop keeps the WAL bounded meanwhile.
            let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
            last_checkpoint = Instant::now();
        }
        if let Some(ack) = close {
            drop(conn);
            let _ = ack.send(());
            return;
        }
    }
}

/// Runs `jobs` in one write transaction, each in its own savepoint, and answers them after the
/// commit (or with the reason it failed).
fn commit_batch(conn: &Connection, mut jobs: Vec<Box<dyn Job>>) {
    // A transaction left open (a ROLLBACK that failed) would fail every later BEGIN: end it.
    if !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    let failure = match execute(conn, "BEGIN IMMEDIATE") {
        Err(e) => Some(e),
        Ok(()) => {
            let ran = jobs.iter_mut().try_for_each(|job| {
                execute(conn, "SAVEPOINT op")?;
                if job.run(conn) {
                    execute(conn, "RELEASE op")
                } else {
                    execute(conn, "ROLLBACK TO op").and_then(|()| execute(conn, "RELEASE op"))
                }
            });
            match ran.and_then(|()| execute(conn, "COMMIT")) {
                Ok(()) => None,
                Err(e) => {
                    // Whatever is left of the transaction is abandoned; nothing of it is kept.
                    let _ = conn.execute_batch("ROLLBACK");
                    Some(e)
                }
            }
        }
    };
    for job in jobs {
        job.finish(failure.as_ref());
    }
}

/// Runs a statement without parameters or rows, through the statement cache.
fn execute(conn: &Connection, sql: &str) -> Result<(), LedgerError> {
    conn.prepare_cached(sql)
        .and_then(|mut statement| statement.execute([]))
        .map(|_| ())
        .map_err(|e| LedgerError::Unavailable(format!("{sql}: {e}")))
}
