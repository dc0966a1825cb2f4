//! Request bodies that must keep arriving: a client that announces a body
//! and then stalls (a slowloris on the body instead of the headers) is cut
//! off once no byte has come for [`BODY_IDLE_TIMEOUT`], instead of holding a
//! handler and its connection forever. A large upload on a slow link keeps
//! sending and is not affected.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// The longest a request body may go without a byte.
pub const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// The middleware: every request body gets the idle deadline.
pub(super) async fn idle_deadline(request: Request, next: Next) -> Response {
    let request = request.map(|body| Body::new(IdleDeadline::new(body, BODY_IDLE_TIMEOUT)));
    next.run(request).await
}

/// A body that fails once `idle` passes without a frame.
struct IdleDeadline {
    inner: Body,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl IdleDeadline {
    fn new(inner: Body, idle: Duration) -> Self {
        Self {
            inner,
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
        }
    }
}

impl http_body::Body for IdleDeadline {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                let next = Instant::now() + this.idle;
                this.deadline.as_mut().reset(next);
                Poll::Ready(frame)
            }
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(axum::Error::new(format!(
                    "no request body bytes for {} s",
                    this.idle.as_secs()
                ))))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
