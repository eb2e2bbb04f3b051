//! Loss-curve PNG of a run's `log.jsonl`: one line per series (raw values faint, a moving
//! average solid), x = step, y = log10(loss) with a grid line at every power of ten. No text is
//! drawn (no font dependency); the series and their colours are listed in docs/training.md.

use std::path::Path;

use anyhow::Context;

const W: usize = 800;
const H: usize = 400;
const MARGIN: usize = 24;

/// (series name, colour) plotted for each stage's log fields.
pub const SERIES: [(&str, [u8; 3]); 4] = [
    ("loss", [200, 30, 30]),
    ("loss_g", [200, 30, 30]),
    ("l1", [30, 90, 200]),
    ("disc", [40, 150, 60]),
];

/// Points (step, log10 loss) and a colour.
type Series = (Vec<(f64, f64)>, [u8; 3]);

struct Canvas {
    px: Vec<u8>,
}

impl Canvas {
    fn new() -> Self {
        Canvas {
            px: vec![255; W * H * 3],
        }
    }

    fn blend(&mut self, x: i64, y: i64, c: [u8; 3], alpha: f32) {
        if x < 0 || y < 0 || x >= W as i64 || y >= H as i64 {
            return;
        }
        let i = (y as usize * W + x as usize) * 3;
        for (px, &target) in self.px[i..i + 3].iter_mut().zip(&c) {
            let old = *px as f32;
            *px = (old + (target as f32 - old) * alpha).round() as u8;
        }
    }

    fn line(&mut self, (x0, y0): (f64, f64), (x1, y1): (f64, f64), c: [u8; 3], alpha: f32) {
        let n = ((x1 - x0).abs().max((y1 - y0).abs()).ceil() as usize).max(1);
        for i in 0..=n {
            let t = i as f64 / n as f64;
            self.blend(
                (x0 + (x1 - x0) * t).round() as i64,
                (y0 + (y1 - y0) * t).round() as i64,
                c,
                alpha,
            );
        }
    }
}

/// Draws the loss curves of `log` (JSON objects with `step` and loss fields) to `out` (atomic).
pub fn write_loss_png(log: &[serde_json::Value], out: &Path) -> anyhow::Result<()> {
    let mut series: Vec<Series> = Vec::new();
    for (name, colour) in SERIES {
        let pts: Vec<(f64, f64)> = log
            .iter()
            .filter_map(|v| Some((v.get("step")?.as_f64()?, v.get(name)?.as_f64()?)))
            .filter(|(_, y)| y.is_finite() && *y > 0.0)
            .map(|(x, y)| (x, y.log10()))
            .collect();
        if !pts.is_empty() {
            series.push((pts, colour));
        }
    }
    let mut cv = Canvas::new();
    let all = series.iter().flat_map(|(p, _)| p.iter());
    let (mut x_max, mut y_min, mut y_max) = (1.0f64, f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in all {
        x_max = x_max.max(x);
        y_min = y_min.min(y);
        y_max = y_max.max(y);
    }
    if !y_min.is_finite() {
        (y_min, y_max) = (0.0, 1.0);
    }
    let (y_lo, y_hi) = (y_min.floor(), y_max.ceil().max(y_min.floor() + 1.0));
    let (pw, ph) = ((W - 2 * MARGIN) as f64, (H - 2 * MARGIN) as f64);
    let map = |x: f64, y: f64| {
        (
            MARGIN as f64 + x / x_max * pw,
            MARGIN as f64 + (y_hi - y) / (y_hi - y_lo) * ph,
        )
    };
    let grey = [170, 170, 170];
    let mut d = y_lo;
    while d <= y_hi {
        cv.line(map(0.0, d), map(x_max, d), grey, 0.6);
        d += 1.0;
    }
    cv.line(map(0.0, y_lo), map(0.0, y_hi), [0, 0, 0], 1.0);
    cv.line(map(0.0, y_lo), map(x_max, y_lo), [0, 0, 0], 1.0);
    for (pts, c) in &series {
        for w in pts.windows(2) {
            cv.line(map(w[0].0, w[0].1), map(w[1].0, w[1].1), *c, 0.25);
        }
        let k = (pts.len() / 50).max(1);
        let avg: Vec<(f64, f64)> = (0..pts.len())
            .map(|i| {
                let lo = i.saturating_sub(k);
                let win = &pts[lo..=i];
                (
                    pts[i].0,
                    win.iter().map(|p| p.1).sum::<f64>() / win.len() as f64,
                )
            })
            .collect();
        for w in avg.windows(2) {
            cv.line(map(w[0].0, w[0].1), map(w[1].0, w[1].1), *c, 1.0);
        }
    }
    ldm_io::atomic::write_file(out, |f| {
        let mut enc = png::Encoder::new(f, W as u32, H as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header().map_err(std::io::Error::other)?;
        w.write_image_data(&cv.px).map_err(std::io::Error::other)?;
        w.finish().map_err(std::io::Error::other)
    })
    .map(|_| ())
    .with_context(|| format!("writing the loss curve {}", out.display()))
}
