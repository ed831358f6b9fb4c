//! The load harness: `cargo bench --bench load` (add `-- --quick` for a short smoke run;
//! `-- soak` runs the soak instead, see `soak.rs`).
//!
//! It starts the fast upstream mock (its own process) and the gateway (`aigw`, its own process,
//! so /proc gives its CPU and memory alone), then measures every figure against the same mock hit
//! directly, in the same run, alternating direct and gateway rounds so that background noise
//! falls on both. Load goes only to 127.0.0.1. Every phase is bounded by time or count; the
//! child processes are killed when the harness ends, panics included. One markdown table goes to
//! stdout; progress goes to stderr. BENCHMARKS.md says what each number means.

mod client;
mod mock;
mod plot;
mod procs;
mod report;
mod soak;

#[path = "../shared/fixtures.rs"]
mod fixtures;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use bytes::Bytes;

use client::{closed_loop, stream_loop, IdleRun, LoopStats, StreamStats, Target};
use procs::{cpu_time, open_fds, rss_kib, ChildGuard, GATEWAY_KEY, UPSTREAM_KEY};

/// Durations, counts and sizes of one run.
#[derive(Clone)]
pub struct Plan {
    pub scale: f64,
    pub gateway_workers: usize,
    pub mock_workers: usize,
    pub load_threads: usize,
    pub rounds: usize,
    pub idle_streams: usize,
    pub conversation_turns: usize,
    /// Phases to run (`AIGW_BENCH_ONLY`, comma-separated); empty = all.
    pub only: Vec<String>,
}

/// Phase names for `AIGW_BENCH_ONLY`.
pub const PHASES: [&str; 9] = [
    "c1",
    "conversation",
    "c64",
    "stream1",
    "stream512",
    "fast32",
    "loglevel",
    "floor",
    "idle",
];

impl Plan {
    fn secs(&self, s: f64) -> Duration {
        Duration::from_secs_f64(s * self.scale)
    }

    fn runs(&self, phase: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|p| p == phase)
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    if std::env::var("AIGW_BENCH_ROLE").as_deref() == Ok("mock") {
        let workers = env_or("AIGW_BENCH_MOCK_WORKERS", 1);
        if let Err(e) = mock::serve(workers) {
            eprintln!("mock: {e}");
            std::process::exit(1);
        }
        return;
    }
    let args: Vec<String> = std::env::args().collect();
    // `cargo test --benches` runs bench binaries without `--bench`: a load test is no unit test.
    if !args.iter().any(|a| a == "--bench") {
        eprintln!("benches/load runs only as a benchmark: cargo bench --bench load");
        return;
    }
    if args.iter().any(|a| a == "soak") {
        soak::main();
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let plan = Plan {
        scale: env_or("AIGW_BENCH_SCALE", if quick { 0.2 } else { 1.0 }),
        gateway_workers: env_or("AIGW_BENCH_WORKERS", cores),
        mock_workers: env_or("AIGW_BENCH_MOCK_WORKERS", 1),
        load_threads: env_or("AIGW_BENCH_LOAD_THREADS", 2),
        rounds: env_or("AIGW_BENCH_ROUNDS", 4),
        idle_streams: env_or("AIGW_BENCH_IDLE_STREAMS", if quick { 1000 } else { 10_000 }),
        conversation_turns: 50,
        only: std::env::var("AIGW_BENCH_ONLY")
            .unwrap_or_default()
            .split(',')
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty())
            .collect(),
    };
    if let Some(bad) = plan.only.iter().find(|p| !PHASES.contains(&p.as_str())) {
        eprintln!(
            "AIGW_BENCH_ONLY: unknown phase {bad:?}; phases: {}",
            PHASES.join(", ")
        );
        std::process::exit(2);
    }
    let started = Instant::now();
    let (busy0, own0) = (procs::machine_busy(), procs::own_cpu());
    let mut results = run(&plan);
    results.background = Background {
        wall: started.elapsed(),
        busy: procs::machine_busy().saturating_sub(busy0),
        own: procs::own_cpu().saturating_sub(own0),
    };
    report::print(&plan, &results);
    eprintln!("[load] done in {:.0} s", started.elapsed().as_secs_f64());
}

/// One path through the gateway: passthrough (anthropic kind) or translated (openai kind).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Passthrough,
    Translated,
}

impl Kind {
    fn provider(self) -> &'static str {
        match self {
            Kind::Passthrough => "anthropic",
            Kind::Translated => "openai",
        }
    }
}

/// A direct/gateway pair of non-stream runs, with the gateway's CPU over its own rounds.
pub struct LoopPair {
    pub direct: LoopStats,
    pub gateway: LoopStats,
    pub gateway_cpu: Duration,
    /// The mock's CPU over the direct rounds: what serving alone costs.
    pub mock_cpu: Duration,
}

pub struct StreamPair {
    pub direct: StreamStats,
    pub gateway: StreamStats,
    /// The gateway's CPU over its own rounds.
    pub gateway_cpu: Duration,
}

/// One path's figures; a phase left out by `AIGW_BENCH_ONLY` is `None`.
pub struct KindResults {
    pub c1: Option<LoopPair>,
    pub c1_conversation: Option<LoopPair>,
    pub c64: Option<LoopPair>,
    pub c1_stream: Option<StreamPair>,
    pub s512: Option<StreamPair>,
    /// Whole fast streams (the upstream sends each at once), c=32; passthrough only.
    pub s32_fast: Option<StreamPair>,
}

/// The floor of any proxy hop: nginx as a bare reverse proxy in front of the same mock, its
/// rows measured like the gateway's (direct and nginx rounds alternating).
pub struct FloorResults {
    pub c1: LoopPair,
    pub c64: LoopPair,
}

pub struct IdleResults {
    /// Which streams: on the gateway's own mock provider, or proxied to the upstream mock.
    pub via: IdleVia,
    pub requested: usize,
    pub opened: u64,
    pub failed: u64,
    pub fd_limit: u64,
    pub base_rss_kib: u64,
    pub open_rss_kib: u64,
    pub peak_rss_kib: u64,
    pub closed_rss_kib: u64,
    pub open_fds: usize,
    pub ramp: Duration,
}

/// Where idle streams wait for their first token.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum IdleVia {
    /// The gateway's `mock` provider with a 10-minute `ttft_ms`: one socket per stream.
    BuiltInMock,
    /// Proxied to the upstream mock's long time-to-first-token profile: two sockets per stream.
    Upstream,
}

impl IdleVia {
    pub fn label(self) -> &'static str {
        match self {
            Self::BuiltInMock => "built-in mock",
            Self::Upstream => "passthrough",
        }
    }

    fn sockets(self) -> u64 {
        match self {
            Self::BuiltInMock => 1,
            Self::Upstream => 2,
        }
    }
}

/// What the whole machine did during the run, to tell a quiet run from a noisy one.
#[derive(Default)]
pub struct Background {
    pub wall: Duration,
    /// Busy time of all cores.
    pub busy: Duration,
    /// This harness, the mock and the gateway (children are counted once reaped).
    pub own: Duration,
}

/// What one gateway process was sent, counted in its metrics and wrote to its request log.
pub struct Accounting {
    pub label: &'static str,
    pub sent: u64,
    /// `gateway_requests_total` over all label sets, just before the gateway stopped.
    pub counted: Option<u64>,
    /// Request-log rows the process added; `None` with the log off.
    pub logged: Option<u64>,
}

/// Where the counters stood when a gateway process started.
struct Baseline {
    sent: u64,
    rows: u64,
}

impl Baseline {
    fn now(db: &Path) -> Self {
        Self {
            sent: client::SENT_TO_GATEWAY.load(Relaxed),
            rows: procs::request_log_rows(db).unwrap_or(0),
        }
    }
}

/// Stops a gateway the way an operator does (SIGTERM: it drains and flushes its request log),
/// once its metrics have caught up with what it was sent, and accounts for its requests.
fn stop_and_account(
    label: &'static str,
    gw: ChildGuard,
    addr: SocketAddr,
    since: Baseline,
    db: &Path,
) -> Accounting {
    let sent = client::SENT_TO_GATEWAY.load(Relaxed) - since.sent;
    // A released idle stream is counted once the gateway notices its client left.
    let deadline = Instant::now() + Duration::from_secs(15);
    let counted = loop {
        let c = procs::counter_total(addr, "gateway_requests_total");
        if c.is_none_or(|c| c >= sent) || Instant::now() > deadline {
            break c;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    drop(gw);
    let logged = procs::request_log_rows(db).map(|rows| rows.saturating_sub(since.rows));
    Accounting {
        label,
        sent,
        counted,
        logged,
    }
}

pub struct Results {
    pub passthrough: KindResults,
    /// c=64 passthrough on a gateway at the shipped `log_level = "info"` (the others run at
    /// `warn`); `None` when the `loglevel` phase is left out.
    pub log_info: Option<LoopPair>,
    /// `Err(why)` when nginx is not installed or would not start.
    pub floor: Option<Result<FloorResults, String>>,
    /// `Err(why)` when the translated rows cannot run in this build.
    pub translated: Result<KindResults, String>,
    pub idle: Vec<IdleResults>,
    pub accounting: Vec<Accounting>,
    pub body_sizes: (usize, usize),
    pub background: Background,
}

/// Where the direct baseline sends a request of `kind` for mock `profile`.
fn direct(kind: Kind, mock_port: u16, profile: &str, body: String) -> Target {
    let (url, headers) = match kind {
        Kind::Passthrough => (
            format!("http://127.0.0.1:{mock_port}/{profile}/v1/messages"),
            vec![
                ("x-api-key", UPSTREAM_KEY.to_string()),
                ("anthropic-version", "2023-06-01".to_string()),
                ("content-type", "application/json".to_string()),
            ],
        ),
        Kind::Translated => (
            format!("http://127.0.0.1:{mock_port}/{profile}/v1/chat/completions"),
            vec![
                ("authorization", format!("Bearer {UPSTREAM_KEY}")),
                ("content-type", "application/json".to_string()),
            ],
        ),
    };
    Target {
        url,
        headers,
        body: Bytes::from(body),
        sent: &client::SENT_DIRECT,
    }
}

fn via_gateway(gw: SocketAddr, body: String) -> Target {
    Target {
        url: format!("http://{gw}/v1/messages"),
        headers: vec![
            ("x-api-key", GATEWAY_KEY.to_string()),
            ("anthropic-version", "2023-06-01".to_string()),
            ("content-type", "application/json".to_string()),
        ],
        body: Bytes::from(body),
        sent: &client::SENT_TO_GATEWAY,
    }
}

/// The same request, for the gateway and for the mock directly.
fn pair(kind: Kind, gw: SocketAddr, mock: u16, profile: &str, stream: bool) -> (Target, Target) {
    let model = format!("{}-{profile}", kind.provider());
    let gateway = via_gateway(gw, fixtures::small_request(&model, stream));
    let body = match kind {
        Kind::Passthrough => fixtures::small_request("claude-bench", stream),
        Kind::Translated => fixtures::small_openai_request("gpt-bench", stream),
    };
    (direct(kind, mock, profile, body), gateway)
}

fn check(label: &str, side: &str, errors: u64, first: &Option<String>) {
    if errors > 0 {
        eprintln!(
            "[load] {label} {side}: {errors} failed, first: {}",
            first.as_deref().unwrap_or("?")
        );
    }
}

/// Alternating direct and gateway rounds (the order flips each round), after a warm-up of each.
fn loop_pair(
    label: &str,
    plan: &Plan,
    (d, g): &(Target, Target),
    conns: usize,
    round: Duration,
    pids: Pids,
) -> LoopPair {
    eprintln!("[load] {label}");
    let threads = plan.load_threads;
    let warm = round.mul_f64(0.5);
    closed_loop(d, conns, threads, warm);
    closed_loop(g, conns, threads, warm);
    let mut out = LoopPair {
        direct: LoopStats::new(),
        gateway: LoopStats::new(),
        gateway_cpu: Duration::ZERO,
        mock_cpu: Duration::ZERO,
    };
    for r in 0..plan.rounds {
        for gateway_turn in [r % 2 == 1, r % 2 == 0] {
            if gateway_turn {
                let cpu = cpu_time(pids.gateway);
                let s = closed_loop(g, conns, threads, round);
                out.gateway_cpu += cpu_time(pids.gateway) - cpu;
                out.gateway.elapsed += s.elapsed;
                out.gateway.merge(s);
            } else {
                let cpu = cpu_time(pids.mock);
                let s = closed_loop(d, conns, threads, round);
                out.mock_cpu += cpu_time(pids.mock) - cpu;
                out.direct.elapsed += s.elapsed;
                out.direct.merge(s);
            }
        }
    }
    check(label, "direct", out.direct.errors, &out.direct.first_error);
    check(
        label,
        "gateway",
        out.gateway.errors,
        &out.gateway.first_error,
    );
    out
}

#[allow(clippy::too_many_arguments)]
fn stream_pair(
    label: &str,
    plan: &Plan,
    (d, g): &(Target, Target),
    conns: usize,
    round: Duration,
    rounds: usize,
    stagger: Duration,
    pids: Pids,
) -> StreamPair {
    eprintln!("[load] {label}");
    let threads = plan.load_threads;
    let mut out = StreamPair {
        direct: StreamStats::new(),
        gateway: StreamStats::new(),
        gateway_cpu: Duration::ZERO,
    };
    for r in 0..rounds {
        for gateway_turn in [r % 2 == 1, r % 2 == 0] {
            let started = Instant::now();
            if gateway_turn {
                let cpu = cpu_time(pids.gateway);
                let s = stream_loop(g, conns, threads, round, mock::DELTAS, stagger);
                out.gateway_cpu += cpu_time(pids.gateway) - cpu;
                out.gateway.merge(s);
                out.gateway.elapsed += started.elapsed();
            } else {
                out.direct
                    .merge(stream_loop(d, conns, threads, round, mock::DELTAS, stagger));
                out.direct.elapsed += started.elapsed();
            }
        }
    }
    check(label, "direct", out.direct.errors, &out.direct.first_error);
    check(
        label,
        "gateway",
        out.gateway.errors,
        &out.gateway.first_error,
    );
    out
}

/// The processes whose CPU is read.
#[derive(Clone, Copy)]
struct Pids {
    gateway: u32,
    mock: u32,
}

fn measure_kind(kind: Kind, plan: &Plan, pids: Pids, addr: SocketAddr, mock: u16) -> KindResults {
    let name = match kind {
        Kind::Passthrough => "passthrough",
        Kind::Translated => "translated",
    };
    let c1 = plan.runs("c1").then(|| {
        loop_pair(
            &format!("(a) {name}: c=1 non-stream"),
            plan,
            &pair(kind, addr, mock, "fast", false),
            1,
            plan.secs(1.0),
            pids,
        )
    });
    let c1_conversation = (kind == Kind::Passthrough && plan.runs("conversation")).then(|| {
        let body =
            |model: &str| fixtures::conversation_request(model, plan.conversation_turns, false);
        let targets = (
            direct(kind, mock, "fast", body("claude-bench")),
            via_gateway(addr, body("anthropic-fast")),
        );
        loop_pair(
            &format!("(a) {name}: c=1 non-stream, 50-turn conversation"),
            plan,
            &targets,
            1,
            plan.secs(1.0),
            pids,
        )
    });
    let c64 = plan.runs("c64").then(|| {
        loop_pair(
            &format!("(b)(c) {name}: c=64 non-stream"),
            plan,
            &pair(kind, addr, mock, "fast", false),
            64,
            plan.secs(1.5),
            pids,
        )
    });
    let c1_stream = plan.runs("stream1").then(|| {
        stream_pair(
            &format!("(d) {name}: c=1 stream"),
            plan,
            &pair(kind, addr, mock, "fast", true),
            1,
            plan.secs(1.0),
            plan.rounds.div_ceil(2),
            Duration::ZERO,
            pids,
        )
    });
    // One paced stream lasts DELTAS × PACED_INTERVAL; starts are spread over that time.
    let stream_len = mock::PACED_INTERVAL * mock::DELTAS as u32;
    let s512 = plan.runs("stream512").then(|| {
        stream_pair(
            &format!("(d) {name}: 512 concurrent paced streams"),
            plan,
            &pair(kind, addr, mock, "paced", true),
            512,
            plan.secs(4.0).max(stream_len * 2),
            2,
            stream_len,
            pids,
        )
    });
    let s32_fast = (kind == Kind::Passthrough && plan.runs("fast32")).then(|| {
        stream_pair(
            &format!("(f) {name}: 32 concurrent whole fast streams"),
            plan,
            &pair(kind, addr, mock, "fast", true),
            32,
            plan.secs(1.5),
            plan.rounds.div_ceil(2),
            Duration::ZERO,
            pids,
        )
    });
    KindResults {
        c1,
        c1_conversation,
        c64,
        c1_stream,
        s512,
        s32_fast,
    }
}

/// The translated rows need the `openai` provider kind; a build without it answers with an
/// upstream failure naming it.
fn translated_available(addr: SocketAddr, mock: u16) -> Result<(), String> {
    let (_, g) = pair(Kind::Translated, addr, mock, "fast", false);
    match client::probe(&g) {
        Ok((200, body)) if body.contains("\"type\":\"message\"") => Ok(()),
        Ok((_, body)) if body.contains("provider kind openai is not available") => {
            Err("openai kind not available in this build".into())
        }
        Ok((status, body)) => Err(format!(
            "openai probe failed: {status} {}",
            &body[..body.len().min(200)]
        )),
        Err(e) => Err(format!("openai probe failed: {e}")),
    }
}

fn run(plan: &Plan) -> Results {
    let fd_limit = procs::raise_nofile();
    let dir = procs::TempDir::new();
    let (mock_proc, mock) = procs::spawn_mock(plan.mock_workers);
    eprintln!(
        "[load] mock upstream on 127.0.0.1:{mock} (pid {}), fd limit {fd_limit}",
        mock_proc.pid()
    );
    let config = procs::gateway_config(&dir.0, mock, plan.gateway_workers, "warn", "");
    let log = dir.0.join("gateway.log");
    let db = procs::request_log_path(&dir.0);
    let mut accounting = Vec::new();
    let since = Baseline::now(&db);
    let (gw, addr) = procs::spawn_gateway(&config, &log);
    eprintln!("[load] gateway on {addr} (pid {})", gw.pid());

    let (_, g) = pair(Kind::Passthrough, addr, mock, "fast", false);
    match client::probe(&g) {
        Ok((200, _)) => {}
        other => panic!("passthrough probe failed: {other:?}"),
    }
    let pids = Pids {
        gateway: gw.pid(),
        mock: mock_proc.pid(),
    };
    let passthrough = measure_kind(Kind::Passthrough, plan, pids, addr, mock);
    let translated = translated_available(addr, mock)
        .map(|()| measure_kind(Kind::Translated, plan, pids, addr, mock));
    if let Err(why) = &translated {
        eprintln!("[load] translated rows skipped: {why}");
    }
    accounting.push(stop_and_account("(a)–(d), (f)", gw, addr, since, &db));

    // (g) the same c=64 passthrough load on a gateway at the shipped log level.
    let log_info = plan.runs("loglevel").then(|| {
        let info_dir = dir.0.join("info");
        std::fs::create_dir_all(&info_dir).expect("create info dir");
        let config = procs::gateway_config(&info_dir, mock, plan.gateway_workers, "info", "");
        let db = procs::request_log_path(&info_dir);
        let since = Baseline::now(&db);
        let (gw, addr) = procs::spawn_gateway(&config, &info_dir.join("gateway.log"));
        eprintln!(
            "[load] (g) gateway at log_level info on {addr} (pid {})",
            gw.pid()
        );
        let pids = Pids {
            gateway: gw.pid(),
            mock: mock_proc.pid(),
        };
        let p = loop_pair(
            "(g) passthrough: c=64 non-stream, log_level info",
            plan,
            &pair(Kind::Passthrough, addr, mock, "fast", false),
            64,
            plan.secs(1.5),
            pids,
        );
        accounting.push(stop_and_account("(g) log_level info", gw, addr, since, &db));
        p
    });

    // (0) the floor: nginx in front of the same mock.
    let floor = plan.runs("floor").then(|| {
        let (nginx, port) = procs::spawn_nginx(&dir.0, mock)?;
        eprintln!(
            "[load] (0) nginx bare proxy on 127.0.0.1:{port} (pid {})",
            nginx.pid()
        );
        let pids = Pids {
            gateway: nginx.pid(),
            mock: mock_proc.pid(),
        };
        let targets = |kind: Kind| {
            let (d, _) = pair(kind, addr, mock, "fast", false);
            let mut n = d.clone();
            n.url = n.url.replace(&format!(":{mock}/"), &format!(":{port}/"));
            (d, n)
        };
        let c1 = loop_pair(
            "(0) nginx: c=1 non-stream",
            plan,
            &targets(Kind::Passthrough),
            1,
            plan.secs(1.0),
            pids,
        );
        let c64 = loop_pair(
            "(0) nginx: c=64 non-stream",
            plan,
            &targets(Kind::Passthrough),
            64,
            plan.secs(1.5),
            pids,
        );
        Ok(FloorResults { c1, c64 })
    });

    // (e) on a fresh gateway, so its baseline is not the high-water mark of the load above.
    let idle: Vec<IdleResults> = if plan.runs("idle") {
        [IdleVia::BuiltInMock, IdleVia::Upstream]
            .into_iter()
            .filter(
                |via| match std::env::var("AIGW_BENCH_IDLE_VIA").as_deref() {
                    Ok("mock") => *via == IdleVia::BuiltInMock,
                    Ok("upstream") => *via == IdleVia::Upstream,
                    _ => true,
                },
            )
            .map(|via| {
                let since = Baseline::now(&db);
                let (gw, addr) = procs::spawn_gateway(&config, &log);
                eprintln!(
                    "[load] (e) idle streams ({}): fresh gateway on {addr} (pid {})",
                    via.label(),
                    gw.pid()
                );
                let results = idle_phase(plan, &gw, addr, mock, fd_limit, via);
                let label = match via {
                    IdleVia::BuiltInMock => "(e) built-in mock",
                    IdleVia::Upstream => "(e) passthrough",
                };
                accounting.push(stop_and_account(label, gw, addr, since, &db));
                results
            })
            .collect()
    } else {
        Vec::new()
    };
    drop(mock_proc);
    Results {
        passthrough,
        log_info,
        floor,
        translated,
        idle,
        accounting,
        body_sizes: (
            fixtures::small_request("anthropic-fast", false).len(),
            fixtures::conversation_request("anthropic-fast", plan.conversation_turns, false).len(),
        ),
        background: Background::default(),
    }
}

fn idle_phase(
    plan: &Plan,
    gw: &ChildGuard,
    addr: SocketAddr,
    mock: u16,
    fd_limit: u64,
    via: IdleVia,
) -> IdleResults {
    let pid = gw.pid();
    // Warm the gateway's allocator and pools the way a running gateway's would be.
    let (_, g) = pair(Kind::Passthrough, addr, mock, "fast", false);
    closed_loop(&g, 8, 1, plan.secs(0.5));
    let (_, s) = pair(Kind::Passthrough, addr, mock, "fast", true);
    stream_loop(&s, 8, 1, plan.secs(0.5), mock::DELTAS, Duration::ZERO);
    std::thread::sleep(Duration::from_millis(500));
    let (base_rss_kib, _) = rss_kib(pid);

    // One descriptor per stream in the gateway (two when proxied), plus its own.
    let headroom = open_fds(pid) as u64 + 64;
    let fit = (fd_limit.saturating_sub(headroom) / via.sockets()) as usize;
    let n = plan.idle_streams.min(fit);
    if n < plan.idle_streams {
        eprintln!(
            "[load] fd limit {fd_limit} fits {n} idle streams through the gateway, not {}",
            plan.idle_streams
        );
    }
    let target = match via {
        IdleVia::Upstream => pair(Kind::Passthrough, addr, mock, "idle", true).1,
        IdleVia::BuiltInMock => via_gateway(addr, fixtures::small_request("mock-idle", true)),
    };
    let started = Instant::now();
    let run = IdleRun::start(&target, n, plan.load_threads, 256);
    let deadline = started + Duration::from_secs(90);
    let mut last_report = Instant::now();
    loop {
        let (o, f) = (run.opened.load(Relaxed), run.failed.load(Relaxed));
        if o + f >= n as u64 || Instant::now() > deadline {
            break;
        }
        if last_report.elapsed() > Duration::from_secs(2) {
            eprintln!("[load]   {o} idle streams open, {f} failed");
            last_report = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let ramp = started.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    let mut open_rss_kib = 0;
    let mut peak_rss_kib = 0;
    for _ in 0..5 {
        let (rss, hwm) = rss_kib(pid);
        open_rss_kib = open_rss_kib.max(rss);
        peak_rss_kib = hwm;
        std::thread::sleep(Duration::from_millis(200));
    }
    let fds = open_fds(pid);
    let (opened, failed) = (run.opened.load(Relaxed), run.failed.load(Relaxed));
    eprintln!(
        "[load]   {opened} idle streams open ({failed} failed) after {:.1} s; gateway RSS {} MiB, {fds} fds, {} threads",
        ramp.as_secs_f64(),
        open_rss_kib / 1024,
        procs::threads(pid)
    );
    if let Some(e) = run.release() {
        eprintln!("[load]   idle stream error: {e}");
    }
    std::thread::sleep(Duration::from_secs(1));
    let (closed_rss_kib, _) = rss_kib(pid);
    IdleResults {
        via,
        requested: plan.idle_streams,
        opened,
        failed,
        fd_limit,
        base_rss_kib,
        open_rss_kib,
        peak_rss_kib,
        closed_rss_kib,
        open_fds: fds,
        ramp,
    }
}
