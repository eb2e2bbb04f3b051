//! NumPy `.npy` files of little-endian float32, C order: a validating reader (for `--init-noise`
//! and test fixtures) and a writer (for `--format npy`). The reader streams: it checks magic,
//! version, header length and the header dictionary (`descr`, `fortran_order`, `shape`), then that
//! the data length the shape implies equals the file's real length and fits the `Budget`, before
//! it allocates anything sized by the file; a device is read up to that length and must end there.

use std::io::{Read, Write};
use std::path::Path;

use crate::budget::{Budget, BudgetError};
use crate::input::{at_end, read_full, Input};

const MAGIC: &[u8; 6] = b"\x93NUMPY";
/// Headers larger than this are not something numpy writes; refuse rather than trust.
const MAX_HEADER_BYTES: usize = 1 << 16;

#[derive(Debug, thiserror::Error)]
pub enum NpyError {
    #[error("cannot read {path}: {cause}")]
    Io { path: String, cause: std::io::Error },
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
    #[error(
        "{path}: holds more than the {expected} bytes of float32 data its shape {shape:?} has"
    )]
    TooLong {
        path: String,
        shape: Vec<usize>,
        expected: u128,
    },
    #[error("{path}: {cause}")]
    TooLarge { path: String, cause: BudgetError },
}

/// A float32 array read from a `.npy` file.
#[derive(Debug, Clone, PartialEq)]
pub struct NpyArray {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Reads and validates a little-endian float32, C-order `.npy` file within the default budget
/// (`Budget::from_system`).
pub fn read_f32(path: &Path) -> Result<NpyArray, NpyError> {
    read_f32_within(path, Budget::default())
}

/// `read_f32` with an explicit budget for the data, e.g. the byte size of the one array shape
/// the caller can use (a latent file is at most the latent's size plus its header).
pub fn read_f32_within(path: &Path, budget: Budget) -> Result<NpyArray, NpyError> {
    let p = path.display().to_string();
    let io = |cause| NpyError::Io {
        path: p.clone(),
        cause,
    };
    let mut input = Input::open(path).map_err(io)?;
    let len = input.len;
    let mut reader = std::io::BufReader::with_capacity(1 << 16, &mut input.file);
    read_from(&mut reader, len, budget, &p)
}

/// Parses the bytes of a `.npy` file; `path` only names it in errors.
pub fn parse_f32(bytes: &[u8], path: &str) -> Result<NpyArray, NpyError> {
    read_from(
        &mut &bytes[..],
        Some(bytes.len() as u64),
        Budget::new(u64::MAX),
        path,
    )
}

/// Reads a `.npy` stream of `len` bytes (`None`: unknown, read up to what the shape says).
pub fn read_from(
    r: &mut dyn Read,
    len: Option<u64>,
    budget: Budget,
    path: &str,
) -> Result<NpyArray, NpyError> {
    let path = path.to_string();
    let io = |cause| NpyError::Io {
        path: path.clone(),
        cause,
    };
    let mut lead = [0u8; 8];
    if read_full(r, &mut lead).map_err(io)? < 8 || &lead[..6] != MAGIC {
        return Err(NpyError::Magic { path });
    }
    let (major, minor) = (lead[6], lead[7]);
    let width = match major {
        1 => 2,
        2 | 3 => 4,
        _ => return Err(NpyError::Version { path, major, minor }),
    };
    let mut word = [0u8; 4];
    if read_full(r, &mut word[..width]).map_err(io)? < width {
        return Err(NpyError::Truncated { path });
    }
    let header_len = u32::from_le_bytes(word) as usize;
    let prefix = 8 + width;
    if header_len > MAX_HEADER_BYTES || len.is_some_and(|l| (prefix + header_len) as u64 > l) {
        return Err(NpyError::Truncated { path });
    }
    let mut header = vec![0u8; header_len];
    if read_full(r, &mut header).map_err(io)? < header_len {
        return Err(NpyError::Truncated { path });
    }
    let header = std::str::from_utf8(&header).map_err(|_| NpyError::Header {
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
    let expected: u128 = dict
        .shape
        .iter()
        .fold(4u128, |acc, &n| acc.saturating_mul(n as u128));
    if let Some(l) = len {
        let actual = l - (prefix + header_len) as u64;
        if expected != actual as u128 {
            return Err(NpyError::Length {
                path,
                shape: dict.shape,
                expected,
                actual,
            });
        }
    }
    if let Err(cause) = budget.check(expected, "the array") {
        return Err(NpyError::TooLarge { path, cause });
    }
    // Fits the budget, so it fits usize.
    let count = (expected / 4) as usize;
    let mut data = Vec::with_capacity(count);
    let mut chunk = vec![0u8; (1 << 16).min(4 * count)];
    let mut done = 0usize;
    while done < count {
        let n = chunk.len().min(4 * (count - done));
        let got = read_full(r, &mut chunk[..n]).map_err(io)?;
        data.extend(
            chunk[..got - got % 4]
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        );
        if got < n {
            return Err(NpyError::Length {
                path,
                shape: dict.shape,
                expected,
                actual: (4 * done + got) as u64,
            });
        }
        done += n / 4;
    }
    if !at_end(r).map_err(io)? {
        return Err(NpyError::TooLong {
            path,
            shape: dict.shape,
            expected,
        });
    }
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
            .join("../tests/fixtures/monai")
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

    #[test]
    fn streams_are_bounded_by_shape_and_budget() {
        let data: Vec<f32> = (0..16).map(|x| x as f32).collect();
        let mut bytes = Vec::new();
        write_f32(&mut bytes, &[4, 4], &data).unwrap();
        // a stream of unknown length (a device): read up to what the shape says, then must end
        let a = read_from(&mut &bytes[..], None, Budget::new(64), "dev").unwrap();
        assert_eq!(a.data, data);
        let mut longer = bytes.clone();
        longer.extend_from_slice(&[0u8; 4]);
        assert!(matches!(
            read_from(&mut &longer[..], None, Budget::new(1 << 20), "dev"),
            Err(NpyError::TooLong { .. })
        ));
        assert!(matches!(
            read_from(
                &mut &bytes[..bytes.len() - 1],
                None,
                Budget::new(1 << 20),
                "dev"
            ),
            Err(NpyError::Length { .. })
        ));
        // 64 bytes of data against a 63-byte budget: refused before allocating
        let e = read_from(&mut &bytes[..], None, Budget::new(63), "dev").unwrap_err();
        assert!(e.to_string().contains("needs 64 bytes"), "{e}");
        let e = read_f32(std::path::Path::new("/dev/zero")).unwrap_err();
        assert!(matches!(e, NpyError::Magic { .. }), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("noise.npy");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if made.map(|s| s.success()).unwrap_or(false) {
            let e = read_f32(&fifo).unwrap_err();
            assert!(e.to_string().contains("FIFO"), "{e}");
        }
    }
}
