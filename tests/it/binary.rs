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
