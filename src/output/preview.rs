//! `--preview`: an 8-bit grayscale PNG of the three central slices of a volume, side by side:
//! the slice across W (axial for RAS), across H (coronal), across D (sagittal). In each panel the
//! first in-plane array axis runs left to right and the second bottom to top, so an RAS volume
//! shows with right, anterior and superior towards the right and top (neurological convention).
//! Intensities are windowed to the volume's 0.5th..99.5th percentiles. `sheet` lays many
//! volumes' slices out as a labelled, magnified contact sheet (`evaluate --sheet`).

use std::io::Write;

mod font;
pub mod sheet;

const GAP: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum PreviewError {
    #[error("cannot preview a volume of shape {0:?}: need [C, D, H, W] with all sizes >= 1 and matching data")]
    Shape([usize; 4]),
    #[error("a contact sheet of {width} x {height} pixels is too large; show fewer volumes")]
    TooLarge { width: usize, height: usize },
    #[error("PNG encoding failed: {0}")]
    Png(#[from] png::EncodingError),
}

/// Grayscale image rows (top row first).
struct Canvas {
    width: usize,
    height: usize,
    pixels: Vec<u8>,
}

fn window(values: &[f32]) -> (f32, f32) {
    let mut finite: Vec<f32> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if finite.is_empty() {
        return (0.0, 1.0);
    }
    finite.sort_by(f32::total_cmp);
    let at = |q: f64| finite[((finite.len() - 1) as f64 * q).round() as usize];
    let (lo, hi) = (at(0.005), at(0.995));
    if hi > lo {
        (lo, hi)
    } else {
        (lo, lo + 1.0)
    }
}

/// Renders channel 0 of a C-order `[C, D, H, W]` volume.
fn render(shape: [usize; 4], data: &[f32]) -> Result<Canvas, PreviewError> {
    let [c, d, h, w] = shape;
    if c == 0 || d == 0 || h == 0 || w == 0 || data.len() != c * d * h * w {
        return Err(PreviewError::Shape(shape));
    }
    let vol = &data[..d * h * w];
    let (lo, hi) = window(vol);
    let at = |i: usize, j: usize, k: usize| vol[i * h * w + j * w + k];
    let to_u8 = |v: f32| -> u8 {
        if !v.is_finite() {
            return 0;
        }
        (((v - lo) / (hi - lo)).clamp(0.0, 1.0) * 255.0).round() as u8
    };
    // (panel width, panel height, value at (x, y-from-bottom))
    type Panel<'a> = (usize, usize, Box<dyn Fn(usize, usize) -> f32 + 'a>);
    let panels: [Panel; 3] = [
        (d, h, Box::new(|x, y| at(x, y, w / 2))),
        (d, w, Box::new(|x, y| at(x, h / 2, y))),
        (h, w, Box::new(|x, y| at(d / 2, x, y))),
    ];
    let width = panels.iter().map(|p| p.0).sum::<usize>() + GAP * (panels.len() - 1);
    let height = panels.iter().map(|p| p.1).max().unwrap_or(1);
    let mut pixels = vec![0u8; width * height];
    let mut x0 = 0;
    for (pw, ph, value) in panels.iter() {
        let y0 = (height - ph) / 2;
        for y in 0..*ph {
            let row = y0 + (ph - 1 - y);
            for x in 0..*pw {
                pixels[row * width + x0 + x] = to_u8(value(x, y));
            }
        }
        x0 += pw + GAP;
    }
    Ok(Canvas {
        width,
        height,
        pixels,
    })
}

/// Writes the preview PNG of `data` (C-order `[C, D, H, W]`) to `out`.
pub fn write_png(out: &mut dyn Write, shape: [usize; 4], data: &[f32]) -> Result<(), PreviewError> {
    let canvas = render(shape, data)?;
    let mut enc = png::Encoder::new(out, canvas.width as u32, canvas.height as u32);
    enc.set_color(png::ColorType::Grayscale);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc.write_header()?;
    writer.write_image_data(&canvas.pixels)?;
    writer.finish()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_and_orientation_of_the_three_panels() {
        let shape = [1, 6, 4, 2];
        // value = i (the D index): the axial and coronal panels brighten to the right,
        // the sagittal panel (fixed i) is uniform.
        let data: Vec<f32> = (0..48).map(|n| (n / 8) as f32).collect();
        let c = render(shape, &data).unwrap();
        assert_eq!(c.width, 6 + 6 + 4 + 2 * GAP);
        assert_eq!(c.height, 4);
        let row = &c.pixels[c.width * 3..c.width * 4];
        assert!(row[0] < row[5], "{row:?}");
        // sagittal panel: i = 3 everywhere, one gray level
        let sag = &row[12 + 2 * GAP..];
        assert!(sag.iter().all(|&p| p == sag[0]));
    }

    #[test]
    fn second_axis_points_up() {
        let shape = [1, 2, 5, 3];
        // value = j (the H index)
        let data: Vec<f32> = (0..30).map(|n| ((n / 3) % 5) as f32).collect();
        let c = render(shape, &data).unwrap();
        assert_eq!(c.height, 5);
        let top = c.pixels[0];
        let bottom = c.pixels[4 * c.width];
        assert!(top > bottom, "top {top} bottom {bottom}");
    }

    #[test]
    fn encodes_a_png_and_rejects_bad_shapes() {
        let data = vec![0.5f32; 2 * 3 * 4];
        let mut bytes = Vec::new();
        write_png(&mut bytes, [1, 2, 3, 4], &data).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
        assert!(matches!(
            write_png(&mut Vec::new(), [1, 2, 3, 5], &data),
            Err(PreviewError::Shape(_))
        ));
        let nan = vec![f32::NAN; 8];
        assert!(write_png(&mut Vec::new(), [1, 2, 2, 2], &nan).is_ok());
    }
}
