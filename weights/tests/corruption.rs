//! Corrupt and hostile blobs: each must give its own typed error, never a panic.
//!
//! Crafted cases re-encode a modified header over the original data and recompute the checksum
//! (`common::rebuild`), so the check under test is the one that fires.

mod common;

use common::*;
use ldm_weights::format::{version_word, MAX_HEADER_LEN};
use ldm_weights::*;

fn err(bytes: Vec<u8>) -> BlobError {
    Blob::from_bytes(bytes).expect_err("corrupt blob was accepted")
}

#[test]
fn every_truncation_is_an_error() {
    // Every length of the tiny blob; every 7th (plus the prefix) of the larger one.
    for (cfg, step) in [(tiny_config(), 1), (small_config(), 7)] {
        let bytes = blob_bytes(&cfg, DType::F16);
        for len in (0..bytes.len()).filter(|l| l % step == 0 || *l < 64) {
            match err(bytes[..len].to_vec()) {
                BlobError::TooShort { .. } => assert!(len < 28),
                BlobError::HeaderOutOfBounds { .. } | BlobError::ChecksumMismatch { .. } => assert!(len >= 28),
                e => panic!("truncation to {len}: unexpected {e:?}"),
            }
        }
        Blob::from_bytes(bytes).unwrap();
    }
}

#[test]
fn random_byte_flips_are_errors() {
    let bytes = blob_bytes(&tiny_config(), DType::F32);
    let mut s = 0x1234_5678_9abc_def1u64;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    for _ in 0..4000 {
        let mut b = bytes.clone();
        let pos = (next() % b.len() as u64) as usize;
        let flip = (next() % 255 + 1) as u8;
        b[pos] ^= flip;
        let e = err(b);
        // The prefix checks come first; everything else is caught by the checksum.
        let ok = match pos {
            0..=7 => matches!(e, BlobError::BadMagic { .. }),
            8..=11 => matches!(
                e,
                BlobError::UnsupportedVersion { .. } | BlobError::ChecksumMismatch { .. }
            ),
            12..=19 => matches!(
                e,
                BlobError::HeaderOutOfBounds { .. } | BlobError::ChecksumMismatch { .. }
            ),
            _ => matches!(e, BlobError::ChecksumMismatch { .. }),
        };
        assert!(ok, "flip {flip:#x} at {pos}: {e:?}");
    }
}

#[test]
fn bad_magic_and_unknown_version() {
    let bytes = blob_bytes(&tiny_config(), DType::F32);
    let mut b = bytes.clone();
    b[0] = b'X';
    assert!(matches!(err(b), BlobError::BadMagic { .. }));
    for major in [0u16, 3, u16::MAX] {
        let mut b = bytes.clone();
        b[8..12].copy_from_slice(&version_word(major, 0).to_le_bytes());
        reseal(&mut b);
        let e = err(b);
        assert!(matches!(e, BlobError::UnsupportedVersion { major: m, oldest: 1, supported: 2, .. } if m == major));
        let msg = e.to_string();
        assert!(msg.contains("major versions 1 to 2"), "{msg}");
        assert_eq!(msg.contains("newer brats-ldm"), major > 2, "{msg}");
    }
}

#[test]
fn newer_minor_may_extend_the_header_but_not_the_current_one() {
    let bytes = blob_bytes(&tiny_config(), DType::F32);
    let (header, _) = raw_header(&bytes);
    let mut hb = ldm_weights::format::encode_header(&header).unwrap();
    hb.extend_from_slice(b"future field");
    // Splice the longer header in (it still fits before the 256-aligned data start).
    let old_len = u64::from_le_bytes(bytes[12..20].try_into().unwrap()) as usize;
    let mut b = bytes[..12].to_vec();
    b.extend_from_slice(&(hb.len() as u64).to_le_bytes());
    b.extend_from_slice(&hb);
    b.extend_from_slice(&bytes[20 + hb.len()..]);
    assert!(
        bytes[20 + old_len..20 + hb.len()].iter().all(|&x| x == 0),
        "spliced over padding only"
    );
    reseal(&mut b);
    assert!(matches!(err(b.clone()), BlobError::HeaderTrailingBytes { .. }));
    b[8..12].copy_from_slice(&version_word(2, 1).to_le_bytes());
    reseal(&mut b);
    let blob = Blob::from_bytes(b).unwrap();
    assert_eq!(blob.format_version(), (2, 1));
}

#[test]
fn header_lengths_near_u64_max() {
    let bytes = blob_bytes(&tiny_config(), DType::F32);
    for hl in [u64::MAX, u64::MAX - 19, u64::MAX - 20, 1 << 63, bytes.len() as u64] {
        let mut b = bytes.clone();
        b[12..20].copy_from_slice(&hl.to_le_bytes());
        reseal(&mut b);
        assert!(matches!(err(b), BlobError::HeaderOutOfBounds { header_len, .. } if header_len == hl));
    }
    // A header length within the file but beyond the limit.
    let mut b = vec![0u8; MAX_HEADER_LEN as usize + 64];
    b[..20].copy_from_slice(&bytes[..20]);
    b[12..20].copy_from_slice(&(MAX_HEADER_LEN + 1).to_le_bytes());
    assert!(matches!(err(b), BlobError::HeaderTooLarge { .. }));
}

#[test]
fn table_lengths_near_u64_max() {
    let bytes = blob_bytes(&tiny_config(), DType::F32);
    let (header, _) = raw_header(&bytes);
    // Tensor count near u64::MAX.
    let hb = header_with_raw_table(&header, &varint_u64(u64::MAX));
    assert!(matches!(err(splice_header(&bytes, &hb)), BlobError::HeaderDecode(_)));
    // Count 1 with a name length near u64::MAX.
    let mut t = vec![1u8];
    t.extend(varint_u64(u64::MAX - 7));
    let hb = header_with_raw_table(&header, &t);
    assert!(matches!(err(splice_header(&bytes, &hb)), BlobError::HeaderDecode(_)));
    // A plausible count that the remaining bytes cannot hold.
    let hb = header_with_raw_table(&header, &[200]);
    assert!(matches!(err(splice_header(&bytes, &hb)), BlobError::HeaderDecode(_)));
    // Shape with u64::MAX dimensions (the ndim varint).
    let mut t = vec![1u8, 1, b'a', 0];
    t.extend(varint_u64(u64::MAX));
    let hb = header_with_raw_table(&header, &t);
    assert!(matches!(err(splice_header(&bytes, &hb)), BlobError::HeaderDecode(_)));

    // Offsets and sizes near u64::MAX in an otherwise valid table.
    let mut h = header.clone();
    h.tensors[0].offset = !255u64; // the largest aligned offset
    assert!(matches!(err(rebuild(&bytes, &h)), BlobError::OffsetOutOfRange { .. }));
    let mut h = header.clone();
    h.tensors[0].shape = vec![u64::MAX, 2];
    h.tensors[0].len = u64::MAX;
    assert!(matches!(err(rebuild(&bytes, &h)), BlobError::SizeOverflow { .. }));
    let mut h = header.clone();
    h.tensors[0].shape = vec![1 << 61];
    h.tensors[0].len = 1 << 63;
    assert!(matches!(err(rebuild(&bytes, &h)), BlobError::OffsetOutOfRange { .. }));
}

#[test]
fn misaligned_overlapping_and_out_of_range_offsets() {
    let bytes = blob_bytes(&small_config(), DType::F32);
    let (header, data_start) = raw_header(&bytes);

    let mut h = header.clone();
    h.tensors[3].offset += 4;
    let e = err(rebuild(&bytes, &h));
    assert!(
        matches!(&e, BlobError::Misaligned { name, offset, align: 256 } if *name == h.tensors[3].name && *offset == h.tensors[3].offset),
        "{e:?}"
    );

    let mut h = header.clone();
    h.tensors[4].offset = h.tensors[3].offset;
    let e = err(rebuild(&bytes, &h));
    assert!(matches!(&e, BlobError::Overlap { .. }), "{e:?}");

    // Overlapping the header region (before the data start).
    let mut h = header.clone();
    h.tensors[0].offset = data_start - 256;
    assert!(matches!(err(rebuild(&bytes, &h)), BlobError::OffsetOutOfRange { .. }));

    // Running into the checksum.
    let mut h = header.clone();
    let last = h.tensors.len() - 1;
    h.tensors[last].offset += 256;
    assert!(matches!(err(rebuild(&bytes, &h)), BlobError::OffsetOutOfRange { .. }));

    // Stored length disagreeing with shape * dtype.
    let mut h = header.clone();
    h.tensors[2].len += 4;
    assert!(matches!(err(rebuild(&bytes, &h)), BlobError::DataLength { .. }));
}

#[test]
fn shape_and_config_mismatches() {
    let bytes = blob_bytes(&small_config(), DType::F32);
    let (header, _) = raw_header(&bytes);

    // The config asks for a different shape than the table holds.
    let mut h = header.clone();
    h.config.decoder.as_mut().unwrap().out_channels = 2;
    let e = err(rebuild(&bytes, &h));
    assert!(
        matches!(&e, BlobError::ShapeMismatch { name, expected, found }
        if name.ends_with(".weight") && expected[0] == 2 && found[0] == 1),
        "{e:?}"
    );

    // The table's shape changes (consistently with its length) but the config does not.
    let mut h = header.clone();
    let i = h
        .tensors
        .iter()
        .position(|t| t.shape.len() == 1 && t.shape[0] == 4)
        .unwrap();
    h.tensors[i].shape = vec![2];
    h.tensors[i].len = 8;
    assert!(matches!(err(rebuild(&bytes, &h)), BlobError::ShapeMismatch { .. }));

    // An inconsistent config is reported as such before the table is compared.
    let mut h = header.clone();
    h.config.unet.as_mut().unwrap().norm_num_groups = 3;
    assert!(matches!(
        err(rebuild(&bytes, &h)),
        BlobError::InvalidConfig(ConfigError::GroupsNotDividing { .. })
    ));
    let mut h = header.clone();
    h.config.unet.as_mut().unwrap().num_res_blocks.pop();
    assert!(matches!(
        err(rebuild(&bytes, &h)),
        BlobError::InvalidConfig(ConfigError::LevelCountMismatch { .. })
    ));
}

#[test]
fn missing_extra_and_duplicate_tensors() {
    let bytes = blob_bytes(&small_config(), DType::F32);
    let (header, _) = raw_header(&bytes);

    let mut h = header.clone();
    let removed = h.tensors.remove(7);
    assert!(matches!(err(rebuild(&bytes, &h)), BlobError::MissingTensor { name } if name == removed.name));

    let mut h = header.clone();
    let mut extra = h.tensors[0].clone();
    extra.name = "unet.not_a_layer.weight".into();
    extra.shape = vec![4];
    extra.len = 16;
    let (_, tail_offset) = rebuild_with_tail(&bytes, &h, &[0u8; 16]);
    extra.offset = tail_offset;
    h.tensors.push(extra);
    let (b, _) = rebuild_with_tail(&bytes, &h, &[0u8; 16]);
    assert!(matches!(err(b), BlobError::UnexpectedTensor { name } if name == "unet.not_a_layer.weight"));

    let mut h = header.clone();
    let mut dup = h.tensors[1].clone();
    let (_, tail_offset) = rebuild_with_tail(&bytes, &h, &vec![0u8; dup.len as usize]);
    dup.offset = tail_offset;
    h.tensors.push(dup.clone());
    let (b, _) = rebuild_with_tail(&bytes, &h, &vec![0u8; dup.len as usize]);
    assert!(matches!(err(b), BlobError::DuplicateTensor { name } if name == dup.name));
}

#[test]
fn non_finite_weights_are_named() {
    let bytes = blob_bytes(&small_config(), DType::BF16);
    let (header, _) = raw_header(&bytes);
    let t = &header.tensors[9];
    let mut b = bytes.clone();
    let at = t.offset as usize + 2 * 3; // element 3
    b[at..at + 2].copy_from_slice(&half::bf16::NAN.to_le_bytes());
    reseal(&mut b);
    assert!(matches!(err(b), BlobError::NonFinite { name, index: 3, dtype: DType::BF16 } if name == t.name));
}

#[test]
fn header_decode_garbage() {
    let bytes = blob_bytes(&tiny_config(), DType::F32);
    let (_, data_start) = raw_header(&bytes);
    // Unknown Option tag, unknown enum variant, invalid UTF-8 in a name: all header decode errors.
    for hb in [vec![7u8], vec![0, 0, 0, 200, 9], vec![]] {
        let mut b = bytes[..12].to_vec();
        b.extend_from_slice(&(hb.len() as u64).to_le_bytes());
        b.extend_from_slice(&hb);
        b.resize(data_start as usize, 0);
        b.extend_from_slice(&bytes[data_start as usize..]);
        reseal(&mut b);
        assert!(matches!(err(b), BlobError::HeaderDecode(_)));
    }
}
