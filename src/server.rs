//! Building and starting the HTTP server. `main`, the tests and the benches all come through here.

use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::{web, App, HttpServer};

use crate::api;
use crate::cluster::limits::SharedLimits;
use crate::cluster::Redis;
use crate::config::reload::Changes;
use crate::config::Config;
use crate::observability::RequestLog;
use crate::reload::{self, ConfigSource, ReloadError};
use crate::state::{AppState, LiveState, WorkerSlot};

/// A running gateway.
pub struct Gateway {
    pub server: Server,
    /// The bound addresses (the real port when configured with port 0).
    pub addrs: Vec<SocketAddr>,
    /// The `/metrics` listener when `observability.metrics_listen` is set.
    pub metrics_server: Option<(Server, SocketAddr)>,
    /// The config generation the gateway started with (see [`Gateway::live`] for the current).
    pub state: Arc<AppState>,
    pub live: web::Data<LiveState>,
}

impl Gateway {
    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// Applies an already loaded config as the next generation (see [`reload::apply`]).
    pub fn reload(&self, config: crate::config::Config) -> Result<Changes, ReloadError> {
        reload::apply(&self.live, config)
    }

    /// Reloads `source` on SIGHUP and, with `server.watch_config`, when the file changes.
    pub fn watch(&self, source: ConfigSource) -> std::io::Result<()> {
        reload::spawn(self.live.clone(), source)
    }

    /// Serves until the server stops (SIGTERM: graceful, in-flight responses get
    /// `shutdown_grace_secs`), then stops the metrics listener and writes every queued request
    /// log row.
    pub async fn run(self) -> std::io::Result<()> {
        let result = self.server.await;
        if let Some((metrics, _)) = self.metrics_server {
            metrics.handle().stop(true).await;
            let _ = metrics.await;
        }
        if let Some(log) = &self.state.request_log {
            log.shutdown().await;
        }
        result
    }
}

/// Binds the listeners, opens the request log and starts the workers. Must be called inside an
/// actix system; each worker starts its own provider and rate-limiter actors.
pub fn start(config: Config) -> std::io::Result<Gateway> {
    let listen = config.server.listen.clone();
    let workers = match config.server.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let grace = config.server.shutdown_grace_secs;
    let metrics_listen = config.observability.metrics_listen.clone();
    let mut state = AppState::new(config);
    if state.config.request_log.enabled {
        let log = RequestLog::start(
            &state.config.request_log,
            state.config.secrets.postgres_url.as_ref(),
            state.metrics.log_dropped.clone(),
        )
        .map_err(std::io::Error::other)?;
        state.request_log = Some(Arc::new(log));
    }
    if let (Some(cluster), Some(url)) = (&state.config.cluster, &state.config.secrets.redis_url) {
        let redis = Redis::start(cluster, url, state.metrics.shared_state_errors.clone())
            .map_err(|e| std::io::Error::other(format!("cluster.redis_url: {e}")))?;
        state.limits.set_shared(SharedLimits::start(redis.clone()));
        state.health = Some(crate::cluster::health::start(redis.clone(), &state.models));
        state.redis = Some(redis);
    }
    let state = Arc::new(state);
    let live = web::Data::new(LiveState::new(state.clone()));
    let data = live.clone();
    let metrics_here = metrics_listen.is_none();
    let server = HttpServer::new(move || {
        let slot = web::Data::new(WorkerSlot::new(&data.load()));
        App::new()
            .app_data(data.clone())
            .app_data(slot)
            .configure(|cfg| api::configure(cfg, metrics_here))
    })
    .workers(workers)
    // A client that closes its side has gone away: stop its session (and so its upstream call)
    // instead of keeping the connection half-open.
    .h1_allow_half_closed(false)
    // SSE frames are small writes spaced in time: with Nagle's algorithm each one waits for the
    // client's (delayed) ACK of the previous, which stalls streams by up to 40 ms a frame.
    .tcp_nodelay(true)
    .backlog(4096)
    .max_connection_rate(1024)
    .shutdown_timeout(grace)
    .bind(listen)?;
    let addrs = server.addrs();
    let server = server.run();
    let metrics_server = match metrics_listen {
        Some(listen) => Some(metrics_server(&live, &listen)?),
        None => None,
    };
    Ok(Gateway {
        server,
        addrs,
        metrics_server,
        state,
        live,
    })
}

/// `/metrics` alone on its own listener, one worker.
fn metrics_server(
    live: &web::Data<LiveState>,
    listen: &str,
) -> std::io::Result<(Server, SocketAddr)> {
    let data = live.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .route("/metrics", web::get().to(api::ops::metrics))
    })
    .workers(1)
    .bind(listen)?;
    let addr = server.addrs()[0];
    Ok((server.run(), addr))
}
