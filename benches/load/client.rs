//! The load generator: awc clients with keep-alive pools, one actix system per thread, every
//! latency in an HDR histogram (nanoseconds). The same code drives the gateway and the mock
//! directly, so whatever it costs is paid on both sides of each comparison.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aigw::protocol::sse::{SseEvent, SseParser};
use bytes::Bytes;
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use tokio::sync::{watch, Semaphore};

use crate::mock::{now_ns, stamp};

/// A gap between two text deltas of one stream longer than this is a stall.
pub const STALL: Duration = Duration::from_millis(100);

/// Requests sent to a gateway and to the mock directly, every attempt counted when it is
/// sent (both sides pay the same atomic add). The gateway count is checked against its metrics
/// and its request log at the end of the run.
pub static SENT_TO_GATEWAY: AtomicU64 = AtomicU64::new(0);
pub static SENT_DIRECT: AtomicU64 = AtomicU64::new(0);

/// One endpoint with its request: the gateway, or the mock hit directly.
#[derive(Clone)]
pub struct Target {
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Bytes,
    /// [`SENT_TO_GATEWAY`] or [`SENT_DIRECT`].
    pub sent: &'static AtomicU64,
}

fn histogram() -> Histogram<u64> {
    // 1 µs .. 100 s at 3 significant digits.
    Histogram::new_with_bounds(1_000, 100_000_000_000, 3).expect("histogram bounds")
}

pub fn client() -> awc::Client {
    let connector = awc::Connector::new()
        .limit(0)
        .conn_keep_alive(Duration::from_secs(120))
        .conn_lifetime(Duration::from_secs(600))
        .timeout(Duration::from_secs(5));
    awc::Client::builder()
        .connector(connector)
        .disable_timeout()
        .finish()
}

pub fn request(client: &awc::Client, t: &Target) -> awc::ClientRequest {
    t.sent.fetch_add(1, Ordering::Relaxed);
    let mut req = client.post(&t.url);
    for (k, v) in &t.headers {
        req = req.insert_header((*k, v.as_str()));
    }
    req
}

/// Runs `f(thread index)` on `threads` threads, each inside its own actix system.
pub fn on_threads<R, F, Fut>(threads: usize, f: F) -> Vec<R>
where
    R: Send,
    F: Fn(usize) -> Fut + Sync,
    Fut: std::future::Future<Output = R>,
{
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|i| {
                let f = &f;
                s.spawn(move || actix_rt::System::new().block_on(f(i)))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("load thread panicked"))
            .collect()
    })
}

/// Connections per thread: `total` split as evenly as possible.
fn share(total: usize, threads: usize, i: usize) -> usize {
    total / threads + usize::from(i < total % threads)
}

/// Non-stream requests, each connection sending its next request as soon as the last answered.
pub struct LoopStats {
    pub latency: Histogram<u64>,
    pub ok: u64,
    pub errors: u64,
    pub elapsed: Duration,
    pub first_error: Option<String>,
}

impl LoopStats {
    pub fn new() -> Self {
        Self {
            latency: histogram(),
            ok: 0,
            errors: 0,
            elapsed: Duration::ZERO,
            first_error: None,
        }
    }

    pub fn merge(&mut self, o: LoopStats) {
        self.latency.add(&o.latency).expect("same bounds");
        self.ok += o.ok;
        self.errors += o.errors;
        self.first_error = self.first_error.take().or(o.first_error);
    }

    pub fn rps(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

pub fn closed_loop(target: &Target, conns: usize, threads: usize, dur: Duration) -> LoopStats {
    let threads = threads.min(conns).max(1);
    let start = Instant::now();
    let deadline = start + dur;
    let parts = on_threads(threads, |i| {
        let n = share(conns, threads, i);
        let target = target.clone();
        async move {
            let client = client();
            let tasks: Vec<_> = (0..n)
                .map(|_| {
                    let client = client.clone();
                    let target = target.clone();
                    actix_rt::spawn(async move {
                        let mut s = LoopStats::new();
                        while Instant::now() < deadline {
                            let t0 = Instant::now();
                            match one_json(&client, &target).await {
                                Ok(()) => {
                                    s.ok += 1;
                                    let _ = s.latency.record(t0.elapsed().as_nanos() as u64);
                                }
                                Err(e) => {
                                    s.errors += 1;
                                    s.first_error.get_or_insert(e);
                                }
                            }
                        }
                        s
                    })
                })
                .collect();
            let mut total = LoopStats::new();
            for t in tasks {
                total.merge(t.await.expect("load task"));
            }
            total
        }
    });
    let mut total = LoopStats::new();
    for p in parts {
        total.merge(p);
    }
    total.elapsed = start.elapsed();
    total
}

async fn one_json(client: &awc::Client, t: &Target) -> Result<(), String> {
    let mut res = request(client, t)
        .send_body(t.body.clone())
        .await
        .map_err(|e| format!("send: {e}"))?;
    let status = res.status().as_u16();
    let body = res
        .body()
        .limit(16 * 1024 * 1024)
        .await
        .map_err(|e| format!("body: {e}"))?;
    if status != 200 {
        return Err(format!(
            "{status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        ));
    }
    Ok(())
}

/// One request, for probes: the status and the body.
pub fn probe(target: &Target) -> Result<(u16, String), String> {
    let target = target.clone();
    on_threads(1, move |_| {
        let target = target.clone();
        async move {
            let client = client();
            let mut res = request(&client, &target)
                .send_body(target.body.clone())
                .await
                .map_err(|e| format!("send: {e}"))?;
            let body = res
                .body()
                .limit(16 * 1024 * 1024)
                .await
                .map_err(|e| format!("body: {e}"))?;
            Ok((
                res.status().as_u16(),
                String::from_utf8_lossy(&body).into_owned(),
            ))
        }
    })
    .remove(0)
}

/// Streams read to the end; each connection opens its next stream when the last one ended.
pub struct StreamStats {
    /// Request sent → first text delta received.
    pub ttft: Histogram<u64>,
    /// Mock stamp → client receipt, for every text delta.
    pub frame: Histogram<u64>,
    /// Request sent → terminal event: the whole stream.
    pub whole: Histogram<u64>,
    /// Wall time of the rounds merged here (set by the caller; `merge` leaves it).
    pub elapsed: Duration,
    pub stalls: u64,
    pub max_gap: Duration,
    pub streams: u64,
    pub frames: u64,
    pub errors: u64,
    pub first_error: Option<String>,
}

impl StreamStats {
    pub fn new() -> Self {
        Self {
            ttft: histogram(),
            frame: histogram(),
            whole: histogram(),
            elapsed: Duration::ZERO,
            stalls: 0,
            max_gap: Duration::ZERO,
            streams: 0,
            frames: 0,
            errors: 0,
            first_error: None,
        }
    }

    /// Whole streams per second over [`Self::elapsed`].
    pub fn streams_per_sec(&self) -> f64 {
        self.streams as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn merge(&mut self, o: StreamStats) {
        self.ttft.add(&o.ttft).expect("same bounds");
        self.frame.add(&o.frame).expect("same bounds");
        self.whole.add(&o.whole).expect("same bounds");
        self.stalls += o.stalls;
        self.max_gap = self.max_gap.max(o.max_gap);
        self.streams += o.streams;
        self.frames += o.frames;
        self.errors += o.errors;
        self.first_error = self.first_error.take().or(o.first_error);
    }
}

/// `conns` connections stream back to back until `dur` is over; each stream must deliver
/// `deltas` stamped text deltas and its terminal event. Connection starts are spread over
/// `stagger` so that the streams do not all begin in the same millisecond.
pub fn stream_loop(
    target: &Target,
    conns: usize,
    threads: usize,
    dur: Duration,
    deltas: usize,
    stagger: Duration,
) -> StreamStats {
    let threads = threads.min(conns).max(1);
    let start = Instant::now();
    let deadline = start + dur;
    let parts = on_threads(threads, |i| {
        let n = share(conns, threads, i);
        let target = target.clone();
        async move {
            let client = client();
            let tasks: Vec<_> = (0..n)
                .map(|j| {
                    let client = client.clone();
                    let target = target.clone();
                    let slot = j * threads + i;
                    let delay = stagger.mul_f64(slot as f64 / conns as f64);
                    actix_rt::spawn(async move {
                        tokio::time::sleep(delay).await;
                        let mut s = StreamStats::new();
                        while Instant::now() < deadline {
                            if let Err(e) = one_stream(&client, &target, deltas, &mut s).await {
                                s.errors += 1;
                                s.first_error.get_or_insert(e);
                            }
                        }
                        s
                    })
                })
                .collect();
            let mut total = StreamStats::new();
            for t in tasks {
                total.merge(t.await.expect("stream task"));
            }
            total
        }
    });
    let mut total = StreamStats::new();
    for p in parts {
        total.merge(p);
    }
    total
}

fn is_end(ev: &SseEvent) -> bool {
    ev.name() == "message_stop" || &ev.data[..] == b"[DONE]"
}

async fn one_stream(
    client: &awc::Client,
    t: &Target,
    deltas: usize,
    s: &mut StreamStats,
) -> Result<(), String> {
    let t0 = now_ns();
    let mut res = request(client, t)
        .send_body(t.body.clone())
        .await
        .map_err(|e| format!("send: {e}"))?;
    if res.status().as_u16() != 200 {
        let body = res.body().await.unwrap_or_default();
        return Err(format!(
            "{}: {}",
            res.status(),
            String::from_utf8_lossy(&body[..body.len().min(300)])
        ));
    }
    let mut parser = SseParser::new();
    let mut events = Vec::new();
    let mut seen = 0usize;
    let mut last: Option<u64> = None;
    let mut ended = false;
    let mut ttft = None;
    let mut latencies = Vec::with_capacity(deltas);
    while let Some(chunk) = res.next().await {
        let chunk = chunk.map_err(|e| format!("stream: {e}"))?;
        let now = now_ns();
        parser
            .push(&chunk, &mut events)
            .map_err(|_| "oversized SSE line")?;
        for ev in events.drain(..) {
            if is_end(&ev) {
                ended = true;
            }
            let Some(sent) = stamp(&ev.data) else {
                continue;
            };
            seen += 1;
            ttft.get_or_insert(now.saturating_sub(t0));
            latencies.push(now.saturating_sub(sent));
            if let Some(prev) = last {
                let gap = Duration::from_nanos(now - prev);
                s.max_gap = s.max_gap.max(gap);
                if gap > STALL {
                    s.stalls += 1;
                }
            }
            last = Some(now);
        }
    }
    if seen != deltas || !ended {
        return Err(format!(
            "incomplete stream: {seen}/{deltas} deltas, terminal event {ended}"
        ));
    }
    let _ = s.ttft.record(ttft.unwrap_or(0).max(1_000));
    let _ = s.whole.record(now_ns().saturating_sub(t0).max(1_000));
    for l in latencies {
        let _ = s.frame.record(l.max(1_000));
    }
    s.frames += deltas as u64;
    s.streams += 1;
    Ok(())
}

/// Idle streams: each is opened, read until its head arrives, then held without traffic (the
/// gateway's pings are read and dropped) until released.
pub struct IdleRun {
    pub opened: Arc<AtomicU64>,
    pub failed: Arc<AtomicU64>,
    release: watch::Sender<bool>,
    handle: Option<std::thread::JoinHandle<Option<String>>>,
}

impl IdleRun {
    /// Starts `n` idle streams on `threads` threads, at most `ramp` opening at once.
    pub fn start(target: &Target, n: usize, threads: usize, ramp: usize) -> Self {
        let opened = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let (release, rx) = watch::channel(false);
        let target = target.clone();
        let (o, f) = (opened.clone(), failed.clone());
        let handle = std::thread::spawn(move || {
            let errors = on_threads(threads, |i| {
                let n = share(n, threads, i);
                let target = target.clone();
                let (o, f, rx) = (o.clone(), f.clone(), rx.clone());
                let ramp = Arc::new(Semaphore::new(ramp / threads + 1));
                async move {
                    let client = client();
                    let tasks: Vec<_> = (0..n)
                        .map(|_| {
                            let (client, target) = (client.clone(), target.clone());
                            let (o, f, mut rx, ramp) =
                                (o.clone(), f.clone(), rx.clone(), ramp.clone());
                            actix_rt::spawn(async move {
                                let permit = ramp.acquire_owned().await.expect("semaphore");
                                let res = open_idle(&client, &target).await;
                                drop(permit);
                                let mut res = match res {
                                    Ok(r) => {
                                        o.fetch_add(1, Ordering::SeqCst);
                                        r
                                    }
                                    Err(e) => {
                                        f.fetch_add(1, Ordering::SeqCst);
                                        return Some(e);
                                    }
                                };
                                loop {
                                    tokio::select! {
                                        _ = rx.wait_for(|r| *r) => return None,
                                        chunk = res.next() => match chunk {
                                            Some(Ok(_)) => {}
                                            _ => {
                                                o.fetch_sub(1, Ordering::SeqCst);
                                                f.fetch_add(1, Ordering::SeqCst);
                                                return Some("idle stream ended early".to_string());
                                            }
                                        },
                                    }
                                }
                            })
                        })
                        .collect();
                    let mut first = None;
                    for t in tasks {
                        if let Some(e) = t.await.expect("idle task") {
                            first.get_or_insert(e);
                        }
                    }
                    first
                }
            });
            errors.into_iter().flatten().next()
        });
        Self {
            opened,
            failed,
            release,
            handle: Some(handle),
        }
    }

    /// Closes every stream; returns the first error seen, if any.
    pub fn release(mut self) -> Option<String> {
        let _ = self.release.send(true);
        self.handle
            .take()
            .and_then(|h| h.join().expect("idle thread"))
    }
}

impl Drop for IdleRun {
    fn drop(&mut self) {
        let _ = self.release.send(true);
    }
}

async fn open_idle(client: &awc::Client, t: &Target) -> Result<awc::ClientResponse, String> {
    let mut res = request(client, t)
        .send_body(t.body.clone())
        .await
        .map_err(|e| format!("send: {e}"))?;
    if res.status().as_u16() != 200 {
        return Err(format!("idle stream answered {}", res.status()));
    }
    let mut parser = SseParser::new();
    let mut events = Vec::new();
    while let Some(chunk) = res.next().await {
        let chunk = chunk.map_err(|e| format!("idle stream: {e}"))?;
        parser
            .push(&chunk, &mut events)
            .map_err(|_| "oversized SSE line")?;
        if events.iter().any(|e| {
            e.name() == "message_start"
                || memchr::memmem::find(&e.data, b"chat.completion.chunk").is_some()
        }) {
            return Ok(res);
        }
    }
    Err("idle stream closed before its head".into())
}
