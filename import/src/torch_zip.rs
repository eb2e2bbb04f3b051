//! Reader for `torch.save` checkpoints (the zip format since torch 1.6): `<archive>/data.pkl`
//! holds the pickled state dict, `<archive>/data/<key>` the raw storages, `<archive>/byteorder`
//! their byte order. The pickle goes through the restricted unpickler; every tensor view is
//! checked against its storage with checked arithmetic before any data is read.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use zip::ZipArchive;

use crate::elements::{decode, SourceTensor};
use crate::pickle::{unpickle, Id, Obj, Pickle, TensorRef};
use crate::ImportError;

/// Largest `data.pkl` accepted. A state dict's pickle holds names and shapes only (the bundle's
/// UNet: about 55 KiB); anything this large is not a state dict.
const MAX_PICKLE_BYTES: u64 = 64 << 20;

/// Most bytes of f32 the tensors may decode to, per byte of the file. Each element is stored in
/// at least 2 bytes (f16), so tensors with storages of their own decode to at most twice the
/// file; more is only possible when many tensors view the same storage, which a state dict
/// does at most for a few tied weights.
const MAX_DECODED_PER_FILE_BYTE: u64 = 4;

/// Read the state dict of a torch.save zip archive (optionally the nested dict `key`).
pub fn read(path: &Path, file: File, key: Option<&str>) -> Result<Vec<SourceTensor>, ImportError> {
    let shown = path.display().to_string();
    let zerr = |cause| ImportError::Zip {
        path: shown.clone(),
        cause,
    };
    let layout = |msg: String| ImportError::Layout {
        path: shown.clone(),
        msg,
    };
    let file_len = file
        .metadata()
        .map_err(|cause| ImportError::Io {
            path: shown.clone(),
            cause,
        })?
        .len();
    let max_decoded = file_len.saturating_mul(MAX_DECODED_PER_FILE_BYTE);
    let mut decoded: u64 = 0;
    let mut archive = ZipArchive::new(BufReader::new(file)).map_err(zerr)?;

    let pkl_names: Vec<String> = archive
        .file_names()
        .filter(|n| n.ends_with("/data.pkl") && n.matches('/').count() == 1)
        .map(str::to_string)
        .collect();
    let pkl_name = match pkl_names.as_slice() {
        [one] => one.clone(),
        [] => {
            return Err(layout(
                "no `<archive>/data.pkl` member: not a torch.save checkpoint".into(),
            ))
        }
        many => {
            return Err(layout(format!(
                "{} `data.pkl` members ({}); expected exactly one",
                many.len(),
                many.join(", ")
            )))
        }
    };
    let prefix = pkl_name.trim_end_matches("data.pkl").to_string();

    let big_endian = match read_member(&mut archive, &format!("{prefix}byteorder"), 64, &shown)? {
        None => false,
        Some(b) => match b.as_slice() {
            b"little" => false,
            b"big" => true,
            other => {
                return Err(layout(format!(
                    "byteorder member says {:?}, expected little or big",
                    String::from_utf8_lossy(other)
                )))
            }
        },
    };

    let pkl = read_member(&mut archive, &pkl_name, MAX_PICKLE_BYTES, &shown)?
        .ok_or_else(|| layout(format!("member {pkl_name} vanished")))?;
    let pickle = unpickle(&pkl).map_err(|cause| ImportError::Pickle {
        path: shown.clone(),
        cause,
    })?;
    let entries = select_state_dict(&pickle, key).map_err(layout)?;

    let mut out = Vec::with_capacity(entries.len());
    for (name, tensor) in entries {
        let terr = |msg: String| ImportError::Tensor {
            path: shown.clone(),
            tensor: name.clone(),
            msg,
        };
        let plan = view_plan(&tensor).map_err(terr)?;
        let elem = tensor.storage.dtype.size_bytes() as u64;
        let storage_bytes = tensor
            .storage
            .numel
            .checked_mul(elem)
            .ok_or_else(|| terr(format!("storage numel {} overflows", tensor.storage.numel)))?;
        let member = format!("{prefix}data/{}", tensor.storage.key);
        let declared = {
            let f = match archive.by_name(&member) {
                Ok(f) => f,
                Err(zip::result::ZipError::FileNotFound) => {
                    return Err(terr(format!(
                        "its storage `{}` is missing from the archive (no member {member})",
                        tensor.storage.key
                    )))
                }
                Err(e) => return Err(zerr(e)),
            };
            f.size()
        };
        if declared != storage_bytes {
            return Err(terr(format!(
                "storage `{}` claims {} {} elements ({storage_bytes} bytes) but its member holds {declared} bytes",
                tensor.storage.key,
                tensor.storage.numel,
                tensor.storage.dtype.name()
            )));
        }
        let bytes = read_member(&mut archive, &member, storage_bytes, &shown)?
            .ok_or_else(|| terr(format!("storage member {member} vanished")))?;
        if bytes.len() as u64 != storage_bytes {
            return Err(terr(format!(
                "storage member {member} holds {} bytes, expected {storage_bytes}",
                bytes.len()
            )));
        }
        // Each view lies within its storage: only storages shared by many tensors pass this.
        decoded = decoded.saturating_add((plan.numel as u64).saturating_mul(4));
        if decoded > max_decoded {
            return Err(layout(format!(
                "the tensors decode to more than {max_decoded} bytes of float32 ({MAX_DECODED_PER_FILE_BYTE} per byte of the {file_len}-byte file): too many tensors share the same storages"
            )));
        }
        let data = gather(&bytes, &tensor, &plan, big_endian);
        out.push(SourceTensor {
            name,
            shape: plan.shape,
            data,
            source_dtype: tensor.storage.dtype,
        });
    }
    Ok(out)
}

/// Read one member entirely, refusing anything larger than `limit` bytes; `None` if absent.
fn read_member(
    archive: &mut ZipArchive<BufReader<File>>,
    name: &str,
    limit: u64,
    shown: &str,
) -> Result<Option<Vec<u8>>, ImportError> {
    let zerr = |cause| ImportError::Zip {
        path: shown.to_string(),
        cause,
    };
    let f = match archive.by_name(name) {
        Ok(f) => f,
        Err(zip::result::ZipError::FileNotFound) => return Ok(None),
        Err(e) => return Err(zerr(e)),
    };
    if f.size() > limit {
        return Err(ImportError::Layout {
            path: shown.to_string(),
            msg: format!(
                "member {name} is {} bytes, more than the {limit} allowed",
                f.size()
            ),
        });
    }
    let mut buf = Vec::new();
    // Grows with the bytes actually present, never from the declared size alone.
    f.take(limit.saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(|cause| ImportError::Io {
            path: format!("{shown} (member {name})"),
            cause,
        })?;
    if buf.len() as u64 > limit {
        return Err(ImportError::Layout {
            path: shown.to_string(),
            msg: format!("member {name} is larger than the {limit} bytes allowed"),
        });
    }
    Ok(Some(buf))
}

/// Find the dict of tensors: the root, or `root[key]`.
fn select_state_dict(p: &Pickle, key: Option<&str>) -> Result<Vec<(String, TensorRef)>, String> {
    let root = dict_entries(p, p.root, "the checkpoint's top-level object")?;
    let dict = match key {
        None => p.root,
        Some(k) => {
            let found = root
                .iter()
                .find(|(kk, _)| matches!(p.get(*kk), Obj::Str(s) if s == k));
            match found {
                Some((_, v)) => *v,
                None => {
                    return Err(format!(
                        "--key {k}: the top-level dict has no such entry (it has: {})",
                        key_list(p, &root)
                    ));
                }
            }
        }
    };
    let what = match key {
        None => "the top-level dict".to_string(),
        Some(k) => format!("entry '{k}'"),
    };
    let entries = dict_entries(p, dict, &what)?;
    let mut out: Vec<(String, TensorRef)> = Vec::with_capacity(entries.len());
    let mut seen = HashMap::new();
    let mut non_tensors = Vec::new();
    for (k, v) in &entries {
        let name = match p.get(*k) {
            Obj::Str(s) => s.clone(),
            _ => return Err(format!("{what} has a non-string key {}", p.describe(*k))),
        };
        match p.get(*v) {
            Obj::Tensor(t) => {
                if seen.insert(name.clone(), ()).is_some() {
                    return Err(format!("{what} has the key '{name}' twice"));
                }
                out.push((name, t.clone()));
            }
            _ => non_tensors.push(format!("'{name}' ({})", p.describe(*v))),
        }
    }
    if !non_tensors.is_empty() {
        let hint = if key.is_none() {
            " — if the state dict is nested, select it with --key NAME"
        } else {
            ""
        };
        return Err(format!(
            "{what} is not a state dict: entries that are not tensors: {}{hint}",
            non_tensors.join(", ")
        ));
    }
    Ok(out)
}

fn dict_entries(p: &Pickle, id: Id, what: &str) -> Result<Vec<(Id, Id)>, String> {
    match p.get(id) {
        Obj::Dict(e) => Ok(e.clone()),
        _ => Err(format!("{what} is a {}, not a dict", p.describe(id))),
    }
}

/// The first keys of a dict, e.g. "'a', 'b' and 420 more"; a dict of tensors is named as
/// such, since then no `--key` is needed.
fn key_list(p: &Pickle, entries: &[(Id, Id)]) -> String {
    const SHOWN: usize = 8;
    let mut s = entries
        .iter()
        .take(SHOWN)
        .map(|(k, _)| p.describe(*k))
        .collect::<Vec<_>>()
        .join(", ");
    if entries.len() > SHOWN {
        s.push_str(&format!(" and {} more", entries.len() - SHOWN));
    }
    if !entries.is_empty()
        && entries
            .iter()
            .all(|(_, v)| matches!(p.get(*v), Obj::Tensor(_)))
    {
        s.push_str(&format!(
            "; all {} entries are tensors, so it is the state dict itself: drop --key",
            entries.len()
        ));
    }
    s
}

/// A validated view: shape in usize, element count, and whether it is one contiguous run.
struct ViewPlan {
    shape: Vec<usize>,
    numel: usize,
    contiguous: bool,
}

/// Check a tensor view against its storage: every element it addresses must lie inside.
fn view_plan(t: &TensorRef) -> Result<ViewPlan, String> {
    let mut numel: u64 = 1;
    for &s in &t.shape {
        numel = numel
            .checked_mul(s)
            .ok_or_else(|| format!("shape {:?} overflows", t.shape))?;
    }
    let numel_usize =
        usize::try_from(numel).map_err(|_| format!("shape {:?} is too large", t.shape))?;
    if numel > t.storage.numel {
        return Err(format!(
            "shape {:?} has {numel} elements but storage `{}` holds only {} (broadcast views are not supported)",
            t.shape, t.storage.key, t.storage.numel
        ));
    }
    let shape: Vec<usize> = t.shape.iter().map(|&s| s as usize).collect();
    if numel > 0 {
        let mut last = t.offset;
        for (&s, &st) in t.shape.iter().zip(&t.stride) {
            let span = (s - 1)
                .checked_mul(st)
                .ok_or_else(|| format!("stride {:?} overflows", t.stride))?;
            last = last
                .checked_add(span)
                .ok_or_else(|| format!("stride {:?} overflows", t.stride))?;
        }
        if last >= t.storage.numel {
            return Err(format!(
                "view (offset {}, shape {:?}, stride {:?}) reaches element {last} but storage `{}` has {} elements",
                t.offset, t.shape, t.stride, t.storage.key, t.storage.numel
            ));
        }
    }
    let mut expect = 1u64;
    let mut contiguous = true;
    for (&s, &st) in t.shape.iter().zip(&t.stride).rev() {
        if s != 1 && st != expect {
            contiguous = false;
        }
        expect = expect.saturating_mul(s);
    }
    Ok(ViewPlan {
        shape,
        numel: numel_usize,
        contiguous,
    })
}

/// Copy the view's elements out of the storage bytes (already bounds-checked by `view_plan`).
fn gather(bytes: &[u8], t: &TensorRef, plan: &ViewPlan, big_endian: bool) -> Vec<f32> {
    if plan.numel == 0 {
        return Vec::new();
    }
    let offset = t.offset as usize;
    if plan.contiguous {
        let elem = t.storage.dtype.size_bytes();
        return decode(
            &bytes[offset * elem..(offset + plan.numel) * elem],
            t.storage.dtype,
            big_endian,
        );
    }
    // A strided view: decode the storage once, then pick the elements in row-major order.
    let all = decode(bytes, t.storage.dtype, big_endian);
    let mut out = Vec::with_capacity(plan.numel);
    let stride: Vec<usize> = t.stride.iter().map(|&s| s as usize).collect();
    let mut idx = vec![0usize; plan.shape.len()];
    for _ in 0..plan.numel {
        let at = offset + idx.iter().zip(&stride).map(|(i, s)| i * s).sum::<usize>();
        out.push(all[at]);
        for d in (0..idx.len()).rev() {
            idx[d] += 1;
            if idx[d] < plan.shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use crate::pickle::StorageDtype;
    use crate::read_checkpoint;

    fn crafted(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/crafted")
            .join(name)
    }

    #[test]
    fn reads_every_storage_dtype_strides_and_offsets() {
        let t = read_checkpoint(&crafted("dtypes.pt"), None).unwrap();
        let names: Vec<&str> = t.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["f16", "bf16", "f64", "transposed", "offset"]);
        assert_eq!(t[0].data, [0.5, -1.25, 2.0, 65504.0]);
        assert_eq!(t[0].source_dtype, StorageDtype::F16);
        assert_eq!(
            (t[1].shape.as_slice(), t[1].data.as_slice()),
            (&[2usize, 2][..], &[1.0f32, -2.5, 3.0, 0.15625][..])
        );
        assert_eq!(t[2].data, [0.25, -0.5, 0.001f64 as f32, 3.0]);
        // Storage [0..6) viewed as shape (3, 2) with stride (1, 3): the transpose of a 2x3.
        assert_eq!(t[3].shape, [3, 2]);
        assert_eq!(t[3].data, [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
        assert_eq!(t[4].data, [4.0, 5.0]);
    }

    #[test]
    fn big_endian_storages() {
        let t = read_checkpoint(&crafted("big_endian.pt"), None).unwrap();
        assert_eq!(t[0].data, [1.0, 2.0, 3.0, 4.0]);
    }

    #[test]
    fn nested_state_dict_by_key() {
        let t = read_checkpoint(&crafted("nested.pt"), Some("state_dict")).unwrap();
        assert_eq!((t.len(), t[0].name.as_str()), (1, "w"));
        let e = read_checkpoint(&crafted("nested.pt"), Some("model"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--key model") && e.contains("'state_dict', 'epoch'"),
            "{e}"
        );
        let e = read_checkpoint(&crafted("nested.pt"), Some("epoch"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("entry 'epoch' is a 3, not a dict"), "{e}");
    }

    #[test]
    fn monai_metadata_build_is_accepted() {
        // Both fixture naming generations carry an OrderedDict `_metadata` set through BUILD.
        let fx =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/monai/autoencoder");
        for f in ["autoencoder.pt", "autoencoder_monai.pt"] {
            let t = read_checkpoint(&fx.join(f), None).unwrap();
            assert_eq!(t.len(), 126, "{f}");
            assert_eq!(t[0].name, "encoder.blocks.0.conv.weight");
            assert_eq!(t[0].shape, [16, 1, 3, 3, 3]);
        }
    }

    /// 300 truncations (every one of the last 100 bytes, where the zip directory lives) and
    /// 500 byte flips of a small valid archive: errors, never panics.
    #[test]
    fn corrupted_archives_never_panic() {
        let good = std::fs::read(crafted("dtypes.pt")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.pt");
        let n = good.len();
        let lens = (0..200).map(|k| k * (n - 100) / 200).chain(n - 100..n);
        for len in lens {
            std::fs::write(&path, &good[..len]).unwrap();
            assert!(
                read_checkpoint(&path, None).is_err(),
                "truncation at {len} accepted"
            );
        }
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..500 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let mut bad = good.clone();
            let at = (state % bad.len() as u64) as usize;
            bad[at] ^= (state >> 32) as u8 | 1;
            std::fs::write(&path, &bad).unwrap();
            let _ = read_checkpoint(&path, None);
        }
    }
}
