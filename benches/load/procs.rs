//! The processes under test: the mock and the gateway as children that die with the harness
//! (a Drop guard, and `PR_SET_PDEATHSIG` for a harness killed by a signal), and what /proc says
//! about them.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// The key clients present to the gateway.
pub const GATEWAY_KEY: &str = "sk-gw-bench";
/// The provider key the gateway sends upstream (and the direct baseline sends to the mock).
pub const UPSTREAM_KEY: &str = "sk-upstream-bench";
const UPSTREAM_KEY_ENV: &str = "AIGW_BENCH_UPSTREAM_KEY";

/// A child process killed and reaped when dropped, panics included.
pub struct ChildGuard {
    child: Child,
    name: &'static str,
}

impl ChildGuard {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ChildGuard {
    /// SIGTERM first (the gateway drains and exits; a profiler wrapping it writes its report),
    /// SIGKILL after 10 s.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: signals a child this guard owns and has not reaped.
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        eprintln!("[load] stopped {} (pid {})", self.name, self.child.id());
    }
}

fn die_with_parent(cmd: &mut Command) {
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// A scratch directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("aigw-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Raises the soft file-descriptor limit to the hard one (children inherit it); returns it.
pub fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    lim.rlim_cur
}

/// Starts the mock (this same binary, `AIGW_BENCH_ROLE=mock`) and reads its port.
pub fn spawn_mock(workers: usize) -> (ChildGuard, u16) {
    let exe = std::env::current_exe().expect("current exe");
    let mut cmd = Command::new(exe);
    cmd.env("AIGW_BENCH_ROLE", "mock")
        .env("AIGW_BENCH_MOCK_WORKERS", workers.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    die_with_parent(&mut cmd);
    let mut child = cmd.spawn().expect("spawn mock");
    let stdout = child.stdout.take().expect("mock stdout");
    let guard = ChildGuard {
        child,
        name: "mock upstream",
    };
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read mock port");
    let port = line
        .trim()
        .strip_prefix("port ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("mock did not report its port: {line:?}"));
    (guard, port)
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// The gateway's config: one provider per mock profile and wire format, a hashed client key,
/// the request log on, logging at `log_level` (`warn` but for the (g) row: no `request` lines);
/// `extra` is appended.
pub fn gateway_config(
    dir: &Path,
    mock_port: u16,
    workers: usize,
    log_level: &str,
    extra: &str,
) -> PathBuf {
    let key_hash = hex::encode(Sha256::digest(GATEWAY_KEY.as_bytes()));
    let mut text = format!(
        r#"# Written by benches/load; every key exists in src/config/.
[server]
listen = "127.0.0.1:0"
workers = {workers}

[observability]
log_level = "{log_level}"

[request_log]
enabled = {log_enabled}
path = "{log}"

[[auth.keys]]
name = "bench"
secret_sha256 = "{key_hash}"
"#,
        log = request_log_path(dir).display(),
        // On by default, as shipped; `AIGW_BENCH_REQUEST_LOG=off` measures what it costs.
        log_enabled = std::env::var("AIGW_BENCH_REQUEST_LOG").map_or(true, |v| v != "off"),
    );
    for profile in crate::mock::PROFILES {
        for (kind, suffix) in [("anthropic", ""), ("openai", "/v1")] {
            text.push_str(&format!(
                r#"
[[providers]]
name = "{kind}-{profile}"
kind = "{kind}"
base_url = "http://127.0.0.1:{mock_port}/{profile}{suffix}"
api_key_env = "{UPSTREAM_KEY_ENV}"

[[models]]
id = "{kind}-{profile}"
deployments = [{{ provider = "{kind}-{profile}", model = "{model}" }}]
"#,
                model = if kind == "anthropic" {
                    "claude-bench"
                } else {
                    "gpt-bench"
                },
            ));
        }
    }
    // (e) also measures idle streams on the gateway's own mock provider: no upstream socket.
    text.push_str(
        r#"
[[providers]]
name = "idle-mock"
kind = "mock"
ttft_ms = 600000

[[models]]
id = "mock-idle"
deployments = [{ provider = "idle-mock", model = "idle" }]
"#,
    );
    text.push_str(extra);
    let path = dir.join("gateway.toml");
    std::fs::write(&path, text).expect("write gateway config");
    path
}

/// The nginx binary: `AIGW_BENCH_NGINX`, else `nginx` on PATH or in /usr/sbin.
fn nginx_bin() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("AIGW_BENCH_NGINX") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|d| d.join("nginx"))
        .find(|p| p.is_file())
}

/// Starts nginx as a bare reverse proxy in front of the mock: one process (`master_process
/// off`: it is the worker, so /proc gives its CPU), keep-alive upstream connections, no access
/// log, no buffering either way. `Err` says why there is no floor row (nginx absent, or it
/// would not start).
pub fn spawn_nginx(dir: &Path, mock_port: u16) -> Result<(ChildGuard, u16), String> {
    let bin = nginx_bin().ok_or("nginx not installed: apt-get install nginx-light")?;
    let port = free_port();
    let prefix = dir.join("nginx");
    std::fs::create_dir_all(&prefix).map_err(|e| format!("nginx dir: {e}"))?;
    let conf = prefix.join("nginx.conf");
    let text = format!(
        r#"# Written by benches/load: the floor of a proxy hop.
daemon off;
master_process off;
worker_processes 1;
pid {p}/nginx.pid;
error_log {p}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {p}/body;
    proxy_temp_path {p}/proxy;
    upstream mock {{
        server 127.0.0.1:{mock_port};
        keepalive 256;
    }}
    server {{
        listen 127.0.0.1:{port} reuseport;
        keepalive_requests 1000000;
        location / {{
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_request_buffering off;
        }}
    }}
}}
"#,
        p = prefix.display(),
    );
    std::fs::write(&conf, text).map_err(|e| format!("nginx conf: {e}"))?;
    let mut cmd = Command::new(&bin);
    cmd.arg("-p")
        .arg(&prefix)
        .arg("-e")
        .arg(prefix.join("error.log"))
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    die_with_parent(&mut cmd);
    let mut guard = ChildGuard {
        child: cmd.spawn().map_err(|e| format!("{}: {e}", bin.display()))?,
        name: "nginx",
    };
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if let Ok(Some(status)) = guard.child.try_wait() {
            let log = std::fs::read_to_string(prefix.join("error.log")).unwrap_or_default();
            return Err(format!("nginx exited with {status}: {}", log.trim()));
        }
        if Instant::now() > deadline {
            return Err("nginx did not listen within 10 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((guard, port))
}

/// Starts `aigw` on a free loopback port and waits until `/healthz` answers.
/// `AIGW_BENCH_GATEWAY_BIN` runs another build of the binary (A/B comparisons);
/// `AIGW_BENCH_GATEWAY_WRAPPER` (e.g. `valgrind --tool=massif`) runs the gateway under a
/// profiler; /proc figures then describe the wrapper process, so use it only to profile.
pub fn spawn_gateway(config: &Path, log: &Path) -> (ChildGuard, SocketAddr) {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let log_file = std::fs::File::create(log).expect("create gateway log");
    let bin = std::env::var("AIGW_BENCH_GATEWAY_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_aigw").to_string());
    let wrapper = std::env::var("AIGW_BENCH_GATEWAY_WRAPPER").unwrap_or_default();
    let mut words = wrapper.split_whitespace();
    let mut cmd = match words.next() {
        Some(program) => {
            let mut c = Command::new(program);
            c.args(words).arg(&bin);
            c
        }
        None => Command::new(&bin),
    };
    cmd.arg("--config")
        .arg(config)
        .arg("--listen")
        .arg(addr.to_string())
        .env(UPSTREAM_KEY_ENV, UPSTREAM_KEY)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file);
    die_with_parent(&mut cmd);
    let mut guard = ChildGuard {
        child: cmd.spawn().expect("spawn aigw"),
        name: "gateway",
    };
    let patience = Duration::from_secs(if wrapper.is_empty() { 15 } else { 120 });
    let deadline = Instant::now() + patience;
    loop {
        if healthz(addr) {
            return (guard, addr);
        }
        if let Ok(Some(status)) = guard.child.try_wait() {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            panic!("the gateway exited with {status} before it was ready:\n{log}");
        }
        assert!(
            Instant::now() < deadline,
            "the gateway did not answer /healthz within {patience:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn healthz(addr: SocketAddr) -> bool {
    get(addr, "/healthz").is_some_and(|r| r.starts_with("HTTP/1.1 200"))
}

/// A plain `GET` with `connection: close`: the whole response, head included.
fn get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let req = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).ok()?;
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    Some(out)
}

/// The sum of a Prometheus counter over all its label sets, from the gateway's `/metrics`.
pub fn counter_total(addr: SocketAddr, name: &str) -> Option<u64> {
    let text = get(addr, "/metrics")?;
    if !text.starts_with("HTTP/1.1 200") {
        return None;
    }
    let sum = text
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>();
    Some(sum as u64)
}

/// The gateway's request log, as written by [`gateway_config`].
pub fn request_log_path(dir: &Path) -> PathBuf {
    dir.join("requests.sqlite")
}

/// Rows in the request log; `None` when it is off (no file) or unreadable.
pub fn request_log_rows(path: &Path) -> Option<u64> {
    if !path.exists() {
        return None;
    }
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .ok()?;
    conn.query_row("SELECT count(*) FROM requests", [], |r| r.get::<_, i64>(0))
        .ok()
        .map(|n| n as u64)
}

/// User + system CPU time of a whole process (all threads), from /proc/<pid>/stat.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc stat");
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_nanos(ticks * 1_000_000_000 / hz)
}

/// Resident set size in KiB (`VmRSS`) and its peak (`VmHWM`).
pub fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

pub fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count())
}

/// Busy time of every core together (user, nice, system, irq, softirq, steal), from /proc/stat.
pub fn machine_busy() -> Duration {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: u64 = stat
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("cpu "))
        .map(|l| {
            l.split_whitespace()
                .filter_map(|v| v.parse::<u64>().ok())
                .enumerate()
                // user nice system idle iowait irq softirq steal: skip idle and iowait.
                .filter(|(i, _)| *i < 8 && *i != 3 && *i != 4)
                .map(|(_, v)| v)
                .sum()
        })
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_nanos(ticks * 1_000_000_000 / hz)
}

/// CPU time of this process plus its children that have been waited for.
pub fn own_cpu() -> Duration {
    let mut total = Duration::ZERO;
    for who in [libc::RUSAGE_SELF, libc::RUSAGE_CHILDREN] {
        // SAFETY: getrusage only writes the struct it is given.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(who, &mut ru) };
        for tv in [ru.ru_utime, ru.ru_stime] {
            total += Duration::new(tv.tv_sec as u64, tv.tv_usec as u32 * 1000);
        }
    }
    total
}

/// How many of a process's open fds are TCP sockets connected to `port` on loopback: the
/// gateway's pooled upstream connections to the mock, which stay open for their keep-alive.
pub fn sockets_to_port(pid: u32, port: u16) -> usize {
    let mut inodes = std::collections::HashSet::new();
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let remote_port = cols
                .get(2)
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if remote_port == Some(port) {
                if let Some(inode) = cols.get(9) {
                    inodes.insert(format!("socket:[{inode}]"));
                }
            }
        }
    }
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |dir| {
        dir.filter_map(Result::ok)
            .filter_map(|e| std::fs::read_link(e.path()).ok())
            .filter(|l| inodes.contains(l.to_string_lossy().as_ref()))
            .count()
    })
}
