//! The soak: `cargo bench --bench load -- soak`. Mixed traffic for `AIGW_SOAK_SECS` (default
//! 600) against one gateway process: JSON and streams on both paths, a gateway tool loop, clients
//! that disconnect or stall, and upstreams that fail, cut streams or stall. Every
//! `AIGW_SOAK_SAMPLE_SECS` (default 10) it samples the gateway's RSS, open fds and
//! `gateway_active_streams`; at the end it waits for the gateway to go idle, checks that every
//! request is one metric count and one request-log row, writes the RSS curve as a PNG
//! (`AIGW_SOAK_PNG`, default `benches/load/soak-rss.png`) and prints a markdown section for
//! BENCHMARKS.md. Load goes only to 127.0.0.1, and every request and wait is bounded.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use crate::client::{self, on_threads, Target};
use crate::procs::{self, open_fds, rss_kib};
use crate::{env_or, fixtures, stop_and_account, via_gateway, Baseline};

/// What one soak request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    JsonPassthrough,
    JsonTranslated,
    StreamPassthrough,
    StreamTranslated,
    /// The built-in mock calls the gateway's datetime tool; the gateway runs the loop.
    GatewayTool,
    /// Reads the first chunk of a stream, then drops the connection.
    ClientDisconnect,
    /// Reads the first chunk of a large stream, stops reading for a while, then reads on or
    /// drops the connection.
    ClientStall,
    /// The upstream answers 500 (retries, then the breaker).
    UpstreamFail,
    /// The upstream resets the stream before its end.
    UpstreamCut,
    /// The upstream stops sending mid-stream (the idle timeout), or never answers JSON.
    UpstreamStall,
}

/// Relative weights of the mix.
const MIX: [(Scenario, u32); 10] = [
    (Scenario::JsonPassthrough, 20),
    (Scenario::JsonTranslated, 15),
    (Scenario::StreamPassthrough, 15),
    (Scenario::StreamTranslated, 10),
    (Scenario::GatewayTool, 8),
    (Scenario::ClientDisconnect, 8),
    (Scenario::ClientStall, 4),
    (Scenario::UpstreamFail, 8),
    (Scenario::UpstreamCut, 6),
    (Scenario::UpstreamStall, 3),
];

/// Per-request client bound: longer than any gateway timeout below, so only a hang reaches it.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// What the gateway is given on top of the load harness's config: short timeouts so stalled
/// upstreams end quickly, a mock provider that calls gateway tools, and one with a large reply.
fn extra_config() -> String {
    format!(
        r#"
[timeouts]
ttft_ms = 3000
attempt_ms = 6000
idle_ms = 2000
total_ms = 12000

[[providers]]
name = "soak-tools"
kind = "mock"
tool_mode = "auto"

[[models]]
id = "mock-tools"
deployments = [{{ provider = "soak-tools", model = "mock-1" }}]

[[providers]]
name = "soak-big"
kind = "mock"
reply = "{reply}"
chunk_chars = 1024

[[models]]
id = "mock-big"
deployments = [{{ provider = "soak-big", model = "mock-1" }}]
"#,
        reply = "lorem ipsum ".repeat(16 * 1024 / 12 * 16)
    )
}

/// Outcome counters of one scenario.
#[derive(Default)]
struct Tally {
    sent: AtomicU64,
    ok: AtomicU64,
    client_error: AtomicU64,
    server_error: AtomicU64,
    /// A 200 stream that ended with `event: error` (expected for cut and stalled upstreams).
    in_band_error: AtomicU64,
    /// Dropped by the client on purpose (disconnect, stall).
    abandoned: AtomicU64,
    /// No answer, a broken connection, or the client timeout.
    transport: AtomicU64,
}

enum Outcome {
    Status(u16),
    InBandError,
    Abandoned,
    Transport,
}

struct Tallies([Tally; MIX.len()]);

impl Tallies {
    fn record(&self, s: Scenario, o: Outcome) {
        let t = &self.0[MIX.iter().position(|(m, _)| *m == s).expect("in the mix")];
        t.sent.fetch_add(1, Relaxed);
        let c = match o {
            Outcome::Status(200..=299) => &t.ok,
            Outcome::Status(400..=499) => &t.client_error,
            Outcome::Status(_) => &t.server_error,
            Outcome::InBandError => &t.in_band_error,
            Outcome::Abandoned => &t.abandoned,
            Outcome::Transport => &t.transport,
        };
        c.fetch_add(1, Relaxed);
    }
}

/// xorshift64*: each task's own deterministic sequence.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn scenario(&mut self) -> Scenario {
        let total: u32 = MIX.iter().map(|(_, w)| w).sum();
        let mut r = self.below(u64::from(total)) as u32;
        for (s, w) in MIX {
            if r < w {
                return s;
            }
            r -= w;
        }
        unreachable!("r < total")
    }
}

fn target(gw: SocketAddr, model: &str, stream: bool) -> Target {
    via_gateway(gw, fixtures::small_request(model, stream))
}

fn tool_target(gw: SocketAddr, stream: bool) -> Target {
    let mut body: serde_json::Value =
        serde_json::from_str(&fixtures::small_request("mock-tools", stream)).unwrap();
    body["tools"] = serde_json::json!([{"type": "gateway:datetime"}]);
    via_gateway(gw, body.to_string())
}

/// A stream of about 256 KiB from the built-in mock: more than the socket buffers hold.
fn big_target(gw: SocketAddr) -> Target {
    let mut body: serde_json::Value =
        serde_json::from_str(&fixtures::small_request("mock-big", true)).unwrap();
    body["max_tokens"] = serde_json::json!(100_000);
    via_gateway(gw, body.to_string())
}

/// How a client reads a stream.
#[derive(Clone, Copy)]
enum Read {
    All,
    /// The first chunk, then drop.
    Drop,
    /// The first chunk, a pause, then the rest (`true`) or drop (`false`).
    Stall(Duration, bool),
}

async fn one(client: &awc::Client, t: &Target, read: Read) -> Outcome {
    let exchange = async {
        let mut res = match client::request(client, t).send_body(t.body.clone()).await {
            Ok(r) => r,
            Err(_) => return Outcome::Transport,
        };
        let status = res.status().as_u16();
        let stream = res
            .headers()
            .get("content-type")
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
        let mut seen = Vec::new();
        let mut first = true;
        while let Some(chunk) = res.next().await {
            let Ok(chunk) = chunk else {
                return Outcome::Transport;
            };
            // Only the tail matters: whether the stream ended in an error event.
            seen.extend_from_slice(&chunk);
            if seen.len() > 4096 {
                seen.drain(..seen.len() - 4096);
            }
            if first && stream {
                first = false;
                match read {
                    Read::All => {}
                    Read::Drop => return Outcome::Abandoned,
                    Read::Stall(pause, resume) => {
                        tokio::time::sleep(pause).await;
                        if !resume {
                            return Outcome::Abandoned;
                        }
                    }
                }
            }
        }
        if stream && memchr::memmem::find(&seen, b"event: error").is_some() {
            return Outcome::InBandError;
        }
        Outcome::Status(status)
    };
    tokio::time::timeout(CLIENT_TIMEOUT, exchange)
        .await
        .unwrap_or(Outcome::Transport)
}

async fn run_scenario(client: &awc::Client, gw: SocketAddr, s: Scenario, rng: &mut Rng) -> Outcome {
    let coin = rng.below(2) == 0;
    let side = if coin { "anthropic" } else { "openai" };
    match s {
        Scenario::JsonPassthrough => {
            one(client, &target(gw, "anthropic-fast", false), Read::All).await
        }
        Scenario::JsonTranslated => one(client, &target(gw, "openai-fast", false), Read::All).await,
        Scenario::StreamPassthrough => {
            one(client, &target(gw, "anthropic-paced", true), Read::All).await
        }
        Scenario::StreamTranslated => {
            one(client, &target(gw, "openai-paced", true), Read::All).await
        }
        Scenario::GatewayTool => one(client, &tool_target(gw, coin), Read::All).await,
        Scenario::ClientDisconnect => {
            one(
                client,
                &target(gw, &format!("{side}-paced"), true),
                Read::Drop,
            )
            .await
        }
        Scenario::ClientStall => {
            let pause = Duration::from_millis(500 + rng.below(3000));
            one(
                client,
                &big_target(gw),
                Read::Stall(pause, rng.below(2) == 0),
            )
            .await
        }
        Scenario::UpstreamFail => {
            one(
                client,
                &target(gw, &format!("{side}-fail"), rng.below(2) == 0),
                Read::All,
            )
            .await
        }
        Scenario::UpstreamCut => {
            one(client, &target(gw, &format!("{side}-cut"), true), Read::All).await
        }
        Scenario::UpstreamStall => {
            one(
                client,
                &target(gw, &format!("{side}-stall"), rng.below(2) == 0),
                Read::All,
            )
            .await
        }
    }
}

/// `conns` clients running the mix until `deadline`, on their own thread.
fn traffic(
    addr: SocketAddr,
    conns: usize,
    threads: usize,
    deadline: Instant,
    tallies: Arc<Tallies>,
) -> std::thread::JoinHandle<()> {
    static PHASE: AtomicU64 = AtomicU64::new(0);
    let phase = PHASE.fetch_add(1, Relaxed);
    std::thread::spawn(move || {
        on_threads(threads, |i| {
            let tallies = tallies.clone();
            async move {
                let client = client::client();
                let n = conns / threads + usize::from(i < conns % threads);
                let tasks: Vec<_> = (0..n)
                    .map(|j| {
                        let client = client.clone();
                        let tallies = tallies.clone();
                        let seed = (phase << 32) | (i * 1000 + j + 1) as u64;
                        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ seed);
                        actix_rt::spawn(async move {
                            while Instant::now() < deadline {
                                let s = rng.scenario();
                                let o = run_scenario(&client, addr, s, &mut rng).await;
                                tallies.record(s, o);
                                // A short think time: the mix, not the CPU, is the point.
                                let think = Duration::from_millis(rng.below(40));
                                tokio::time::sleep(think).await;
                            }
                        })
                    })
                    .collect();
                for t in tasks {
                    let _ = t.await;
                }
            }
        });
    })
}

/// Waits (at most 20 s) until no stream is active and, given `fds`, the fds other than the
/// upstream pool are back to it; then one sample.
fn settle(w: Watched, started: Instant, fds: Option<usize>) -> Sample {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = sample(w, started.elapsed());
        let back = s.active_streams == 0 && fds.is_none_or(|f| s.other_fds() <= f);
        if back || Instant::now() > deadline {
            return s;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One sample of the gateway process.
#[derive(Clone, Copy)]
pub struct Sample {
    pub at: Duration,
    pub rss_kib: u64,
    pub fds: usize,
    /// Of `fds`: pooled connections to the upstream mock.
    pub upstream_fds: usize,
    pub active_streams: u64,
}

impl Sample {
    /// Everything but the upstream pool: client sockets, files, the runtime's own.
    fn other_fds(&self) -> usize {
        self.fds.saturating_sub(self.upstream_fds)
    }
}

/// The process being sampled: the gateway's pid, its address, the mock's port.
#[derive(Clone, Copy)]
struct Watched {
    pid: u32,
    addr: SocketAddr,
    mock: u16,
}

fn sample(w: Watched, at: Duration) -> Sample {
    Sample {
        at,
        rss_kib: rss_kib(w.pid).0,
        fds: open_fds(w.pid),
        upstream_fds: procs::sockets_to_port(w.pid, w.mock),
        active_streams: procs::counter_total(w.addr, "gateway_active_streams").unwrap_or(u64::MAX),
    }
}

pub fn main() {
    let secs: u64 = env_or("AIGW_SOAK_SECS", 600);
    let every: u64 = env_or("AIGW_SOAK_SAMPLE_SECS", 10).max(1);
    let conns: usize = env_or("AIGW_SOAK_CONNS", 32);
    let threads: usize = env_or("AIGW_BENCH_LOAD_THREADS", 2);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers: usize = env_or("AIGW_BENCH_WORKERS", cores);
    let png = std::env::var("AIGW_SOAK_PNG").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/benches/load/soak-rss.png").to_string()
    });
    // Warm-up: the first minute, or a tenth of a short run.
    let warmup = Duration::from_secs((secs / 10).min(60));
    let duration = Duration::from_secs(secs);

    procs::raise_nofile();
    let dir = procs::TempDir::new();
    let (mock_proc, mock) = procs::spawn_mock(1);
    let config = procs::gateway_config(&dir.0, mock, workers, "warn", &extra_config());
    let log = dir.0.join("gateway.log");
    let db = procs::request_log_path(&dir.0);
    let since = Baseline::now(&db);
    let (gw, addr) = procs::spawn_gateway(&config, &log);
    let pid = gw.pid();
    eprintln!(
        "[soak] gateway on {addr} (pid {pid}), mock on 127.0.0.1:{mock}; {secs} s, {conns} clients, sample every {every} s"
    );
    match client::probe(&target(addr, "anthropic-fast", false)) {
        Ok((200, _)) => {}
        other => panic!("passthrough probe failed: {other:?}"),
    }
    let watched = Watched { pid, addr, mock };
    let cold = sample(watched, Duration::ZERO);

    let tallies = Arc::new(Tallies(Default::default()));
    let started = Instant::now();
    let mut samples = vec![cold];
    let phase = |dur: Duration, samples: &mut Vec<Sample>| {
        let traffic = traffic(addr, conns, threads, Instant::now() + dur, tallies.clone());
        let mut next = Instant::now() + Duration::from_secs(every);
        while !traffic.is_finished() {
            let now = Instant::now();
            if now >= next {
                let s = sample(watched, now - started);
                eprintln!(
                    "[soak] {:>4} s: RSS {:.1} MiB, {} fds ({} upstream), {} active streams, {} requests",
                    s.at.as_secs(),
                    s.rss_kib as f64 / 1024.0,
                    s.fds,
                    s.upstream_fds,
                    s.active_streams,
                    client::SENT_TO_GATEWAY.load(Relaxed) - since.sent
                );
                samples.push(s);
                next += Duration::from_secs(every);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        traffic.join().expect("load thread");
    };
    // The idle reference is taken after warm-up traffic, once the gateway's upstream connection
    // pool holds what this mix needs (pooled connections stay open for their keep-alive).
    phase(warmup, &mut samples);
    let idle = settle(watched, started, None);
    eprintln!(
        "[soak] idle after warm-up: {} fds ({} upstream)",
        idle.fds, idle.upstream_fds
    );
    phase(duration.saturating_sub(warmup), &mut samples);
    let traffic = started.elapsed();
    let settled = settle(watched, started, Some(idle.other_fds()));
    let accounting = stop_and_account("soak", gw, addr, since, &db);
    drop(mock_proc);

    let after_warmup: Vec<&Sample> = samples.iter().filter(|s| s.at >= warmup).collect();
    let growth = match (after_warmup.first(), after_warmup.last()) {
        (Some(a), Some(b)) if a.rss_kib > 0 => {
            Some(100.0 * (b.rss_kib as f64 - a.rss_kib as f64) / a.rss_kib as f64)
        }
        _ => None,
    };
    let png_written = crate::plot::rss_png(std::path::Path::new(&png), &samples, warmup);
    if let Err(e) = &png_written {
        eprintln!("[soak] PNG not written: {e}");
    }
    let report = Report {
        secs,
        traffic,
        conns,
        workers,
        warmup,
        idle,
        samples: &samples,
        settled,
        growth,
        tallies: &tallies,
        accounting: &accounting,
        png: png_written.ok().map(|()| png.clone()),
    };
    println!("{}", report.markdown());
}

struct Report<'a> {
    secs: u64,
    traffic: Duration,
    conns: usize,
    workers: usize,
    warmup: Duration,
    idle: Sample,
    samples: &'a [Sample],
    settled: Sample,
    growth: Option<f64>,
    tallies: &'a Tallies,
    accounting: &'a crate::Accounting,
    png: Option<String>,
}

impl Report<'_> {
    fn markdown(&self) -> String {
        use std::fmt::Write;
        let mib = |k: u64| k as f64 / 1024.0;
        let mut o = String::new();
        let _ = writeln!(
            o,
            "### Soak: {} s of mixed traffic ({})\n\n{}; gateway workers {}, {} concurrent clients, warm-up {} s.\n",
            self.secs,
            chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
            crate::report::machine(),
            self.workers,
            self.conns,
            self.warmup.as_secs()
        );
        if let Some(png) = &self.png {
            let name = std::path::Path::new(png)
                .strip_prefix(env!("CARGO_MANIFEST_DIR"))
                .map_or(png.clone(), |p| p.display().to_string());
            let _ = writeln!(o, "![Gateway RSS over the soak]({name})\n");
        }
        o.push_str("| Scenario | Sent | 2xx | 4xx | 5xx | `event: error` in a 200 stream | Dropped by the client | Transport errors |\n|---|---|---|---|---|---|---|---|\n");
        for ((s, _), t) in MIX.iter().zip(&self.tallies.0) {
            let _ = writeln!(
                o,
                "| {s:?} | {} | {} | {} | {} | {} | {} | {} |",
                t.sent.load(Relaxed),
                t.ok.load(Relaxed),
                t.client_error.load(Relaxed),
                t.server_error.load(Relaxed),
                t.in_band_error.load(Relaxed),
                t.abandoned.load(Relaxed),
                t.transport.load(Relaxed)
            );
        }
        o.push_str("\n| t (s) | RSS (MiB) | Open fds | of which upstream pool | Active streams |\n|---|---|---|---|---|\n");
        let row = |o: &mut String, at: String, s: &Sample| {
            let _ = writeln!(
                o,
                "| {at} | {:.1} | {} | {} | {} |",
                mib(s.rss_kib),
                s.fds,
                s.upstream_fds,
                s.active_streams
            );
        };
        for s in self.samples {
            row(&mut o, s.at.as_secs().to_string(), s);
        }
        row(&mut o, "idle after warm-up".into(), &self.idle);
        row(
            &mut o,
            format!("idle after {:.0} s of traffic", self.traffic.as_secs_f64()),
            &self.settled,
        );
        o.push('\n');
        let flat = self.growth.map(|g| g <= 10.0);
        let fds_back = self.settled.other_fds() <= self.idle.other_fds();
        let streams_back = self.settled.active_streams == 0;
        let verdict = |ok: bool| if ok { "met" } else { "**missed**" };
        o.push_str("| Check | Value | Target | Verdict |\n|---|---|---|---|\n");
        let _ = writeln!(
            o,
            "| RSS growth from the end of warm-up to the last sample | {} | ≤ 10% | {} |",
            self.growth.map_or("n/a".into(), |g| format!("{g:+.1}%")),
            flat.map_or("n/a", verdict)
        );
        let _ = writeln!(
            o,
            "| Open fds but the upstream pool, idle after warm-up → idle after the soak | {} → {} | back to idle | {} |",
            self.idle.other_fds(),
            self.settled.other_fds(),
            verdict(fds_back)
        );
        let _ = writeln!(
            o,
            "| Pooled upstream connections, idle after warm-up → idle after the soak | {} → {} | bounded by the pool (60 s keep-alive) | |",
            self.idle.upstream_fds,
            self.settled.upstream_fds,
        );
        let _ = writeln!(
            o,
            "| `gateway_active_streams` after | {} | 0 | {} |",
            self.settled.active_streams,
            verdict(streams_back)
        );
        let a = self.accounting;
        let agree = a.counted == Some(a.sent) && a.logged.is_none_or(|l| l == a.sent);
        let _ = writeln!(
            o,
            "\n| Accounting | Requests sent | `gateway_requests_total` | Request-log rows | Verdict |\n|---|---|---|---|---|\n| soak | {} | {} | {} | {} |",
            a.sent,
            a.counted.map_or("unreadable".into(), |c| c.to_string()),
            a.logged.map_or("log off".into(), |l| l.to_string()),
            if agree { "equal" } else { "**differ**" }
        );
        o
    }
}
