//! Per-key limits shared by every replica: one Lua script ([`SCRIPT`], loaded once, then
//! `EVALSHA`) takes a GCRA cell (`requests_per_minute`), reserves the token estimate
//! (`tokens_per_minute`) and leases a concurrency slot (`max_concurrent`) in one atomic call.
//! Usage is reconciled with a `debit`; held slots are renewed in the background every third of
//! `lease_secs` and released when the request ends, so a replica that dies leaks its slots for
//! at most `lease_secs`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use redis::Script;

use super::Redis;
use crate::api::auth::ApiKey;
use crate::ratelimit::{push_headers, Admission, ConcurrencyPermit, LimitHeaders, Refusal};

pub const SCRIPT: &str = include_str!("admit.lua");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Admit,
    Request,
    Debit,
    Tokens,
    Renew,
    Release,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Self::Admit => "admit",
            Self::Request => "request",
            Self::Debit => "debit",
            Self::Tokens => "tokens",
            Self::Renew => "renew",
            Self::Release => "release",
        }
    }
}

/// What the script answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Answer {
    admitted: bool,
    /// 0 none, 1 `max_concurrent`, 2 `requests_per_minute`, 3 `tokens_per_minute`.
    refused_by: i64,
    wait_ms: i64,
    rpm_remaining: i64,
    rpm_until_full_ms: i64,
    tpm_balance: i64,
}

impl Answer {
    fn parse(v: &[i64]) -> Option<Self> {
        let [admitted, refused_by, wait_ms, rpm_remaining, rpm_until_full_ms, tpm_balance] = *v
        else {
            return None;
        };
        Some(Self {
            admitted: admitted == 1,
            refused_by,
            wait_ms,
            rpm_remaining,
            rpm_until_full_ms,
            tpm_balance,
        })
    }

    /// The `anthropic-ratelimit-*` headers for the shared state of `key`.
    fn headers(&self, key: &ApiKey, tokens: bool) -> LimitHeaders {
        let mut headers = Vec::new();
        let l = &key.limits;
        if l.requests_per_minute > 0 {
            let remaining = if self.admitted || self.refused_by == 3 {
                self.rpm_remaining.max(0) as u64
            } else {
                0
            };
            let until_full = Duration::from_millis(self.rpm_until_full_ms.max(0) as u64);
            push_headers(
                &mut headers,
                "requests",
                u64::from(l.requests_per_minute),
                remaining,
                until_full,
            );
        }
        if tokens && l.tokens_per_minute > 0 {
            let limit = l.tokens_per_minute;
            let per_sec = limit as f64 / 60.0;
            let until_full = ((limit as f64 - self.tpm_balance as f64) / per_sec).max(0.0);
            push_headers(
                &mut headers,
                "tokens",
                limit,
                self.tpm_balance.max(0) as u64,
                Duration::from_secs_f64(until_full),
            );
        }
        headers
    }

    fn refusal(&self, key: &ApiKey) -> Refusal {
        let wait = Duration::from_millis(self.wait_ms.max(1) as u64);
        let (limit, headers) = match self.refused_by {
            1 => ("max_concurrent", Vec::new()),
            2 => ("requests_per_minute", self.headers(key, false)),
            _ => ("tokens_per_minute", self.headers(key, true)),
        };
        Refusal::new(limit, wait, headers)
    }
}

pub struct SharedLimits {
    redis: Arc<Redis>,
    script: Script,
    /// Names this replica's slots apart from the others'.
    replica: String,
    next_slot: AtomicU64,
    /// Slots held by requests running here (slot id → key name), renewed in the background.
    held: DashMap<String, String>,
    /// The token balance Redis last reported per key: nested calls check it without a round
    /// trip.
    balances: DashMap<String, i64>,
}

impl SharedLimits {
    /// Starts the lease renewal task. Must run inside an actix system.
    pub fn start(redis: Arc<Redis>) -> Arc<Self> {
        let limits = Arc::new(Self {
            redis,
            script: Script::new(SCRIPT),
            replica: ulid::Ulid::new().to_string(),
            next_slot: AtomicU64::new(0),
            held: DashMap::new(),
            balances: DashMap::new(),
        });
        let weak = Arc::downgrade(&limits);
        let every = (limits.redis.lease / 3).max(Duration::from_millis(100));
        actix_rt::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(limits) = weak.upgrade() else { return };
                limits.renew().await;
            }
        });
        limits
    }

    pub fn redis(&self) -> &Arc<Redis> {
        &self.redis
    }

    /// One script call for `key`. `None`: Redis is unavailable.
    async fn run(&self, key: &ApiKey, op: Op, amount: i64, slots: &[&str]) -> Option<Answer> {
        let r = &self.redis;
        let l = &key.limits;
        let mut call = self.script.key(r.key(&key.name, "rpm"));
        call.key(r.key(&key.name, "tpm"))
            .key(r.key(&key.name, "slots"))
            .arg(op.as_str())
            .arg(l.requests_per_minute)
            .arg(l.tokens_per_minute)
            .arg(l.max_concurrent)
            .arg(amount)
            .arg(r.lease.as_millis() as u64);
        for s in slots {
            call.arg(*s);
        }
        let mut conn = r.conn();
        let answer: Vec<i64> = r.call(op.as_str(), call.invoke_async(&mut conn)).await?;
        let answer = Answer::parse(&answer)?;
        if l.tokens_per_minute > 0 && matches!(op, Op::Admit | Op::Debit | Op::Tokens) {
            self.balances.insert(key.name.clone(), answer.tpm_balance);
        }
        Some(answer)
    }

    /// Admission by every limit of the key. `None`: Redis is unavailable.
    pub async fn admit(
        self: &Arc<Self>,
        key: &Arc<ApiKey>,
        estimate: u64,
    ) -> Option<Result<Admission, Refusal>> {
        let slot = (key.limits.max_concurrent > 0).then(|| {
            let n = self.next_slot.fetch_add(1, Ordering::Relaxed);
            format!("{}:{n}", self.replica)
        });
        // Held before the call: a renewal racing the admission must not miss it.
        if let Some(id) = &slot {
            self.held.insert(id.clone(), key.name.clone());
        }
        let ids: Vec<&str> = slot.as_deref().into_iter().collect();
        let answer = self.run(key, Op::Admit, estimate as i64, &ids).await;
        let admitted = answer.is_some_and(|a| a.admitted);
        if !admitted {
            if let Some(id) = &slot {
                self.held.remove(id);
            }
        }
        let answer = answer?;
        if !answer.admitted {
            return Some(Err(answer.refusal(key)));
        }
        let permit = slot.map(|id| {
            ConcurrencyPermit::shared(SharedSlot {
                limits: self.clone(),
                key: key.clone(),
                id,
            })
        });
        Some(Ok(Admission {
            permit,
            headers: answer.headers(key, true),
        }))
    }

    /// One request cell only (`count_tokens`). `None`: Redis is unavailable.
    pub async fn admit_request(&self, key: &ApiKey) -> Option<Result<LimitHeaders, Refusal>> {
        if key.limits.requests_per_minute == 0 {
            return Some(Ok(Vec::new()));
        }
        let answer = self.run(key, Op::Request, 0, &[]).await?;
        Some(if answer.admitted {
            Ok(answer.headers(key, false))
        } else {
            Err(answer.refusal(key))
        })
    }

    /// Reconciles the key's shared token balance. `false`: Redis is unavailable.
    pub async fn debit(&self, key: &ApiKey, tokens: i64) -> bool {
        self.run(key, Op::Debit, tokens, &[]).await.is_some()
    }

    /// Whether the key's shared token balance was positive when Redis last said.
    pub fn tokens_available(&self, key: &ApiKey) -> bool {
        self.balances.get(&key.name).is_none_or(|b| *b > 0)
    }

    /// Refreshes the key's shared balance (for tests and nested checks after a debit).
    pub async fn refresh_tokens(&self, key: &ApiKey) -> Option<bool> {
        self.run(key, Op::Tokens, 0, &[]).await.map(|a| a.admitted)
    }

    /// Extends the lease of every slot held here: one call per key.
    async fn renew(&self) {
        let mut by_key: std::collections::HashMap<String, Vec<String>> = Default::default();
        for e in self.held.iter() {
            by_key
                .entry(e.value().clone())
                .or_default()
                .push(e.key().clone());
        }
        for (name, ids) in by_key {
            // Only the name (the hash tag) and lease matter to `renew`.
            let key = ApiKey {
                name,
                allowed_models: None,
                limits: Default::default(),
                allow_debug: false,
            };
            let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
            self.run(&key, Op::Renew, 0, &ids).await;
        }
    }
}

/// A concurrency slot leased in Redis: released when the request ends (or by lease expiry).
pub struct SharedSlot {
    limits: Arc<SharedLimits>,
    key: Arc<ApiKey>,
    id: String,
}

impl std::fmt::Debug for SharedSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SharedSlot({})", self.id)
    }
}

impl Drop for SharedSlot {
    fn drop(&mut self) {
        self.limits.held.remove(&self.id);
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return; // the lease runs out
        };
        let (limits, key, id) = (self.limits.clone(), self.key.clone(), self.id.clone());
        rt.spawn(async move {
            limits.run(&key, Op::Release, 0, &[&id]).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse_and_name_the_refusing_limit() {
        let a = Answer::parse(&[0, 2, 1500, 0, 60_000, 0]).unwrap();
        assert!(!a.admitted);
        assert!(Answer::parse(&[1, 0]).is_none());
        let key = ApiKey {
            name: "k".into(),
            allowed_models: None,
            limits: crate::config::LimitsConfig {
                requests_per_minute: 30,
                tokens_per_minute: 0,
                max_concurrent: 0,
            },
            allow_debug: false,
        };
        let r = a.refusal(&key);
        assert_eq!(r.limit, "requests_per_minute");
        assert_eq!(r.error.retry_after(), Some(Duration::from_millis(1500)));
        assert!(r
            .headers
            .contains(&("anthropic-ratelimit-requests-remaining", "0".into())));
    }
}
