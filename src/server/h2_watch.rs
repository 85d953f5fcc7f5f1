//! Stalled HTTP/2 responses. An HTTP/2 client that stops reading a response holds its
//! stream's flow-control window at zero while its connection stays busy answering pings, so
//! neither the socket's send timeout nor the upstream's stall timer ever fires: hyper simply
//! stops polling the body, and the upstream connection behind it is held for good.
//!
//! Each HTTP/2 response body is wrapped in a [`WatchedBody`] that counts the frames taken
//! from it; the connection's loop checks every `send_timeout` whether bodies are open and
//! none of them moved since the last check, and then drops the connection (nginx's
//! `send_timeout` applied to the streams). The check is per connection: one stalled stream
//! beside streams that progress is not caught.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::body::{BoxError, ProxyBody};

/// The response bodies of one HTTP/2 connection: how many are open, how many frames they
/// have given.
#[derive(Debug, Default)]
pub struct BodyProgress {
    open: AtomicUsize,
    frames: AtomicU64,
}

impl BodyProgress {
    /// Whether bodies are open and none has given a frame since the previous call (which
    /// saw `frames_then`, updated here).
    pub fn stalled(&self, frames_then: &mut u64) -> bool {
        let frames = self.frames.load(Ordering::Relaxed);
        let stalled = self.open.load(Ordering::Relaxed) > 0 && frames == *frames_then;
        *frames_then = frames;
        stalled
    }
}

/// A response body counted in its connection's [`BodyProgress`].
pub struct WatchedBody {
    inner: ProxyBody,
    progress: Arc<BodyProgress>,
}

impl WatchedBody {
    pub fn new(inner: ProxyBody, progress: Arc<BodyProgress>) -> Self {
        progress.open.fetch_add(1, Ordering::Relaxed);
        WatchedBody { inner, progress }
    }
}

impl Drop for WatchedBody {
    fn drop(&mut self) {
        self.progress.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Body for WatchedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(_))) = &polled {
            self.progress.frames.fetch_add(1, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn open_bodies_without_frames_are_stalled() {
        let progress = Arc::new(BodyProgress::default());
        let mut seen = 0;
        assert!(!progress.stalled(&mut seen), "no open body: nothing to stall");
        let mut body = WatchedBody::new(crate::body::full("abc"), progress.clone());
        assert!(progress.stalled(&mut seen), "open, and no frame since the last check");
        assert!(body.frame().await.is_some());
        assert!(!progress.stalled(&mut seen), "a frame came");
        assert!(progress.stalled(&mut seen), "none since");
        drop(body);
        assert!(!progress.stalled(&mut seen), "the body is gone");
    }
}
