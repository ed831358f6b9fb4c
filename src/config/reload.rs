//! What a reload would change: the settings only a restart can apply, and a summary by name of
//! what differs. Keys and providers are named, their secrets only compared, never shown.

use std::fmt;

use super::Config;

/// Key paths whose new value only a restart applies (the listeners, the worker count, the
/// logging setup and the request log writer are built once at start).
pub fn restart_required(old: &Config, new: &Config) -> Vec<&'static str> {
    let (s, n) = (&old.server, &new.server);
    let (o, no) = (&old.observability, &new.observability);
    let (l, nl) = (&old.request_log, &new.request_log);
    [
        ("server.listen", s.listen != n.listen),
        ("server.workers", s.workers != n.workers),
        (
            "server.shutdown_grace_secs",
            s.shutdown_grace_secs != n.shutdown_grace_secs,
        ),
        ("server.watch_config", s.watch_config != n.watch_config),
        (
            "observability.metrics_listen",
            o.metrics_listen != no.metrics_listen,
        ),
        ("observability.log_format", o.log_format != no.log_format),
        ("observability.log_level", o.log_level != no.log_level),
        (
            "observability.otlp",
            o.otlp != no.otlp || old.secrets.otlp_headers != new.secrets.otlp_headers,
        ),
        ("request_log.enabled", l.enabled != nl.enabled),
        ("request_log.path", l.path != nl.path),
        ("request_log.batch_size", l.batch_size != nl.batch_size),
        (
            "request_log.flush_interval_ms",
            l.flush_interval_ms != nl.flush_interval_ms,
        ),
        (
            "request_log.queue_capacity",
            l.queue_capacity != nl.queue_capacity,
        ),
        (
            "request_log.retention_days",
            l.retention_days != nl.retention_days,
        ),
        ("request_log.backend", l.backend != nl.backend),
        (
            "request_log.postgres",
            l.postgres_table != nl.postgres_table
                || l.postgres_url_env != nl.postgres_url_env
                || old.secrets.postgres_url != new.secrets.postgres_url,
        ),
        // The Redis connection, its limits and health tasks are built once at start.
        (
            "cluster",
            old.cluster != new.cluster || old.secrets.redis_url != new.secrets.redis_url,
        ),
    ]
    .into_iter()
    .filter_map(|(path, differs)| differs.then_some(path))
    .collect()
}

/// Names added, removed and changed in one list of named things.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct NameDelta {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
}

impl NameDelta {
    /// `same(old, new)` says whether a name present in both is unchanged.
    fn between<T>(
        old: &[T],
        new: &[T],
        name: impl Fn(&T) -> &str,
        same: impl Fn(&T, &T) -> bool,
    ) -> Self {
        let find = |list: &[T], n: &str| list.iter().position(|t| name(t) == n);
        let mut delta = Self::default();
        for t in new {
            match find(old, name(t)) {
                None => delta.added.push(name(t).to_string()),
                Some(i) if !same(&old[i], t) => delta.changed.push(name(t).to_string()),
                Some(_) => {}
            }
        }
        for t in old {
            if find(new, name(t)).is_none() {
                delta.removed.push(name(t).to_string());
            }
        }
        delta
    }

    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

impl fmt::Display for NameDelta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (what, names) in [
            ("added", &self.added),
            ("removed", &self.removed),
            ("changed", &self.changed),
        ] {
            if names.is_empty() {
                continue;
            }
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            write!(f, "{what} {}", names.join(" "))?;
        }
        Ok(())
    }
}

/// What a valid new config changes, for the one log line of a reload.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub keys: NameDelta,
    pub models: NameDelta,
    pub providers: NameDelta,
    /// Other settings that differ, by key path.
    pub settings: Vec<&'static str>,
}

impl Changes {
    pub fn between(old: &Config, new: &Config) -> Self {
        let old_keys: Vec<_> = old.auth.keys.iter().zip(&old.secrets.key_hashes).collect();
        let new_keys: Vec<_> = new.auth.keys.iter().zip(&new.secrets.key_hashes).collect();
        let keys = NameDelta::between(
            &old_keys,
            &new_keys,
            |(k, _)| &k.name,
            |(a, ha), (b, hb)| a == b && ha == hb && old.limits == new.limits,
        );
        let models = NameDelta::between(&old.models, &new.models, |m| &m.id, |a, b| a == b);
        let providers = NameDelta::between(
            &old.providers,
            &new.providers,
            |p| &p.name,
            |a, b| {
                a == b
                    && old.secrets.provider_keys.get(&a.name)
                        == new.secrets.provider_keys.get(&b.name)
            },
        );
        let settings = [
            (
                "server.max_body_bytes",
                old.server.max_body_bytes != new.server.max_body_bytes,
            ),
            ("auth.disabled", old.auth.disabled != new.auth.disabled),
            ("limits", old.limits != new.limits),
            ("defaults", old.defaults != new.defaults),
            ("retry", old.retry != new.retry),
            ("timeouts", old.timeouts != new.timeouts),
            (
                "circuit_breaker",
                old.circuit_breaker != new.circuit_breaker,
            ),
            ("stream", old.stream != new.stream),
            (
                "tools",
                old.tools != new.tools || old.secrets.engine_keys != new.secrets.engine_keys,
            ),
            (
                "request_log.log_bodies",
                old.request_log.log_bodies != new.request_log.log_bodies,
            ),
        ]
        .into_iter()
        .filter_map(|(path, differs)| differs.then_some(path))
        .collect();
        Self {
            keys,
            models,
            providers,
            settings,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
            && self.models.is_empty()
            && self.providers.is_empty()
            && self.settings.is_empty()
    }
}

impl fmt::Display for Changes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("nothing changed");
        }
        let mut parts = Vec::new();
        for (what, delta) in [
            ("keys", &self.keys),
            ("models", &self.models),
            ("providers", &self.providers),
        ] {
            if !delta.is_empty() {
                parts.push(format!("{what}: {delta}"));
            }
        }
        if !self.settings.is_empty() {
            parts.push(format!("settings: {}", self.settings.join(" ")));
        }
        f.write_str(&parts.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        let text = format!(
            r#"
            [[auth.keys]]
            name = "a"
            secret_env = "K_A"
            [[providers]]
            name = "p"
            kind = "openai"
            base_url = "http://127.0.0.1:1"
            api_key_env = "P_KEY"
            [[models]]
            id = "m"
            deployments = [{{ provider = "p", model = "x" }}]
            {extra}
            "#
        );
        let env = |v: &str| Some(format!("secret-of-{v}"));
        Config::from_toml_with_env(&text, &env).unwrap()
    }

    #[test]
    fn names_what_changed_and_never_a_secret() {
        let old = config("");
        let new = config(
            r#"
            [[auth.keys]]
            name = "b"
            secret_env = "K_B"
            [[models]]
            id = "n"
            deployments = [{ provider = "p", model = "y" }]
            [limits]
            requests_per_minute = 5
            "#,
        );
        let changes = Changes::between(&old, &new);
        assert_eq!(changes.keys.added, ["b"]);
        // A default limit applies to every key that sets none: `a` changed.
        assert_eq!(changes.keys.changed, ["a"]);
        assert_eq!(changes.models.added, ["n"]);
        assert!(changes.providers.is_empty());
        assert_eq!(changes.settings, ["limits"]);
        let line = changes.to_string();
        assert_eq!(
            line,
            "keys: added b, changed a; models: added n; settings: limits"
        );
        assert!(!line.contains("secret-of"));
        assert!(Changes::between(&old, &config("")).is_empty());
        let back = Changes::between(&new, &old);
        assert_eq!(back.keys.removed, ["b"]);
        assert_eq!(back.models.removed, ["n"]);
    }

    #[test]
    fn a_provider_key_change_is_a_provider_change() {
        let old = config("");
        let mut new = config("");
        new.secrets
            .provider_keys
            .insert("p".into(), super::super::Secret::new("rotated".into()));
        let changes = Changes::between(&old, &new);
        assert_eq!(changes.providers.changed, ["p"]);
        assert_eq!(changes.to_string(), "providers: changed p");
    }

    #[test]
    fn restart_only_settings_are_named() {
        let old = config("");
        assert!(restart_required(&old, &config("")).is_empty());
        let new = config(
            "[server]\nlisten = \"127.0.0.1:9\"\nworkers = 3\n[request_log]\npath = \"x.sqlite\"\n[observability]\nmetrics_listen = \"127.0.0.1:9100\"\n",
        );
        assert_eq!(
            restart_required(&old, &new),
            [
                "server.listen",
                "server.workers",
                "observability.metrics_listen",
                "request_log.path"
            ]
        );
    }
}
