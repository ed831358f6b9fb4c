//! Building and starting the HTTP server. `main`, the tests and the benches all come through here.

use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::{web, App, HttpServer};

use crate::api;
use crate::config::Config;
use crate::state::{AppState, WorkerActors};

/// A running gateway.
pub struct Gateway {
    pub server: actix_web::dev::Server,
    /// The bound addresses (the real port when configured with port 0).
    pub addrs: Vec<SocketAddr>,
    pub state: Arc<AppState>,
}

impl Gateway {
    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }
}

/// Binds the listener and starts the workers. Must be called inside an actix system; each worker
/// starts its own provider and rate-limiter actors.
pub fn start(config: Config) -> std::io::Result<Gateway> {
    let listen = config.server.listen.clone();
    let workers = match config.server.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let grace = config.server.shutdown_grace_secs;
    let state = Arc::new(AppState::new(config));
    let data = web::Data::from(state.clone());
    let server = HttpServer::new(move || {
        let actors = web::Data::new(WorkerActors::start(&data));
        App::new()
            .app_data(data.clone())
            .app_data(actors)
            .configure(api::configure)
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
    Ok(Gateway {
        server,
        addrs,
        state,
    })
}
