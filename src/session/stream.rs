//! The client stream of a session: the bounded channel the SSE body reads, what did not fit in
//! it, and the gate that holds upstream events back while the client is not reading.
//!
//! Backpressure never parks the session: a full channel only closes the gate (the upstream then
//! waits on its own bounded channel, then on its socket) while a flush waits for room with a
//! deadline of its own (`timeouts.client_write_ms`). The session's timers keep running, so
//! `total_ms` holds whatever the client does. At most one upstream event's bytes wait outside
//! the channel.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::{mpsc, watch};

use actix::prelude::*;

use super::{SessionActor, SessionHead};
use crate::observability::metrics::ActiveStream;
use crate::protocol::anthropic::events;

/// Frames queued towards the client; small, so a slow client slows its upstream read.
const CLIENT_CHANNEL: usize = 32;

pub(super) struct ClientStream {
    /// `true` while the client takes bytes as fast as they come (no backlog).
    ready: watch::Sender<bool>,
    open: Option<Open>,
}

struct Open {
    tx: mpsc::Sender<Bytes>,
    /// Counted in `gateway_active_streams` while the session streams, not while a stalled
    /// socket still holds the last bytes.
    _active: ActiveStream,
    backlog: VecDeque<Bytes>,
    /// The session was asked to end once the backlog is sent.
    closing: bool,
    last_write: Instant,
}

/// What became of a write.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Write {
    /// In the channel (or nothing to write to).
    Sent,
    /// The channel is full: the bytes wait, and a flush must be started.
    Blocked,
    /// Already waiting behind a running flush.
    Queued,
    /// The client's body is gone.
    Gone,
}

/// What a flush that got room for one item leaves behind.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Flushed {
    /// Everything is sent; `closing` when the session may now stop.
    Done {
        closing: bool,
    },
    /// The channel filled again: wait for room again.
    Again,
    Gone,
}

impl ClientStream {
    pub(super) fn new() -> Self {
        Self {
            ready: watch::channel(true).0,
            open: None,
        }
    }

    /// `rx` as an event stream that yields only while the client is reading.
    pub(super) fn gated<T: 'static>(
        &self,
        rx: mpsc::Receiver<T>,
    ) -> impl Stream<Item = T> + 'static {
        let ready = self.ready.subscribe();
        futures_util::stream::unfold((rx, ready), |(mut rx, mut ready)| async move {
            // The sender lives as long as the session: an error means it is gone.
            ready.wait_for(|r| *r).await.ok()?;
            let item = rx.recv().await?;
            Some((item, (rx, ready)))
        })
    }

    /// Opens the channel; the receiver is the response body's source.
    pub(super) fn open(&mut self, active: ActiveStream) -> mpsc::Receiver<Bytes> {
        let (tx, rx) = mpsc::channel(CLIENT_CHANNEL);
        self.open = Some(Open {
            tx,
            _active: active,
            backlog: VecDeque::new(),
            closing: false,
            last_write: Instant::now(),
        });
        rx
    }

    /// Bytes are waiting for the client.
    pub(super) fn blocked(&self) -> bool {
        self.open.as_ref().is_some_and(|o| !o.backlog.is_empty())
    }

    pub(super) fn write(&mut self, bytes: Bytes) -> Write {
        let Some(o) = self.open.as_mut() else {
            return Write::Sent;
        };
        if !o.backlog.is_empty() {
            o.backlog.push_back(bytes);
            return Write::Queued;
        }
        match o.tx.try_send(bytes) {
            Ok(()) => {
                o.last_write = Instant::now();
                Write::Sent
            }
            Err(mpsc::error::TrySendError::Full(bytes)) => {
                o.backlog.push_back(bytes);
                self.ready.send_replace(false);
                Write::Blocked
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Write::Gone,
        }
    }

    /// A handle to wait on for room in the channel (a flush's deadline is the caller's).
    pub(super) fn sender(&self) -> Option<mpsc::Sender<Bytes>> {
        self.open.as_ref().map(|o| o.tx.clone())
    }

    /// A flush got room for one item: send the backlog, as much as fits.
    pub(super) fn flushed(&mut self, permit: mpsc::OwnedPermit<Bytes>) -> Flushed {
        let Some(o) = self.open.as_mut() else {
            return Flushed::Gone;
        };
        let Some(first) = o.backlog.pop_front() else {
            return Flushed::Done { closing: o.closing };
        };
        permit.send(first);
        o.last_write = Instant::now();
        while let Some(b) = o.backlog.pop_front() {
            match o.tx.try_send(b) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(b)) => {
                    o.backlog.push_front(b);
                    return Flushed::Again;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return Flushed::Gone,
            }
        }
        self.ready.send_replace(true);
        Flushed::Done { closing: o.closing }
    }

    /// Ends the stream once what is queued is sent: `true` when that is now.
    pub(super) fn close(&mut self) -> bool {
        match self.open.as_mut() {
            Some(o) if !o.backlog.is_empty() => {
                o.closing = true;
                false
            }
            _ => {
                self.open = None;
                true
            }
        }
    }

    /// Drops the channel and anything waiting for it.
    pub(super) fn drop_all(&mut self) {
        self.open = None;
    }

    /// How long nothing was written, while the client keeps up (for pings).
    pub(super) fn idle_for(&self) -> Option<Duration> {
        self.open
            .as_ref()
            .filter(|o| !o.closing && o.backlog.is_empty())
            .map(|o| o.last_write.elapsed())
    }
}

/// The session's side of the client stream.
impl SessionActor {
    pub(super) fn open_stream(&mut self, ctx: &mut Context<Self>) {
        let rx = self.client.open(self.state.metrics.stream_opened());
        let headers = std::mem::take(&mut self.headers);
        self.answer.first_byte = Some(self.init.received_at.elapsed());
        self.trace("stream.open");
        self.answer(SessionHead::Stream { body: rx, headers }, ctx);
    }

    /// Queues bytes for the client. A full channel never parks the session: the bytes wait in
    /// the client stream, upstream events wait behind its gate, and a flush waits for room.
    pub(super) fn write(&mut self, bytes: Bytes, ctx: &mut Context<Self>) {
        match self.client.write(bytes) {
            Write::Sent | Write::Queued => {}
            Write::Blocked => self.flush(ctx),
            Write::Gone => self.client_gone(ctx),
        }
    }

    /// Waits (beside the session's other work) for room in the client channel, at most
    /// `timeouts.client_write_ms`.
    pub(super) fn flush(&mut self, ctx: &mut Context<Self>) {
        let Some(tx) = self.client.sender() else {
            return;
        };
        let limit = self.state.config.timeouts.client_write();
        let room = tokio::time::timeout(limit, tx.reserve_owned());
        ctx.spawn(room.into_actor(self).map(|room, act, ctx| {
            let span = act.span.clone();
            let _entered = span.enter();
            match room {
                Err(_) => act.client_stalled(ctx),
                Ok(Err(_)) => act.client_gone(ctx),
                Ok(Ok(permit)) => match act.client.flushed(permit) {
                    Flushed::Again => act.flush(ctx),
                    Flushed::Gone => act.client_gone(ctx),
                    Flushed::Done { closing } => {
                        if closing && act.client.close() {
                            ctx.stop();
                        }
                    }
                },
            }
        }));
    }

    pub(super) fn ping(&mut self, ctx: &mut Context<Self>) {
        let interval = Duration::from_millis(self.state.config.stream.ping_interval_ms);
        if self.client.idle_for().is_some_and(|idle| idle >= interval) {
            self.write(events::ping().encode(), ctx);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    #[actix_rt::test]
    async fn a_full_channel_closes_the_gate_until_it_drains() {
        let metrics = crate::observability::Metrics::new();
        let mut s = ClientStream::new();
        let mut rx = s.open(metrics.stream_opened());
        for _ in 0..CLIENT_CHANNEL {
            assert_eq!(s.write(Bytes::from_static(b"x")), Write::Sent);
        }
        assert_eq!(s.write(Bytes::from_static(b"a")), Write::Blocked);
        assert_eq!(s.write(Bytes::from_static(b"b")), Write::Queued);
        assert!(s.blocked());
        assert!(!s.close());

        // Upstream events wait behind the closed gate.
        let (utx, urx) = mpsc::channel(4);
        utx.send(1u32).await.unwrap();
        let mut events = Box::pin(s.gated(urx));
        let next = tokio::time::timeout(Duration::from_millis(20), events.next()).await;
        assert!(next.is_err(), "the gate is closed");

        rx.recv().await.unwrap();
        let permit = s.sender().unwrap().reserve_owned().await.unwrap();
        assert_eq!(s.flushed(permit), Flushed::Again);
        rx.recv().await.unwrap();
        let permit = s.sender().unwrap().reserve_owned().await.unwrap();
        assert_eq!(s.flushed(permit), Flushed::Done { closing: true });
        assert!(!s.blocked());
        assert_eq!(events.next().await, Some(1));
    }
}
