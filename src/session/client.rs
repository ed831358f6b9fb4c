//! The client side of a session: the SSE body the handler returns, fed by a channel the session
//! owns, and a guard that tells the session when the client is gone.

use std::pin::Pin;
use std::task::{Context, Poll};

use actix::prelude::*;
use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::mpsc;

use super::{ClientGone, SessionActor};

/// Frames from the session to the HTTP response.
pub struct ClientBody {
    rx: mpsc::Receiver<Bytes>,
    _guard: ClientGuard,
}

impl ClientBody {
    pub fn new(rx: mpsc::Receiver<Bytes>, guard: ClientGuard) -> Self {
        Self { rx, _guard: guard }
    }
}

impl Stream for ClientBody {
    type Item = Result<Bytes, actix_web::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx).map(|b| b.map(Ok))
    }
}

/// Dropped when the handler future or the response body is dropped, which is how a client
/// disconnect reaches the session: the session then stops, dropping its upstream attempt.
pub struct ClientGuard(pub Addr<SessionActor>);

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.0.do_send(ClientGone);
    }
}
