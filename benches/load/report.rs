//! The one table, in markdown, each figure next to its target.

use std::fmt::Write;

use hdrhistogram::Histogram;

use crate::{
    Accounting, FloorResults, IdleResults, KindResults, LoopPair, Plan, Results, StreamPair,
};

const NA_TRANSLATED: &str = "n/a (openai kind not available in this build)";

fn us(ns: f64) -> String {
    let us = ns / 1000.0;
    if us.abs() >= 10_000.0 {
        format!("{:.1} ms", us / 1000.0)
    } else if us.abs() >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else if us.abs() >= 100.0 {
        format!("{us:.0} µs")
    } else {
        format!("{us:.1} µs")
    }
}

fn added(ns: f64) -> String {
    if ns >= 0.0 {
        format!("+{}", us(ns))
    } else {
        format!("−{}", us(-ns))
    }
}

fn q(h: &Histogram<u64>, p: f64) -> f64 {
    h.value_at_quantile(p) as f64
}

fn mb(kib: u64) -> f64 {
    kib as f64 * 1024.0 / 1e6
}

fn count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A target met or missed; `None` for informational rows.
fn verdict(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => "met",
        Some(false) => "**missed**",
        None => "",
    }
}

struct Table {
    out: String,
}

impl Table {
    #[allow(clippy::too_many_arguments)]
    fn row(
        &mut self,
        figure: &str,
        path: &str,
        direct: &str,
        gateway: &str,
        adds: &str,
        target: &str,
        ok: Option<bool>,
        samples: &str,
    ) {
        let _ = writeln!(
            self.out,
            "| {figure} | {path} | {direct} | {gateway} | {adds} | {target} | {} | {samples} |",
            verdict(ok)
        );
    }
}

fn samples_loop(p: &LoopPair) -> String {
    let mut s = format!("{} / {}", count(p.direct.ok), count(p.gateway.ok));
    if p.direct.errors + p.gateway.errors > 0 {
        let _ = write!(
            s,
            " (errors {} / {})",
            count(p.direct.errors),
            count(p.gateway.errors)
        );
    }
    s
}

fn samples_stream(p: &StreamPair) -> String {
    let mut s = format!(
        "{} / {} streams",
        count(p.direct.streams),
        count(p.gateway.streams)
    );
    if p.direct.errors + p.gateway.errors > 0 {
        let _ = write!(
            s,
            " (errors {} / {})",
            count(p.direct.errors),
            count(p.gateway.errors)
        );
    }
    s
}

/// `p50 / p99` pairs for informational rows.
fn pq(h: &Histogram<u64>) -> String {
    format!("{} / {}", us(q(h, 0.5)), us(q(h, 0.99)))
}

fn pq_added(d: &Histogram<u64>, g: &Histogram<u64>) -> String {
    format!(
        "{} / {}",
        added(q(g, 0.5) - q(d, 0.5)),
        added(q(g, 0.99) - q(d, 0.99))
    )
}

fn kind_rows(
    t: &mut Table,
    path: &str,
    r: &KindResults,
    cpu_target_us: f64,
    body_kb: (usize, usize),
) {
    let cpu = |p: &LoopPair| p.gateway_cpu.as_nanos() as f64 / p.gateway.ok.max(1) as f64;
    let mock_cpu = |p: &LoopPair| p.mock_cpu.as_nanos() as f64 / p.direct.ok.max(1) as f64;
    if let Some(c1) = &r.c1 {
        let (d, g) = (&c1.direct.latency, &c1.gateway.latency);
        let s = samples_loop(c1);
        let a99 = q(g, 0.99) - q(d, 0.99);
        t.row(
            "(a) latency p50, c=1, non-stream",
            path,
            &us(q(d, 0.5)),
            &us(q(g, 0.5)),
            &added(q(g, 0.5) - q(d, 0.5)),
            "",
            None,
            &s,
        );
        t.row(
            "(a) latency p99, c=1, non-stream",
            path,
            &us(q(d, 0.99)),
            &us(q(g, 0.99)),
            &added(a99),
            "added ≤ 100 µs",
            Some(a99 <= 100_000.0),
            &s,
        );
    }
    if let Some(c) = &r.c1_conversation {
        t.row(
            &format!(
                "(a) latency p50 / p99, c=1, 50-turn conversation with tools ({} KB body)",
                body_kb.1 / 1000
            ),
            path,
            &pq(&c.direct.latency),
            &pq(&c.gateway.latency),
            &pq_added(&c.direct.latency, &c.gateway.latency),
            "",
            None,
            &samples_loop(c),
        );
    }
    if let Some(c64) = &r.c64 {
        let (dr, gr) = (c64.direct.rps(), c64.gateway.rps());
        t.row(
            "(b) max requests/s, c=64, non-stream",
            path,
            &format!("{} /s", count(dr as u64)),
            &format!("{} /s", count(gr as u64)),
            &format!("gateway = {:.0}% of direct", 100.0 * gr / dr.max(1e-9)),
            "",
            None,
            &samples_loop(c64),
        );
        t.row(
            "(b) latency p50 / p99 at c=64",
            path,
            &pq(&c64.direct.latency),
            &pq(&c64.gateway.latency),
            &pq_added(&c64.direct.latency, &c64.gateway.latency),
            "",
            None,
            "",
        );
        let per = cpu(c64);
        t.row(
            "(c) gateway CPU per request (user+sys), c=64",
            path,
            &format!("mock: {}", us(mock_cpu(c64))),
            &us(per),
            &format!("{:.1}× the mock's", per / mock_cpu(c64).max(1.0)),
            &format!("≤ {cpu_target_us:.0} µs"),
            Some(per <= cpu_target_us * 1000.0),
            &format!("{:.2} s CPU", c64.gateway_cpu.as_secs_f64()),
        );
    }
    if let Some(c1) = &r.c1 {
        t.row(
            "(c) gateway CPU per request (user+sys), c=1",
            path,
            &format!("mock: {}", us(mock_cpu(c1))),
            &us(cpu(c1)),
            &format!("{:.1}× the mock's", cpu(c1) / mock_cpu(c1).max(1.0)),
            "",
            None,
            &format!("{:.2} s CPU", c1.gateway_cpu.as_secs_f64()),
        );
    }
    for (label, p) in [("c=1", &r.c1_stream), ("512 concurrent streams", &r.s512)] {
        let Some(p) = p else { continue };
        let (d, g) = (&p.direct.ttft, &p.gateway.ttft);
        for (name, quant) in [("p50", 0.5), ("p99", 0.99)] {
            let a = q(g, quant) - q(d, quant);
            t.row(
                &format!("(d) time to first token {name}, {label}"),
                path,
                &us(q(d, quant)),
                &us(q(g, quant)),
                &added(a),
                "added ≤ 200 µs",
                Some(a <= 200_000.0),
                &samples_stream(p),
            );
        }
    }
    if let Some(p) = &r.s512 {
        t.row(
            "(d) per-frame latency p50 / p99, 512 concurrent streams",
            path,
            &pq(&p.direct.frame),
            &pq(&p.gateway.frame),
            &pq_added(&p.direct.frame, &p.gateway.frame),
            "",
            None,
            &format!(
                "{} / {} frames",
                count(p.direct.frames),
                count(p.gateway.frames)
            ),
        );
        t.row(
            "(d) gateway CPU per streamed text delta, 512 concurrent streams",
            path,
            "",
            &us(p.gateway_cpu.as_nanos() as f64 / p.gateway.frames.max(1) as f64),
            "",
            "",
            None,
            &format!("{:.2} s CPU", p.gateway_cpu.as_secs_f64()),
        );
        t.row(
            "(d) stalls (gap > 100 ms between frames), 512 concurrent streams",
            path,
            &format!(
                "{} (max gap {})",
                p.direct.stalls,
                us(p.direct.max_gap.as_nanos() as f64)
            ),
            &format!(
                "{} (max gap {})",
                p.gateway.stalls,
                us(p.gateway.max_gap.as_nanos() as f64)
            ),
            "",
            "0",
            Some(p.gateway.stalls == 0),
            &samples_stream(p),
        );
    }
}

/// (f) Whole fast streams: the upstream sends each stream at once.
fn fast_stream_rows(t: &mut Table, path: &str, p: &StreamPair) {
    let (d, g) = (p.direct.streams_per_sec(), p.gateway.streams_per_sec());
    let ratio = g / d.max(1e-9);
    t.row(
        "(f) whole fast streams/s, c=32",
        path,
        &format!("{} /s", count(d as u64)),
        &format!("{} /s", count(g as u64)),
        &format!("gateway = {ratio:.2}× direct"),
        "≥ 0.9× direct",
        Some(ratio >= 0.9),
        &samples_stream(p),
    );
    let (d99, g99) = (q(&p.direct.whole, 0.99), q(&p.gateway.whole, 0.99));
    t.row(
        "(f) whole-stream time p50 / p99, c=32",
        path,
        &pq(&p.direct.whole),
        &pq(&p.gateway.whole),
        &format!("p99 = {:.2}× direct's", g99 / d99.max(1.0)),
        "p99 ≤ 1.5× direct's",
        Some(g99 <= 1.5 * d99),
        &samples_stream(p),
    );
}

fn cpu_per_request(p: &LoopPair) -> f64 {
    p.gateway_cpu.as_nanos() as f64 / p.gateway.ok.max(1) as f64
}

fn mock_cpu_per_request(p: &LoopPair) -> f64 {
    p.mock_cpu.as_nanos() as f64 / p.direct.ok.max(1) as f64
}

/// (g) The shipped `log_level = "info"` (one `request` line per request) against `warn`.
fn log_level_rows(t: &mut Table, warn: Option<&LoopPair>, info: &LoopPair) {
    let warn_cpu = warn.map(cpu_per_request);
    let show = |v: Option<f64>| v.map_or("n/a (c64 phase left out)".to_string(), us);
    t.row(
        "(g) gateway CPU per request, c=64: log_level warn → info",
        "passthrough",
        &format!("mock: {}", us(mock_cpu_per_request(info))),
        &format!("{} → {}", show(warn_cpu), us(cpu_per_request(info))),
        &warn_cpu.map_or(String::new(), |w| {
            format!("the access log: {}", added(cpu_per_request(info) - w))
        }),
        "≤ 3 µs per request",
        warn_cpu.map(|w| cpu_per_request(info) - w <= 3_000.0),
        &format!("{:.2} s CPU at info", info.gateway_cpu.as_secs_f64()),
    );
    let rps = |p: &LoopPair| 100.0 * p.gateway.rps() / p.direct.rps().max(1e-9);
    t.row(
        "(g) requests/s, c=64: log_level warn → info",
        "passthrough",
        &format!("{} /s", count(info.direct.rps() as u64)),
        &format!(
            "{} → {} /s",
            warn.map_or("n/a".to_string(), |w| count(w.gateway.rps() as u64)),
            count(info.gateway.rps() as u64)
        ),
        &format!(
            "{} → {:.0}% of direct",
            warn.map_or("n/a".to_string(), |w| format!("{:.0}%", rps(w))),
            rps(info)
        ),
        "",
        None,
        &samples_loop(info),
    );
}

/// (0) nginx as a bare proxy, and the gateway against it.
fn floor_rows(t: &mut Table, floor: &Result<FloorResults, String>, gw: &KindResults) {
    let f = match floor {
        Ok(f) => f,
        Err(why) => {
            for figure in [
                "(0) floor: nginx latency p50 / p99, c=1",
                "(0) floor: nginx CPU per request, c=64",
                "(0) floor: nginx requests/s, c=64",
            ] {
                t.row(
                    figure,
                    "nginx",
                    "",
                    &format!("n/a ({why})"),
                    "",
                    "",
                    None,
                    "",
                );
            }
            return;
        }
    };
    let (d, n) = (&f.c1.direct.latency, &f.c1.gateway.latency);
    t.row(
        "(0) floor: nginx latency p50 / p99, c=1",
        "nginx",
        &pq(d),
        &pq(n),
        &pq_added(d, n),
        "",
        None,
        &samples_loop(&f.c1),
    );
    if let Some(c1) = &gw.c1 {
        let over = |quant: f64| {
            let ours = q(&c1.gateway.latency, quant) - q(&c1.direct.latency, quant);
            ours - (q(n, quant) - q(d, quant))
        };
        let (o50, o99) = (over(0.5), over(0.99));
        t.row(
            "(0) gateway's added latency above nginx's, c=1, p50 / p99",
            "passthrough",
            "",
            "",
            &format!("{} / {}", added(o50), added(o99)),
            "≤ 50 / 100 µs above the floor",
            Some(o50 <= 50_000.0 && o99 <= 100_000.0),
            "",
        );
    }
    let per = cpu_per_request(&f.c64);
    t.row(
        "(0) floor: nginx CPU per request (user+sys), c=64",
        "nginx",
        &format!("mock: {}", us(mock_cpu_per_request(&f.c64))),
        &us(per),
        &format!(
            "{:.1}× the mock's{}",
            per / mock_cpu_per_request(&f.c64).max(1.0),
            gw.c64.as_ref().map_or(String::new(), |g| format!(
                "; the gateway's is {:.1}× nginx's",
                cpu_per_request(g) / per.max(1.0)
            ))
        ),
        "",
        None,
        &format!("{:.2} s CPU", f.c64.gateway_cpu.as_secs_f64()),
    );
    let (dr, nr) = (f.c64.direct.rps(), f.c64.gateway.rps());
    t.row(
        "(0) floor: nginx requests/s, c=64",
        "nginx",
        &format!("{} /s", count(dr as u64)),
        &format!("{} /s", count(nr as u64)),
        &format!("nginx = {:.0}% of direct", 100.0 * nr / dr.max(1e-9)),
        "",
        None,
        &samples_loop(&f.c64),
    );
}

fn na_rows(t: &mut Table, why: &str) {
    let na = if why.contains("not available") {
        NA_TRANSLATED.to_string()
    } else {
        format!("n/a ({why})")
    };
    for (figure, target) in [
        (
            "(a) latency p50 / p99, c=1, non-stream",
            "added p99 ≤ 100 µs",
        ),
        ("(b) max requests/s, c=64, non-stream", ""),
        ("(c) gateway CPU per request (user+sys), c=64", "≤ 60 µs"),
        (
            "(d) time to first token p50 / p99, c=1 and 512 streams",
            "added ≤ 200 µs",
        ),
        (
            "(d) per-frame latency p50 / p99, 512 concurrent streams",
            "",
        ),
        (
            "(d) stalls (gap > 100 ms between frames), 512 concurrent streams",
            "0",
        ),
    ] {
        t.row(figure, "translated", "", &na, "", target, None, "");
    }
}

fn idle_rows(t: &mut Table, i: &IdleResults) {
    let path = i.via.label();
    t.row(
        "(e) gateway RSS, fresh and warmed up, no stream open",
        path,
        "",
        &format!("{:.1} MB", mb(i.base_rss_kib)),
        "",
        "",
        None,
        "",
    );
    let per_stream_kib =
        (i.open_rss_kib.saturating_sub(i.base_rss_kib)) as f64 / i.opened.max(1) as f64;
    let full = i.opened as usize >= i.requested && i.failed == 0;
    t.row(
        &format!("(e) gateway RSS with {} idle streams open", count(i.opened)),
        path,
        "",
        &format!(
            "{:.1} MB (peak {:.1} MB)",
            mb(i.open_rss_kib),
            mb(i.peak_rss_kib)
        ),
        &format!(
            "+{:.1} MB",
            mb(i.open_rss_kib.saturating_sub(i.base_rss_kib))
        ),
        if full && i.requested == 10_000 {
            "≤ 150 MB"
        } else {
            ""
        },
        (full && i.requested == 10_000).then(|| mb(i.open_rss_kib) <= 150.0),
        &format!(
            "{} fds, opened in {:.1} s{}",
            count(i.open_fds as u64),
            i.ramp.as_secs_f64(),
            if i.failed > 0 {
                format!(", {} failed", i.failed)
            } else {
                String::new()
            }
        ),
    );
    t.row(
        "(e) gateway RSS per idle stream",
        path,
        "",
        &format!("{per_stream_kib:.1} KiB"),
        "",
        "",
        None,
        "",
    );
    if !full && i.requested == 10_000 {
        let at_10k = i.base_rss_kib as f64 + per_stream_kib * 10_000.0;
        let at_10k_mb = at_10k * 1024.0 / 1e6;
        t.row(
            &format!(
                "(e) gateway RSS at 10,000 idle streams, **extrapolated** from {} open (fd limit {})",
                count(i.opened),
                count(i.fd_limit)
            ),
            path,
            "",
            &format!("{at_10k_mb:.1} MB"),
            "",
            "≤ 150 MB",
            Some(at_10k_mb <= 150.0),
            "",
        );
    }
    t.row(
        "(e) gateway RSS after the idle streams closed",
        path,
        "",
        &format!("{:.1} MB", mb(i.closed_rss_kib)),
        "",
        "",
        None,
        "",
    );
}

pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!(
        "{cores} cores ({model}), {:.1} GiB memory, kernel {}",
        mem_kib as f64 / (1024.0 * 1024.0),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
    )
}

/// Every request sent to a gateway is one `gateway_requests_total` count and one request-log row.
fn accounting(t: &mut Table, rows: &[Accounting]) {
    if rows.is_empty() {
        return;
    }
    t.out.push_str(
        "\n| Accounting, per gateway process | Requests sent | `gateway_requests_total` | Request-log rows | Verdict |\n|---|---|---|---|---|\n",
    );
    let show = |v: Option<u64>, none: &str| v.map_or(none.to_string(), count);
    let mut total = (0, Some(0), Some(0));
    for a in rows {
        let agree = a.counted == Some(a.sent) && a.logged.is_none_or(|l| l == a.sent);
        let _ = writeln!(
            t.out,
            "| {} | {} | {} | {} | {} |",
            a.label,
            count(a.sent),
            show(a.counted, "unreadable"),
            show(a.logged, "log off"),
            if agree { "equal" } else { "**differ**" }
        );
        total.0 += a.sent;
        total.1 = total.1.zip(a.counted).map(|(t, c)| t + c);
        total.2 = total.2.zip(a.logged).map(|(t, l)| t + l);
    }
    let agree = total.1 == Some(total.0) && total.2.is_none_or(|l| l == total.0);
    let _ = writeln!(
        t.out,
        "| all | {} | {} | {} | {} |",
        count(total.0),
        show(total.1, "unreadable"),
        show(total.2, "log off"),
        if agree { "equal" } else { "**differ**" }
    );
}

pub fn print(plan: &Plan, r: &Results) {
    let mut t = Table { out: String::new() };
    let _ = writeln!(
        t.out,
        "aigw load harness, {} — {}\n",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        machine()
    );
    let _ = writeln!(
        t.out,
        "gateway workers {}, mock workers {}, load threads {}, rounds {}, scale {}; request body {} B (conversation {} B)\n",
        plan.gateway_workers,
        plan.mock_workers,
        plan.load_threads,
        plan.rounds,
        plan.scale,
        r.body_sizes.0,
        r.body_sizes.1
    );
    t.out.push_str(
        "| Figure | Path | Direct (mock alone) | Through the gateway | Gateway adds | Target | Verdict | Samples (direct / gateway) |\n",
    );
    t.out.push_str("|---|---|---|---|---|---|---|---|\n");
    kind_rows(&mut t, "passthrough", &r.passthrough, 30.0, r.body_sizes);
    if let Some(p) = &r.passthrough.s32_fast {
        fast_stream_rows(&mut t, "passthrough", p);
    }
    if let Some(info) = &r.log_info {
        log_level_rows(&mut t, r.passthrough.c64.as_ref(), info);
    }
    if let Some(floor) = &r.floor {
        floor_rows(&mut t, floor, &r.passthrough);
    }
    match &r.translated {
        Ok(k) => kind_rows(&mut t, "translated", k, 60.0, r.body_sizes),
        Err(why) => na_rows(&mut t, why),
    }
    for idle in &r.idle {
        idle_rows(&mut t, idle);
    }
    accounting(&mut t, &r.accounting);
    let b = &r.background;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let other = b.busy.saturating_sub(b.own).as_secs_f64();
    let _ = writeln!(
        t.out,
        "\nRun took {:.0} s. Other processes on the machine used {other:.1} core-seconds meanwhile ({:.0}% of its {cores} cores); this harness, the mock and the gateway used {:.1}.",
        b.wall.as_secs_f64(),
        100.0 * other / (b.wall.as_secs_f64() * cores).max(1e-9),
        b.own.as_secs_f64()
    );
    println!("{}", t.out);
}
