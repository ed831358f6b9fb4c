//! An expiring credential shared by every worker: read without waiting while it is fresh,
//! refreshed single-flight (one fetch however many requests wait) once it is within `margin` of
//! its expiry. A credential without an expiry never refreshes.

use std::future::Future;
use std::sync::RwLock;
use std::time::{Duration, SystemTime};

pub struct TokenCache<T> {
    current: RwLock<Option<(T, Option<SystemTime>)>>,
    refresh: tokio::sync::Mutex<()>,
    margin: Duration,
}

impl<T: Clone> TokenCache<T> {
    pub fn new(margin: Duration) -> Self {
        Self {
            current: RwLock::new(None),
            refresh: tokio::sync::Mutex::new(()),
            margin,
        }
    }

    fn fresh(&self) -> Option<T> {
        let guard = self.current.read().unwrap_or_else(|p| p.into_inner());
        match &*guard {
            Some((v, None)) => Some(v.clone()),
            Some((v, Some(expiry))) if SystemTime::now() + self.margin < *expiry => Some(v.clone()),
            _ => None,
        }
    }

    /// Forgets the value: the upstream refused it before its expiry (revoked, rotated).
    pub fn clear(&self) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// The cached value, or the one `fetch` returns (with its expiry) when none is fresh.
    /// A failed fetch is not cached: the next caller tries again.
    pub async fn get<F, Fut, E>(&self, fetch: F) -> Result<T, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(T, Option<SystemTime>), E>>,
    {
        if let Some(v) = self.fresh() {
            return Ok(v);
        }
        // No std lock is held across this await: waiters queue on the async mutex only.
        let _single = self.refresh.lock().await;
        if let Some(v) = self.fresh() {
            return Ok(v);
        }
        let (value, expiry) = fetch().await?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Some((value.clone(), expiry));
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[actix_rt::test]
    async fn one_refresh_for_many_waiters_and_again_near_expiry() {
        let cache = Arc::new(TokenCache::<String>::new(Duration::from_secs(60)));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (open, gate) = tokio::sync::watch::channel(false);
        let mut waiters = Vec::new();
        for _ in 0..8 {
            let (cache, fetches, mut gate) = (cache.clone(), fetches.clone(), gate.clone());
            waiters.push(actix_rt::spawn(async move {
                cache
                    .get(|| async move {
                        fetches.fetch_add(1, Ordering::SeqCst);
                        let _ = gate.wait_for(|o| *o).await;
                        Ok::<_, ()>((
                            "t1".to_string(),
                            Some(SystemTime::now() + Duration::from_secs(3600)),
                        ))
                    })
                    .await
            }));
        }
        tokio::task::yield_now().await;
        open.send(true).unwrap();
        for w in waiters {
            assert_eq!(w.await.unwrap().unwrap(), "t1");
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1);

        // Within the margin of its expiry a token is refreshed; errors are not cached.
        let near = TokenCache::<u32>::new(Duration::from_secs(60));
        let soon = || async { Ok::<_, ()>((1, Some(SystemTime::now() + Duration::from_secs(30)))) };
        near.get(soon).await.unwrap();
        assert_eq!(
            near.get(|| async { Err::<(u32, _), _>("down") }).await,
            Err("down")
        );
        assert_eq!(
            near.get(|| async { Ok::<_, ()>((2, None)) }).await.unwrap(),
            2
        );
        assert_eq!(
            near.get(|| async { Ok::<_, ()>((3, None)) }).await.unwrap(),
            2,
            "a value without expiry stays"
        );
        near.clear();
        assert_eq!(
            near.get(|| async { Ok::<_, ()>((4, None)) }).await.unwrap(),
            4,
            "until it is cleared"
        );
    }
}
