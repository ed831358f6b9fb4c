//! The streamed tool-argument guard: never panics; the verdict and the safe length do not depend
//! on how the text is split; a complete JSON object is accepted, and what it calls complete
//! serde_json parses. The first byte chooses a split point; the rest is the text.
#![no_main]

use aigw::protocol::translate::json_prefix::JsonPrefix;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let [a, text @ ..] = input else {
        return;
    };
    let mut whole = JsonPrefix::new();
    let r_whole = whole.feed(text);

    let i = (*a as usize).min(text.len());
    let mut split = JsonPrefix::new();
    let r_split = split.feed(&text[..i]).and_then(|()| split.feed(&text[i..]));
    assert_eq!(r_whole, r_split, "split at {i}");
    assert_eq!(whole.safe_len(), split.safe_len());
    assert_eq!(whole.is_complete(), split.is_complete());

    let accepted = match r_whole {
        Ok(()) => text.len(),
        Err(at) => at.0,
    };
    assert!(whole.safe_len() <= accepted);
    // Once failed, it stays failed.
    if r_whole.is_err() {
        assert!(whole.feed(b" ").is_err());
    }

    // Arguments arrive as JSON strings, so only UTF-8 text is compared with serde_json.
    let Ok(s) = std::str::from_utf8(text) else {
        return;
    };
    let parsed = serde_json::from_str::<serde_json::Value>(s);
    if let Ok(v) = &parsed {
        if v.is_object() {
            assert!(whole.is_complete(), "serde_json parses {s:?}");
        }
    }
    // serde_json stops at 128 levels of nesting; the guard has no depth limit.
    let depth = s.bytes().filter(|b| matches!(b, b'{' | b'[')).count();
    if whole.is_complete() && depth < 128 {
        assert!(
            parsed.as_ref().is_ok_and(|v| v.is_object()),
            "complete but not an object: {s:?}: {parsed:?}"
        );
    }
});
