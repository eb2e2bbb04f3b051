//! One output volume on disk: its format, file name, how to write it (atomically), and whether an
//! existing file is a complete copy of what this run would write ("complete" = present under its
//! final name, of the exact expected size, and — for NIfTI — with the same header: dims,
//! datatype and the description that records seed, model checksum, sampler and steps).

use crate::output::{atomic, nifti, npy};
use flate2::read::GzDecoder;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// File format of generated volumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    NiiGz,
    Nii,
    Npy,
}

impl Format {
    pub fn parse(s: &str) -> Result<Format, String> {
        match s
            .trim()
            .trim_start_matches('.')
            .to_ascii_lowercase()
            .as_str()
        {
            "nii.gz" | "niigz" => Ok(Format::NiiGz),
            "nii" => Ok(Format::Nii),
            "npy" => Ok(Format::Npy),
            _ => Err(format!("unknown --format '{s}': use nii.gz, nii or npy")),
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Format::NiiGz => "nii.gz",
            Format::Nii => "nii",
            Format::Npy => "npy",
        }
    }
}

/// State of an output file before we (re)generate it.
#[derive(Debug, Clone, PartialEq)]
pub enum Existing {
    Missing,
    /// A complete copy of what we would write: skip.
    Complete,
    /// Wrong size or unreadable (e.g. truncated by hand, or not ours): regenerate over it.
    Incomplete(String),
    /// A complete NIfTI made with other settings (seed, model, sampler or steps): refuse to
    /// overwrite it silently.
    Different {
        found: String,
    },
}

/// Writes `data` (C-order `[C, D, H, W]`) as `dir/name` in `format`, atomically.
pub fn write(
    dir: &Path,
    name: &str,
    format: Format,
    header: &nifti::VolumeHeader,
    data: &[f32],
) -> std::io::Result<PathBuf> {
    atomic::write_atomic(dir, name, |w| match format {
        Format::Nii => nifti::write_volume(w, header, data),
        Format::NiiGz => {
            // mtime 0 and no file name: the same volume always gives the same bytes.
            let mut gz = ldm_io::gzip::encoder(w);
            nifti::write_volume(&mut gz, header, data)?;
            gz.finish()?;
            Ok(())
        }
        Format::Npy => npy::write_f32(w, &header.shape, data),
    })
}

/// Size in bytes the file will have (for `.nii.gz`: the uncompressed size).
pub fn expected_bytes(format: Format, header: &nifti::VolumeHeader) -> u64 {
    match format {
        Format::Nii | Format::NiiGz => header.file_bytes() as u64,
        Format::Npy => (npy::header_bytes(&header.shape).len() + 4 * header.len()) as u64,
    }
}

/// Decides whether `path` already holds what `write` would produce for `header`.
pub fn check_existing(path: &Path, format: Format, header: &nifti::VolumeHeader) -> Existing {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Existing::Missing,
        Err(e) => return Existing::Incomplete(format!("cannot inspect it: {e}")),
    };
    let want = expected_bytes(format, header);
    let result = (|| -> std::io::Result<Existing> {
        let mut f = File::open(path)?;
        match format {
            Format::Nii | Format::Npy => {
                if meta.len() != want {
                    return Ok(Existing::Incomplete(format!(
                        "{} bytes, expected {want}",
                        meta.len()
                    )));
                }
                if format == Format::Npy {
                    let expect = npy::header_bytes(&header.shape);
                    let mut got = vec![0u8; expect.len()];
                    f.read_exact(&mut got)?;
                    return Ok(if got == expect {
                        Existing::Complete
                    } else {
                        Existing::Incomplete("its .npy header differs".into())
                    });
                }
                nifti_header_state(&mut f, header)
            }
            Format::NiiGz => {
                // The gzip trailer's ISIZE is the uncompressed length modulo 2^32.
                if meta.len() < 18 {
                    return Ok(Existing::Incomplete("too short for gzip".into()));
                }
                f.seek(SeekFrom::End(-4))?;
                let mut isize = [0u8; 4];
                f.read_exact(&mut isize)?;
                let isize = u32::from_le_bytes(isize) as u64;
                if isize != want % (1u64 << 32) {
                    return Ok(Existing::Incomplete(format!(
                        "uncompressed size {isize}, expected {want}"
                    )));
                }
                f.seek(SeekFrom::Start(0))?;
                nifti_header_state(&mut GzDecoder::new(f), header)
            }
        }
    })();
    result.unwrap_or_else(|e| Existing::Incomplete(format!("cannot read it: {e}")))
}

fn nifti_header_state(
    input: &mut dyn Read,
    header: &nifti::VolumeHeader,
) -> std::io::Result<Existing> {
    Ok(match nifti::read_header_summary(input)? {
        None => Existing::Incomplete("not a NIfTI-1 file".into()),
        Some(s) if s.matches(header) => Existing::Complete,
        Some(s) if s.descrip != header.descrip => Existing::Different { found: s.descrip },
        Some(_) => Existing::Incomplete("its NIfTI header differs (dims or datatype)".into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(descrip: &str) -> nifti::VolumeHeader {
        nifti::VolumeHeader {
            shape: [1, 4, 3, 2],
            spacing_mm: [1.1; 3],
            orientation: "RAS".into(),
            descrip: descrip.into(),
        }
    }

    #[test]
    fn every_format_round_trips_the_completeness_check() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<f32> = (0..24).map(|x| x as f32).collect();
        for format in [Format::NiiGz, Format::Nii, Format::Npy] {
            let name = format!("v.{}", format.extension());
            let path = dir.path().join(&name);
            let h = header("seed=1");
            assert_eq!(check_existing(&path, format, &h), Existing::Missing);
            write(dir.path(), &name, format, &h, &data).unwrap();
            assert_eq!(
                check_existing(&path, format, &h),
                Existing::Complete,
                "{format:?}"
            );
            if format != Format::Npy {
                assert!(matches!(
                    check_existing(&path, format, &header("seed=2")),
                    Existing::Different { .. }
                ));
            }
            let bytes = std::fs::read(&path).unwrap();
            std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
            assert!(
                matches!(check_existing(&path, format, &h), Existing::Incomplete(_)),
                "{format:?}"
            );
            // same input, same bytes
            write(dir.path(), &name, format, &h, &data).unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), bytes);
        }
    }

    #[test]
    fn gz_output_is_valid_gzip_of_the_nii_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<f32> = (0..24).map(|x| x as f32).collect();
        let h = header("x");
        write(dir.path(), "a.nii", Format::Nii, &h, &data).unwrap();
        write(dir.path(), "a.nii.gz", Format::NiiGz, &h, &data).unwrap();
        let mut unzipped = Vec::new();
        GzDecoder::new(File::open(dir.path().join("a.nii.gz")).unwrap())
            .read_to_end(&mut unzipped)
            .unwrap();
        assert_eq!(unzipped, std::fs::read(dir.path().join("a.nii")).unwrap());
    }

    #[test]
    fn formats_parse() {
        assert_eq!(Format::parse("nii.gz"), Ok(Format::NiiGz));
        assert_eq!(Format::parse(".NII"), Ok(Format::Nii));
        assert_eq!(Format::parse("npy"), Ok(Format::Npy));
        assert!(Format::parse("mha").is_err());
    }
}
