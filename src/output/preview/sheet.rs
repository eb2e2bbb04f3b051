//! `evaluate --sheet`: a contact sheet PNG, one row per volume: the label (file stem) above its
//! three central slices in the layout and orientation of the `--preview` panels (across W, H, D).
//! Each array axis is magnified by a whole factor of at least 3 pixels per mm of its NIfTI voxel
//! spacing, and further (all axes alike) until a row is at least 512 pixels wide. All rows share
//! one intensity window, the 0.5th..99.5th percentiles of every slice shown, so brightness
//! compares across volumes.

use std::io::Write;

use super::{font, window, PreviewError, GAP};

/// Pixels per mm at least, along every axis.
const PX_PER_MM: f64 = 3.0;
/// Smallest row width in pixels.
const MIN_ROW_PX: usize = 512;
/// Label glyphs are drawn at this many pixels per font pixel.
const LABEL_SCALE: usize = 3;
/// Space around a label, pixels.
const LABEL_PAD: usize = 6;
/// Largest sheet accepted (pixels).
const MAX_PIXELS: usize = 1 << 28;

/// One slice: `values[y * width + x]` with `y` counted from the bottom.
#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    pub width: usize,
    pub height: usize,
    pub values: Vec<f32>,
}

/// One row of the sheet.
#[derive(Debug, Clone, PartialEq)]
pub struct SheetRow {
    pub label: String,
    pub panels: [Panel; 3],
}

/// The three central slices of a C-order `[D, H, W]` volume: across W (D right, H up), across H
/// (D right, W up), across D (H right, W up), as `--preview` shows them.
pub fn central_slices([d, h, w]: [usize; 3], data: &[f32]) -> Result<[Panel; 3], PreviewError> {
    if d == 0 || h == 0 || w == 0 || data.len() != d * h * w {
        return Err(PreviewError::Shape([1, d, h, w]));
    }
    let at = |i: usize, j: usize, k: usize| data[i * h * w + j * w + k];
    let panel = |pw: usize, ph: usize, f: &dyn Fn(usize, usize) -> f32| Panel {
        width: pw,
        height: ph,
        values: (0..ph)
            .flat_map(|y| (0..pw).map(move |x| (x, y)))
            .map(|(x, y)| f(x, y))
            .collect(),
    };
    Ok([
        panel(d, h, &|x, y| at(x, y, w / 2)),
        panel(d, w, &|x, y| at(x, h / 2, y)),
        panel(h, w, &|x, y| at(d / 2, x, y)),
    ])
}

/// Whole magnification per array axis (D, H, W) for voxel `spacing` in mm.
fn factors(spacing: [f64; 3], dims: [usize; 3]) -> [usize; 3] {
    let mut f = spacing.map(|s| {
        if s.is_finite() && s > 0.0 {
            (PX_PER_MM * s).ceil().max(1.0) as usize
        } else {
            1
        }
    });
    let panels = 2 * dims[0] * f[0] + dims[1] * f[1];
    if panels + 2 * GAP < MIN_ROW_PX {
        let m = (MIN_ROW_PX - 2 * GAP).div_ceil(panels.max(1));
        f = f.map(|v| v * m);
    }
    f
}

struct Sheet {
    width: usize,
    height: usize,
    pixels: Vec<u8>,
}

fn render(spacing: [f64; 3], rows: &[SheetRow]) -> Result<Sheet, PreviewError> {
    let Some(first) = rows.first() else {
        return Err(PreviewError::Shape([0, 0, 0, 0]));
    };
    let dims = [
        first.panels[0].width,
        first.panels[0].height,
        first.panels[1].height,
    ];
    for r in rows {
        let want = [(dims[0], dims[1]), (dims[0], dims[2]), (dims[1], dims[2])];
        if r.panels
            .iter()
            .zip(want)
            .any(|(p, (w, h))| p.width != w || p.height != h || p.values.len() != w * h)
        {
            return Err(PreviewError::Shape([1, dims[0], dims[1], dims[2]]));
        }
    }
    let f = factors(spacing, dims);
    // (pixel width, pixel height, x factor, y factor) per panel
    let sizes = [(0, 1), (0, 2), (1, 2)].map(|(a, b)| (dims[a] * f[a], dims[b] * f[b], f[a], f[b]));
    let row_px = sizes.iter().map(|s| s.0).sum::<usize>() + 2 * GAP;
    let panel_h = sizes.iter().map(|s| s.1).max().unwrap_or(1);
    let band = font::HEIGHT * LABEL_SCALE + 2 * LABEL_PAD;
    let label_px = |l: &str| LABEL_PAD * 2 + l.chars().count() * (font::WIDTH + 1) * LABEL_SCALE;
    let width = rows
        .iter()
        .map(|r| label_px(&r.label))
        .max()
        .unwrap_or(0)
        .max(row_px);
    let height = rows.len() * (band + panel_h);
    if !matches!(width.checked_mul(height), Some(n) if n <= MAX_PIXELS) {
        return Err(PreviewError::TooLarge { width, height });
    }
    let all: Vec<f32> = rows
        .iter()
        .flat_map(|r| r.panels.iter().flat_map(|p| p.values.iter().copied()))
        .collect();
    let (lo, hi) = window(&all);
    let to_u8 = |v: f32| -> u8 {
        if !v.is_finite() {
            return 0;
        }
        (((v - lo) / (hi - lo)).clamp(0.0, 1.0) * 255.0).round() as u8
    };
    let mut pixels = vec![0u8; width * height];
    for (n, row) in rows.iter().enumerate() {
        let top = n * (band + panel_h);
        for (i, c) in row.label.chars().enumerate() {
            let x0 = LABEL_PAD + i * (font::WIDTH + 1) * LABEL_SCALE;
            for gy in 0..font::HEIGHT * LABEL_SCALE {
                for gx in 0..font::WIDTH * LABEL_SCALE {
                    if font::lit(c, gx / LABEL_SCALE, gy / LABEL_SCALE) && x0 + gx < width {
                        pixels[(top + LABEL_PAD + gy) * width + x0 + gx] = 255;
                    }
                }
            }
        }
        let mut x0 = 0;
        for (panel, &(pw, ph, fx, fy)) in row.panels.iter().zip(&sizes) {
            let y0 = top + band + (panel_h - ph) / 2;
            for py in 0..ph {
                let vy = (ph - 1 - py) / fy;
                let line = &mut pixels[(y0 + py) * width + x0..(y0 + py) * width + x0 + pw];
                for (px, out) in line.iter_mut().enumerate() {
                    *out = to_u8(panel.values[vy * panel.width + px / fx]);
                }
            }
            x0 += pw + GAP;
        }
    }
    Ok(Sheet {
        width,
        height,
        pixels,
    })
}

/// Writes the contact sheet of `rows` (volumes of one shape, voxel `spacing` in mm along D, H, W)
/// as an 8-bit grayscale PNG.
pub fn write_sheet_png(
    out: &mut dyn Write,
    spacing: [f64; 3],
    rows: &[SheetRow],
) -> Result<(), PreviewError> {
    let s = render(spacing, rows)?;
    let mut enc = png::Encoder::new(out, s.width as u32, s.height as u32);
    enc.set_color(png::ColorType::Grayscale);
    enc.set_depth(png::BitDepth::Eight);
    enc.set_compression(png::Compression::High);
    let mut writer = enc.write_header()?;
    writer.write_image_data(&s.pixels)?;
    writer.finish()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(label: &str, dims: [usize; 3], value: impl Fn(usize) -> f32) -> SheetRow {
        let data: Vec<f32> = (0..dims.iter().product()).map(value).collect();
        SheetRow {
            label: label.into(),
            panels: central_slices(dims, &data).unwrap(),
        }
    }

    #[test]
    fn at_least_three_pixels_per_mm_and_512_per_row() {
        // 4 mm voxels: 12 px per voxel
        assert_eq!(factors([4.0; 3], [40, 48, 32]), [12; 3]);
        // 1 mm voxels of a tiny volume: magnified until the row is 512 px wide
        let f = factors([1.0; 3], [6, 4, 2]);
        assert!(
            2 * 6 * f[0] + 4 * f[1] + 2 * GAP >= 512 && f[0] >= 3,
            "{f:?}"
        );
        // anisotropic spacing keeps its proportions
        assert_eq!(factors([2.0, 1.0, 4.0], [100, 100, 100]), [6, 3, 12]);
    }

    #[test]
    fn rows_have_labels_and_slices() {
        let rows = vec![
            row("seed-1", [6, 4, 2], |n| n as f32),
            row("seed-2", [6, 4, 2], |_| 0.0),
        ];
        let s = render([4.0; 3], &rows).unwrap();
        let band = font::HEIGHT * LABEL_SCALE + 2 * LABEL_PAD;
        let f = factors([4.0; 3], [6, 4, 2]);
        let panel_h = (4 * f[1]).max(2 * f[2]);
        assert_eq!(s.height, 2 * (band + panel_h));
        // the label band of row 0 has white glyph pixels and nothing else
        let label: Vec<u8> = s.pixels[..band * s.width].to_vec();
        assert!(label.contains(&255) && label.iter().all(|&p| p == 0 || p == 255));
        // row 1 is uniformly dark below its label: the window is shared, row 0 spans it
        let r1 = &s.pixels[(2 * band + panel_h) * s.width..];
        assert!(r1.iter().all(|&p| p == 0));
        let mut bytes = Vec::new();
        write_sheet_png(&mut bytes, [4.0; 3], &rows).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
    }

    #[test]
    fn refuses_mixed_shapes() {
        let rows = vec![row("a", [6, 4, 2], |_| 1.0), row("b", [4, 4, 2], |_| 1.0)];
        assert!(matches!(
            render([1.0; 3], &rows),
            Err(PreviewError::Shape(_))
        ));
    }
}
