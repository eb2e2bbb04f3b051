//! NumPy `.npy` files of little-endian float32, C order: a validating reader (for `--init-noise`)
//! and a writer (for `--format npy`). The reader checks magic, version, header length, the header
//! dictionary (`descr`, `fortran_order`, `shape`), and that the data length matches the shape
//! exactly, before it allocates anything sized by the file.

use std::io::Write;
use std::path::Path;

const MAGIC: &[u8; 6] = b"\x93NUMPY";
/// Headers larger than this are not something numpy writes; refuse rather than trust.
const MAX_HEADER_BYTES: usize = 1 << 16;

#[derive(Debug, thiserror::Error)]
pub enum NpyError {
    #[error("cannot read {path}: {cause}")]
    Io {
        path: String,
        cause: std::io::Error,
    },
    #[error("{path} is not a .npy file (no \\x93NUMPY magic)")]
    Magic { path: String },
    #[error("{path}: unsupported .npy format version {major}.{minor}")]
    Version { path: String, major: u8, minor: u8 },
    #[error("{path}: truncated .npy header")]
    Truncated { path: String },
    #[error("{path}: malformed .npy header: {what}")]
    Header { path: String, what: String },
    #[error(
        "{path}: dtype '{descr}' is not supported: save the array as little-endian float32 ('<f4')"
    )]
    Dtype { path: String, descr: String },
    #[error("{path}: Fortran-ordered arrays are not supported: save with np.ascontiguousarray")]
    FortranOrder { path: String },
    #[error(
        "{path}: shape {shape:?} has {expected} bytes of float32 data but the file holds {actual}"
    )]
    Length {
        path: String,
        shape: Vec<usize>,
        expected: u128,
        actual: u64,
    },
}

/// A float32 array read from a `.npy` file.
#[derive(Debug, Clone, PartialEq)]
pub struct NpyArray {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Reads and validates a little-endian float32, C-order `.npy` file.
pub fn read_f32(path: &Path) -> Result<NpyArray, NpyError> {
    let p = path.display().to_string();
    let io = |cause| NpyError::Io {
        path: p.clone(),
        cause,
    };
    let bytes = std::fs::read(path).map_err(io)?;
    parse_f32(&bytes, &p)
}

/// Parses the bytes of a `.npy` file; `path` only names it in errors.
pub fn parse_f32(bytes: &[u8], path: &str) -> Result<NpyArray, NpyError> {
    let path = path.to_string();
    if bytes.len() < 8 || &bytes[..6] != MAGIC {
        return Err(NpyError::Magic { path });
    }
    let (major, minor) = (bytes[6], bytes[7]);
    let (header_len, prefix) = match major {
        1 => {
            if bytes.len() < 10 {
                return Err(NpyError::Truncated { path });
            }
            (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10usize)
        }
        2 | 3 => {
            if bytes.len() < 12 {
                return Err(NpyError::Truncated { path });
            }
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12usize,
            )
        }
        _ => return Err(NpyError::Version { path, major, minor }),
    };
    if header_len > MAX_HEADER_BYTES || prefix + header_len > bytes.len() {
        return Err(NpyError::Truncated { path });
    }
    let header =
        std::str::from_utf8(&bytes[prefix..prefix + header_len]).map_err(|_| NpyError::Header {
            path: path.clone(),
            what: "not UTF-8/ASCII".into(),
        })?;
    let dict = parse_dict(header).map_err(|what| NpyError::Header {
        path: path.clone(),
        what,
    })?;
    if dict.descr != "<f4" {
        return Err(NpyError::Dtype {
            path,
            descr: dict.descr,
        });
    }
    if dict.fortran_order {
        return Err(NpyError::FortranOrder { path });
    }
    let data_bytes = &bytes[prefix + header_len..];
    let expected: u128 = dict
        .shape
        .iter()
        .fold(4u128, |acc, &n| acc.saturating_mul(n as u128));
    if expected != data_bytes.len() as u128 {
        return Err(NpyError::Length {
            path,
            shape: dict.shape,
            expected,
            actual: data_bytes.len() as u64,
        });
    }
    let data = data_bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok(NpyArray {
        shape: dict.shape,
        data,
    })
}

struct Dict {
    descr: String,
    fortran_order: bool,
    shape: Vec<usize>,
}

/// Parses numpy's header: a Python dict literal with exactly the keys descr, fortran_order, shape.
fn parse_dict(text: &str) -> Result<Dict, String> {
    let mut p = Parser {
        s: text.as_bytes(),
        i: 0,
    };
    p.ws();
    p.expect(b'{')?;
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    loop {
        p.ws();
        if p.eat(b'}') {
            break;
        }
        let key = p.string()?;
        p.ws();
        p.expect(b':')?;
        p.ws();
        match key.as_str() {
            "descr" => descr = Some(p.string()?),
            "fortran_order" => fortran = Some(p.boolean()?),
            "shape" => shape = Some(p.tuple()?),
            other => return Err(format!("unexpected key '{other}'")),
        }
        p.ws();
        if !p.eat(b',') {
            p.ws();
            p.expect(b'}')?;
            break;
        }
    }
    p.ws();
    if p.i != p.s.len() {
        return Err("trailing characters after the dictionary".into());
    }
    Ok(Dict {
        descr: descr.ok_or("missing 'descr'")?,
        fortran_order: fortran.ok_or("missing 'fortran_order'")?,
        shape: shape.ok_or("missing 'shape'")?,
    })
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && (self.s[self.i] as char).is_ascii_whitespace() {
            self.i += 1;
        }
    }
    fn eat(&mut self, c: u8) -> bool {
        if self.s.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn expect(&mut self, c: u8) -> Result<(), String> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(format!("expected '{}' at byte {}", c as char, self.i))
        }
    }
    fn string(&mut self) -> Result<String, String> {
        let quote = match self.s.get(self.i) {
            Some(&q) if q == b'\'' || q == b'"' => q,
            _ => return Err(format!("expected a quoted string at byte {}", self.i)),
        };
        self.i += 1;
        let start = self.i;
        while self.i < self.s.len() && self.s[self.i] != quote {
            self.i += 1;
        }
        if self.i == self.s.len() {
            return Err("unterminated string".into());
        }
        let out = String::from_utf8_lossy(&self.s[start..self.i]).into_owned();
        self.i += 1;
        Ok(out)
    }
    fn boolean(&mut self) -> Result<bool, String> {
        let rest = &self.s[self.i..];
        if rest.starts_with(b"True") {
            self.i += 4;
            Ok(true)
        } else if rest.starts_with(b"False") {
            self.i += 5;
            Ok(false)
        } else {
            Err(format!("expected True or False at byte {}", self.i))
        }
    }
    fn tuple(&mut self) -> Result<Vec<usize>, String> {
        self.expect(b'(')?;
        let mut out = Vec::new();
        loop {
            self.ws();
            if self.eat(b')') {
                break;
            }
            let start = self.i;
            while self.i < self.s.len() && self.s[self.i].is_ascii_digit() {
                self.i += 1;
            }
            if start == self.i {
                return Err(format!("expected a dimension at byte {}", self.i));
            }
            let digits = std::str::from_utf8(&self.s[start..self.i]).map_err(|e| e.to_string())?;
            out.push(
                digits
                    .parse::<usize>()
                    .map_err(|_| format!("dimension {digits} is too large"))?,
            );
            self.ws();
            if !self.eat(b',') {
                self.ws();
                self.expect(b')')?;
                break;
            }
        }
        Ok(out)
    }
}

/// Writes a C-order float32 array as a version-1.0 `.npy` stream.
pub fn write_f32(out: &mut dyn Write, shape: &[usize], data: &[f32]) -> std::io::Result<()> {
    let n: usize = shape.iter().product();
    if n != data.len() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "array has {} values but shape {shape:?} needs {n}",
                data.len()
            ),
        ));
    }
    out.write_all(&header_bytes(shape))?;
    let mut buf = Vec::with_capacity(4 * 4096);
    for chunk in data.chunks(4096) {
        buf.clear();
        for v in chunk {
            buf.extend_from_slice(&v.to_le_bytes());
        }
        out.write_all(&buf)?;
    }
    Ok(())
}

/// Magic, version and the space-padded header dictionary (total a multiple of 64 bytes).
pub fn header_bytes(shape: &[usize]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_text = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_text}, }}");
    let unpadded = MAGIC.len() + 2 + 2 + dict.len() + 1;
    dict.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    dict.push('\n');
    let mut out = Vec::with_capacity(10 + dict.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(rel: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/monai")
            .join(rel)
    }

    #[test]
    fn reads_the_monai_noise_fixture() {
        let a = read_f32(&fixture("pipeline/noise.npy")).unwrap();
        assert_eq!(a.shape, vec![1, 8, 8, 8, 4]);
        assert_eq!(a.data.len(), 2048);
        let mean = a.data.iter().sum::<f32>() / 2048.0;
        assert!(
            mean.abs() < 0.15,
            "standard normal noise expected, mean {mean}"
        );
    }

    #[test]
    fn write_then_read_round_trips() {
        let data: Vec<f32> = (0..24).map(|x| x as f32 * 0.5 - 3.0).collect();
        let mut bytes = Vec::new();
        write_f32(&mut bytes, &[2, 3, 4], &data).unwrap();
        assert_eq!((bytes.len() - 24 * 4) % 64, 0);
        let a = parse_f32(&bytes, "mem").unwrap();
        assert_eq!(a.shape, vec![2, 3, 4]);
        assert_eq!(a.data, data);
        let mut one = Vec::new();
        write_f32(&mut one, &[3], &data[..3]).unwrap();
        assert_eq!(parse_f32(&one, "mem").unwrap().shape, vec![3]);
        assert!(write_f32(&mut Vec::new(), &[5], &data).is_err());
    }

    fn with_header(dict: &str, data_len: usize) -> Vec<u8> {
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(&[1, 0]);
        b.extend_from_slice(&(dict.len() as u16).to_le_bytes());
        b.extend_from_slice(dict.as_bytes());
        b.resize(b.len() + data_len, 0);
        b
    }

    #[test]
    fn bad_files_give_typed_errors() {
        assert!(matches!(
            parse_f32(b"hello world", "x"),
            Err(NpyError::Magic { .. })
        ));
        let mut v9 = MAGIC.to_vec();
        v9.extend_from_slice(&[9, 0, 0, 0]);
        assert!(matches!(parse_f32(&v9, "x"), Err(NpyError::Version { .. })));
        let mut short = MAGIC.to_vec();
        short.extend_from_slice(&[1, 0, 200, 0, b'{']);
        assert!(matches!(
            parse_f32(&short, "x"),
            Err(NpyError::Truncated { .. })
        ));
        let f8 = with_header(
            "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }\n",
            16,
        );
        assert!(matches!(parse_f32(&f8, "x"), Err(NpyError::Dtype { .. })));
        let be = with_header(
            "{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }\n",
            8,
        );
        assert!(matches!(parse_f32(&be, "x"), Err(NpyError::Dtype { .. })));
        let fo = with_header(
            "{'descr': '<f4', 'fortran_order': True, 'shape': (2,), }\n",
            8,
        );
        assert!(matches!(
            parse_f32(&fo, "x"),
            Err(NpyError::FortranOrder { .. })
        ));
        let len = with_header(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }\n",
            44,
        );
        assert!(matches!(parse_f32(&len, "x"), Err(NpyError::Length { .. })));
        let huge = with_header(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999, 99999999999, 9999999), }\n",
            8,
        );
        assert!(matches!(
            parse_f32(&huge, "x"),
            Err(NpyError::Length { .. })
        ));
        let junk = with_header("{'descr': '<f4', 'shape': [2]}\n", 8);
        assert!(matches!(
            parse_f32(&junk, "x"),
            Err(NpyError::Header { .. })
        ));
        let extra = with_header(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x': 1}\n",
            8,
        );
        assert!(matches!(
            parse_f32(&extra, "x"),
            Err(NpyError::Header { .. })
        ));
        let missing = std::path::Path::new("/nonexistent/noise.npy");
        assert!(matches!(read_f32(missing), Err(NpyError::Io { .. })));
    }
}
