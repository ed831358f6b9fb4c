//! An incremental validator for streamed tool-call arguments (translation.md §5 step 5).
//!
//! The SDKs re-parse the concatenated `input_json_delta`s after every delta with a partial JSON
//! parser (Python: jiter), which raises as soon as the text stops being a prefix of a JSON object
//! (messages-api.md §5.4 item 7). jiter also rejects some prefixes that are valid in principle: a
//! text ending inside an escape (`"\u00`), a high surrogate without its low half, or a number cut
//! after `-`, `.` or `e`. So the validator reports, besides validity, how much of the text is safe
//! to send now; the held tail goes out with the next fragment that completes it.
//!
//! Each byte is looked at once, so a long argument string costs O(n) overall.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Container {
    Object,
    Array,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Num {
    Minus,
    Zero,
    Int,
    Dot,
    Frac,
    Exp,
    ExpSign,
    ExpDigits,
}

impl Num {
    /// A number may end here.
    fn complete(self) -> bool {
        matches!(self, Self::Zero | Self::Int | Self::Frac | Self::ExpDigits)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the top-level value, which must be an object.
    Start,
    /// After `:` or `,` in an array: a value.
    Value,
    /// After `[`: a value or `]`.
    ValueOrEnd,
    /// After `{`: a key or `}`.
    KeyOrEnd,
    /// After `,` in an object: a key.
    Key,
    Colon,
    CommaOrEnd,
    Str {
        key: bool,
    },
    Escape {
        key: bool,
    },
    /// `\u` and `n` hex digits so far; `code` is their value.
    Unicode {
        key: bool,
        n: u8,
        code: u16,
    },
    Number(Num),
    /// Inside `true`, `false` or `null`: the bytes still expected.
    Literal(&'static [u8]),
    /// The top-level object is closed: only whitespace may follow.
    Done,
}

/// Validates a growing JSON object text. See the module docs.
#[derive(Debug, Clone)]
pub struct JsonPrefix {
    stack: Vec<Container>,
    state: State,
    len: usize,
    safe: usize,
    /// A high-surrogate escape is waiting for its low half; nothing from here is safe yet.
    surrogate: bool,
    failed: bool,
}

impl Default for JsonPrefix {
    fn default() -> Self {
        Self::new()
    }
}

/// The text stopped being a prefix of a JSON object at this byte offset (from the start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidAt(pub usize);

impl JsonPrefix {
    pub fn new() -> Self {
        Self {
            stack: Vec::new(),
            state: State::Start,
            len: 0,
            safe: 0,
            surrogate: false,
            failed: false,
        }
    }

    /// Feeds the next fragment. After an error the validator stays failed.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), InvalidAt> {
        if self.failed {
            return Err(InvalidAt(self.len));
        }
        for &b in bytes {
            if !self.step(b) {
                self.failed = true;
                return Err(InvalidAt(self.len));
            }
            self.len += 1;
            if self.settled() {
                self.safe = self.len;
            }
        }
        Ok(())
    }

    /// How many bytes from the start may be sent: all but an unfinished escape, surrogate pair,
    /// number or literal at the end.
    pub fn safe_len(&self) -> usize {
        self.safe
    }

    /// The text is one complete JSON object (plus whitespace).
    pub fn is_complete(&self) -> bool {
        !self.failed && self.state == State::Done
    }

    fn settled(&self) -> bool {
        !self.surrogate
            && !matches!(
                self.state,
                State::Escape { .. } | State::Unicode { .. } | State::Number(_) | State::Literal(_)
            )
    }

    fn after_value(&mut self) {
        self.state = if self.stack.is_empty() {
            State::Done
        } else {
            State::CommaOrEnd
        };
    }

    /// Consumes one byte; false when it cannot continue a JSON object.
    fn step(&mut self, b: u8) -> bool {
        let ws = matches!(b, b' ' | b'\t' | b'\n' | b'\r');
        match self.state {
            State::Start => match b {
                _ if ws => true,
                b'{' => {
                    self.stack.push(Container::Object);
                    self.state = State::KeyOrEnd;
                    true
                }
                _ => false,
            },
            State::Value | State::ValueOrEnd => {
                if ws {
                    return true;
                }
                if b == b']' && self.state == State::ValueOrEnd {
                    return self.close(Container::Array);
                }
                self.start_value(b)
            }
            State::KeyOrEnd | State::Key => match b {
                _ if ws => true,
                b'"' => {
                    self.state = State::Str { key: true };
                    true
                }
                b'}' if self.state == State::KeyOrEnd => self.close(Container::Object),
                _ => false,
            },
            State::Colon => match b {
                _ if ws => true,
                b':' => {
                    self.state = State::Value;
                    true
                }
                _ => false,
            },
            State::CommaOrEnd => match (b, self.stack.last()) {
                _ if ws => true,
                (b',', Some(Container::Object)) => {
                    self.state = State::Key;
                    true
                }
                (b',', Some(Container::Array)) => {
                    self.state = State::Value;
                    true
                }
                (b'}', _) => self.close(Container::Object),
                (b']', _) => self.close(Container::Array),
                _ => false,
            },
            State::Str { key } => match b {
                // A high surrogate must be followed by its low half, not by the string's end.
                b'"' if self.surrogate => false,
                b'"' => {
                    if key {
                        self.state = State::Colon;
                    } else {
                        self.after_value();
                    }
                    true
                }
                b'\\' => {
                    self.state = State::Escape { key };
                    true
                }
                0x00..=0x1f => false,
                _ => !self.surrogate,
            },
            State::Escape { key } => match b {
                b'u' => {
                    self.state = State::Unicode { key, n: 0, code: 0 };
                    true
                }
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' if !self.surrogate => {
                    self.state = State::Str { key };
                    true
                }
                _ => false,
            },
            State::Unicode { key, n, code } => {
                let Some(d) = (b as char).to_digit(16) else {
                    return false;
                };
                let code = code << 4 | d as u16;
                if n < 3 {
                    self.state = State::Unicode {
                        key,
                        n: n + 1,
                        code,
                    };
                    return true;
                }
                self.state = State::Str { key };
                match (self.surrogate, code) {
                    (false, 0xD800..=0xDBFF) => self.surrogate = true,
                    (false, 0xDC00..=0xDFFF) => return false,
                    (true, 0xDC00..=0xDFFF) => self.surrogate = false,
                    (true, _) => return false,
                    (false, _) => {}
                }
                true
            }
            State::Number(n) => {
                let next = match (n, b) {
                    (Num::Minus, b'0') => Some(Num::Zero),
                    (Num::Minus, b'1'..=b'9') => Some(Num::Int),
                    (Num::Int, b'0'..=b'9') => Some(Num::Int),
                    (Num::Zero | Num::Int, b'.') => Some(Num::Dot),
                    (Num::Dot | Num::Frac, b'0'..=b'9') => Some(Num::Frac),
                    (Num::Zero | Num::Int | Num::Frac, b'e' | b'E') => Some(Num::Exp),
                    (Num::Exp, b'+' | b'-') => Some(Num::ExpSign),
                    (Num::Exp | Num::ExpSign | Num::ExpDigits, b'0'..=b'9') => Some(Num::ExpDigits),
                    _ => None,
                };
                match next {
                    Some(n) => {
                        self.state = State::Number(n);
                        true
                    }
                    // The number ended; this byte belongs to what follows it.
                    None if n.complete() => {
                        self.after_value();
                        self.step(b)
                    }
                    None => false,
                }
            }
            State::Literal(rest) => {
                if rest.first() != Some(&b) {
                    return false;
                }
                if rest.len() == 1 {
                    self.after_value();
                } else {
                    self.state = State::Literal(&rest[1..]);
                }
                true
            }
            State::Done => ws,
        }
    }

    fn start_value(&mut self, b: u8) -> bool {
        self.state = match b {
            b'{' => {
                self.stack.push(Container::Object);
                State::KeyOrEnd
            }
            b'[' => {
                self.stack.push(Container::Array);
                State::ValueOrEnd
            }
            b'"' => State::Str { key: false },
            b'-' => State::Number(Num::Minus),
            b'0' => State::Number(Num::Zero),
            b'1'..=b'9' => State::Number(Num::Int),
            b't' => State::Literal(b"rue"),
            b'f' => State::Literal(b"alse"),
            b'n' => State::Literal(b"ull"),
            _ => return false,
        };
        true
    }

    fn close(&mut self, c: Container) -> bool {
        if self.stack.pop() != Some(c) {
            return false;
        }
        self.after_value();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> (Result<(), InvalidAt>, usize, bool) {
        let mut p = JsonPrefix::new();
        let r = p.feed(text.as_bytes());
        (r, p.safe_len(), p.is_complete())
    }

    #[test]
    fn valid_prefixes_and_their_safe_length() {
        let cases: &[(&str, usize, bool)] = &[
            ("", 0, false),
            ("  {", 3, false),
            ("{\"ci", 4, false),
            ("{\"city\": \"Ly", 12, false),
            ("{\"a\": \"c\\", 8, false),
            ("{\"a\": \"c\\u00", 8, false),
            ("{\"a\": \"c\\u00e9", 14, false),
            ("{\"a\": \"\\ud83d", 7, false),
            ("{\"a\": \"\\ud83d\\ude00", 19, false),
            ("{\"a\": [1", 7, false),
            ("{\"a\": [1, 2.5e-3]", 17, false),
            ("{\"a\": -", 6, false),
            ("{\"a\": tr", 6, false),
            ("{\"a\": true", 10, false),
            ("{\"a\": null}", 11, true),
            ("{\"a\": {\"b\": []}} \n", 18, true),
            ("{}", 2, true),
        ];
        for (text, safe, complete) in cases {
            let (r, s, c) = check(text);
            assert_eq!(r, Ok(()), "{text:?}");
            assert_eq!(s, *safe, "{text:?}");
            assert_eq!(c, *complete, "{text:?}");
        }
    }

    #[test]
    fn invalid_texts_name_the_offending_byte() {
        let cases: &[(&str, usize)] = &[
            ("[1]", 0),
            ("\"x\"", 0),
            ("{\"a\" 1", 5),
            ("{\"a\": 01", 7),
            ("{\"a\": tx", 7),
            ("{\"a\": \"\\x", 8),
            ("{\"a\": \"\\ude00", 12),
            ("{\"a\": \"\\ud83dx", 13),
            ("{\"a\": 1,}", 8),
            ("{\"a\": 1]", 7),
            ("{}{}", 2),
            ("{\"a\": \"\n", 7),
            ("{,", 1),
        ];
        for (text, at) in cases {
            assert_eq!(check(text).0, Err(InvalidAt(*at)), "{text:?}");
        }
    }

    /// Found by `fuzz/` (json_prefix): a string closed right after a high surrogate was called a
    /// complete object, which serde_json and the SDKs' parser refuse (a lone surrogate).
    #[test]
    fn a_string_may_not_end_on_a_high_surrogate() {
        assert_eq!(check("{\"a\":\"\\ud800\"}").0, Err(InvalidAt(12)));
        assert_eq!(check("{\"\\ud800\":1}").0, Err(InvalidAt(8)));
        assert!(check("{\"a\":\"\\ud800\\udc00\"}").2);
    }

    #[test]
    fn fragments_fed_one_by_one_agree_with_the_whole() {
        let text =
            "{\"city\": \"Lyon\", \"unit\": \"c\\u00e9lsius\", \"days\": [1, 2], \"x\": false}";
        for split in 0..=text.len() {
            let mut p = JsonPrefix::new();
            p.feed(&text.as_bytes()[..split]).unwrap();
            let safe = p.safe_len();
            assert!(safe <= split);
            // What is safe is itself a prefix the validator accepts, and parses once closed.
            p.feed(&text.as_bytes()[split..]).unwrap();
            assert!(p.is_complete());
        }
        serde_json::from_str::<serde_json::Value>(text).unwrap();
    }
}
