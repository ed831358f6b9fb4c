//! Identifiers the gateway mints: request ids, message ids, tool-use ids.

use rand::Rng;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// `req_` + a 26-char ULID (messages-api.md §2.3).
pub fn request_id() -> String {
    let mut s = String::with_capacity(30);
    s.push_str("req_");
    s.push_str(&ulid::Ulid::new().to_string());
    s
}

/// `prefix` + `n` random base62 characters.
pub fn base62_id(prefix: &str, n: usize) -> String {
    let mut rng = rand::rng();
    let mut s = String::with_capacity(prefix.len() + n);
    s.push_str(prefix);
    for _ in 0..n {
        s.push(BASE62[rng.random_range(0..62)] as char);
    }
    s
}

/// `msg_` + 24 base62 characters.
pub fn message_id() -> String {
    base62_id("msg_", 24)
}

/// `toolu_` + 24 base62 characters, for tool calls an upstream left without a usable id.
pub fn tool_use_id() -> String {
    base62_id("toolu_", 24)
}

/// `srvtoolu_gw_` + 24 base62 characters: the `_gw_` marks gateway-run tool calls.
pub fn gateway_tool_use_id() -> String {
    base62_id("srvtoolu_gw_", 24)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let r = request_id();
        assert_eq!(r.len(), 30);
        assert!(r.starts_with("req_"));
        let m = message_id();
        assert_eq!(m.len(), 28);
        assert!(m[4..].bytes().all(|b| b.is_ascii_alphanumeric()));
        assert!(gateway_tool_use_id().starts_with("srvtoolu_gw_"));
        assert_ne!(message_id(), message_id());
    }
}
