//! A small reader of our own headers (`generate`'s outputs), used to decide whether an existing
//! output file is complete: the fields that identify it (dims, datatype, vox_offset, description).

use std::io::Read;

use super::write::{VolumeHeader, DATA_OFFSET, DT_FLOAT32, HEADER_BYTES};

/// What `read_own_header` finds in a file we may have written earlier.
#[derive(Debug, Clone, PartialEq)]
pub struct HeaderSummary {
    pub dims: [i16; 8],
    pub datatype: i16,
    pub vox_offset: f32,
    pub descrip: String,
}

/// Reads the first 352 bytes of a (possibly gzipped) NIfTI-1 stream and summarises the fields
/// that identify one of our outputs. `None` when it is not a little-endian NIfTI-1 single file.
pub fn read_header_summary(input: &mut dyn Read) -> std::io::Result<Option<HeaderSummary>> {
    let mut b = [0u8; DATA_OFFSET];
    match input.read_exact(&mut b) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    if i32::from_le_bytes([b[0], b[1], b[2], b[3]]) != HEADER_BYTES as i32
        || &b[344..348] != b"n+1\0"
    {
        return Ok(None);
    }
    let mut dims = [0i16; 8];
    for (n, v) in dims.iter_mut().enumerate() {
        *v = i16::from_le_bytes([b[40 + 2 * n], b[41 + 2 * n]]);
    }
    let descrip_bytes = &b[148..228];
    let end = descrip_bytes
        .iter()
        .position(|&x| x == 0)
        .unwrap_or(descrip_bytes.len());
    Ok(Some(HeaderSummary {
        dims,
        datatype: i16::from_le_bytes([b[70], b[71]]),
        vox_offset: f32::from_le_bytes([b[108], b[109], b[110], b[111]]),
        descrip: String::from_utf8_lossy(&descrip_bytes[..end]).into_owned(),
    }))
}

impl HeaderSummary {
    /// Whether this header is exactly the one `header` would produce (shape, type, description).
    pub fn matches(&self, header: &VolumeHeader) -> bool {
        let [c, d, h, w] = header.shape;
        let ndim: i16 = if c > 1 { 4 } else { 3 };
        let want = [ndim, d as i16, h as i16, w as i16, c as i16, 1, 1, 1];
        let used = 1 + ndim as usize;
        self.dims[..used] == want[..used]
            && self.datatype == DT_FLOAT32
            && self.vox_offset == DATA_OFFSET as f32
            && self.descrip == header.descrip
    }
}
