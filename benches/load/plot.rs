//! The soak's RSS curve as a PNG: a line over time with axis ticks, labelled in a built-in 5×7
//! pixel font (digits and the few letters the labels need), so no font or system library is
//! needed. The `png` crate encodes it.

use std::path::Path;
use std::time::Duration;

use crate::soak::Sample;

const W: usize = 900;
const H: usize = 420;
/// Plot area inside the margins.
const LEFT: usize = 70;
const RIGHT: usize = 20;
const TOP: usize = 30;
const BOTTOM: usize = 50;

type Rgb = [u8; 3];
const WHITE: Rgb = [255, 255, 255];
const AXIS: Rgb = [60, 60, 60];
const GRID: Rgb = [225, 225, 225];
const LINE: Rgb = [31, 119, 180];
const WARMUP: Rgb = [214, 39, 40];

struct Canvas {
    px: Vec<u8>,
}

impl Canvas {
    fn new() -> Self {
        Self {
            px: WHITE.repeat(W * H),
        }
    }

    fn set(&mut self, x: i64, y: i64, c: Rgb) {
        if (0..W as i64).contains(&x) && (0..H as i64).contains(&y) {
            let i = (y as usize * W + x as usize) * 3;
            self.px[i..i + 3].copy_from_slice(&c);
        }
    }

    /// Bresenham, `thick` pixels wide.
    fn line(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), c: Rgb, thick: i64) {
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let (mut x, mut y, mut err) = (x0, y0, dx + dy);
        loop {
            for t in 0..thick {
                self.set(x, y + t, c);
                self.set(x + t, y, c);
            }
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }

    /// Text at `scale`× the 5×7 font; (x, y) is the top left corner.
    fn text(&mut self, x: i64, y: i64, s: &str, scale: i64, c: Rgb) {
        for (n, ch) in s.chars().enumerate() {
            let rows = glyph(ch);
            let x0 = x + n as i64 * 6 * scale;
            for (r, bits) in rows.iter().enumerate() {
                for col in 0..5 {
                    if bits & (0x10 >> col) != 0 {
                        for dy in 0..scale {
                            for dx in 0..scale {
                                self.set(x0 + col * scale + dx, y + r as i64 * scale + dy, c);
                            }
                        }
                    }
                }
            }
        }
    }
}

fn text_width(s: &str, scale: i64) -> i64 {
    s.chars().count() as i64 * 6 * scale
}

/// 5×7 glyphs, one byte per row (low five bits, MSB left). Unknown characters are blank.
fn glyph(c: char) -> [u8; 7] {
    match c {
        '0' => [0x0e, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0e],
        '1' => [0x04, 0x0c, 0x04, 0x04, 0x04, 0x04, 0x0e],
        '2' => [0x0e, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1f],
        '3' => [0x1f, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0e],
        '4' => [0x02, 0x06, 0x0a, 0x12, 0x1f, 0x02, 0x02],
        '5' => [0x1f, 0x10, 0x1e, 0x01, 0x01, 0x11, 0x0e],
        '6' => [0x06, 0x08, 0x10, 0x1e, 0x11, 0x11, 0x0e],
        '7' => [0x1f, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0e, 0x11, 0x11, 0x0e, 0x11, 0x11, 0x0e],
        '9' => [0x0e, 0x11, 0x11, 0x0f, 0x01, 0x02, 0x0c],
        '.' => [0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, 0x0c],
        '(' => [0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02],
        ')' => [0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08],
        '-' => [0x00, 0x00, 0x00, 0x1f, 0x00, 0x00, 0x00],
        'B' => [0x1e, 0x11, 0x11, 0x1e, 0x11, 0x11, 0x1e],
        'M' => [0x11, 0x1b, 0x15, 0x15, 0x11, 0x11, 0x11],
        'R' => [0x1e, 0x11, 0x11, 0x1e, 0x14, 0x12, 0x11],
        'S' => [0x0f, 0x10, 0x10, 0x0e, 0x01, 0x01, 0x1e],
        'a' => [0x00, 0x00, 0x0e, 0x01, 0x0f, 0x11, 0x0f],
        'c' => [0x00, 0x00, 0x0e, 0x10, 0x10, 0x11, 0x0e],
        'd' => [0x01, 0x01, 0x0d, 0x13, 0x11, 0x11, 0x0f],
        'e' => [0x00, 0x00, 0x0e, 0x11, 0x1f, 0x10, 0x0e],
        'i' => [0x04, 0x00, 0x0c, 0x04, 0x04, 0x04, 0x0e],
        'm' => [0x00, 0x00, 0x1a, 0x15, 0x15, 0x11, 0x11],
        'n' => [0x00, 0x00, 0x16, 0x19, 0x11, 0x11, 0x11],
        'o' => [0x00, 0x00, 0x0e, 0x11, 0x11, 0x11, 0x0e],
        'p' => [0x00, 0x00, 0x1e, 0x11, 0x1e, 0x10, 0x10],
        'r' => [0x00, 0x00, 0x16, 0x19, 0x10, 0x10, 0x10],
        's' => [0x00, 0x00, 0x0e, 0x10, 0x0e, 0x01, 0x1e],
        't' => [0x08, 0x08, 0x1c, 0x08, 0x08, 0x09, 0x06],
        'u' => [0x00, 0x00, 0x11, 0x11, 0x11, 0x13, 0x0d],
        'w' => [0x00, 0x00, 0x11, 0x11, 0x15, 0x15, 0x0a],
        _ => [0; 7],
    }
}

/// A "nice" tick step (1, 2 or 5 × 10ⁿ) giving about `n` ticks over `span`.
fn step(span: f64, n: f64) -> f64 {
    let raw = (span / n).max(1e-9);
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag)
}

fn label(v: f64, step: f64) -> String {
    if step >= 1.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// RSS (MiB) over time (s), the end of warm-up marked by a vertical line.
pub fn rss_png(path: &Path, samples: &[Sample], warmup: Duration) -> Result<(), String> {
    if samples.len() < 2 {
        return Err("fewer than two samples".into());
    }
    let mib: Vec<(f64, f64)> = samples
        .iter()
        .map(|s| (s.at.as_secs_f64(), s.rss_kib as f64 / 1024.0))
        .collect();
    let t_max = mib.last().map_or(1.0, |p| p.0).max(1.0);
    let hi = mib.iter().map(|p| p.1).fold(0.0, f64::max);
    // From zero, so growth looks as large as it is; headroom above the peak.
    let y_step = step(hi * 1.15, 6.0);
    let y_max = (hi * 1.15 / y_step).ceil() * y_step;
    let x_step = step(t_max, 8.0);

    let (pw, ph) = ((W - LEFT - RIGHT) as f64, (H - TOP - BOTTOM) as f64);
    let at = |t: f64, v: f64| {
        (
            LEFT as i64 + (t / t_max * pw).round() as i64,
            (TOP as f64 + ph - v / y_max * ph).round() as i64,
        )
    };
    let mut c = Canvas::new();
    let mut v = 0.0;
    while v <= y_max + 1e-9 {
        let (_, y) = at(0.0, v);
        c.line((LEFT as i64, y), ((W - RIGHT) as i64, y), GRID, 1);
        let l = label(v, y_step);
        c.text(LEFT as i64 - 8 - text_width(&l, 2), y - 7, &l, 2, AXIS);
        v += y_step;
    }
    let mut t = 0.0;
    while t <= t_max + 1e-9 {
        let (x, y) = at(t, 0.0);
        c.line((x, y), (x, y + 6), AXIS, 1);
        let l = label(t, x_step);
        c.text(x - text_width(&l, 2) / 2, y + 10, &l, 2, AXIS);
        t += x_step;
    }
    let (x0, y0) = at(0.0, 0.0);
    c.line((x0, y0), ((W - RIGHT) as i64, y0), AXIS, 2);
    c.line((x0, TOP as i64), (x0, y0), AXIS, 2);
    if warmup.as_secs_f64() > 0.0 && warmup.as_secs_f64() < t_max {
        let (x, _) = at(warmup.as_secs_f64(), 0.0);
        let mut y = TOP as i64;
        while y < y0 {
            c.line((x, y), (x, (y + 6).min(y0)), WARMUP, 1);
            y += 12;
        }
        c.text(x + 6, TOP as i64 + 4, "warm-up", 2, WARMUP);
    }
    for w in mib.windows(2) {
        c.line(at(w[0].0, w[0].1), at(w[1].0, w[1].1), LINE, 3);
    }
    for p in &mib {
        let (x, y) = at(p.0, p.1);
        for dy in -3..=3 {
            for dx in -3..=3 {
                c.set(x + dx, y + dy, LINE);
            }
        }
    }
    c.text(LEFT as i64, 8, "RSS (MiB)", 2, AXIS);
    let xl = "time (s)";
    c.text(
        LEFT as i64 + pw as i64 / 2 - text_width(xl, 2) / 2,
        H as i64 - 18,
        xl,
        2,
        AXIS,
    );

    let file = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), W as u32, H as u32);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc.write_header().map_err(|e| e.to_string())?;
    writer.write_image_data(&c.px).map_err(|e| e.to_string())?;
    writer.finish().map_err(|e| e.to_string())
}
