//! A restricted unpickler for PyTorch state dicts.
//!
//! It understands exactly the pickle subset that `torch.save(state_dict)` writes (protocol 2+):
//! containers, strings, small integers, `collections.OrderedDict`, the tensor rebuild functions,
//! typed storage classes and persistent storage references. Every other global is refused by
//! name as soon as the opcode naming it is read: nothing is ever imported, constructed or
//! executed. Objects live in an arena and the memo stores arena indices, so memo hits share the
//! object (as in Python) and no opcode can copy an unbounded amount of data.

use std::fmt;

use thiserror::Error;

mod machine;

/// Element type of a torch storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageDtype {
    F32,
    F16,
    BF16,
    F64,
}

impl StorageDtype {
    pub fn size_bytes(self) -> usize {
        match self {
            StorageDtype::F32 => 4,
            StorageDtype::F16 | StorageDtype::BF16 => 2,
            StorageDtype::F64 => 8,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            StorageDtype::F32 => "float32",
            StorageDtype::F16 => "float16",
            StorageDtype::BF16 => "bfloat16",
            StorageDtype::F64 => "float64",
        }
    }
}

/// The only globals a checkpoint may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allowed {
    OrderedDict,
    RebuildTensorV2,
    RebuildTensor,
    RebuildParameter,
    Storage(StorageDtype),
}

impl Allowed {
    fn lookup(module: &str, name: &str) -> Option<Allowed> {
        Some(match (module, name) {
            ("collections", "OrderedDict") => Allowed::OrderedDict,
            ("torch._utils", "_rebuild_tensor_v2") => Allowed::RebuildTensorV2,
            ("torch._utils", "_rebuild_tensor") => Allowed::RebuildTensor,
            ("torch._utils", "_rebuild_parameter") => Allowed::RebuildParameter,
            ("torch", "FloatStorage") => Allowed::Storage(StorageDtype::F32),
            ("torch", "HalfStorage") => Allowed::Storage(StorageDtype::F16),
            ("torch", "BFloat16Storage") => Allowed::Storage(StorageDtype::BF16),
            ("torch", "DoubleStorage") => Allowed::Storage(StorageDtype::F64),
            _ => return None,
        })
    }
}

/// Most dimensions of a tensor (torch allows 64; networks here use at most 5).
const MAX_DIMS: usize = 16;
/// Most nested MARKs (a state dict nests a handful deep).
const MAX_MARK_DEPTH: usize = 1_000;
/// Most objects one pickle may create (a state dict makes about 20 per tensor; the bundle's
/// UNet has about 320 tensors). Bounds memory to a few hundred MiB whatever the input.
const MAX_OBJECTS: usize = 4_000_000;

/// The allowed set, for error messages.
pub const ALLOWED_GLOBALS: &str = "collections.OrderedDict, torch._utils._rebuild_tensor_v2, \
     torch._utils._rebuild_tensor, torch._utils._rebuild_parameter, torch.FloatStorage, \
     torch.HalfStorage, torch.BFloat16Storage, torch.DoubleStorage";

/// A persistent storage reference: `('storage', StorageType, key, location, numel)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageRef {
    pub dtype: StorageDtype,
    pub key: String,
    pub numel: u64,
}

/// A tensor view onto a storage, as `_rebuild_tensor_v2` describes it (in elements).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorRef {
    pub storage: StorageRef,
    pub offset: u64,
    pub shape: Vec<u64>,
    pub stride: Vec<u64>,
}

/// Index of an object in the arena.
pub type Id = usize;

/// A decoded pickle object.
#[derive(Debug, Clone, PartialEq)]
pub enum Obj {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Tuple(Vec<Id>),
    List(Vec<Id>),
    /// Insertion-ordered; `OrderedDict` and `dict` alike.
    Dict(Vec<(Id, Id)>),
    Global(Allowed),
    Storage(StorageRef),
    Tensor(TensorRef),
}

impl Obj {
    fn kind(&self) -> &'static str {
        match self {
            Obj::None => "None",
            Obj::Bool(_) => "bool",
            Obj::Int(_) => "int",
            Obj::Float(_) => "float",
            Obj::Str(_) => "str",
            Obj::Tuple(_) => "tuple",
            Obj::List(_) => "list",
            Obj::Dict(_) => "dict",
            Obj::Global(_) => "global",
            Obj::Storage(_) => "storage",
            Obj::Tensor(_) => "tensor",
        }
    }
}

#[derive(Debug, Error, PartialEq)]
pub enum PickleError {
    #[error("pickle refused: global `{module}.{name}` is not allowed (a state dict needs only {ALLOWED_GLOBALS}); nothing was executed")]
    ForbiddenGlobal { module: String, name: String },
    #[error("pickle refused: opcode 0x{opcode:02x} ({desc}) at byte {pos} is not supported by the restricted unpickler")]
    UnsupportedOpcode {
        opcode: u8,
        desc: &'static str,
        pos: usize,
    },
    #[error(
        "pickle truncated: {what} at byte {pos} needs more bytes than the {len}-byte pickle has"
    )]
    Truncated {
        what: &'static str,
        pos: usize,
        len: usize,
    },
    #[error("pickle truncated: it ended without a STOP opcode")]
    NoStop,
    #[error("malformed pickle at byte {pos}: {msg}")]
    Malformed { pos: usize, msg: String },
    #[error("pickle protocol {0} is not supported (2 to 5 are)")]
    Protocol(u8),
}

/// The result of unpickling: the arena and the root object.
#[derive(Debug)]
pub struct Pickle {
    objs: Vec<Obj>,
    pub root: Id,
}

impl Pickle {
    pub fn get(&self, id: Id) -> &Obj {
        // Ids handed out by the unpickler always index the arena.
        &self.objs[id]
    }

    /// A short description of an object, for error messages.
    pub fn describe(&self, id: Id) -> String {
        match self.get(id) {
            Obj::Str(s) => format!("'{s}'"),
            Obj::Int(i) => i.to_string(),
            other => other.kind().to_string(),
        }
    }
}

impl fmt::Display for Allowed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Allowed::OrderedDict => "collections.OrderedDict",
            Allowed::RebuildTensorV2 => "torch._utils._rebuild_tensor_v2",
            Allowed::RebuildTensor => "torch._utils._rebuild_tensor",
            Allowed::RebuildParameter => "torch._utils._rebuild_parameter",
            Allowed::Storage(StorageDtype::F32) => "torch.FloatStorage",
            Allowed::Storage(StorageDtype::F16) => "torch.HalfStorage",
            Allowed::Storage(StorageDtype::BF16) => "torch.BFloat16Storage",
            Allowed::Storage(StorageDtype::F64) => "torch.DoubleStorage",
        };
        f.write_str(s)
    }
}

/// Unpickle `data` under the restrictions described in the module documentation.
pub fn unpickle(data: &[u8]) -> Result<Pickle, PickleError> {
    machine::Machine::new(data).run()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_os_system_before_reduce() {
        let p = b"\x80\x02cos\nsystem\nq\x00X\x02\x00\x00\x00lsq\x01\x85R.";
        let e = unpickle(p).unwrap_err();
        assert!(
            matches!(&e, PickleError::ForbiddenGlobal { module, name } if module == "os" && name == "system"),
            "{e}"
        );
        assert!(e.to_string().contains("`os.system`"));
    }

    #[test]
    fn refuses_stack_global() {
        let p = b"\x80\x04\x8c\x08builtins\x8c\x04eval\x93.";
        let e = unpickle(p).unwrap_err();
        assert!(e.to_string().contains("builtins.eval"), "{e}");
    }

    #[test]
    fn refuses_newobj_and_unknown() {
        let e = unpickle(b"\x80\x02)\x81.").unwrap_err();
        assert!(matches!(
            e,
            PickleError::UnsupportedOpcode { opcode: 0x81, .. }
        ));
    }

    #[test]
    fn memo_shares_objects() {
        // d = {}; memo 0; then BINGET 0, SETITEM 'a' -> 1; result is the dict, mutated.
        let p = b"\x80\x02}q\x00h\x00X\x01\x00\x00\x00aK\x01s0.";
        let pk = unpickle(p).unwrap();
        match pk.get(pk.root) {
            Obj::Dict(e) => assert_eq!(e.len(), 1),
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn truncated_and_no_stop() {
        assert!(matches!(
            unpickle(b"\x80\x02X\xff\xff\xff\x7fab"),
            Err(PickleError::Truncated { .. })
        ));
        assert!(matches!(unpickle(b"\x80\x02}"), Err(PickleError::NoStop)));
        assert!(matches!(unpickle(b""), Err(PickleError::NoStop)));
    }

    #[test]
    fn long1_sign_extends() {
        let pk = unpickle(b"\x80\x02\x8a\x02\xff\x7f.").unwrap();
        assert_eq!(pk.get(pk.root), &Obj::Int(0x7fff));
        let pk = unpickle(b"\x80\x02\x8a\x01\xff.").unwrap();
        assert_eq!(pk.get(pk.root), &Obj::Int(-1));
    }

    /// The fixture's real `data.pkl` (monai naming: OrderedDict `_metadata` via BUILD).
    fn fixture_pickle() -> Vec<u8> {
        use std::io::Read;
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/monai/unet/unet_monai.pt");
        let mut z = zip::ZipArchive::new(std::fs::File::open(path).unwrap()).unwrap();
        let mut f = z.by_name("unet_monai/data.pkl").unwrap();
        let mut v = Vec::new();
        f.read_to_end(&mut v).unwrap();
        v
    }

    #[test]
    fn real_state_dict_parses() {
        let pk = unpickle(&fixture_pickle()).unwrap();
        let Obj::Dict(entries) = pk.get(pk.root) else {
            panic!("root is not a dict")
        };
        assert_eq!(entries.len(), 296);
        assert!(entries
            .iter()
            .all(|(_, v)| matches!(pk.get(*v), Obj::Tensor(_))));
    }

    /// 300 truncations and 2 000 random single-byte corruptions of a real pickle give a
    /// result or an error, never a panic (a deterministic xorshift drives the corruptions).
    #[test]
    fn corrupted_pickles_never_panic() {
        let good = fixture_pickle();
        for k in 0..300 {
            let len = k * good.len() / 300;
            assert!(
                unpickle(&good[..len]).is_err(),
                "truncation at {len} accepted"
            );
        }
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut errors = 0;
        for _ in 0..2_000 {
            let mut bad = good.clone();
            let at = (next() % bad.len() as u64) as usize;
            bad[at] = next() as u8;
            if unpickle(&bad).is_err() {
                errors += 1;
            }
        }
        assert!(errors > 0);
    }
}
