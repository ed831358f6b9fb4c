//! Config hot reload on the real binary: SIGHUP and `server.watch_config`, what a reload keeps
//! and what it refuses, and many reloads under load.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use crate::common::upstream::MockUpstream;
use crate::common::*;

const BIN: &str = env!("CARGO_BIN_EXE_aigw");
pub(crate) const KEY_A: &str = "sk-reload-a-71c2";
const KEY_B: &str = "sk-reload-b-9d04";
const KEY_C: &str = "sk-reload-c-3e58";

/// The binary on a config file it may reload, with its log lines kept.
pub(crate) struct Binary {
    child: Child,
    pub(crate) url: String,
    dir: PathBuf,
    config: PathBuf,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Binary {
    /// Writes `config` to a fresh dir and starts the binary on it.
    pub(crate) async fn start(what: &str, config: &str) -> Self {
        let dir = temp_path(what);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.toml");
        std::fs::write(&path, config).unwrap();
        let mut child = Command::new(BIN)
            .args(["--config", path.to_str().unwrap()])
            .current_dir(&dir)
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = tokio::sync::oneshot::channel();
        let lines = logs.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(i) = line.find("listening on http://") {
                    if let Some(tx) = tx.take() {
                        // Text or JSON logs: the address ends at a quote or a space.
                        let rest = &line[i + "listening on ".len()..];
                        let end = rest.find(['"', ' ']).unwrap_or(rest.len());
                        let _ = tx.send(rest[..end].to_string());
                    }
                }
                lines.lock().unwrap().push(line);
            }
        });
        let url = match tokio::time::timeout(Duration::from_secs(30), rx).await {
            Ok(Ok(url)) => url,
            _ => {
                let _ = child.kill();
                panic!("the binary says where it listens");
            }
        };
        Self {
            child,
            url,
            dir,
            config: path,
            logs,
        }
    }

    fn sighup(&self) {
        assert_eq!(
            unsafe { libc::kill(self.child.id() as i32, libc::SIGHUP) },
            0
        );
    }

    /// Replaces the config file in place.
    fn write(&self, config: &str) {
        std::fs::write(&self.config, config).unwrap();
    }

    /// Replaces the config file the way editors save: a new file renamed over the old one.
    fn save_by_rename(&self, config: &str) {
        let tmp = self.dir.join(".config.toml.swp");
        std::fs::write(&tmp, config).unwrap();
        std::fs::rename(&tmp, &self.config).unwrap();
    }

    /// Waits for a log line containing `needle` and returns it.
    pub(crate) async fn log_line(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(l) = self
                .logs
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(needle))
            {
                return l.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {needle:?}: {:#?}",
                self.logs.lock().unwrap()
            );
            actix_web::rt::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn all_logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// One sample of the gateway's `/metrics`, e.g. `gateway_config_reloads_total{result="ok"}`.
    async fn metric(&self, sample: &str) -> f64 {
        metric_in(&get(&self.url, "/metrics").await.body, sample)
    }

    /// Waits until the applied config generation is `n`.
    async fn await_generation(&self, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.metric("gateway_config_generation").await != n as f64 {
            assert!(Instant::now() < deadline, "generation {n} never applied");
            actix_web::rt::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn metric_in(text: &[u8], sample: &str) -> f64 {
    let text = String::from_utf8_lossy(text);
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {sample} in:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

/// Every `gateway_requests_total` sample added up.
fn requests_total(text: &[u8]) -> f64 {
    String::from_utf8_lossy(text)
        .lines()
        .filter(|l| l.starts_with("gateway_requests_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

pub(crate) fn key(name: &str, secret: &str, extra: &str) -> String {
    format!(
        "[[auth.keys]]\nname = \"{name}\"\nsecret_sha256 = \"{}\"\n{extra}\n",
        key_hash(secret)
    )
}

/// A config of `keys` (from [`key`]) and a slow streaming mock model `slow`, plus `more`.
fn slow_config(server: &str, keys: &str, more: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
workers = 2
{server}

[request_log]
enabled = false

{keys}

[[providers]]
name = "slow"
kind = "mock"
chunk_chars = 2
chunk_delay_ms = 50

[[models]]
id = "slow"
deployments = [{{ provider = "slow", model = "s" }}]

{more}
"#
    )
}

const FAST: &str = r#"
[[providers]]
name = "fast"
kind = "mock"

[[models]]
id = "fast"
deployments = [{ provider = "fast", model = "f" }]
"#;

fn ask(model: &str, stream: bool, text: &str) -> serde_json::Value {
    serde_json::json!({"model": model, "max_tokens": 256, "stream": stream,
        "messages": [{"role": "user", "content": text}]})
}

/// The text of a stream's `text_delta`s.
fn streamed_text(events: &[(String, serde_json::Value)]) -> String {
    events
        .iter()
        .filter(|(n, _)| n == "content_block_delta")
        .filter_map(|(_, v)| v["delta"]["text"].as_str())
        .collect()
}

/// Adds a model and a key, changes a limit and removes a key while a slow stream of the removed
/// key is open: the stream completes unchanged, new requests see the new config within 1 s.
#[actix_web::test]
async fn sighup_applies_a_new_config_while_a_stream_finishes_on_the_old() {
    let v1 = slow_config("", &(key("a", KEY_A, "") + &key("b", KEY_B, "")), "");
    let gw = Binary::start("reload-sighup", &v1).await;
    let prompt = "y".repeat(60);
    let expected = post_as(&gw.url, KEY_B, &ask("slow", false, &prompt)).await;
    assert_eq!(expected.status, 200);
    let expected = expected.json()["content"][0]["text"]
        .as_str()
        .unwrap()
        .to_string();
    // ~36 two-char chunks 50 ms apart: the stream lasts about two seconds.
    let mut stream = client()
        .post(format!("{}/v1/messages", gw.url))
        .insert_header(("x-api-key", KEY_B))
        .send_body(ask("slow", true, &prompt).to_string())
        .await
        .expect("stream head");
    assert_eq!(stream.status(), 200);
    let first = stream.next().await.expect("a first chunk").unwrap();
    assert!(String::from_utf8_lossy(&first).contains("message_start"));

    let v2 = slow_config(
        "",
        &(key("a", KEY_A, "requests_per_minute = 7") + &key("c", KEY_C, "")),
        FAST,
    );
    gw.write(&v2);
    gw.sighup();
    let sent = Instant::now();
    loop {
        let res = post_as(&gw.url, KEY_C, &ask("fast", false, "hi")).await;
        if res.status == 200 {
            break;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(1),
            "the new key and model are not served 1 s after SIGHUP: {}",
            String::from_utf8_lossy(&res.body)
        );
    }
    post_as(&gw.url, KEY_B, &ask("slow", false, "hi"))
        .await
        .assert_error(401, "authentication_error");
    let a = post_as(&gw.url, KEY_A, &ask("fast", false, "hi")).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.header("anthropic-ratelimit-requests-limit"), Some("7"));

    // The stream of the removed key goes on, on the config it started with.
    let mut rest = collect(&mut stream).await;
    let mut body = first.to_vec();
    body.extend_from_slice(&rest.body);
    rest.body = body.into();
    let events = rest.events();
    let names = assert_stream_grammar(&events);
    assert_eq!(names.last().map(String::as_str), Some("message_stop"));
    assert_eq!(streamed_text(&events), expected);

    assert_eq!(gw.metric("gateway_config_generation").await, 2.0);
    assert_eq!(
        gw.metric("gateway_config_reloads_total{result=\"ok\"}")
            .await,
        1.0
    );
    let line = gw.log_line("config reloaded").await;
    assert!(
        line.contains("keys: added c, removed b, changed a"),
        "{line}"
    );
    assert!(line.contains("models: added fast"), "{line}");
    assert!(line.contains("providers: added fast"), "{line}");
    let logs = gw.all_logs();
    for secret in [KEY_A, KEY_B, KEY_C] {
        assert!(!logs.contains(secret), "a key in the log");
    }
}

/// With `watch_config`, a save by rename reloads; an invalid file changes nothing and names the
/// bad key; a `listen` change is refused and nothing of that file is applied.
#[actix_web::test]
async fn watched_file_reloads_on_save_and_refuses_invalid_and_restart_only_changes() {
    let keys = key("a", KEY_A, "");
    let v1 = slow_config("watch_config = true", &keys, "");
    let gw = Binary::start("reload-watch", &v1).await;

    let bad = slow_config(
        "watch_config = true",
        &keys,
        "[[models]]\nid = \"m2\"\ndeployments = [{ provider = \"nope\", model = \"x\" }]\n",
    );
    gw.save_by_rename(&bad);
    let line = gw.log_line("config reload failed").await;
    assert!(
        line.contains("models[1].deployments[0].provider: unknown provider \"nope\""),
        "{line}"
    );
    assert!(line.contains("the running config stays"), "{line}");
    assert_eq!(
        gw.metric("gateway_config_reloads_total{result=\"error\"}")
            .await,
        1.0
    );
    assert_eq!(gw.metric("gateway_config_generation").await, 1.0);
    assert_eq!(
        post_as(&gw.url, KEY_A, &ask("slow", false, "hi"))
            .await
            .status,
        200
    );

    let moved = slow_config("watch_config = true", &keys, FAST)
        .replace("listen = \"127.0.0.1:0\"", "listen = \"127.0.0.1:1\"");
    gw.save_by_rename(&moved);
    let line = gw.log_line("config reload refused").await;
    assert!(
        line.contains("server.listen can only change on a restart; nothing was applied"),
        "{line}"
    );
    assert_eq!(
        gw.metric("gateway_config_reloads_total{result=\"restart_required\"}")
            .await,
        1.0
    );
    post_as(&gw.url, KEY_A, &ask("fast", false, "hi"))
        .await
        .assert_error(404, "not_found_error");

    gw.save_by_rename(&slow_config("watch_config = true", &keys, FAST));
    gw.await_generation(2).await;
    assert_eq!(
        post_as(&gw.url, KEY_A, &ask("fast", false, "hi"))
            .await
            .status,
        200
    );
    assert_eq!(
        gw.metric("gateway_config_reloads_total{result=\"ok\"}")
            .await,
        1.0
    );
}

/// A reload refills no bucket: an unchanged key that used its requests stays limited.
#[actix_web::test]
async fn limiter_state_of_an_unchanged_key_survives_a_reload() {
    let keys = key("a", KEY_A, "requests_per_minute = 2") + &key("b", KEY_B, "");
    let gw = Binary::start("reload-limits", &slow_config("", &keys, "")).await;
    for _ in 0..2 {
        let res = post_as(&gw.url, KEY_A, &ask("slow", false, "hi")).await;
        assert_eq!(res.status, 200);
    }
    post_as(&gw.url, KEY_A, &ask("slow", false, "hi"))
        .await
        .assert_error(429, "rate_limit_error");

    gw.write(&slow_config("", &keys, FAST));
    gw.sighup();
    gw.await_generation(2).await;
    assert_eq!(
        post_as(&gw.url, KEY_B, &ask("fast", false, "hi"))
            .await
            .status,
        200,
        "the new model is served"
    );
    post_as(&gw.url, KEY_A, &ask("slow", false, "hi"))
        .await
        .assert_error(429, "rate_limit_error");
}

/// Open file descriptors of a process.
fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// Resident set size of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// A config on a real HTTP upstream whose provider changes with `n` (so every reload starts new
/// provider actors and clients, and drops the old ones).
fn upstream_config(upstream: &str, n: usize) -> String {
    let extra = if n.is_multiple_of(2) {
        "[[models]]\nid = \"extra\"\ndeployments = [{ provider = \"up\", model = \"text\" }]\n"
    } else {
        ""
    };
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
workers = 2

[request_log]
enabled = false

{keys}

[[providers]]
name = "up"
kind = "anthropic"
base_url = "{upstream}"
headers = {{ "x-generation" = "{n}" }}

[[models]]
id = "m"
deployments = [{{ provider = "up", model = "text" }}]
{extra}
"#,
        keys = key("a", KEY_A, ""),
    )
}

/// 50 reloads in a row under load: every request is answered 200 and counted once, and the
/// process ends with the file descriptors and memory it had before.
#[actix_web::test]
async fn fifty_reloads_under_load_lose_no_request_and_leak_nothing() {
    let upstream = MockUpstream::anthropic();
    let up = upstream.url.clone();
    let gw = Rc::new(Binary::start("reload-load", &upstream_config(&up, 1)).await);

    // Warm up: both workers' pools, the allocator.
    for i in 0..20 {
        let res = post_as(&gw.url, KEY_A, &ask("m", i % 2 == 0, "hi")).await;
        assert_eq!(res.status, 200);
    }
    let (fds_before, rss_before) = (fds(gw.pid()), rss_kib(gw.pid()));

    let done = Rc::new(std::cell::Cell::new(false));
    let sent = Rc::new(std::cell::Cell::new(20usize));
    let mut clients = Vec::new();
    for c in 0..4 {
        let (gw, done, sent) = (gw.clone(), done.clone(), sent.clone());
        clients.push(actix_web::rt::spawn(async move {
            let mut i = 0usize;
            while !done.get() {
                let stream = (i + c).is_multiple_of(3);
                let res = post_as(&gw.url, KEY_A, &ask("m", stream, "hi")).await;
                sent.set(sent.get() + 1);
                assert_eq!(res.status, 200, "{}", String::from_utf8_lossy(&res.body));
                if stream {
                    let names = assert_stream_grammar(&res.events());
                    assert_eq!(names.last().map(String::as_str), Some("message_stop"));
                }
                i += 1;
            }
        }));
    }
    for n in 2..=51 {
        gw.write(&upstream_config(&up, n));
        gw.sighup();
        gw.await_generation(n as u64).await;
    }
    done.set(true);
    for c in clients {
        c.await.expect("every request answered 200");
    }
    assert_eq!(
        gw.metric("gateway_config_reloads_total{result=\"ok\"}")
            .await,
        50.0
    );
    // Counted once each (a stream is counted as it ends, just after its last byte).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let counted = requests_total(&get(&gw.url, "/metrics").await.body);
        if counted == sent.get() as f64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{counted} counted, {} sent",
            sent.get()
        );
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(upstream.count(), sent.get());

    // Old generations let go of their actors and connections. A worker moves to the newest
    // generation on its next request; send a few so both do.
    for _ in 0..8 {
        assert_eq!(
            post_as(&gw.url, KEY_A, &ask("m", false, "hi")).await.status,
            200
        );
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = fds(gw.pid());
        if now <= fds_before + 8 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "fds: {fds_before} before 50 reloads, {now} after"
        );
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    let rss_after = rss_kib(gw.pid());
    assert!(
        rss_after < rss_before + 32 * 1024,
        "RSS: {rss_before} KiB before 50 reloads, {rss_after} KiB after"
    );
    upstream.stop().await;
}

/// An Anthropic upstream that answers every request with a text message and records the client
/// port of each request (one port = one pooled connection).
fn port_recording_upstream() -> (String, Arc<Mutex<Vec<u16>>>, actix_web::dev::ServerHandle) {
    use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
    let ports = Arc::new(Mutex::new(Vec::new()));
    let data = web::Data::new(ports.clone());
    let server = HttpServer::new(move || {
        App::new().app_data(data.clone()).default_service(web::to(
            // The body is read: a server that leaves it unread closes the connection.
            |req: HttpRequest, _body: web::Bytes, ports: web::Data<Arc<Mutex<Vec<u16>>>>| async move {
                ports.lock().unwrap().push(req.peer_addr().unwrap().port());
                HttpResponse::Ok().json(crate::common::upstream::text_message("text", "hello"))
            },
        ))
    })
    .workers(1)
    .keep_alive(Duration::from_secs(60))
    .bind(("127.0.0.1", 0))
    .unwrap();
    let url = format!("http://{}", server.addrs()[0]);
    let server = server.run();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    (url, ports, handle)
}

/// A reload that leaves a provider unchanged keeps its connection pool: the next request goes
/// over the same upstream connection. A changed provider gets a new client.
#[actix_web::test]
async fn an_unchanged_provider_keeps_its_connections_across_a_reload() {
    let (up, ports, upstream) = port_recording_upstream();
    let config = |header: &str, more: &str| {
        format!(
            r#"
[server]
listen = "127.0.0.1:0"
workers = 1

[request_log]
enabled = false

{keys}

[[providers]]
name = "up"
kind = "anthropic"
base_url = "{up}"
headers = {{ "x-config" = "{header}" }}

[[models]]
id = "m"
deployments = [{{ provider = "up", model = "text" }}]
{more}
"#,
            keys = key("a", KEY_A, ""),
        )
    };
    let gw = Binary::start("reload-pool", &config("one", "")).await;
    let ask_m = || ask("m", false, "hi");
    assert_eq!(post_as(&gw.url, KEY_A, &ask_m()).await.status, 200);

    gw.write(&config("one", FAST));
    gw.sighup();
    gw.await_generation(2).await;
    assert_eq!(post_as(&gw.url, KEY_A, &ask_m()).await.status, 200);

    gw.write(&config("two", FAST));
    gw.sighup();
    gw.await_generation(3).await;
    assert_eq!(post_as(&gw.url, KEY_A, &ask_m()).await.status, 200);

    let ports = ports.lock().unwrap().clone();
    assert_eq!(ports.len(), 3);
    assert_eq!(
        ports[0], ports[1],
        "unchanged provider: the same connection"
    );
    assert_ne!(
        ports[1], ports[2],
        "changed provider: a new client and connection"
    );
    let line = gw.log_line("providers: changed up").await;
    assert!(line.contains("generation=3"), "{line}");
    upstream.stop(true).await;
}
