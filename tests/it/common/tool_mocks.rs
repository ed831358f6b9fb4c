//! In-process fixtures for the gateway tools, all on 127.0.0.1: a scriptable HTTP server (search
//! engine APIs, fetch targets, the images endpoint), a raw TCP listener that counts accepted
//! connections (to prove the SSRF guard never connects), and a fake resolver.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use bytes::Bytes;
use serde_json::Value;
use tokio::sync::{Barrier, Notify};

/// A request the mock received.
#[derive(Debug, Clone)]
pub struct Req {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Req {
    /// Method and path, to assert both at once.
    pub fn route(&self) -> (&str, &str) {
        (&self.method, &self.path)
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        super::header_in(&self.headers, name)
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("mock got JSON")
    }
    /// The decoded query pairs.
    pub fn params(&self) -> Vec<(String, String)> {
        url::form_urlencoded::parse(self.query.as_bytes())
            .into_owned()
            .collect()
    }
    pub fn param(&self, k: &str) -> Option<String> {
        self.params()
            .into_iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v)
    }
}

/// How the mock answers.
pub enum Reply {
    Json(u16, Value),
    /// A body with this content type.
    Body(u16, &'static str, Bytes),
    /// A body with no `Content-Type` at all.
    Untyped(Bytes),
    /// A redirect to `Location`.
    Redirect(u16, String),
    /// Answer after a pacing delay.
    Delayed(Duration, Box<Reply>),
    /// Answer once `n` requests wait here together (proves calls run concurrently).
    Together(Arc<Barrier>, Box<Reply>),
}

type Script = Arc<dyn Fn(&Req) -> Reply + Send + Sync>;

struct State {
    script: Script,
    requests: Arc<Mutex<Vec<Req>>>,
}

/// A scriptable HTTP server on 127.0.0.1:0.
pub struct HttpMock {
    pub url: String,
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Req>>>,
}

impl HttpMock {
    pub fn start(script: impl Fn(&Req) -> Reply + Send + Sync + 'static) -> Self {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let state = web::Data::new(State {
            script: Arc::new(script),
            requests: requests.clone(),
        });
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .default_service(web::to(handle))
        })
        .workers(1)
        .bind(("127.0.0.1", 0))
        .expect("bind loopback");
        let addr = server.addrs()[0];
        actix_web::rt::spawn(server.run());
        Self {
            url: format!("http://{addr}"),
            addr,
            requests,
        }
    }

    pub fn requests(&self) -> Vec<Req> {
        self.requests.lock().unwrap().clone()
    }

    pub fn only_request(&self) -> Req {
        let r = self.requests();
        assert_eq!(r.len(), 1, "expected one request, got {r:?}");
        r[0].clone()
    }
}

async fn handle(req: HttpRequest, body: Bytes, state: web::Data<State>) -> HttpResponse {
    let r = Req {
        method: req.method().to_string(),
        path: req.path().to_string(),
        query: req.query_string().to_string(),
        headers: req
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect(),
        body,
    };
    state.requests.lock().unwrap().push(r.clone());
    let mut reply = (state.script)(&r);
    loop {
        reply = match reply {
            Reply::Delayed(d, next) => {
                actix_web::rt::time::sleep(d).await;
                *next
            }
            Reply::Together(barrier, next) => {
                barrier.wait().await;
                *next
            }
            Reply::Json(status, v) => {
                return HttpResponse::build(status_code(status))
                    .content_type("application/json")
                    .body(v.to_string())
            }
            Reply::Body(status, ct, b) => {
                return HttpResponse::build(status_code(status))
                    .content_type(ct)
                    .body(b)
            }
            Reply::Untyped(b) => return HttpResponse::Ok().body(b),
            Reply::Redirect(status, location) => {
                return HttpResponse::build(status_code(status))
                    .insert_header(("location", location))
                    .finish()
            }
        };
    }
}

fn status_code(s: u16) -> actix_web::http::StatusCode {
    actix_web::http::StatusCode::from_u16(s).expect("valid status")
}

/// A raw TCP listener on 127.0.0.1 that counts every accepted connection (not just requests).
pub struct ConnCounter {
    pub addr: SocketAddr,
    count: Arc<AtomicUsize>,
    accepted: Arc<Notify>,
}

impl ConnCounter {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().unwrap();
        let count = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::new(Notify::new());
        let (c, n) = (count.clone(), accepted.clone());
        actix_web::rt::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                n.notify_waiters();
                drop(stream);
            }
        });
        Self {
            addr,
            count,
            accepted,
        }
    }

    /// How many connections were accepted before this call, proven by a control connection:
    /// accepts are served in order, so once ours is counted every earlier one is too.
    pub async fn earlier_connections(&self) -> usize {
        let before_control = self.count.load(Ordering::SeqCst);
        let _control = tokio::net::TcpStream::connect(self.addr)
            .await
            .expect("control connection");
        loop {
            let wait = self.accepted.notified();
            let now = self.count.load(Ordering::SeqCst);
            if now > before_control {
                return now - 1;
            }
            wait.await;
        }
    }
}

/// A resolver that knows a few names and records every lookup. No lookup leaves the process.
#[derive(Default, Clone)]
pub struct FakeResolver {
    pub names: HashMap<String, Vec<IpAddr>>,
    pub lookups: Arc<Mutex<Vec<String>>>,
}

impl FakeResolver {
    pub fn with(names: &[(&str, &[&str])]) -> Self {
        Self {
            names: names
                .iter()
                .map(|(h, ips)| {
                    (
                        h.to_string(),
                        ips.iter().map(|i| i.parse().unwrap()).collect(),
                    )
                })
                .collect(),
            lookups: Arc::default(),
        }
    }

    pub fn lookups(&self) -> Vec<String> {
        self.lookups.lock().unwrap().clone()
    }
}

impl aigw::tools::ssrf::Resolve for FakeResolver {
    fn lookup<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> futures_util::future::LocalBoxFuture<'a, std::io::Result<Vec<SocketAddr>>> {
        self.lookups.lock().unwrap().push(host.to_string());
        let found = self.names.get(host).cloned();
        Box::pin(async move {
            match found {
                Some(ips) => Ok(ips
                    .into_iter()
                    .map(|ip| SocketAddr::new(ip, port))
                    .collect()),
                None => Err(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "unknown host",
                )),
            }
        })
    }
}
