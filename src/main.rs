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
    if let Some(listen) = &cli.listen {
        if listen.parse::<std::net::SocketAddr>().is_err() {
            eprintln!("--listen: must be an address like 127.0.0.1:8080");
            return ExitCode::from(2);
        }
    }
    // Reloads read the same file with the same override.
    let source = aigw::reload::ConfigSource {
        path: cli.config.clone(),
        listen: cli.listen.clone(),
    };
    let config = match source.load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("invalid config {}: {e}", cli.config.display());
            return ExitCode::from(2);
        }
    };
    // The cloud kinds' credentials, by where they come from (never a value).
    let sources: Vec<String> = config
        .providers
        .iter()
        .filter_map(|p| {
            let creds = config.secrets.cloud.get(&p.name)?;
            Some(format!(
                "provider {} ({}): credentials from {}",
                p.name,
                p.kind.as_str(),
                creds.source()
            ))
        })
        .collect();
    if cli.check_config {
        for s in &sources {
            println!("{s}");
        }
        println!("config {} is valid", cli.config.display());
        return ExitCode::SUCCESS;
    }
    // Held until the server stopped: dropping it writes the lines still queued (SIGTERM included:
    // actix turns it into a graceful stop that returns here).
    let log_guard = match aigw::telemetry::init_with_export(&config) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("cannot start logging or trace export: {e}");
            return ExitCode::FAILURE;
        }
    };
    for s in &sources {
        tracing::info!("{s}");
    }
    let result = actix_web::rt::System::new().block_on(async move {
        let gateway = aigw::start(config)?;
        gateway.watch(source)?;
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
