//! Loss-curve PNG of a run's `log.jsonl`: one line per series (raw values faint, a moving
//! average solid), x = step, y = log10(loss) with a grid line at every power of ten. When the log
//! holds validation lines (`"validation": true`), the held-out L1 is drawn as marked points over
//! the training L1, and a lower panel shows the validation similarities (held-out SSIM, sample
//! diversity) on a linear 0..1 axis. No text is drawn (no font dependency); the series and their
//! colours are listed in docs/training.md.

use std::path::Path;

use anyhow::Context;

const W: usize = 800;
/// Height of the loss panel, and of the validation panel drawn below it when there is one.
const H: usize = 400;
const H_VALIDATION: usize = 160;
const MARGIN: usize = 24;

/// (series name, colour) plotted for each stage's log fields.
pub const SERIES: [(&str, [u8; 3]); 4] = [
    ("loss", [200, 30, 30]),
    ("loss_g", [200, 30, 30]),
    ("l1", [30, 90, 200]),
    ("disc", [40, 150, 60]),
];

/// Validation fields drawn on the loss panel (log10 axis, marked points): the held-out L1 is in
/// the training L1's units.
pub const VALIDATION_LOSSES: [(&str, [u8; 3]); 1] = [("val_l1", [120, 40, 170])];

/// Validation fields drawn on the lower panel (linear axis 0..1, marked points).
pub const VALIDATION_SIMILARITIES: [(&str, [u8; 3]); 2] =
    [("val_ssim", [230, 130, 20]), ("diversity_mean", [120, 40, 170])];

/// Points (step, log10 loss) and a colour.
type Series = (Vec<(f64, f64)>, [u8; 3]);

fn is_validation(v: &serde_json::Value) -> bool {
    v.get("validation").and_then(|b| b.as_bool()) == Some(true)
}

/// The (step, value) points of field `name` in the lines `keep` selects.
fn points(log: &[serde_json::Value], name: &str, keep: impl Fn(&serde_json::Value) -> bool) -> Vec<(f64, f64)> {
    log.iter()
        .filter(|v| keep(v))
        .filter_map(|v| Some((v.get("step")?.as_f64()?, v.get(name)?.as_f64()?)))
        .filter(|(_, y)| y.is_finite())
        .collect()
}

struct Canvas {
    px: Vec<u8>,
    height: usize,
}

impl Canvas {
    fn new(height: usize) -> Self {
        Canvas {
            px: vec![255; W * height * 3],
            height,
        }
    }

    fn blend(&mut self, x: i64, y: i64, c: [u8; 3], alpha: f32) {
        if x < 0 || y < 0 || x >= W as i64 || y >= self.height as i64 {
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

    /// A filled 5x5 square centred on `(x, y)`.
    fn mark(&mut self, (x, y): (f64, f64), c: [u8; 3]) {
        let (x, y) = (x.round() as i64, y.round() as i64);
        for dy in -2..=2 {
            for dx in -2..=2 {
                self.blend(x + dx, y + dy, c, 1.0);
            }
        }
    }

    /// Marked points joined by a solid line.
    fn marked(&mut self, pts: &[(f64, f64)], c: [u8; 3]) {
        for w in pts.windows(2) {
            self.line(w[0], w[1], c, 1.0);
        }
        for &p in pts {
            self.mark(p, c);
        }
    }
}

/// Draws the loss curves of `log` (JSON objects with `step` and loss fields) to `out` (atomic).
pub fn write_loss_png(log: &[serde_json::Value], out: &Path) -> anyhow::Result<()> {
    let log10 = |pts: Vec<(f64, f64)>| -> Vec<(f64, f64)> {
        pts.into_iter().filter(|(_, y)| *y > 0.0).map(|(x, y)| (x, y.log10())).collect()
    };
    let mut series: Vec<Series> = Vec::new();
    for (name, colour) in SERIES {
        let pts = log10(points(log, name, |v| !is_validation(v)));
        if !pts.is_empty() {
            series.push((pts, colour));
        }
    }
    let mut held_out: Vec<Series> = Vec::new();
    for (name, colour) in VALIDATION_LOSSES {
        let pts = log10(points(log, name, is_validation));
        if !pts.is_empty() {
            held_out.push((pts, colour));
        }
    }
    let mut similarities: Vec<Series> = Vec::new();
    for (name, colour) in VALIDATION_SIMILARITIES {
        let pts = points(log, name, is_validation);
        if !pts.is_empty() {
            similarities.push((pts, colour));
        }
    }
    let height = if similarities.is_empty() { H } else { H + H_VALIDATION };
    let mut cv = Canvas::new(height);
    let all = series.iter().chain(&held_out).flat_map(|(p, _)| p.iter());
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
    for (pts, c) in &held_out {
        let pts: Vec<_> = pts.iter().map(|&(x, y)| map(x, y)).collect();
        cv.marked(&pts, *c);
    }
    if !similarities.is_empty() {
        // Lower panel: y = value in [0, 1] (clamped), grid at 0, 0.5 and 1.
        let (top, ph) = ((H + MARGIN / 2) as f64, (H_VALIDATION - MARGIN - MARGIN / 2) as f64);
        let map = |x: f64, y: f64| (MARGIN as f64 + x / x_max * pw, top + (1.0 - y.clamp(0.0, 1.0)) * ph);
        for g in [0.5, 1.0] {
            cv.line(map(0.0, g), map(x_max, g), grey, 0.6);
        }
        cv.line(map(0.0, 0.0), map(0.0, 1.0), [0, 0, 0], 1.0);
        cv.line(map(0.0, 0.0), map(x_max, 0.0), [0, 0, 0], 1.0);
        for (pts, c) in &similarities {
            let pts: Vec<_> = pts.iter().map(|&(x, y)| map(x, y)).collect();
            cv.marked(&pts, *c);
        }
    }
    ldm_io::atomic::write_file(out, |f| {
        let mut enc = png::Encoder::new(f, W as u32, height as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header().map_err(std::io::Error::other)?;
        w.write_image_data(&cv.px).map_err(std::io::Error::other)?;
        w.finish().map_err(std::io::Error::other)
    })
    .map(|_| ())
    .with_context(|| format!("writing the loss curve {}", out.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_png(path: &Path) -> (usize, usize, Vec<u8>) {
        let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
        let mut r = dec.read_info().unwrap();
        let mut buf = vec![0; r.output_buffer_size().unwrap()];
        let info = r.next_frame(&mut buf).unwrap();
        (info.width as usize, info.height as usize, buf)
    }

    /// Pixels of colour `c` in rows `rows`.
    fn count(px: &[u8], rows: std::ops::Range<usize>, c: [u8; 3]) -> usize {
        rows.flat_map(|y| (0..W).map(move |x| (y * W + x) * 3)).filter(|&i| px[i..i + 3] == c).count()
    }

    fn log(validation: bool) -> Vec<serde_json::Value> {
        let mut l: Vec<_> =
            (0..40).map(|s| serde_json::json!({ "step": s, "loss_g": 1.0 / (1.0 + s as f64), "l1": 0.1 })).collect();
        if validation {
            for s in [9, 19, 29, 39] {
                l.push(serde_json::json!({ "step": s, "validation": true, "val_l1": 0.2, "val_ssim": 0.5 + s as f64 / 100.0, "val_psnr": 20.0 }));
            }
        }
        l
    }

    #[test]
    fn validation_lines_add_marked_points_and_a_lower_panel() {
        let dir = tempfile::tempdir().unwrap();
        let (plain, with) = (dir.path().join("plain.png"), dir.path().join("with.png"));
        write_loss_png(&log(false), &plain).unwrap();
        write_loss_png(&log(true), &with).unwrap();
        let (w, h, px) = read_png(&plain);
        assert_eq!((w, h), (W, H));
        assert_eq!(count(&px, 0..H, VALIDATION_LOSSES[0].1), 0);
        let (w, h, px) = read_png(&with);
        assert_eq!((w, h), (W, H + H_VALIDATION));
        // Four 5x5 marks of the held-out L1 on the loss panel, the SSIM marks and line below it.
        assert!(count(&px, 0..H, VALIDATION_LOSSES[0].1) >= 4 * 25);
        let ssim = VALIDATION_SIMILARITIES[0].1;
        assert_eq!(count(&px, 0..H, ssim), 0);
        assert!(count(&px, H..H + H_VALIDATION, ssim) >= 4 * 25);
        // Rising SSIM: the last mark sits higher (smaller y) than the first.
        let rows_of = |x0: usize, x1: usize| {
            (H..H + H_VALIDATION).filter(|&y| (x0..x1).any(|x| px[(y * W + x) * 3..(y * W + x) * 3 + 3] == ssim)).min()
        };
        let first = rows_of(MARGIN + 160, MARGIN + 200).unwrap();
        let last = rows_of(W - MARGIN - 8, W - MARGIN + 4).unwrap();
        assert!(last < first, "first mark at row {first}, last at {last}");
    }
}
