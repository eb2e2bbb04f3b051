//! The kernels of `src/kernels/*.cu`, compiled ahead of time by `cuda/build.rs` into one fatbin
//! (sm_80 + sm_90 machine code, compute_90 PTX, uncompressed) and embedded here. Loaded through
//! the driver API at device construction; no NVRTC at run time.

/// The fatbin produced by build.rs (`nvcc -fatbin`).
pub static FATBIN: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/ldm_kernels.fatbin"));

/// Magic number that opens a fatbin container (little-endian 0xBA55ED50).
pub const FATBIN_MAGIC: u32 = 0xBA55_ED50;

/// Whether `bytes` starts like a fatbin container.
pub fn looks_like_fatbin(bytes: &[u8]) -> bool {
    bytes.len() >= 16 && bytes[..4] == FATBIN_MAGIC.to_le_bytes()
}

/// Kernel entry points declared by the PTX inside `bytes` (`.entry <name>` lines), sorted and
/// deduplicated. The PTX is stored uncompressed (build.rs passes --no-compress), so this lists
/// every kernel that the driver can load from the fatbin.
pub fn ptx_entries(bytes: &[u8]) -> Vec<String> {
    const TAG: &[u8] = b".entry ";
    let mut names = Vec::new();
    let mut i = 0;
    while i + TAG.len() <= bytes.len() {
        if &bytes[i..i + TAG.len()] == TAG {
            let start = i + TAG.len();
            let end = bytes[start..]
                .iter()
                .position(|&b| !(b.is_ascii_alphanumeric() || b == b'_'))
                .map_or(bytes.len(), |p| start + p);
            if end > start {
                names.push(String::from_utf8_lossy(&bytes[start..end]).into_owned());
            }
            i = end;
        } else {
            i += 1;
        }
    }
    names.sort();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_fatbin_is_a_fatbin() {
        assert!(
            looks_like_fatbin(FATBIN),
            "first bytes {:02x?}",
            &FATBIN[..16.min(FATBIN.len())]
        );
        assert!(!looks_like_fatbin(b"not a fatbin at all"));
    }

    #[test]
    fn ptx_entries_parses_entry_lines() {
        let ptx = b"//\n.visible .entry ldm_a_f32(\n.param .u64 x\n)\n.visible .entry ldm_b(\n.entry ldm_a_f32(";
        assert_eq!(
            ptx_entries(ptx),
            vec!["ldm_a_f32".to_string(), "ldm_b".to_string()]
        );
        assert!(ptx_entries(b"").is_empty());
        assert!(ptx_entries(b".entry ").is_empty());
    }
}
