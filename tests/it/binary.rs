//! The real binary: `--check-config`, and serving the shipped config.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::common::*;

const BIN: &str = env!("CARGO_BIN_EXE_aigw");
const SHIPPED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml");

#[test]
fn check_config_accepts_the_shipped_config_and_names_bad_keys() {
    let ok = Command::new(BIN)
        .args(["--config", SHIPPED, "--check-config"])
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );

    let dir = std::env::temp_dir().join(format!("aigw-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "auth.disabled = true\n[server]\nlisten = \"nowhere\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["--config", bad.to_str().unwrap(), "--check-config"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("server.listen: must be an address"), "{err}");

    std::fs::write(&bad, "[server]\nlisen = \"127.0.0.1:1\"\n").unwrap();
    let out = Command::new(BIN)
        .args(["--config", bad.to_str().unwrap(), "--check-config"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("server.lisen") && err.contains("unknown field"),
        "{err}"
    );

    let out = Command::new(BIN)
        .args(["--config", dir.join("missing.toml").to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The README's run command, on the shipped config with `--listen` moved to an ephemeral port.
#[actix_web::test]
async fn serves_the_shipped_config() {
    // The shipped config logs requests to ./gateway.sqlite: run where that is harmless.
    let dir = temp_path("shipped");
    std::fs::create_dir_all(&dir).unwrap();
    let (child, url, _) =
        spawn_binary(&["--config", SHIPPED, "--listen", "127.0.0.1:0"], &dir).await;
    struct Kill(Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let child = Kill(child);
    let body = serde_json::json!({"model":"sonnet","max_tokens":64,"messages":[{"role":"user","content":"Hello!"}]});
    let res = post_as(&url, "sk-gw-demo", &body).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.json()["content"][0]["text"], "mock reply: Hello!");
    let res = post_as(&url, "sk-wrong", &body).await;
    res.assert_error(401, "authentication_error");
    drop(child);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The cloud kinds' credentials: a missing one is named at start, by the variable, never by a
/// value; present ones are described by their source.
#[test]
fn check_config_names_cloud_credentials() {
    let dir = temp_path("cloud-check");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("cloud.toml");
    std::fs::write(
        &path,
        r#"
[auth]
disabled = true

[[providers]]
name = "bedrock-us"
kind = "bedrock"
region = "us-east-1"
aws_access_key_id_env = "AIGW_TEST_BEDROCK_ID"
aws_secret_access_key_env = "AIGW_TEST_BEDROCK_SECRET"

[[providers]]
name = "vertex"
kind = "vertex"
project = "my-project"
region = "global"

[[models]]
id = "claude"
deployments = [{ provider = "bedrock-us", model = "m" }, { provider = "vertex", model = "m" }]
"#,
    )
    .unwrap();
    let run = |id: Option<&str>| {
        let mut cmd = Command::new(BIN);
        cmd.args(["--config", path.to_str().unwrap(), "--check-config"])
            .env_remove("GOOGLE_APPLICATION_CREDENTIALS")
            .env("GCE_METADATA_HOST", "127.0.0.1:9")
            .env("HOME", &dir)
            .env("AIGW_TEST_BEDROCK_SECRET", "wJalrSecretNeverShown");
        match id {
            Some(v) => cmd.env("AIGW_TEST_BEDROCK_ID", v),
            None => cmd.env_remove("AIGW_TEST_BEDROCK_ID"),
        };
        cmd.output().unwrap()
    };
    let out = run(None);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("providers[0].aws_access_key_id_env")
            && err.contains("environment variable AIGW_TEST_BEDROCK_ID is not set"),
        "{err}"
    );
    let out = run(Some("AKIDNEVERSHOWN"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("provider bedrock-us (bedrock): credentials from static AWS keys"),
        "{text}"
    );
    assert!(
        text.contains(
            "provider vertex (vertex): credentials from the Google metadata server at 127.0.0.1:9"
        ),
        "{text}"
    );
    assert!(!text.contains("AKIDNEVERSHOWN") && !text.contains("wJalrSecretNeverShown"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Starts the binary with `args` in `dir` and returns it with the address it logged and its
/// whole log (stderr), which the thread returns once the process closed it.
async fn spawn_binary(
    args: &[&str],
    dir: &Path,
) -> (Child, String, std::thread::JoinHandle<Vec<String>>) {
    let (child, url, _, log) = spawn(args, dir).await;
    (child, url, log)
}

/// The lines a binary logged so far.
pub type Logs = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

/// [`spawn_binary`], with the lines logged so far readable while it runs.
pub async fn spawn_binary_logged(args: &[&str], dir: &Path) -> (Child, String, Logs) {
    let (child, url, logs, _) = spawn(args, dir).await;
    (child, url, logs)
}

async fn spawn(
    args: &[&str],
    dir: &Path,
) -> (Child, String, Logs, std::thread::JoinHandle<Vec<String>>) {
    let mut child = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let logs = Logs::default();
    let kept = logs.clone();
    // The binary logs its bound address; read it, then keep draining its log.
    let (tx, rx) = tokio::sync::oneshot::channel();
    let log = std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(i) = line.find("listening on http://") {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(line[i + "listening on ".len()..].trim().to_string());
                }
            }
            kept.lock().unwrap().push(line);
        }
        kept.lock().unwrap().clone()
    });
    match tokio::time::timeout(std::time::Duration::from_secs(30), rx).await {
        Ok(Ok(url)) => (child, url, logs, log),
        _ => {
            let _ = child.kill();
            panic!(
                "the binary says where it listens: {:?}",
                logs.lock().unwrap()
            );
        }
    }
}

/// The knobs the shutdown tests turn in [`start_slow_gateway`].
struct SlowConfig {
    workers: usize,
    shutdown_grace_secs: u64,
    chunk_chars: usize,
    chunk_delay_ms: u64,
    /// More `[request_log]` lines.
    request_log: &'static str,
}

/// The binary started by [`start_slow_gateway`], with its files.
struct SlowGateway {
    dir: PathBuf,
    db: PathBuf,
    child: Child,
    url: String,
    /// The binary's log, complete once it exited.
    log: std::thread::JoinHandle<Vec<String>>,
}

/// Starts the binary in a fresh temporary dir on a config with one key (`KEY`), a slow streaming
/// mock model `slow`, and the request log at `dir/log.sqlite`.
async fn start_slow_gateway(what: &str, g: SlowConfig) -> SlowGateway {
    let dir = temp_path(what);
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("log.sqlite");
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[server]
listen = "127.0.0.1:0"
workers = {workers}
shutdown_grace_secs = {grace}

[[auth.keys]]
name = "t"
secret_sha256 = "{hash}"

[[providers]]
name = "slow"
kind = "mock"
chunk_chars = {chunk_chars}
chunk_delay_ms = {chunk_delay_ms}

[[models]]
id = "slow"
deployments = [{{ provider = "slow", model = "s" }}]

[request_log]
path = "{db}"
{extra}"#,
            workers = g.workers,
            grace = g.shutdown_grace_secs,
            hash = key_hash(KEY),
            chunk_chars = g.chunk_chars,
            chunk_delay_ms = g.chunk_delay_ms,
            db = db.display(),
            extra = g.request_log,
        ),
    )
    .unwrap();
    let (child, url, log) = spawn_binary(&["--config", config.to_str().unwrap()], &dir).await;
    SlowGateway {
        dir,
        db,
        child,
        url,
        log,
    }
}

/// Starts `n` streams of `body`, each with its head (status 200) received.
async fn open_streams(url: &str, body: &serde_json::Value, n: usize) -> Vec<awc::ClientResponse> {
    let mut streams = Vec::new();
    for _ in 0..n {
        let res = client()
            .post(format!("{url}/v1/messages"))
            .insert_header(("x-api-key", KEY))
            .send_body(body.to_string())
            .await
            .expect("stream head");
        assert_eq!(res.status(), 200);
        streams.push(res);
    }
    streams
}

fn sigterm(child: &Child) {
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
}

/// Waits for the binary to exit and asserts it exited 0.
async fn assert_exits_cleanly(mut child: Child) {
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
}

/// SIGTERM during traffic: streams in flight finish, the process exits 0, and the request log
/// holds one row per request (rows are only written at shutdown here: the flush timer is long).
#[actix_web::test]
async fn sigterm_finishes_streams_and_loses_no_rows() {
    let gw = start_slow_gateway(
        "sigterm",
        SlowConfig {
            workers: 2,
            shutdown_grace_secs: 30,
            chunk_chars: 4,
            chunk_delay_ms: 40,
            request_log: "batch_size = 1000\nflush_interval_ms = 600000\n",
        },
    )
    .await;

    // ~28 chunks 40 ms apart: each stream lasts about a second.
    let body = serde_json::json!({"model": "slow", "max_tokens": 256, "stream": true,
        "messages": [{"role": "user", "content": "x".repeat(100)}]});
    let mut done = 0;
    for _ in 0..4 {
        let mut b = body.clone();
        b["stream"] = serde_json::json!(false);
        let res = post_as(&gw.url, KEY, &b).await;
        assert_eq!(res.status, 200);
        done += 1;
    }
    let streams = open_streams(&gw.url, &body, 6).await;
    // Every stream is in flight (its head is here, its body is a second long).
    sigterm(&gw.child);
    for mut res in streams {
        let res = collect(&mut res).await;
        let names = assert_stream_grammar(&res.events());
        assert_eq!(names.last().map(String::as_str), Some("message_stop"));
        done += 1;
    }
    assert_exits_cleanly(gw.child).await;

    let conn = rusqlite::Connection::open(&gw.db).unwrap();
    let (rows, ok): (i64, i64) = conn
        .query_row(
            "SELECT count(*), sum(status = 200 AND error_type IS NULL) FROM requests",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((rows, ok), (done, done));
    drop(conn);
    std::fs::remove_dir_all(&gw.dir).unwrap();
}

/// The log writer is a thread with a queue: SIGTERM right after the last response still leaves
/// every request's `request` line in the log, the last one included.
#[actix_web::test]
async fn sigterm_flushes_the_request_line_of_the_last_request() {
    let gw = start_slow_gateway(
        "sigterm-log",
        SlowConfig {
            workers: 1,
            shutdown_grace_secs: 5,
            chunk_chars: 64,
            chunk_delay_ms: 0,
            request_log: "",
        },
    )
    .await;
    let body = serde_json::json!({"model": "slow", "max_tokens": 64,
        "messages": [{"role": "user", "content": "hello"}]});
    let mut ids = Vec::new();
    for _ in 0..20 {
        let res = post_as(&gw.url, KEY, &body).await;
        assert_eq!(res.status, 200);
        ids.push(res.header("request-id").expect("request-id").to_string());
    }
    sigterm(&gw.child);
    assert_exits_cleanly(gw.child).await;
    let log = gw.log.join().unwrap();
    for id in &ids {
        let lines: Vec<&String> = log
            .iter()
            .filter(|l| l.contains(" request ") && l.contains(&format!("request_id={id}")))
            .collect();
        assert_eq!(
            lines.len(),
            1,
            "one request line for {id} in:\n{}",
            log.join("\n")
        );
        assert!(lines[0].contains("status=200"), "{}", lines[0]);
    }
    std::fs::remove_dir_all(&gw.dir).unwrap();
}

/// Streams that outlive `shutdown_grace_secs` are cut, and still leave their rows.
#[actix_web::test]
async fn streams_past_the_grace_period_are_cut_and_still_logged() {
    let gw = start_slow_gateway(
        "grace",
        SlowConfig {
            workers: 1,
            shutdown_grace_secs: 1,
            chunk_chars: 1,
            chunk_delay_ms: 100,
            request_log: "",
        },
    )
    .await;
    // ~60 one-char chunks 100 ms apart: six seconds, far past the grace period.
    let body = serde_json::json!({"model": "slow", "max_tokens": 256, "stream": true,
        "messages": [{"role": "user", "content": "x".repeat(50)}]});
    let streams = open_streams(&gw.url, &body, 3).await;
    sigterm(&gw.child);
    for mut res in streams {
        let res = collect(&mut res).await;
        assert!(
            !String::from_utf8_lossy(&res.body).contains("message_stop"),
            "a stream past the grace period is cut"
        );
    }
    assert_exits_cleanly(gw.child).await;
    let conn = rusqlite::Connection::open(&gw.db).unwrap();
    let rows: Vec<(i64, Option<String>)> = conn
        .prepare("SELECT status, error_type FROM requests")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(rows, vec![(200, Some("shutdown".to_string())); 3]);
    drop(conn);
    std::fs::remove_dir_all(&gw.dir).unwrap();
}
