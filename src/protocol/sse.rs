//! Server-sent events: an incremental parser that does not care where TCP splits the bytes, and
//! the frame encoder (`event: <name>\ndata: <json>\n\n`, messages-api.md §5.1).

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// One dispatched event. `data` lines are joined with `\n`; comments, `id` and `retry` are dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub event: Option<Bytes>,
    pub data: Bytes,
}

impl SseEvent {
    /// The event name, or `""` when the frame had no `event:` line.
    pub fn name(&self) -> &str {
        self.event
            .as_deref()
            .and_then(|e| std::str::from_utf8(e).ok())
            .unwrap_or("")
    }
}

/// A line longer than this (no terminator in sight) is a broken upstream, not a big event.
const MAX_PENDING: usize = 64 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SseOverflow;

#[derive(Default)]
pub struct SseParser {
    buf: BytesMut,
    /// The previous chunk ended in `\r`: a `\n` starting the next one belongs to it.
    skip_lf: bool,
    event: Option<Bytes>,
    data: Option<Bytes>,
    data_extra: Option<BytesMut>,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes; pushes every event completed by them onto `out`.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseOverflow> {
        let mut chunk = chunk;
        if self.skip_lf && !chunk.is_empty() {
            if chunk[0] == b'\n' {
                chunk = &chunk[1..];
            }
            self.skip_lf = false;
        }
        if chunk.is_empty() {
            return Ok(());
        }
        self.buf.extend_from_slice(chunk);
        while let Some(pos) = memchr::memchr2(b'\n', b'\r', &self.buf) {
            let line = self.buf.split_to(pos).freeze();
            let term = self.buf[0];
            self.buf.advance(1);
            if term == b'\r' {
                match self.buf.first() {
                    Some(b'\n') => self.buf.advance(1),
                    Some(_) => {}
                    None => self.skip_lf = true,
                }
            }
            self.line(line, out);
        }
        if self.buf.len() > MAX_PENDING {
            return Err(SseOverflow);
        }
        Ok(())
    }

    /// End of input: an event that lacked only its blank line is dispatched (lenient).
    pub fn finish(&mut self, out: &mut Vec<SseEvent>) {
        if !self.buf.is_empty() {
            let line = self.buf.split().freeze();
            self.line(line, out);
        }
        self.dispatch(out);
    }

    fn line(&mut self, line: Bytes, out: &mut Vec<SseEvent>) {
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        if line[0] == b':' {
            return;
        }
        let (field, value) = match memchr::memchr(b':', &line) {
            Some(i) => {
                let v = if line.get(i + 1) == Some(&b' ') {
                    i + 2
                } else {
                    i + 1
                };
                (line.slice(..i), line.slice(v..))
            }
            None => (line.clone(), Bytes::new()),
        };
        match &field[..] {
            b"event" => self.event = Some(value),
            b"data" => match (&self.data, &mut self.data_extra) {
                (None, _) => self.data = Some(value),
                (Some(first), extra @ None) => {
                    let mut joined = BytesMut::with_capacity(first.len() + value.len() + 1);
                    joined.extend_from_slice(first);
                    joined.put_u8(b'\n');
                    joined.extend_from_slice(&value);
                    *extra = Some(joined);
                }
                (Some(_), Some(joined)) => {
                    joined.put_u8(b'\n');
                    joined.extend_from_slice(&value);
                }
            },
            _ => {}
        }
    }

    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        let data = match (self.data.take(), self.data_extra.take()) {
            (_, Some(joined)) => joined.freeze(),
            (Some(d), None) => d,
            (None, None) => {
                self.event = None;
                return;
            }
        };
        out.push(SseEvent {
            event: self.event.take(),
            data,
        });
    }
}

/// `event: <name>\ndata: <data>\n\n`. `data` must be one line (compact JSON is).
pub fn encode_frame(event: &str, data: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(event.len() + data.len() + 16);
    b.extend_from_slice(b"event: ");
    b.extend_from_slice(event.as_bytes());
    b.extend_from_slice(b"\ndata: ");
    b.extend_from_slice(data);
    b.extend_from_slice(b"\n\n");
    b.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(chunks: &[&[u8]]) -> Vec<(String, String)> {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        for c in chunks {
            p.push(c, &mut out).unwrap();
        }
        p.finish(&mut out);
        out.iter()
            .map(|e| {
                (
                    e.name().to_string(),
                    String::from_utf8(e.data.to_vec()).unwrap(),
                )
            })
            .collect()
    }

    const STREAM: &[u8] = b"event: message_start\ndata: {\"a\":1}\n\n: comment\n\nevent: ping\r\ndata: {\"type\":\"ping\"}\r\n\r\ndata: x\ndata: y\n\nid: 3\nretry: 10\nevent: e\rdata:nospace\r\r";

    #[test]
    fn parses_every_line_ending_and_multiline_data() {
        let got = parse_all(&[STREAM]);
        assert_eq!(
            got,
            vec![
                ("message_start".into(), "{\"a\":1}".into()),
                ("ping".into(), "{\"type\":\"ping\"}".into()),
                ("".into(), "x\ny".into()),
                ("e".into(), "nospace".into()),
            ]
        );
    }

    #[test]
    fn any_split_gives_the_same_events() {
        let whole = parse_all(&[STREAM]);
        for i in 0..=STREAM.len() {
            for j in i..=STREAM.len() {
                let got = parse_all(&[&STREAM[..i], &STREAM[i..j], &STREAM[j..]]);
                assert_eq!(got, whole, "split at {i},{j}");
            }
        }
        let bytes: Vec<&[u8]> = STREAM.chunks(1).collect();
        assert_eq!(parse_all(&bytes), whole);
    }

    #[test]
    fn event_without_data_is_not_dispatched() {
        assert!(parse_all(&[b"event: x\n\n"]).is_empty());
        assert_eq!(
            parse_all(&[b"event: x\n\ndata: 1\n\n"]),
            vec![("".into(), "1".into())]
        );
    }

    #[test]
    fn trailing_event_without_blank_line_is_kept_at_eof() {
        assert_eq!(
            parse_all(&[b"data: [DONE]"]),
            vec![("".into(), "[DONE]".into())]
        );
    }

    #[test]
    fn encode() {
        assert_eq!(
            &encode_frame("ping", b"{\"type\":\"ping\"}")[..],
            b"event: ping\ndata: {\"type\":\"ping\"}\n\n"
        );
    }
}
