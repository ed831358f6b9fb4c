//! Config hot reload: SIGHUP, and with `server.watch_config` a change to the file, reload it.
//!
//! A reload loads and validates the file exactly as at start. An invalid file, or one that
//! changes a setting only a restart applies, changes nothing. A valid one becomes the next
//! [`AppState`] generation, stored in [`LiveState`] for new requests; running requests keep the
//! generation they started with. Reloads run one at a time on one task, so generations never
//! race.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use crate::config::reload::{restart_required, Changes};
use crate::config::{Config, ConfigError};
use crate::state::LiveState;

/// A file change is acted on once the file has been quiet this long (an editor's save is often
/// several events: write a temporary file, rename it over the old one).
const DEBOUNCE: Duration = Duration::from_millis(200);

/// Where the config comes from, and the command-line override applied to it each time.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    pub path: PathBuf,
    /// `--listen`, which replaces `server.listen` from the file.
    pub listen: Option<String>,
}

impl ConfigSource {
    /// Reads, parses and validates the file, then applies the override.
    pub fn load(&self) -> Result<Config, ConfigError> {
        let mut config = Config::load(&self.path)?;
        if let Some(listen) = &self.listen {
            config.server.listen = listen.clone();
        }
        Ok(config)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("invalid config: {0}")]
    Invalid(ConfigError),
    #[error("{} can only change on a restart; nothing was applied", .0.join(", "))]
    RestartRequired(Vec<&'static str>),
}

impl ReloadError {
    fn result_label(&self) -> &'static str {
        match self {
            Self::Invalid(_) => "error",
            Self::RestartRequired(_) => "restart_required",
        }
    }
}

/// Makes `config` (already validated) the current generation, unless it changes a setting only
/// a restart applies. Counts the result.
pub fn apply(live: &LiveState, config: Config) -> Result<Changes, ReloadError> {
    let current = live.load();
    let restart = restart_required(&current.config, &config);
    if !restart.is_empty() {
        let err = ReloadError::RestartRequired(restart);
        count(&current, Err(&err));
        return Err(err);
    }
    let changes = Changes::between(&current.config, &config);
    let next = Arc::new(current.next(config));
    current
        .metrics
        .config_generation
        .set(next.generation as i64);
    live.store(next);
    count(&current, Ok(()));
    Ok(changes)
}

fn count(state: &crate::state::AppState, result: Result<(), &ReloadError>) {
    let label = match result {
        Ok(()) => "ok",
        Err(e) => e.result_label(),
    };
    state
        .metrics
        .config_reloads
        .with_label_values(&[label])
        .inc();
}

/// Loads `source` and applies it, logging one line either way.
pub fn reload(live: &LiveState, source: &ConfigSource, trigger: &str) {
    let result = match source.load() {
        Ok(config) => apply(live, config),
        Err(e) => {
            let err = ReloadError::Invalid(e);
            count(&live.load(), Err(&err));
            Err(err)
        }
    };
    match result {
        Ok(changes) => tracing::info!(
            generation = live.load().generation,
            trigger,
            "config reloaded: {changes}"
        ),
        Err(ReloadError::Invalid(e)) => tracing::error!(
            trigger,
            "config reload failed: invalid config {}: {e}; the running config stays",
            source.path.display()
        ),
        Err(e) => tracing::error!(trigger, "config reload refused: {e}"),
    }
}

/// Starts the reload task on the current actix system: SIGHUP always, file changes with
/// `server.watch_config`.
pub fn spawn(live: web::Data<LiveState>, source: ConfigSource) -> std::io::Result<()> {
    let mut hangup = signal(SignalKind::hangup())?;
    let (tx, mut changed) = mpsc::unbounded_channel();
    let watching = live.load().config.server.watch_config;
    let watcher = match watching {
        true => Some(watch_file(&source.path, tx).map_err(std::io::Error::other)?),
        false => None,
    };
    actix_rt::spawn(async move {
        // The watcher stops when dropped: it lives as long as this task.
        let _watcher = watcher;
        loop {
            let trigger = tokio::select! {
                s = hangup.recv() => match s {
                    Some(()) => "SIGHUP",
                    None => return,
                },
                c = changed.recv(), if watching => match c {
                    Some(()) => {
                        quiet(&mut changed).await;
                        "file change"
                    }
                    None => return,
                },
            };
            reload(&live, &source, trigger);
        }
    });
    Ok(())
}

/// Waits until no change has arrived for [`DEBOUNCE`].
async fn quiet(changed: &mut mpsc::UnboundedReceiver<()>) {
    while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, changed.recv()).await {}
}

/// Watches the file's directory, not the file: a save by rename replaces the file (and its
/// inode), which a watch on the file itself would no longer see.
fn watch_file(
    path: &Path,
    tx: mpsc::UnboundedSender<()>,
) -> notify::Result<notify::RecommendedWatcher> {
    let path = std::path::absolute(path)?;
    let dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"));
    let name = path.file_name().map(|n| n.to_os_string());
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        let relevant = matches!(event.kind, EventKind::Create(_) | EventKind::Modify(_));
        if relevant
            && event
                .paths
                .iter()
                .any(|p| p.file_name().map(|n| n.to_os_string()) == name)
        {
            let _ = tx.send(());
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    Ok(watcher)
}
