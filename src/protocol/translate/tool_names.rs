//! Tool names longer than OpenAI's 64-character limit (translation.md §1): the first 55
//! characters + `_` + 8 hex characters of SHA-256(name). The map lives for one attempt, so the
//! names an upstream answers with are mapped back to the client's.

use std::borrow::Cow;

use sha2::{Digest, Sha256};

/// OpenAI's limit on function names.
pub const MAX_NAME: usize = 64;
const KEPT_PREFIX: usize = 55;

/// Shortened names of one request: `(upstream name, client name)`. Empty for most requests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ToolNameMap {
    pairs: Vec<(String, String)>,
}

impl ToolNameMap {
    /// The name to send upstream, recording the pair when it had to be shortened.
    pub fn to_upstream<'a>(&mut self, name: &'a str) -> Cow<'a, str> {
        if name.chars().count() <= MAX_NAME {
            return Cow::Borrowed(name);
        }
        let short = shorten(name);
        if !self.pairs.iter().any(|(s, _)| *s == short) {
            self.pairs.push((short.clone(), name.to_string()));
        }
        Cow::Owned(short)
    }

    /// The client's name for a name the upstream used.
    pub fn to_client<'a>(&'a self, name: &'a str) -> &'a str {
        self.pairs
            .iter()
            .find(|(s, _)| s == name)
            .map_or(name, |(_, long)| long.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }
}

fn shorten(name: &str) -> String {
    let digest = Sha256::digest(name.as_bytes());
    let mut out: String = name.chars().take(KEPT_PREFIX).collect();
    out.push('_');
    out.push_str(&hex::encode(&digest[..4]));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_pass_and_long_names_round_trip() {
        let mut m = ToolNameMap::default();
        assert_eq!(m.to_upstream("get_weather"), "get_weather");
        assert!(m.is_empty());
        let long = "a_very_long_tool_name_that_goes_on_and_on_past_the_openai_limit_of_64";
        let short = m.to_upstream(long).into_owned();
        assert_eq!(short.len(), 64);
        assert!(short.starts_with(&long[..55]));
        assert_eq!(&short[55..56], "_");
        assert!(short[56..].bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(m.to_upstream(long), short, "stable");
        assert_eq!(m.to_client(&short), long);
        assert_eq!(m.to_client("other"), "other");
        let exactly_64 = "x".repeat(64);
        assert_eq!(m.to_upstream(&exactly_64), exactly_64);
    }
}
