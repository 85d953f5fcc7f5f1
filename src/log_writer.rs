//! Log lines written off the request path, in batches (nginx's `access_log … buffer=`).
//!
//! `tracing`'s formatter hands every event to [`LogWriter`] as one `write_all`; the line is
//! appended to a shared buffer under a short lock, and a writer thread takes the whole
//! buffer and writes it with one `write` call: when it passes [`BATCH_BYTES`], or
//! [`FLUSH_EVERY`] after the first line in it, or when the [`FlushGuard`] is dropped at
//! exit. With stderr straight on the request path every access line was a system call on the
//! worker thread.
//!
//! Nothing blocks a request: when the destination stops taking lines (a full pipe nobody
//! reads) and [`MAX_PENDING_BYTES`] are waiting, new lines are dropped and counted in
//! `fapi_gateway_log_lines_dropped_total` — never silently. A process that aborts loses at
//! most the last [`FLUSH_EVERY`] of lines.

use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// A batch this large is written at once.
pub const BATCH_BYTES: usize = 64 * 1024;
/// The longest a line waits in the buffer.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Lines waiting beyond this are dropped (and counted).
pub const MAX_PENDING_BYTES: usize = 8 << 20;

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Default)]
struct State {
    pending: Vec<u8>,
    closing: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Where `tracing` writes: see the module docs. Cheap to clone.
#[derive(Clone)]
pub struct LogWriter {
    shared: Arc<Shared>,
}

/// Flushes what is buffered and stops the writer thread when dropped.
pub struct FlushGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl LogWriter {
    /// A writer that batches into `destination` (stderr for the binary) from a thread of its
    /// own; keep the guard until exit.
    pub fn spawn(destination: impl Write + Send + 'static) -> io::Result<(LogWriter, FlushGuard)> {
        let shared = Arc::new(Shared { state: Mutex::new(State::default()), wake: Condvar::new() });
        let worker = shared.clone();
        let thread =
            std::thread::Builder::new().name("log-writer".into()).spawn(move || write_batches(&worker, destination))?;
        Ok((LogWriter { shared: shared.clone() }, FlushGuard { shared, thread: Some(thread) }))
    }
}

/// Where access lines go when they are written without `tracing`'s formatter: set once, by
/// [`install_plain_access_sink`].
static PLAIN_ACCESS_SINK: std::sync::OnceLock<LogWriter> = std::sync::OnceLock::new();

/// Declares that `writer` is where `tracing`'s plain format (no colours) writes, so that the
/// access log may write its lines into it directly (`pipeline::access_line`). Only the binary
/// calls it, with the writer it gave `tracing`; a second call changes nothing.
pub fn install_plain_access_sink(writer: LogWriter) {
    let _ = PLAIN_ACCESS_SINK.set(writer);
}

/// The writer installed by [`install_plain_access_sink`], if any.
pub fn plain_access_sink() -> Option<&'static LogWriter> {
    PLAIN_ACCESS_SINK.get()
}

impl LogWriter {
    /// Appends one or more whole lines written by `fill` into the pending buffer (under
    /// the lock, with no copy of their own). Lines that would pass [`MAX_PENDING_BYTES`] are
    /// taken back and counted as dropped.
    pub fn append_with(&self, fill: impl FnOnce(&mut Vec<u8>)) {
        let mut state = self.shared.lock();
        let before = state.pending.len();
        fill(&mut state.pending);
        if state.pending.len() > MAX_PENDING_BYTES {
            let lines = count_lines(&state.pending[before..]);
            state.pending.truncate(before);
            drop(state);
            crate::metrics::log_lines_dropped().inc_by(lines.max(1));
            return;
        }
        let filled = before < BATCH_BYTES && state.pending.len() >= BATCH_BYTES;
        let first = before == 0 && !state.pending.is_empty();
        drop(state);
        // The writer sleeps while the buffer is empty: the first line wakes it and starts its
        // clock, a full batch cuts that short. (A wake is a system call: only these two.)
        if first || filled {
            self.shared.wake.notify_one();
        }
    }
}

impl Write for LogWriter {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        // Reported as written even when dropped: the caller must not retry, and a request
        // must not fail because its log line could not be kept.
        self.append_with(|pending| pending.extend_from_slice(line));
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        self.shared.lock().closing = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The writer thread: waits for a first line, gives it [`FLUSH_EVERY`] (or less when the
/// batch fills) for company, then writes everything pending at once.
fn write_batches(shared: &Shared, mut destination: impl Write) {
    let mut batch = Vec::new();
    loop {
        let mut state = shared.lock();
        while state.pending.is_empty() && !state.closing {
            state = shared.wake.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
        if !state.closing && state.pending.len() < BATCH_BYTES {
            let (next, _) = shared
                .wake
                .wait_timeout_while(state, FLUSH_EVERY, |s| s.pending.len() < BATCH_BYTES && !s.closing)
                .unwrap_or_else(PoisonError::into_inner);
            state = next;
        }
        let closing = state.closing;
        std::mem::swap(&mut batch, &mut state.pending);
        drop(state);
        if !batch.is_empty() {
            // A destination that fails (closed stderr) loses the batch; there is nowhere
            // to report that but the counter.
            if destination.write_all(&batch).and_then(|()| destination.flush()).is_err() {
                crate::metrics::log_lines_dropped().inc_by(count_lines(&batch));
            }
            batch.clear();
            // Do not keep a burst's capacity for good.
            batch.shrink_to(BATCH_BYTES);
        }
        if closing {
            return;
        }
    }
}

fn count_lines(batch: &[u8]) -> u64 {
    batch.iter().filter(|&&b| b == b'\n').count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A destination that records each `write_all` batch.
    #[derive(Clone, Default)]
    struct Batches(Arc<Mutex<Vec<Vec<u8>>>>);

    impl Write for Batches {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap_or_else(PoisonError::into_inner).push(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Batches {
        fn taken(&self) -> Vec<Vec<u8>> {
            self.0.lock().unwrap_or_else(PoisonError::into_inner).clone()
        }
    }

    fn spawned(destination: &Batches) -> (LogWriter, FlushGuard) {
        match LogWriter::spawn(destination.clone()) {
            Ok(pair) => pair,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn lines_are_written_together_within_the_flush_period() {
        let destination = Batches::default();
        let (mut writer, _guard) = spawned(&destination);
        for i in 0..100 {
            assert!(writer.write_all(format!("line {i}\n").as_bytes()).is_ok());
        }
        std::thread::sleep(FLUSH_EVERY * 3);
        let batches = destination.taken();
        let all: Vec<u8> = batches.concat();
        assert_eq!(count_lines(&all), 100, "nothing lost");
        assert!(all.starts_with(b"line 0\nline 1\n") && all.ends_with(b"line 99\n"), "in order");
        assert!(batches.len() <= 2, "one write for the lot, not one per line: {}", batches.len());
    }

    #[test]
    fn dropping_the_guard_writes_what_is_pending() {
        let destination = Batches::default();
        let (mut writer, guard) = spawned(&destination);
        assert!(writer.write_all(b"last words\n").is_ok());
        drop(guard);
        assert_eq!(destination.taken().concat(), b"last words\n");
    }

    #[test]
    fn a_full_batch_is_written_without_waiting_for_the_period() {
        let destination = Batches::default();
        let (mut writer, _guard) = spawned(&destination);
        let line = vec![b'x'; 1023];
        for _ in 0..(BATCH_BYTES / 1024 + 1) {
            assert!(writer.write_all(&line).and_then(|()| writer.write_all(b"\n")).is_ok());
        }
        std::thread::sleep(FLUSH_EVERY / 4);
        assert!(!destination.taken().is_empty(), "written before FLUSH_EVERY");
    }

    #[test]
    fn lines_beyond_the_pending_limit_are_dropped_and_counted() {
        /// Takes nothing until told to.
        struct Stuck(Arc<(Mutex<bool>, Condvar)>);
        impl Write for Stuck {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                let (open, cv) = &*self.0;
                let mut open = open.lock().unwrap_or_else(PoisonError::into_inner);
                while !*open {
                    open = cv.wait(open).unwrap_or_else(PoisonError::into_inner);
                }
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let (mut writer, guard) = match LogWriter::spawn(Stuck(gate.clone())) {
            Ok(pair) => pair,
            Err(e) => panic!("{e}"),
        };
        let before = crate::metrics::log_lines_dropped().get();
        let line = vec![b'y'; 1 << 20];
        // The first batch is taken by the stuck writer; then 8 MiB wait; the rest is dropped.
        for _ in 0..20 {
            assert!(writer.write_all(&line).is_ok(), "never an error to the caller");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(crate::metrics::log_lines_dropped().get() > before, "drops are counted");
        *gate.0.lock().unwrap_or_else(PoisonError::into_inner) = true;
        gate.1.notify_all();
        drop(guard);
    }
}
