//! Deployment health shared by every replica. Breaker changes a replica sees
//! ([`HealthEvent`]s from [`crate::routing::shared`]) are written to one Redis hash,
//! `<prefix>:{health}:deployments` (field `<model>/<deployment>`, value `o:<until_ms>` for an
//! open circuit or `r:<until_ms>` for a 429 cool-down); every replica reads the hash every
//! [`POLL`] into its deployments' [`SharedHold`]s, so the others stop within a poll, for the same
//! time. A half-open deployment's single probe is claimed with `SET NX PX` on
//! `<prefix>:{health}:probe:<id>`.
//!
//! [`SharedHold`]: crate::routing::SharedHold

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use redis::{AsyncCommands, Script};
use tokio::sync::mpsc;

use super::Redis;
use crate::routing::shared::{unix_ms, HealthEvent};
use crate::routing::{Deployment, ModelIndex};

/// How often the shared view is refreshed: well inside the 1 s the others may lag.
pub const POLL: Duration = Duration::from_millis(200);
/// How long a claimed probe is this replica's to send.
const PROBE_TTL: Duration = Duration::from_secs(5);

/// A 429 cool-down never shortens one already set, nor replaces an open circuit.
const COOL_DOWN: &str = r#"
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur and (string.sub(cur, 1, 1) == 'o' or tonumber(string.sub(cur, 3)) >= tonumber(ARGV[2])) then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], 'r:' .. ARGV[2])
return 1
"#;

/// The deployments whose holds the poller refreshes: those of the current config generation
/// (a reload hands it the new ones).
pub struct Watched {
    events: mpsc::UnboundedSender<HealthEvent>,
    deployments: arc_swap::ArcSwap<Vec<Arc<Deployment>>>,
}

impl Watched {
    /// Connects the holds of `models` and watches them from the next poll on. A deployment kept
    /// by a reload is the same `Arc` and stays connected.
    pub fn watch(&self, models: &ModelIndex) {
        let deployments: Vec<Arc<Deployment>> = models
            .ordered
            .iter()
            .flat_map(|m| m.deployments.iter().cloned())
            .collect();
        for d in &deployments {
            d.shared.connect(self.events.clone());
        }
        self.deployments.store(Arc::new(deployments));
    }
}

/// Connects every deployment's hold and starts the writer and the poller. Must run inside an
/// actix system.
pub fn start(redis: Arc<Redis>, models: &ModelIndex) -> Arc<Watched> {
    let (tx, rx) = mpsc::unbounded_channel();
    let watched = Arc::new(Watched {
        events: tx,
        deployments: Default::default(),
    });
    watched.watch(models);
    actix_rt::spawn(write(redis.clone(), rx));
    actix_rt::spawn(poll(redis, watched.clone()));
    watched
}

fn table(redis: &Redis) -> String {
    redis.key("health", "deployments")
}

fn probe_key(redis: &Redis, id: &str) -> String {
    redis.key("health", &format!("probe:{id}"))
}

/// Writes this replica's events (an event lost to an outage is lost: breakers are local too).
async fn write(redis: Arc<Redis>, mut rx: mpsc::UnboundedReceiver<HealthEvent>) {
    let cool_down = Script::new(COOL_DOWN);
    let table = table(&redis);
    while let Some(event) = rx.recv().await {
        let mut conn = redis.conn();
        match event {
            HealthEvent::Open { id, until_ms } => {
                let mut pipe = redis::pipe();
                pipe.atomic()
                    .hset(&table, &id, format!("o:{until_ms}"))
                    .del(probe_key(&redis, &id));
                redis
                    .call("health open", pipe.query_async::<()>(&mut conn))
                    .await;
            }
            HealthEvent::RateLimited { id, until_ms } => {
                let mut call = cool_down.key(&table);
                call.arg(&id).arg(until_ms);
                redis
                    .call("health cool-down", call.invoke_async::<i64>(&mut conn))
                    .await;
            }
            HealthEvent::Closed { id } => {
                let mut pipe = redis::pipe();
                pipe.atomic().hdel(&table, &id).del(probe_key(&redis, &id));
                redis
                    .call("health closed", pipe.query_async::<()>(&mut conn))
                    .await;
            }
            HealthEvent::ProbeReleased { id } => {
                redis
                    .call("health probe", conn.del::<_, ()>(probe_key(&redis, &id)))
                    .await;
            }
        }
    }
}

/// Refreshes every deployment's view of the cluster, and claims half-open probes.
async fn poll(redis: Arc<Redis>, watched: Arc<Watched>) {
    let table = table(&redis);
    let replica = ulid::Ulid::new().to_string();
    loop {
        tokio::time::sleep(POLL).await;
        let deployments = watched.deployments.load_full();
        let mut conn = redis.conn();
        let Some(entries) = redis
            .call(
                "health poll",
                conn.hgetall::<_, HashMap<String, String>>(&table),
            )
            .await
        else {
            // Unreachable: each replica goes by its own breakers until Redis is back.
            for d in deployments.iter() {
                d.shared.set_view(0, false);
            }
            continue;
        };
        let now_ms = unix_ms(SystemTime::now());
        for d in deployments.iter() {
            let parsed = entries.get(&d.shared.id).and_then(|v| {
                let (kind, until) = v.split_once(':')?;
                Some((kind == "o", until.parse::<u64>().ok()?))
            });
            match parsed {
                None => d.shared.set_view(0, false),
                Some((false, until)) => d
                    .shared
                    .set_view(if until > now_ms { until } else { 0 }, false),
                Some((true, until)) => {
                    d.shared.set_view(until, true);
                    if until <= now_ms {
                        claim_probe(&redis, &replica, d, now_ms).await;
                    }
                }
            }
        }
    }
}

/// Half-open cluster-wide: the first replica to `SET NX` the probe key may send the probe.
async fn claim_probe(redis: &Arc<Redis>, replica: &str, d: &Deployment, now_ms: u64) {
    let mut conn = redis.conn();
    let key = probe_key(redis, &d.shared.id);
    let claim = redis::cmd("SET")
        .arg(&key)
        .arg(replica)
        .arg("NX")
        .arg("PX")
        .arg(PROBE_TTL.as_millis() as u64)
        .to_owned();
    let won: Option<Option<String>> = redis
        .call("health probe", claim.query_async(&mut conn))
        .await;
    if let Some(Some(_)) = won {
        d.shared.grant_probe(now_ms + PROBE_TTL.as_millis() as u64);
    }
}
