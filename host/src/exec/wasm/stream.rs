//! The guest's stdout and stderr: WASI output streams that hand each write to
//! the executor over a bounded channel, so output reaches the run's
//! [`RunOutput`](crate::exec::RunOutput) as it is produced.
//!
//! Memory stays bounded whatever the guest writes: the channel holds at most
//! [`CHANNEL_CAPACITY`] writes of at most [`MAX_WRITE`] bytes, and a full
//! channel makes the guest wait (WASI's `check-write` reports no room until
//! the executor catches up). Once the executor reports the output cut at its
//! byte limit, stderr is dropped on the spot instead of queued; stdout keeps
//! flowing (through the same bounded channel) because `RunOutput` still reads
//! it past the cut for the run's `::sandcron::result` line. Nothing here
//! blocks a thread: waiting is `async`, on the guest's fiber.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use tokio::sync::mpsc;
use tokio_util::sync::PollSender;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError, StreamResult};

use crate::run::StreamKind;

/// Writes the channel holds before the guest has to wait.
pub(super) const CHANNEL_CAPACITY: usize = 16;

/// The most one write may carry (what `check-write` grants). WASI p1's
/// `fd_write` writes in 4 KiB pieces; p2 guests may use the whole grant.
pub(super) const MAX_WRITE: usize = 64 * 1024;

/// One piece of guest output on its way to the executor.
#[derive(Debug)]
pub(super) struct Chunk {
    pub(super) stream: StreamKind,
    pub(super) bytes: Bytes,
}

/// What a run's streams share with the executor.
#[derive(Debug, Default)]
pub(super) struct Shared {
    /// Set by the executor once the output is cut at its limit: stderr
    /// written after that is counted and dropped.
    cut: AtomicBool,
    /// Bytes sent to the executor.
    forwarded: AtomicU64,
    /// Bytes dropped because the output was already cut (stderr) or the
    /// executor had stopped listening.
    discarded: AtomicU64,
}

impl Shared {
    /// The output reached its limit.
    pub(super) fn output_cut(&self) {
        self.cut.store(true, Ordering::Relaxed);
    }

    fn is_cut(&self) -> bool {
        self.cut.load(Ordering::Relaxed)
    }

    /// Bytes sent to the executor so far.
    pub(super) fn forwarded(&self) -> u64 {
        self.forwarded.load(Ordering::Relaxed)
    }

    /// Bytes dropped in the stream.
    pub(super) fn discarded(&self) -> u64 {
        self.discarded.load(Ordering::Relaxed)
    }
}

/// The stdout or stderr of one run, as handed to `WasiCtxBuilder`.
pub(super) struct GuestOutput {
    stream: StreamKind,
    tx: mpsc::Sender<Chunk>,
    shared: Arc<Shared>,
}

impl GuestOutput {
    pub(super) fn new(stream: StreamKind, tx: mpsc::Sender<Chunk>, shared: Arc<Shared>) -> Self {
        Self { stream, tx, shared }
    }

    fn pipe(&self) -> Pipe {
        Pipe {
            stream: self.stream,
            tx: PollSender::new(self.tx.clone()),
            reserved: false,
            closed: false,
            shared: Arc::clone(&self.shared),
        }
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.pipe())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.pipe())
    }
}

/// One handle on a run's stdout or stderr. WASI may open several per stream;
/// they share the channel, so output keeps its order.
struct Pipe {
    stream: StreamKind,
    tx: PollSender<Chunk>,
    /// Whether a channel slot is reserved for the next write.
    reserved: bool,
    /// The executor stopped listening (the run is ending): drop everything.
    closed: bool,
    shared: Arc<Shared>,
}

impl Pipe {
    /// Whether writes are dropped rather than sent.
    fn dropping(&self) -> bool {
        self.closed || (self.stream == StreamKind::Stderr && self.shared.is_cut())
    }

    fn poll_room(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.reserved || self.dropping() {
            return Poll::Ready(());
        }
        match self.tx.poll_reserve(cx) {
            Poll::Ready(Ok(())) => self.reserved = true,
            Poll::Ready(Err(_)) => self.closed = true,
            Poll::Pending => return Poll::Pending,
        }
        Poll::Ready(())
    }

    /// Sends `bytes` in the reserved slot, or drops them when the output is
    /// past its limit. Never waits.
    fn send(&mut self, bytes: Bytes) -> Result<(), NoRoom> {
        if bytes.is_empty() {
            return Ok(());
        }
        let len = bytes.len() as u64;
        if self.dropping() {
            self.shared.discarded.fetch_add(len, Ordering::Relaxed);
            return Ok(());
        }
        if !self.reserved {
            return Err(NoRoom);
        }
        self.reserved = false;
        let chunk = Chunk {
            stream: self.stream,
            bytes,
        };
        if self.tx.send_item(chunk).is_err() {
            self.closed = true;
            self.shared.discarded.fetch_add(len, Ordering::Relaxed);
        } else {
            self.shared.forwarded.fetch_add(len, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// A write came without room having been granted first.
struct NoRoom;

#[async_trait::async_trait]
impl Pollable for Pipe {
    async fn ready(&mut self) {
        std::future::poll_fn(|cx| self.poll_room(cx)).await;
    }
}

impl OutputStream for Pipe {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        if bytes.len() > MAX_WRITE {
            return Err(StreamError::trap("write larger than check-write allowed"));
        }
        self.send(bytes)
            .map_err(|NoRoom| StreamError::trap("write without a check-write permit"))
    }

    fn flush(&mut self) -> StreamResult<()> {
        // Every write is already on its way; there is nothing to flush.
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(if self.reserved || self.dropping() { MAX_WRITE } else { 0 })
    }
}

impl AsyncWrite for Pipe {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.poll_room(cx).is_pending() {
            return Poll::Pending;
        }
        let len = buf.len().min(MAX_WRITE);
        match self.send(Bytes::copy_from_slice(&buf[..len])) {
            Ok(()) => Poll::Ready(Ok(len)),
            Err(NoRoom) => Poll::Ready(Err(io::Error::other("no room in the output channel"))),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipe_of(stream: StreamKind, capacity: usize) -> (Pipe, mpsc::Receiver<Chunk>, Arc<Shared>) {
        let (tx, rx) = mpsc::channel(capacity);
        let shared = Arc::new(Shared::default());
        let output = GuestOutput::new(stream, tx, Arc::clone(&shared));
        (output.pipe(), rx, shared)
    }

    fn pipe(capacity: usize) -> (Pipe, mpsc::Receiver<Chunk>, Arc<Shared>) {
        pipe_of(StreamKind::Stdout, capacity)
    }

    #[tokio::test]
    async fn writes_wait_for_room_and_arrive_in_order() {
        let (mut pipe, mut rx, shared) = pipe(1);
        assert_eq!(pipe.check_write().unwrap(), 0, "no room before ready");
        pipe.ready().await;
        assert_eq!(pipe.check_write().unwrap(), MAX_WRITE);
        pipe.write(Bytes::from_static(b"one")).unwrap();
        assert_eq!(pipe.check_write().unwrap(), 0, "the permit is used up");
        assert!(
            pipe.write(Bytes::from_static(b"x")).is_err(),
            "a write without a permit"
        );
        // The channel (capacity 1) is full: the next reservation waits.
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(20), pipe.ready()).await;
        assert!(waiting.is_err(), "a full channel makes the guest wait");
        assert_eq!(rx.recv().await.unwrap().bytes, Bytes::from_static(b"one"));
        pipe.ready().await;
        pipe.write(Bytes::from_static(b"two")).unwrap();
        assert_eq!(rx.recv().await.unwrap().bytes, Bytes::from_static(b"two"));
        assert_eq!(shared.forwarded(), 6);
    }

    #[tokio::test]
    async fn past_the_limit_stderr_is_dropped_without_waiting() {
        let (mut pipe, mut rx, shared) = pipe_of(StreamKind::Stderr, 1);
        shared.output_cut();
        for _ in 0..100 {
            pipe.ready().await;
            assert_eq!(pipe.check_write().unwrap(), MAX_WRITE);
            pipe.write(Bytes::from(vec![b'x'; MAX_WRITE])).unwrap();
        }
        assert_eq!(shared.discarded(), 100 * MAX_WRITE as u64);
        assert_eq!(shared.forwarded(), 0);
        assert!(rx.try_recv().is_err(), "nothing was queued");
    }

    #[tokio::test]
    async fn past_the_limit_stdout_still_flows() {
        let (mut pipe, mut rx, shared) = pipe(1);
        shared.output_cut();
        pipe.ready().await;
        pipe.write(Bytes::from_static(b"::sandcron::result 1\n")).unwrap();
        assert_eq!(rx.recv().await.unwrap().stream, StreamKind::Stdout);
        assert_eq!(shared.discarded(), 0);
    }

    #[tokio::test]
    async fn a_closed_channel_swallows_output() {
        let (mut pipe, rx, shared) = pipe(1);
        drop(rx);
        pipe.ready().await;
        pipe.write(Bytes::from_static(b"lost")).unwrap();
        assert_eq!(shared.discarded(), 4);
    }
}
