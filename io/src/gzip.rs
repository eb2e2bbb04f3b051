//! gzip for `.nii.gz`: detection by content, the deterministic encoder every writer uses (mtime 0,
//! no file name, level 6: the same data always gives the same bytes), and `verify` — a streaming
//! check of a whole file's deflate data and CRC-32 that never holds more than one buffer.

use std::io::{Read, Write};
use std::path::Path;

use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use flate2::{Compression, GzBuilder};

use crate::input::Input;

/// The two bytes every gzip member starts with.
pub const MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Deflate cannot compress better than about 1032:1: a gzip file of `n` bytes inflates to at most
/// `n * MAX_RATIO` (plus slack for headers), whatever its header claims.
pub const MAX_RATIO: u64 = 1100;

/// The encoder of every `.nii.gz` we write (finish it with `GzEncoder::finish`).
pub fn encoder<W: Write>(w: W) -> GzEncoder<W> {
    GzBuilder::new().mtime(0).write(w, Compression::new(6))
}

/// A decoder of all members of a gzip stream.
pub fn decoder<R: Read>(r: R) -> MultiGzDecoder<R> {
    MultiGzDecoder::new(r)
}

/// Reads `path` as gzip to its end, checking every member's CRC-32 and length, in 64 KiB steps.
/// Returns the uncompressed length. `max_len`: stop with an error as soon as the data passes it
/// (a gzip bomb is not inflated to the end). Errors: unreadable file, not gzip, damaged deflate
/// data, CRC or length mismatch, truncation, or more data than `max_len`.
pub fn verify(path: &Path, max_len: Option<u64>) -> std::io::Result<u64> {
    let input = Input::open(path)?;
    let mut head = [0u8; 2];
    let mut file = std::io::BufReader::with_capacity(1 << 16, input.file);
    let got = crate::input::read_full(&mut file, &mut head)?;
    if got < 2 || head != MAGIC {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not a gzip file (no 1f 8b magic)",
        ));
    }
    let mut stream = decoder(std::io::Cursor::new(head).chain(file));
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("truncated gzip stream after {total} uncompressed bytes"),
                ))
            }
            Err(e) => {
                return Err(std::io::Error::new(
                    e.kind(),
                    format!("damaged gzip stream: {e}"),
                ))
            }
        };
        total += n as u64;
        if let Some(max) = max_len.filter(|&m| total > m) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("gzip stream inflates to more than the expected {max} bytes"),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = encoder(Vec::new());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn verify_accepts_good_and_refuses_damaged_streams() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.gz");
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 31 % 251) as u8).collect();
        let good = gz(&data);
        std::fs::write(&p, &good).unwrap();
        assert_eq!(verify(&p, None).unwrap(), 100_000);
        assert_eq!(verify(&p, Some(100_000)).unwrap(), 100_000);
        assert!(verify(&p, Some(99_999)).is_err());
        // CRC-32 is the 8 bytes before the end's last 4: flip one bit of it
        let mut bad_crc = good.clone();
        let at = bad_crc.len() - 8;
        bad_crc[at] ^= 1;
        std::fs::write(&p, &bad_crc).unwrap();
        assert!(verify(&p, None).is_err(), "a wrong CRC must be noticed");
        std::fs::write(&p, &good[..good.len() / 2]).unwrap();
        let e = verify(&p, None).unwrap_err();
        assert!(e.to_string().contains("truncated"), "{e}");
        std::fs::write(&p, b"plain text").unwrap();
        assert!(verify(&p, None).is_err());
    }

    #[test]
    fn the_encoder_is_deterministic() {
        assert_eq!(gz(b"same"), gz(b"same"));
    }

    #[test]
    fn a_bomb_stops_at_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bomb.gz");
        let mut e = GzEncoder::new(std::fs::File::create(&p).unwrap(), Compression::fast());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..64 {
            e.write_all(&zeros).unwrap();
        }
        e.finish().unwrap();
        let e = verify(&p, Some(1 << 20)).unwrap_err();
        assert!(e.to_string().contains("more than the expected"), "{e}");
    }
}
