//! Socket writes held back to the end of the runtime's current round of tasks, so that the
//! writes of many requests reach the kernel one after the other instead of spread between
//! the other requests' work.
//!
//! Why: every write to a loopback or LAN peer that is asleep wakes it, and a wake-up of a
//! process on another CPU is an inter-processor interrupt — on a virtual machine a VM exit,
//! several microseconds on the writer's CPU. When a worker thread handles a round of ready
//! connections, the writes of that round written back to back wake the peer once (it is still
//! running when the next write lands); spread between the requests' parsing, token checks and
//! signature verifies they wake it for nearly every request. Profiles of the gateway under
//! `../shared/bench/run.sh` showed the wake-up path (`sock_def_readable` →
//! `_raw_spin_unlock_irqrestore`) at 14 % of the CPU on the mTLS route and 14 µs per request on
//! the DPoP route, against 10 % for nginx (BENCHMARKS.md, issue 13).
//!
//! How: the first attempt of a write returns `Pending` after waking its own task. tokio puts a
//! task that woke itself at the back of the worker's run queue (never in its "next task" slot),
//! so the write runs after every task already queued — the rest of the round — and then goes
//! through at once: each write is held back once, never twice, and a write that waits for the
//! socket is not held back again. With nothing else queued it costs one extra poll of the task.
//!
//! [`HoldBack`] is the state, for a stream that writes its own bytes (the client TLS stream);
//! [`BatchedWrites`] wraps any `AsyncWrite` (the upstream connections).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Whether the next write has been held back already.
#[derive(Debug, Default)]
pub struct HoldBack {
    held: bool,
}

impl HoldBack {
    /// `Pending` (the task woken, to run again after the round) on the first call for a write,
    /// `Ready` on the next; call [`HoldBack::written`] once the write went through.
    pub fn poll_turn(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.held || !enabled() {
            return Poll::Ready(());
        }
        self.held = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// The held-back write went through: the next one is held back again.
    pub fn written(&mut self) {
        self.held = false;
    }
}

/// Off with `FAPI_GATEWAY_WRITE_BATCH=0` (read once), for comparing both in one benchmark.
fn enabled() -> bool {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ENABLED.get_or_init(|| std::env::var_os("FAPI_GATEWAY_WRITE_BATCH").is_none_or(|v| v != "0"))
}

/// An `AsyncWrite` whose writes are each held back once (see the module docs); reads and
/// everything else pass through.
#[derive(Debug)]
pub struct BatchedWrites<T> {
    inner: T,
    hold: HoldBack,
}

impl<T> BatchedWrites<T> {
    pub fn new(inner: T) -> Self {
        BatchedWrites { inner, hold: HoldBack::default() }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for BatchedWrites<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for BatchedWrites<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        std::task::ready!(this.hold.poll_turn(cx));
        let result = std::task::ready!(Pin::new(&mut this.inner).poll_write(cx, buf));
        this.hold.written();
        Poll::Ready(result)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        std::task::ready!(this.hold.poll_turn(cx));
        let result = std::task::ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, bufs));
        this.hold.written();
        Poll::Ready(result)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tokio::io::AsyncWriteExt as _;

    use super::*;

    /// A sink that logs each write that reaches it.
    struct Recorder(Arc<Mutex<Vec<String>>>);

    impl AsyncWrite for Recorder {
        fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            self.0.lock().unwrap_or_else(|e| e.into_inner()).push(format!("wrote {}", String::from_utf8_lossy(buf)));
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn entries(log: &Arc<Mutex<Vec<String>>>) -> Vec<String> {
        log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    #[test]
    fn a_write_is_held_back_once_and_wakes_its_task() {
        let woken = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        struct Count(Arc<std::sync::atomic::AtomicUsize>);
        impl std::task::Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let waker = std::task::Waker::from(Arc::new(Count(woken.clone())));
        let mut cx = Context::from_waker(&waker);
        let mut hold = HoldBack::default();
        assert!(hold.poll_turn(&mut cx).is_pending());
        assert_eq!(woken.load(std::sync::atomic::Ordering::SeqCst), 1, "the task must be woken to come back");
        // Not held back twice, however often it is asked before the write goes through.
        assert!(hold.poll_turn(&mut cx).is_ready());
        assert!(hold.poll_turn(&mut cx).is_ready());
        hold.written();
        assert!(hold.poll_turn(&mut cx).is_pending(), "the next write is held back again");
    }

    /// The point of it: on one worker thread, a write waits until the tasks already queued
    /// have run, and then every byte arrives, in order.
    #[test]
    fn writes_go_out_after_the_rest_of_the_round() {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap_or_else(|e| panic!("{e}"));
        let log = Arc::new(Mutex::new(Vec::new()));
        runtime.block_on(async {
            let mut writer = BatchedWrites::new(Recorder(log.clone()));
            let (first, second) = (log.clone(), log.clone());
            let writing = tokio::spawn(async move {
                writer.write_all(b"A").await.unwrap_or_else(|e| panic!("{e}"));
                writer.write_all(b"B").await.unwrap_or_else(|e| panic!("{e}"));
            });
            let other =
                tokio::spawn(async move { first.lock().unwrap_or_else(|e| e.into_inner()).push("other task".into()) });
            writing.await.unwrap_or_else(|e| panic!("{e}"));
            other.await.unwrap_or_else(|e| panic!("{e}"));
            second.lock().unwrap_or_else(|e| e.into_inner()).push("done".into());
        });
        assert_eq!(entries(&log), ["other task", "wrote A", "wrote B", "done"]);
    }
}
