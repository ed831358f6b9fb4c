//! The SSE parser: never panics, and where TCP splits the bytes never changes the events.
//! The first two bytes choose two split points; the rest is the stream.
#![no_main]

use aigw::protocol::sse::{encode_frame, SseEvent, SseParser};
use libfuzzer_sys::fuzz_target;

fn parse(chunks: &[&[u8]]) -> Option<Vec<SseEvent>> {
    let mut p = SseParser::new();
    let mut out = Vec::new();
    for c in chunks {
        p.push(c, &mut out).ok()?;
    }
    p.finish(&mut out);
    Some(out)
}

fuzz_target!(|input: &[u8]| {
    let [a, b, data @ ..] = input else {
        return;
    };
    let i = (*a as usize).min(data.len());
    let j = (i + *b as usize).min(data.len());
    let whole = parse(&[data]);
    let split = parse(&[&data[..i], &data[i..j], &data[j..]]);
    assert_eq!(whole, split, "split at {i},{j}");
    let bytes: Vec<&[u8]> = data.chunks(1).collect();
    assert_eq!(whole, parse(&bytes), "byte at a time");

    for ev in whole.iter().flatten() {
        // Lines end at CR or LF, so neither can be inside a field value; data lines join with LF.
        assert!(!ev.data.contains(&b'\r'));
        if let Some(name) = &ev.event {
            assert!(!name.contains(&b'\r') && !name.contains(&b'\n'));
        }
        // A one-line event survives our own encoder.
        if !ev.data.contains(&b'\n') {
            if let Ok(name) = std::str::from_utf8(ev.event.as_deref().unwrap_or(b"")) {
                let again = parse(&[&encode_frame(name, &ev.data)]).unwrap();
                assert_eq!(again.len(), 1);
                assert_eq!(again[0].data, ev.data);
            }
        }
    }
});
