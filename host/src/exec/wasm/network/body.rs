//! Bodies that count: a request body whose bytes are counted against the
//! run's send budget as hyper writes them, and a response body streamed to
//! the guest frame by frame (never buffered whole) whose bytes are counted
//! against the receive budget, with the run's between-bytes timeout. Going
//! over a budget ends that body with an error the guest sees; the call's
//! ledger entry is written when the response body ends or is dropped.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt as _;
use tokio::time::{Instant, Sleep};
use wasmtime_wasi_http::{Error, WasiBody};

use super::{Call, SendMeter};

/// A guest's request body, counted as it is sent.
pub(super) struct MeteredRequest {
    /// `None` once dropped (see `Drop`).
    inner: Option<WasiBody>,
    meter: SendMeter,
    /// The guest finished the body (or it failed): nothing left to read.
    ended: bool,
}

impl MeteredRequest {
    pub(super) fn new(inner: WasiBody, meter: SendMeter) -> Self {
        Self {
            inner: Some(inner),
            meter,
            ended: false,
        }
    }
}

/// A request body nobody will send any more (the request was refused, or
/// the response came before the guest finished the body) is read to its
/// end and dropped in the background. The guest may still be writing it,
/// and must learn what happened from the response, not from a stream
/// closed under it (which guest libraries report as a reset connection).
/// The body ends when the guest finishes it or its run ends.
pub(super) fn drain(mut body: WasiBody) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move { while let Some(Ok(_)) = body.frame().await {} });
    }
}

impl Drop for MeteredRequest {
    fn drop(&mut self) {
        if !self.ended
            && let Some(body) = self.inner.take()
        {
            drain(body);
        }
    }
}

impl Body for MeteredRequest {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let bytes = frame.data_ref().map_or(0, |data| data.len() as u64);
                if this.meter.count(bytes) {
                    Poll::Ready(Some(Ok(frame)))
                } else {
                    Poll::Ready(Some(Err(Error::HttpRequestBodySize(Some(this.meter.limit())))))
                }
            }
            Poll::Ready(None) => {
                this.ended = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(err))) => {
                this.ended = true;
                Poll::Ready(Some(Err(err)))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|inner| inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), |inner| inner.size_hint())
    }
}

/// A response body on its way to the guest, counted, with the run's
/// between-bytes timeout. It carries the call and so decides when its
/// ledger entry is written.
pub(super) struct MeteredResponse {
    inner: hyper::body::Incoming,
    call: Call,
    between_bytes: Duration,
    idle: Pin<Box<Sleep>>,
    done: bool,
}

impl MeteredResponse {
    pub(super) fn new(inner: hyper::body::Incoming, call: Call, between_bytes: Duration) -> Self {
        Self {
            inner,
            call,
            between_bytes,
            idle: Box::pin(tokio::time::sleep(between_bytes)),
            done: false,
        }
    }

    fn end(&mut self, error: Option<(String, Error)>) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        self.done = true;
        match error {
            Some((reason, error)) => {
                self.call.fail(reason);
                Poll::Ready(Some(Err(error)))
            }
            None => Poll::Ready(None),
        }
    }
}

impl Body for MeteredResponse {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let bytes = frame.data_ref().map_or(0, |data| data.len() as u64);
                if !this.call.received(bytes) {
                    let limit = this.call.network().limits().bytes_in;
                    return this.end(Some((
                        format!("the response passed the run's limit of {limit} bytes received"),
                        Error::HttpResponseBodySize(Some(limit)),
                    )));
                }
                let deadline = Instant::now() + this.between_bytes;
                this.idle.as_mut().reset(deadline);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(err))) => this.end(Some((
                format!("the response broke off: {err}"),
                Error::HttpResponseIncomplete,
            ))),
            Poll::Ready(None) => this.end(None),
            Poll::Pending => {
                if this.idle.as_mut().poll(cx).is_ready() {
                    let waited = this.between_bytes.as_secs();
                    return this.end(Some((
                        format!("no response bytes for {waited} s"),
                        Error::ConnectionReadTimeout,
                    )));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
