//! The pickle virtual machine: reads opcodes, keeps objects in an arena with a stack, marks and a
//! memo of arena indices, and turns the allowed globals (containers, tensor rebuild functions,
//! storages, persistent storage references) into `Obj`s; everything else is refused by name.

use std::collections::HashMap;

use super::{Allowed, Id, Obj, Pickle, PickleError, StorageRef, TensorRef, MAX_DIMS, MAX_MARK_DEPTH, MAX_OBJECTS};

pub(super) struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    objs: Vec<Obj>,
    stack: Vec<Id>,
    marks: Vec<Vec<Id>>,
    memo: HashMap<u32, Id>,
}

impl<'a> Machine<'a> {
    pub(super) fn new(data: &'a [u8]) -> Self {
        Machine {
            data,
            pos: 0,
            objs: Vec::new(),
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
        }
    }
}

fn opcode_desc(op: u8) -> &'static str {
    match op {
        b'c' => "GLOBAL",
        0x93 => "STACK_GLOBAL",
        0x81 => "NEWOBJ",
        0x92 => "NEWOBJ_EX",
        b'i' => "INST",
        b'o' => "OBJ",
        b'P' => "PERSID",
        0x82..=0x84 => "EXT",
        b'I' => "INT",
        b'L' => "LONG",
        b'S' | b'T' | b'U' | b'V' => "text string",
        b'B' | b'C' | 0x8e => "BINBYTES",
        0x96..=0x98 => "bytearray/buffer",
        _ => "unknown",
    }
}

impl<'a> Machine<'a> {
    fn malformed(&self, msg: impl Into<String>) -> PickleError {
        PickleError::Malformed {
            pos: self.pos,
            msg: msg.into(),
        }
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], PickleError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or(PickleError::Truncated {
                what,
                pos: self.pos,
                len: self.data.len(),
            })?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, PickleError> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, PickleError> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, PickleError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, PickleError> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    fn line(&mut self, what: &'static str) -> Result<&'a str, PickleError> {
        let rest = &self.data[self.pos..];
        let nl = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or(PickleError::Truncated {
                what,
                pos: self.pos,
                len: self.data.len(),
            })?;
        let s = std::str::from_utf8(&rest[..nl])
            .map_err(|_| self.malformed(format!("{what} is not UTF-8")))?;
        self.pos += nl + 1;
        Ok(s)
    }

    fn push(&mut self, o: Obj) -> Result<(), PickleError> {
        if self.objs.len() >= MAX_OBJECTS {
            return Err(
                self.malformed(format!("more than {MAX_OBJECTS} objects: not a state dict"))
            );
        }
        self.objs.push(o);
        self.stack.push(self.objs.len() - 1);
        Ok(())
    }

    fn pop(&mut self) -> Result<Id, PickleError> {
        self.stack
            .pop()
            .ok_or_else(|| self.malformed("stack underflow"))
    }

    fn top(&self) -> Result<Id, PickleError> {
        self.stack
            .last()
            .copied()
            .ok_or_else(|| self.malformed("stack underflow"))
    }

    fn pop_mark(&mut self) -> Result<Vec<Id>, PickleError> {
        let prev = self
            .marks
            .pop()
            .ok_or_else(|| self.malformed("MARK expected on the stack"))?;
        Ok(std::mem::replace(&mut self.stack, prev))
    }

    fn str_of(&self, id: Id, what: &str) -> Result<String, PickleError> {
        match &self.objs[id] {
            Obj::Str(s) => Ok(s.clone()),
            o => Err(self.malformed(format!("{what} must be a string, found {}", o.kind()))),
        }
    }

    fn global(&mut self, module: &str, name: &str) -> Result<(), PickleError> {
        match Allowed::lookup(module, name) {
            Some(a) => {
                self.push(Obj::Global(a))?;
                Ok(())
            }
            None => Err(PickleError::ForbiddenGlobal {
                module: module.to_string(),
                name: name.to_string(),
            }),
        }
    }

    fn memo_put(&mut self, key: u32) -> Result<(), PickleError> {
        let top = self.top()?;
        self.memo.insert(key, top);
        Ok(())
    }

    fn memo_get(&mut self, key: u32) -> Result<(), PickleError> {
        let id = *self
            .memo
            .get(&key)
            .ok_or_else(|| self.malformed(format!("memo key {key} was never stored")))?;
        self.stack.push(id);
        Ok(())
    }

    fn set_items(&mut self, dict: Id, items: Vec<Id>) -> Result<(), PickleError> {
        if !items.len().is_multiple_of(2) {
            return Err(self.malformed("SETITEMS with an odd number of items"));
        }
        let pairs: Vec<(Id, Id)> = items.chunks_exact(2).map(|c| (c[0], c[1])).collect();
        match &mut self.objs[dict] {
            Obj::Dict(entries) => {
                for (k, v) in pairs {
                    entries.push((k, v));
                }
                Ok(())
            }
            o => {
                let kind = o.kind();
                Err(self.malformed(format!("SETITEM on a {kind}, not a dict")))
            }
        }
    }

    fn append_items(&mut self, list: Id, items: Vec<Id>) -> Result<(), PickleError> {
        match &mut self.objs[list] {
            Obj::List(v) => {
                v.extend(items);
                Ok(())
            }
            o => {
                let kind = o.kind();
                Err(self.malformed(format!("APPEND on a {kind}, not a list")))
            }
        }
    }

    fn int_of(&self, id: Id, what: &str) -> Result<i64, PickleError> {
        match &self.objs[id] {
            Obj::Int(i) => Ok(*i),
            o => Err(self.malformed(format!("{what} must be an int, found {}", o.kind()))),
        }
    }

    fn uint_tuple(&self, id: Id, what: &str) -> Result<Vec<u64>, PickleError> {
        let items = match &self.objs[id] {
            Obj::Tuple(v) | Obj::List(v) => v,
            o => return Err(self.malformed(format!("{what} must be a tuple, found {}", o.kind()))),
        };
        if items.len() > MAX_DIMS {
            return Err(self.malformed(format!(
                "{what} has {} dimensions (at most {MAX_DIMS} supported)",
                items.len()
            )));
        }
        items
            .iter()
            .map(|&i| {
                let v = self.int_of(i, what)?;
                u64::try_from(v)
                    .map_err(|_| self.malformed(format!("{what} has a negative entry {v}")))
            })
            .collect()
    }

    /// The items of a tuple of at most `max` entries (checked before anything is copied, so a
    /// huge memoised tuple cannot be copied over and over).
    fn tuple_items(&self, id: Id, what: &str, max: usize) -> Result<Vec<Id>, PickleError> {
        match &self.objs[id] {
            Obj::Tuple(v) if v.len() <= max => Ok(v.clone()),
            Obj::Tuple(v) => Err(self.malformed(format!(
                "{what} has {} entries, at most {max} expected",
                v.len()
            ))),
            o => Err(self.malformed(format!("{what} must be a tuple, found {}", o.kind()))),
        }
    }

    fn rebuild_tensor(&self, args: &[Id], callable: Allowed) -> Result<Obj, PickleError> {
        let (min, max) = match callable {
            Allowed::RebuildTensorV2 => (6, 7),
            _ => (4, 4),
        };
        if args.len() < min || args.len() > max {
            return Err(self.malformed(format!(
                "{callable} takes {min}..={max} arguments, got {}",
                args.len()
            )));
        }
        let storage = match &self.objs[args[0]] {
            Obj::Storage(s) => s.clone(),
            o => {
                return Err(self.malformed(format!(
                    "{callable}: first argument must be a storage, found {}",
                    o.kind()
                )))
            }
        };
        let offset = u64::try_from(self.int_of(args[1], "storage offset")?)
            .map_err(|_| self.malformed("negative storage offset"))?;
        let shape = self.uint_tuple(args[2], "tensor size")?;
        let stride = self.uint_tuple(args[3], "tensor stride")?;
        if shape.len() != stride.len() {
            return Err(self.malformed(format!(
                "tensor size has {} dims but stride has {}",
                shape.len(),
                stride.len()
            )));
        }
        Ok(Obj::Tensor(TensorRef {
            storage,
            offset,
            shape,
            stride,
        }))
    }

    fn reduce(&mut self) -> Result<(), PickleError> {
        let args_id = self.pop()?;
        let callable_id = self.pop()?;
        let callable = match &self.objs[callable_id] {
            Obj::Global(a) => *a,
            o => {
                return Err(
                    self.malformed(format!("REDUCE on a {}, not an allowed global", o.kind()))
                )
            }
        };
        let args = self.tuple_items(args_id, "REDUCE arguments", 7)?;
        let obj = match callable {
            Allowed::OrderedDict => {
                if !args.is_empty() {
                    return Err(self.malformed("collections.OrderedDict called with arguments"));
                }
                Obj::Dict(Vec::new())
            }
            Allowed::RebuildTensorV2 | Allowed::RebuildTensor => {
                self.rebuild_tensor(&args, callable)?
            }
            Allowed::RebuildParameter => {
                if args.len() != 3 {
                    return Err(self.malformed("torch._utils._rebuild_parameter takes 3 arguments"));
                }
                match &self.objs[args[0]] {
                    Obj::Tensor(t) => Obj::Tensor(t.clone()),
                    o => {
                        return Err(self.malformed(format!(
                            "_rebuild_parameter of a {}, not a tensor",
                            o.kind()
                        )))
                    }
                }
            }
            Allowed::Storage(_) => {
                return Err(self.malformed(format!(
                    "{callable} may only appear in a persistent id, not be called"
                )))
            }
        };
        self.push(obj)?;
        Ok(())
    }

    fn build(&mut self) -> Result<(), PickleError> {
        let state = self.pop()?;
        let target = self.top()?;
        match (&self.objs[target], &self.objs[state]) {
            // OrderedDict attributes such as `_metadata` (monai >= 1.4 checkpoints): ignored.
            (Obj::Dict(_), Obj::Dict(_)) => Ok(()),
            (t, s) => Err(self.malformed(format!(
                "BUILD of a {} with a {} state is not allowed",
                t.kind(),
                s.kind()
            ))),
        }
    }

    fn persistent_load(&mut self) -> Result<(), PickleError> {
        let pid = self.pop()?;
        let items = self.tuple_items(pid, "persistent id", 5)?;
        if items.len() != 5 {
            return Err(self.malformed(format!(
                "persistent id must have 5 entries, has {}",
                items.len()
            )));
        }
        let tag = self.str_of(items[0], "persistent id tag")?;
        if tag != "storage" {
            return Err(self.malformed(format!("persistent id tag '{tag}' is not 'storage'")));
        }
        let dtype = match &self.objs[items[1]] {
            Obj::Global(Allowed::Storage(d)) => *d,
            o => {
                return Err(self.malformed(format!(
                    "persistent id storage type must be a torch storage class, found {}",
                    o.kind()
                )))
            }
        };
        let key = self.str_of(items[2], "storage key")?;
        let _location = self.str_of(items[3], "storage location")?;
        let numel = u64::try_from(self.int_of(items[4], "storage numel")?)
            .map_err(|_| self.malformed("negative storage numel"))?;
        self.push(Obj::Storage(StorageRef { dtype, key, numel }))?;
        Ok(())
    }

    fn string(&mut self, len: usize, what: &'static str) -> Result<(), PickleError> {
        let b = self.take(len, what)?;
        let s = std::str::from_utf8(b)
            .map_err(|_| self.malformed(format!("{what} is not valid UTF-8")))?;
        self.push(Obj::Str(s.to_string()))?;
        Ok(())
    }

    pub(super) fn run(mut self) -> Result<Pickle, PickleError> {
        loop {
            let op_pos = self.pos;
            let op = match self.data.get(self.pos) {
                Some(&b) => b,
                None => return Err(PickleError::NoStop),
            };
            self.pos += 1;
            match op {
                0x80 => {
                    let proto = self.u8("PROTO")?;
                    if !(2..=5).contains(&proto) {
                        return Err(PickleError::Protocol(proto));
                    }
                }
                0x95 => {
                    self.u64("FRAME")?;
                }
                b'.' => {
                    let root = self.pop()?;
                    return Ok(Pickle {
                        objs: self.objs,
                        root,
                    });
                }
                b'(' => {
                    if self.marks.len() >= MAX_MARK_DEPTH {
                        return Err(
                            self.malformed(format!("MARKs nested more than {MAX_MARK_DEPTH} deep"))
                        );
                    }
                    let prev = std::mem::take(&mut self.stack);
                    self.marks.push(prev);
                }
                b')' => self.push(Obj::Tuple(Vec::new()))?,
                b't' => {
                    let items = self.pop_mark()?;
                    self.push(Obj::Tuple(items))?;
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    if self.stack.len() < n {
                        return Err(self.malformed("TUPLE with too few items on the stack"));
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.push(Obj::Tuple(items))?;
                }
                b']' => self.push(Obj::List(Vec::new()))?,
                b'l' => {
                    let items = self.pop_mark()?;
                    self.push(Obj::List(items))?;
                }
                b'}' => self.push(Obj::Dict(Vec::new()))?,
                b'd' => {
                    let items = self.pop_mark()?;
                    self.push(Obj::Dict(Vec::new()))?;
                    let d = self.top()?;
                    self.set_items(d, items)?;
                }
                b'a' => {
                    let v = self.pop()?;
                    let list = self.top()?;
                    self.append_items(list, vec![v])?;
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    let list = self.top()?;
                    self.append_items(list, items)?;
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    let d = self.top()?;
                    self.set_items(d, vec![k, v])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    let d = self.top()?;
                    self.set_items(d, items)?;
                }
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'q' => {
                    let k = self.u8("BINPUT")? as u32;
                    self.memo_put(k)?;
                }
                b'r' => {
                    let k = self.u32("LONG_BINPUT")?;
                    self.memo_put(k)?;
                }
                0x94 => {
                    let k = u32::try_from(self.memo.len())
                        .map_err(|_| self.malformed("memo overflow"))?;
                    self.memo_put(k)?;
                }
                b'h' => {
                    let k = self.u8("BINGET")? as u32;
                    self.memo_get(k)?;
                }
                b'j' => {
                    let k = self.u32("LONG_BINGET")?;
                    self.memo_get(k)?;
                }
                b'J' => {
                    let v = self.u32("BININT")? as i32;
                    self.push(Obj::Int(v as i64))?;
                }
                b'K' => {
                    let v = self.u8("BININT1")?;
                    self.push(Obj::Int(v as i64))?;
                }
                b'M' => {
                    let v = self.u16("BININT2")?;
                    self.push(Obj::Int(v as i64))?;
                }
                0x8a => {
                    let n = self.u8("LONG1")? as usize;
                    if n > 8 {
                        return Err(self.malformed(format!(
                            "LONG1 integer of {n} bytes does not fit in 64 bits"
                        )));
                    }
                    let b = self.take(n, "LONG1")?;
                    let mut buf = if b.last().is_some_and(|&x| x & 0x80 != 0) {
                        [0xffu8; 8]
                    } else {
                        [0u8; 8]
                    };
                    buf[..n].copy_from_slice(b);
                    self.push(Obj::Int(i64::from_le_bytes(buf)))?;
                }
                b'G' => {
                    let b = self.take(8, "BINFLOAT")?;
                    let mut a = [0u8; 8];
                    a.copy_from_slice(b);
                    self.push(Obj::Float(f64::from_be_bytes(a)))?;
                }
                b'N' => self.push(Obj::None)?,
                0x88 => self.push(Obj::Bool(true))?,
                0x89 => self.push(Obj::Bool(false))?,
                b'X' => {
                    let n = self.u32("BINUNICODE length")? as usize;
                    self.string(n, "BINUNICODE")?;
                }
                0x8c => {
                    let n = self.u8("SHORT_BINUNICODE length")? as usize;
                    self.string(n, "SHORT_BINUNICODE")?;
                }
                0x8d => {
                    let n = usize::try_from(self.u64("BINUNICODE8 length")?).unwrap_or(usize::MAX);
                    self.string(n, "BINUNICODE8")?;
                }
                b'c' => {
                    let module = self.line("GLOBAL module")?;
                    let name = self.line("GLOBAL name")?;
                    self.global(module, name)?;
                }
                0x93 => {
                    let name_id = self.pop()?;
                    let module_id = self.pop()?;
                    let module = self.str_of(module_id, "STACK_GLOBAL module")?;
                    let name = self.str_of(name_id, "STACK_GLOBAL name")?;
                    self.global(&module, &name)?;
                }
                b'R' => self.reduce()?,
                b'b' => self.build()?,
                b'Q' => self.persistent_load()?,
                other => {
                    return Err(PickleError::UnsupportedOpcode {
                        opcode: other,
                        desc: opcode_desc(other),
                        pos: op_pos,
                    });
                }
            }
        }
    }
}
