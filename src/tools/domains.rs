//! `allowed_domains` / `blocked_domains` (messages-api.md §7.1): entries have no scheme, match
//! their subdomains, and may carry a path prefix (`example.com/blog`).

/// One validated entry: a lower-case host and an optional path prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainRule {
    pub host: String,
    pub path: Option<String>,
}

impl DomainRule {
    /// Parses an entry; `Err` says why it is refused.
    pub fn parse(entry: &str) -> Result<Self, &'static str> {
        let entry = entry.trim();
        if entry.is_empty() {
            return Err("must not be empty");
        }
        if entry.contains("://") {
            return Err("must be a domain without a scheme");
        }
        if entry.len() > 512 || entry.chars().any(|c| c.is_whitespace()) {
            return Err("must be a domain like example.com");
        }
        let (host, path) = match entry.find('/') {
            Some(i) => (&entry[..i], Some(&entry[i..])),
            None => (entry, None),
        };
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        if host.is_empty()
            || !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        {
            return Err("must be a domain like example.com");
        }
        Ok(Self {
            host,
            path: path.filter(|p| *p != "/").map(str::to_string),
        })
    }

    /// `host` is the rule's host or one of its subdomains, and `path` starts with its prefix.
    pub fn matches(&self, host: &str, path: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let host_ok = host == self.host
            || (host.len() > self.host.len()
                && host.ends_with(&self.host)
                && host.as_bytes()[host.len() - self.host.len() - 1] == b'.');
        host_ok && self.path.as_deref().is_none_or(|p| path.starts_with(p))
    }
}

/// A domain policy: an allow-list, a deny-list, or neither (they are mutually exclusive).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DomainFilter {
    pub allowed: Vec<DomainRule>,
    pub blocked: Vec<DomainRule>,
}

impl DomainFilter {
    pub fn is_empty(&self) -> bool {
        self.allowed.is_empty() && self.blocked.is_empty()
    }

    /// Whether a URL passes the policy. Unparseable URLs never pass a non-empty policy.
    pub fn permits_url(&self, url: &str) -> bool {
        if self.is_empty() {
            return true;
        }
        match url::Url::parse(url) {
            Ok(u) => match u.host_str() {
                Some(h) => self.permits(h.trim_matches(|c| c == '[' || c == ']'), u.path()),
                None => false,
            },
            Err(_) => false,
        }
    }

    pub fn permits(&self, host: &str, path: &str) -> bool {
        if !self.allowed.is_empty() && !self.allowed.iter().any(|r| r.matches(host, path)) {
            return false;
        }
        !self.blocked.iter().any(|r| r.matches(host, path))
    }

    /// The hosts of the allow-list, for engines that filter server-side.
    pub fn allowed_hosts(&self) -> Vec<String> {
        self.allowed.iter().map(|r| r.host.clone()).collect()
    }

    pub fn blocked_hosts(&self) -> Vec<String> {
        self.blocked.iter().map(|r| r.host.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(s: &str) -> DomainRule {
        DomainRule::parse(s).unwrap()
    }

    #[test]
    fn parse_table() {
        assert_eq!(
            rule("Example.COM."),
            DomainRule {
                host: "example.com".into(),
                path: None
            }
        );
        assert_eq!(rule("example.com/blog").path.as_deref(), Some("/blog"));
        assert_eq!(rule("example.com/").path, None);
        for bad in [
            "",
            "  ",
            "https://example.com",
            "exa mple.com",
            "/path",
            "ex@mple.com",
        ] {
            assert!(DomainRule::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn subdomains_match_but_lookalikes_do_not() {
        let r = rule("example.com");
        assert!(r.matches("example.com", "/"));
        assert!(r.matches("www.example.com", "/"));
        assert!(r.matches("a.b.EXAMPLE.com.", "/x"));
        assert!(!r.matches("badexample.com", "/"));
        assert!(!r.matches("example.com.evil.org", "/"));
        assert!(!r.matches("com", "/"));
        let p = rule("example.com/docs");
        assert!(p.matches("example.com", "/docs/intro"));
        assert!(!p.matches("example.com", "/blog"));
    }

    #[test]
    fn filters() {
        let allow = DomainFilter {
            allowed: vec![rule("example.com")],
            blocked: vec![],
        };
        assert!(allow.permits_url("https://docs.example.com/a"));
        assert!(!allow.permits_url("https://other.org/"));
        assert!(!allow.permits_url("not a url"));
        let block = DomainFilter {
            allowed: vec![],
            blocked: vec![rule("spam.org")],
        };
        assert!(block.permits_url("https://example.com/"));
        assert!(!block.permits_url("http://www.spam.org/x"));
        assert!(DomainFilter::default().permits_url("anything"));
    }
}
