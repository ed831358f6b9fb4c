use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// An Anthropic-compatible LLM gateway.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file.
    #[arg(long, default_value = "config.toml")]
    config: PathBuf,
    /// Validate the configuration and exit.
    #[arg(long)]
    check_config: bool,
    /// Listen address, overriding `server.listen`.
    #[arg(long)]
    listen: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut config = match aigw::Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("invalid config {}: {e}", cli.config.display());
            return ExitCode::from(2);
        }
    };
    if let Some(listen) = cli.listen {
        if listen.parse::<std::net::SocketAddr>().is_err() {
            eprintln!("--listen: must be an address like 127.0.0.1:8080");
            return ExitCode::from(2);
        }
        config.server.listen = listen;
    }
    if cli.check_config {
        println!("config {} is valid", cli.config.display());
        return ExitCode::SUCCESS;
    }
    // Held until the server stopped: dropping it writes the lines still queued (SIGTERM included:
    // actix turns it into a graceful stop that returns here).
    let log_guard = aigw::telemetry::init(&config.observability);
    let result = actix_web::rt::System::new().block_on(async move {
        let gateway = aigw::start(config)?;
        for addr in &gateway.addrs {
            tracing::info!("listening on http://{addr}");
        }
        if let Some((_, addr)) = &gateway.metrics_server {
            tracing::info!("metrics on http://{addr}/metrics");
        }
        gateway.run().await
    });
    drop(log_guard);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("server error: {e}");
            ExitCode::FAILURE
        }
    }
}
