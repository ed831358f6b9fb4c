//! The real binary: `--check-config`, and serving the shipped config.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

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
    let mut child = Command::new(BIN)
        .args(["--config", SHIPPED, "--listen", "127.0.0.1:0"])
        .current_dir(&dir)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stderr = child.stderr.take().unwrap();
    let child = Kill(child);
    // The binary logs its bound address; read it, then keep draining its log.
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(i) = line.find("listening on http://") {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(line[i + "listening on ".len()..].trim().to_string());
                }
            }
        }
    });
    let url = tokio::time::timeout(std::time::Duration::from_secs(30), rx)
        .await
        .expect("the binary says where it listens")
        .unwrap();
    let body = serde_json::json!({"model":"sonnet","max_tokens":64,"messages":[{"role":"user","content":"Hello!"}]});
    let res = post_raw(
        &url,
        "/v1/messages",
        &[("x-api-key", "sk-gw-demo")],
        body.to_string(),
    )
    .await;
    assert_eq!(res.status, 200);
    assert_eq!(res.json()["content"][0]["text"], "mock reply: Hello!");
    let res = post_raw(
        &url,
        "/v1/messages",
        &[("x-api-key", "sk-wrong")],
        body.to_string(),
    )
    .await;
    res.assert_error(401, "authentication_error");
    drop(child);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Starts the binary on `config` and returns it with the address it logged.
async fn spawn_binary(config: &std::path::Path) -> (std::process::Child, String) {
    let mut child = Command::new(BIN)
        .args(["--config", config.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(i) = line.find("listening on http://") {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(line[i + "listening on ".len()..].trim().to_string());
                }
            }
        }
    });
    let url = tokio::time::timeout(std::time::Duration::from_secs(30), rx)
        .await
        .expect("the binary says where it listens")
        .unwrap();
    (child, url)
}

/// SIGTERM during traffic: streams in flight finish, the process exits 0, and the request log
/// holds one row per request (rows are only written at shutdown here: the flush timer is long).
#[actix_web::test]
async fn sigterm_finishes_streams_and_loses_no_rows() {
    let dir = temp_path("sigterm");
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("log.sqlite");
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[server]
listen = "127.0.0.1:0"
workers = 2
shutdown_grace_secs = 30

[[auth.keys]]
name = "t"
secret_sha256 = "{hash}"

[[providers]]
name = "slow"
kind = "mock"
chunk_chars = 4
chunk_delay_ms = 40

[[models]]
id = "slow"
deployments = [{{ provider = "slow", model = "s" }}]

[request_log]
path = "{db}"
batch_size = 1000
flush_interval_ms = 600000
"#,
            hash = key_hash(KEY),
            db = db.display(),
        ),
    )
    .unwrap();
    let (child, url) = spawn_binary(&config).await;

    // ~28 chunks 40 ms apart: each stream lasts about a second.
    let body = serde_json::json!({"model": "slow", "max_tokens": 256, "stream": true,
        "messages": [{"role": "user", "content": "x".repeat(100)}]});
    let mut done = 0;
    for _ in 0..4 {
        let mut b = body.clone();
        b["stream"] = serde_json::json!(false);
        let res = post_raw(&url, "/v1/messages", &[("x-api-key", KEY)], b.to_string()).await;
        assert_eq!(res.status, 200);
        done += 1;
    }
    let mut streams = Vec::new();
    for _ in 0..6 {
        let res = client()
            .post(format!("{url}/v1/messages"))
            .insert_header(("x-api-key", KEY))
            .send_body(body.to_string())
            .await
            .expect("stream head");
        assert_eq!(res.status(), 200);
        streams.push(res);
    }
    // Every stream is in flight (its head is here, its body is a second long).
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    for mut res in streams {
        let res = collect(&mut res).await;
        let names = assert_stream_grammar(&res.events());
        assert_eq!(names.last().map(String::as_str), Some("message_stop"));
        done += 1;
    }
    let mut child = child;
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit status {status:?}");

    let conn = rusqlite::Connection::open(&db).unwrap();
    let (rows, ok): (i64, i64) = conn
        .query_row(
            "SELECT count(*), sum(status = 200 AND error_type IS NULL) FROM requests",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((rows, ok), (done, done));
    drop(conn);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Streams that outlive `shutdown_grace_secs` are cut, and still leave their rows.
#[actix_web::test]
async fn streams_past_the_grace_period_are_cut_and_still_logged() {
    let dir = temp_path("grace");
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("log.sqlite");
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[server]
listen = "127.0.0.1:0"
workers = 1
shutdown_grace_secs = 1

[[auth.keys]]
name = "t"
secret_sha256 = "{hash}"

[[providers]]
name = "slow"
kind = "mock"
chunk_chars = 1
chunk_delay_ms = 100

[[models]]
id = "slow"
deployments = [{{ provider = "slow", model = "s" }}]

[request_log]
path = "{db}"
"#,
            hash = key_hash(KEY),
            db = db.display(),
        ),
    )
    .unwrap();
    let (child, url) = spawn_binary(&config).await;
    // ~60 one-char chunks 100 ms apart: six seconds, far past the grace period.
    let body = serde_json::json!({"model": "slow", "max_tokens": 256, "stream": true,
        "messages": [{"role": "user", "content": "x".repeat(50)}]});
    let mut streams = Vec::new();
    for _ in 0..3 {
        let res = client()
            .post(format!("{url}/v1/messages"))
            .insert_header(("x-api-key", KEY))
            .send_body(body.to_string())
            .await
            .expect("stream head");
        assert_eq!(res.status(), 200);
        streams.push(res);
    }
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    for mut res in streams {
        let res = collect(&mut res).await;
        assert!(
            !String::from_utf8_lossy(&res.body).contains("message_stop"),
            "a stream past the grace period is cut"
        );
    }
    let mut child = child;
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
    let conn = rusqlite::Connection::open(&db).unwrap();
    let rows: Vec<(i64, Option<String>)> = conn
        .prepare("SELECT status, error_type FROM requests")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(rows, vec![(200, Some("shutdown".to_string())); 3]);
    drop(conn);
    std::fs::remove_dir_all(&dir).unwrap();
}
