//! MONAI bundle config files as MONAI's `ConfigParser` reads them, for the values generation
//! needs: several files merged in order (later top-level keys replace earlier ones, `a#b` keys set
//! nested entries, `+key` extends), relative references (`@#x`, `@##x`) and `%` macros replaced
//! first, then `@id` / `@a#b#0` references and simple `$` expressions resolved on demand, one id at
//! a time. Nothing is instantiated and nothing that is not asked for is evaluated, so `imports`,
//! devices, datasets and handlers are never looked at.
//!
//! Limits: each file at most 16 MiB, references at most 64 deep (a cycle is reported with its
//! chain), a resolved value at most 100 000 JSON nodes, ids at most 4096 bytes, and at most
//! 64 MiB of values (as `json_size` counts them) copied by macros and references over a config's
//! life, so that a small config cannot make a large one by naming a value many times.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use ldm_io::Budget;
use serde_json::{Map, Value};

use crate::bundle_expr::{self, EvalError};
use crate::json_size::{heap_bytes, nodes};

/// Largest config file read.
const MAX_FILE_BYTES: u64 = 16 << 20;
/// Longest chain of references followed.
const MAX_DEPTH: usize = 64;
/// Largest resolved value, in JSON nodes.
const MAX_NODES: usize = 100_000;
/// Longest id (keys and list indices joined by `#`) the merged config may hold.
const MAX_ID_BYTES: usize = 4096;
/// Most bytes (`json_size::heap_bytes`) that `%` macros, `@` references and the resolver's cache
/// may copy in all over a config's life.
const MAX_COPIED_BYTES: usize = 64 << 20;

/// What went wrong, with the file and the config id it concerns.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {cause}")]
    Io { path: String, cause: std::io::Error },
    #[error("config {path} is not valid JSON: {cause}")]
    Json {
        path: String,
        cause: serde_json::Error,
    },
    #[error("config {path}: {msg}")]
    File { path: String, msg: String },
    #[error("{file}: `{id}`: {msg}")]
    Item {
        file: String,
        id: String,
        msg: String,
    },
}

/// One or more merged config files, resolved on demand.
#[derive(Debug)]
pub struct BundleConfig {
    root: Value,
    /// The file that last set each top-level key.
    origin: HashMap<String, String>,
    /// Where `%file.json#id` macros are looked up.
    base_dir: PathBuf,
    /// Resolved values by id, with the bytes each is counted as.
    resolved: HashMap<String, (Value, usize)>,
    /// Bytes copied so far by macros, references and the cache (bounded by `MAX_COPIED_BYTES`).
    copied: usize,
}

/// Normalise MONAI's `::` separator to the `#` this module uses.
pub fn normalize_id(id: &str) -> String {
    id.replace("::", "#")
}

fn split_id(id: &str) -> Vec<&str> {
    if id.is_empty() {
        Vec::new()
    } else {
        id.split('#').collect()
    }
}

/// The id when the whole string is one reference `@id` (MONAI only resolves those, or
/// references inside `$` expressions): `@` then word characters and `#` (or `::`) separators,
/// as MONAI's reference pattern; anything else (`@`` ` ``, `mail@example`) is a plain string.
pub fn whole_reference(s: &str) -> Option<String> {
    let s = normalize_id(s);
    let id = s.strip_prefix('@')?;
    (!id.is_empty()
        && id
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '#'))
    .then(|| id.to_string())
}

/// One JSON config file, at most 16 MiB.
pub fn read_json(path: &Path) -> Result<Value, ConfigError> {
    let shown = path.display().to_string();
    let name = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    if name.eq_ignore_ascii_case("yaml") || name.eq_ignore_ascii_case("yml") {
        return Err(ConfigError::File {
            path: shown,
            msg: "YAML configs are not read; save it as JSON (same content)".into(),
        });
    }
    let bytes = ldm_io::input::read_all(path, Budget::new(MAX_FILE_BYTES)).map_err(|cause| {
        ConfigError::Io {
            path: shown.clone(),
            cause,
        }
    })?;
    serde_json::from_slice(&bytes).map_err(|cause| ConfigError::Json { path: shown, cause })
}

/// The length of the longest id at or below `v`, whose own id is `len` bytes long.
fn longest_id(v: &Value, len: usize) -> usize {
    let below = |key: usize| if len == 0 { key } else { len + 1 + key };
    match v {
        Value::Object(o) => o
            .iter()
            .map(|(k, x)| longest_id(x, below(k.len())))
            .fold(len, usize::max),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .map(|(i, x)| longest_id(x, below(i.to_string().len())))
            .fold(len, usize::max),
        _ => len,
    }
}

/// The entry at `parts` below `v` (dict key or list index).
fn lookup<'a>(v: &'a Value, parts: &[&str]) -> Option<&'a Value> {
    let mut cur = v;
    for p in parts {
        cur = match cur {
            Value::Object(o) => o.get(*p)?,
            Value::Array(a) => a.get(p.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

fn lookup_mut<'a>(v: &'a mut Value, parts: &[&str]) -> Option<&'a mut Value> {
    let mut cur = v;
    for p in parts {
        cur = match cur {
            Value::Object(o) => o.get_mut(*p)?,
            Value::Array(a) => a.get_mut(p.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

impl BundleConfig {
    /// Read and merge `files` in order (as `monai.bundle run --config_file "[a, b]"` does).
    /// `base_dir` anchors `%file.json#id` macros (MONAI reads them relative to the working
    /// directory, which for a bundle is its root).
    pub fn load(files: &[PathBuf], base_dir: &Path) -> Result<Self, ConfigError> {
        let mut root = Value::Object(Map::new());
        let mut origin = HashMap::new();
        for path in files {
            let shown = path.display().to_string();
            let Value::Object(top) = read_json(path)? else {
                return Err(ConfigError::File {
                    path: shown,
                    msg: "the top level is not a JSON object".into(),
                });
            };
            for (k, v) in top {
                merge(&mut root, &k, v).map_err(|msg| ConfigError::File {
                    path: shown.clone(),
                    msg,
                })?;
                let head = normalize_id(k.trim_start_matches('+'));
                let head = head.split('#').next().unwrap_or_default().to_string();
                origin.insert(head, shown.clone());
            }
        }
        let mut cfg = BundleConfig {
            root,
            origin,
            base_dir: base_dir.to_path_buf(),
            resolved: HashMap::new(),
            copied: 0,
        };
        let raw = cfg.root.clone();
        let mut root = std::mem::take(&mut cfg.root);
        // Before expanding (whose walk builds every id) and after (macros copy values deeper).
        cfg.check_id_lengths(&root)?;
        cfg.expand(&mut root, "", &raw, &mut HashMap::new())?;
        cfg.check_id_lengths(&root)?;
        cfg.root = root;
        Ok(cfg)
    }

    /// An error naming the top-level key below which an id passes `MAX_ID_BYTES`.
    fn check_id_lengths(&self, root: &Value) -> Result<(), ConfigError> {
        let Value::Object(top) = root else {
            return Ok(());
        };
        match top
            .iter()
            .find(|(k, v)| longest_id(v, k.len()) > MAX_ID_BYTES)
        {
            Some((k, _)) => Err(self.item_error(
                k,
                format!(
                    "holds ids longer than {MAX_ID_BYTES} bytes (keys nested too deep or too long)"
                ),
            )),
            None => Ok(()),
        }
    }

    /// The file that set the top-level key of `id` (for messages).
    pub fn file_of(&self, id: &str) -> String {
        let head = id.split('#').next().unwrap_or_default();
        self.origin
            .get(head)
            .cloned()
            .unwrap_or_else(|| "the config".into())
    }

    /// Replace a top-level value before anything is resolved (e.g. `bundle_root`).
    pub fn set_top(&mut self, key: &str, v: Value) {
        if let Value::Object(o) = &mut self.root {
            o.insert(key.to_string(), v);
        }
        self.resolved.clear();
    }

    /// The unresolved entry at `id`, if there is one.
    pub fn raw(&self, id: &str) -> Option<&Value> {
        lookup(&self.root, &split_id(&normalize_id(id)))
    }

    /// The top-level keys.
    pub fn keys(&self) -> Vec<String> {
        match &self.root {
            Value::Object(o) => o.keys().cloned().collect(),
            _ => Vec::new(),
        }
    }

    /// Every string of the config that `keep` accepts, with its id (for finding calls such as
    /// `set_timesteps`); an error when these copies pass the copy limit.
    pub fn strings_where(
        &self,
        keep: impl Fn(&str) -> bool,
    ) -> Result<Vec<(String, String)>, ConfigError> {
        /// Collects into `out` while `room` (bytes) lasts; Err(id) where it ran out.
        fn walk(
            v: &Value,
            id: &str,
            keep: &dyn Fn(&str) -> bool,
            room: &mut usize,
            out: &mut Vec<(String, String)>,
        ) -> Result<(), String> {
            match v {
                Value::String(s) if keep(s) => {
                    *room = room
                        .checked_sub(id.len() + s.len())
                        .ok_or_else(|| id.to_string())?;
                    out.push((id.to_string(), s.clone()));
                }
                Value::Array(a) => {
                    for (i, x) in a.iter().enumerate() {
                        walk(x, &child(id, &i.to_string()), keep, room, out)?;
                    }
                }
                Value::Object(o) => {
                    for (k, x) in o {
                        walk(x, &child(id, k), keep, room, out)?;
                    }
                }
                _ => {}
            }
            Ok(())
        }
        let mut out = Vec::new();
        let mut room = MAX_COPIED_BYTES.saturating_sub(self.copied);
        walk(&self.root, "", &keep, &mut room, &mut out)
            .map_err(|id| self.copy_limit_error(&id))?;
        Ok(out)
    }

    fn item_error(&self, id: &str, msg: impl Into<String>) -> ConfigError {
        ConfigError::Item {
            file: self.file_of(id),
            id: id.to_string(),
            msg: msg.into(),
        }
    }

    fn copy_limit_error(&self, id: &str) -> ConfigError {
        self.item_error(
            id,
            format!(
                "macros and references copy more than {} MiB of values (a value named too many times)",
                MAX_COPIED_BYTES >> 20
            ),
        )
    }

    /// Count `bytes` more copied for `id`; an error past `MAX_COPIED_BYTES`.
    fn charge(&mut self, id: &str, bytes: usize) -> Result<(), ConfigError> {
        self.copied = self.copied.saturating_add(bytes);
        if self.copied > MAX_COPIED_BYTES {
            return Err(self.copy_limit_error(id));
        }
        Ok(())
    }

    /// Relative ids to absolute ones and `%` macros to copies of what they name, everywhere.
    /// `files`: the other config files macros have named so far, each read once.
    fn expand(
        &mut self,
        v: &mut Value,
        id: &str,
        raw: &Value,
        files: &mut HashMap<PathBuf, Value>,
    ) -> Result<(), ConfigError> {
        match v {
            Value::Object(o) => {
                for (k, x) in o.iter_mut() {
                    self.expand(x, &child(id, k), raw, files)?;
                }
            }
            Value::Array(a) => {
                for (i, x) in a.iter_mut().enumerate() {
                    self.expand(x, &child(id, &i.to_string()), raw, files)?;
                }
            }
            Value::String(s) => {
                if s.contains("@#") || s.contains("%#") || s.contains("@::") || s.contains("%::") {
                    let absolute = self.absolute_ids(id, s)?;
                    self.charge(id, absolute.len().saturating_sub(s.len()))?;
                    *s = absolute;
                }
                if let Some(m) = s.strip_prefix('%') {
                    let m = m.to_string();
                    let copy = self.macro_value(id, &m, raw, files)?;
                    self.charge(id, heap_bytes(&copy))?;
                    *v = copy;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// `@#x` -> the sibling `x`, `@##x` -> `x` one level up, and so on (MONAI's rule).
    fn absolute_ids(&self, id: &str, s: &str) -> Result<String, ConfigError> {
        let s = normalize_id(s);
        let here = split_id(id);
        let chars: Vec<char> = s.chars().collect();
        let mut out = String::with_capacity(s.len());
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            if (c == '@' || c == '%') && chars.get(i + 1) == Some(&'#') {
                let mut n = 0;
                while chars.get(i + 1 + n) == Some(&'#') {
                    n += 1;
                }
                if n > here.len() {
                    return Err(self.item_error(
                        id,
                        format!("the relative reference in `{s}` goes above the top of the config"),
                    ));
                }
                out.push(c);
                let keep = &here[..here.len() - n];
                if !keep.is_empty() {
                    out.push_str(&keep.join("#"));
                    out.push('#');
                }
                i += 1 + n;
            } else {
                out.push(c);
                i += 1;
            }
        }
        Ok(out)
    }

    /// `%id` (this config) or `%file.json#id` (another file): a copy of that raw content.
    fn macro_value(
        &self,
        id: &str,
        m: &str,
        raw: &Value,
        files: &mut HashMap<PathBuf, Value>,
    ) -> Result<Value, ConfigError> {
        let m = normalize_id(m);
        let lower = m.to_ascii_lowercase();
        let (file, target) = match [".json", ".yaml", ".yml"]
            .iter()
            .find_map(|ext| lower.find(ext).map(|p| p + ext.len()))
        {
            Some(end) => (Some(&m[..end]), m[end..].trim_start_matches('#')),
            None => (None, m.as_str()),
        };
        let source = match file {
            Some(f) => {
                let p = self.base_dir.join(f);
                // One read per file however it is spelled (`a.json`, `./a.json`, ...).
                let key = std::fs::canonicalize(&p).unwrap_or_else(|_| p.clone());
                if !files.contains_key(&key) {
                    let other = read_json(&p)?;
                    files.insert(key.clone(), other);
                }
                &files[&key]
            }
            None => raw,
        };
        lookup(source, &split_id(target))
            .cloned()
            .ok_or_else(|| self.item_error(id, format!("the macro `%{m}` names nothing")))
    }

    /// The value of `id` with every reference and evaluable expression inside it resolved.
    /// Components (`_target_`) stay dicts; their `_requires_` and `_desc_` are not followed.
    pub fn resolve(&mut self, id: &str) -> Result<Value, ConfigError> {
        let id = normalize_id(id);
        let mut chain = Vec::new();
        self.resolve_in(&id, &mut chain)
    }

    fn resolve_in(&mut self, id: &str, chain: &mut Vec<String>) -> Result<Value, ConfigError> {
        if let Some((v, bytes)) = self.resolved.get(id) {
            let (v, bytes) = (v.clone(), *bytes);
            self.charge(id, bytes)?;
            return Ok(v);
        }
        if id.is_empty() {
            let from = chain.last().cloned().unwrap_or_default();
            return Err(self.item_error(&from, "an empty reference `@`"));
        }
        if chain.iter().any(|c| c == id) {
            let mut shown: Vec<&str> = chain
                .iter()
                .skip_while(|c| *c != id)
                .map(String::as_str)
                .collect();
            shown.push(id);
            return Err(self.item_error(id, format!("circular reference: {}", shown.join(" -> "))));
        }
        if chain.len() >= MAX_DEPTH {
            return Err(self.item_error(
                id,
                format!(
                    "references nest deeper than {MAX_DEPTH} ({} -> ...)",
                    chain[..4].join(" -> ")
                ),
            ));
        }
        let Some(raw) = self.raw(id).cloned() else {
            let from = chain.last().cloned().unwrap_or_default();
            return Err(match chain.last() {
                Some(_) => {
                    self.item_error(&from, format!("refers to `@{id}`, which is not defined"))
                }
                None => self.item_error(id, "is not defined"),
            });
        };
        chain.push(id.to_string());
        let v = self.resolve_value(raw, id, chain);
        chain.pop();
        let v = v?;
        if nodes(&v) > MAX_NODES {
            return Err(self.item_error(id, format!("resolves to more than {MAX_NODES} values")));
        }
        let bytes = heap_bytes(&v);
        self.charge(id, bytes + id.len())?;
        self.resolved.insert(id.to_string(), (v.clone(), bytes));
        Ok(v)
    }

    fn resolve_value(
        &mut self,
        raw: Value,
        id: &str,
        chain: &mut Vec<String>,
    ) -> Result<Value, ConfigError> {
        match raw {
            Value::String(s) => {
                if let Some(src) = s.strip_prefix('$') {
                    let src = normalize_id(src);
                    let expr = bundle_expr::parse(&src).map_err(|why| {
                        self.item_error(
                            id,
                            format!("the expression `{s}` cannot be evaluated here: it is not arithmetic the converter reads ({why})"),
                        )
                    })?;
                    let mut err = None;
                    let out = bundle_expr::eval(&expr, &mut |r: &str| {
                        self.resolve_in(r, chain).map_err(|e| err = Some(e))
                    });
                    return match out {
                        Ok(v) => Ok(v),
                        Err(EvalError::Ref(())) => {
                            Err(err.unwrap_or_else(|| self.item_error(id, "a reference failed")))
                        }
                        Err(EvalError::Cannot(what)) => Err(self.item_error(
                            id,
                            format!(
                                "the expression `{s}` cannot be evaluated here: it uses {what}"
                            ),
                        )),
                    };
                }
                match whole_reference(&s) {
                    Some(r) => self.resolve_in(&r, chain),
                    None => Ok(Value::String(s)),
                }
            }
            Value::Object(o) => {
                let mut out = Map::new();
                for (k, x) in o {
                    if k == "_requires_" || k == "_desc_" {
                        continue;
                    }
                    let sub = child(id, &k);
                    let v = self.resolve_child(&sub, x, chain)?;
                    if let Some(v) = v {
                        out.insert(k, v);
                    }
                }
                Ok(Value::Object(out))
            }
            Value::Array(a) => {
                let mut out = Vec::with_capacity(a.len());
                for (i, x) in a.into_iter().enumerate() {
                    let sub = child(id, &i.to_string());
                    if let Some(v) = self.resolve_child(&sub, x, chain)? {
                        out.push(v);
                    }
                }
                Ok(Value::Array(out))
            }
            other => Ok(other),
        }
    }

    /// A nested item: resolved under its own id; a disabled component is left out (as MONAI
    /// drops it from its parent).
    fn resolve_child(
        &mut self,
        sub: &str,
        x: Value,
        chain: &mut Vec<String>,
    ) -> Result<Option<Value>, ConfigError> {
        if is_disabled(&x) {
            return Ok(None);
        }
        if matches!(x, Value::Object(_) | Value::Array(_) | Value::String(_)) {
            self.resolve_in(sub, chain).map(Some)
        } else {
            Ok(Some(x))
        }
    }
}

/// Whether `v` is a component marked `_disabled_` (true, or the string "true").
pub fn is_disabled(v: &Value) -> bool {
    let Value::Object(o) = v else { return false };
    if !o.contains_key("_target_") {
        return false;
    }
    match o.get("_disabled_") {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s.trim().eq_ignore_ascii_case("true"),
        _ => false,
    }
}

fn child(id: &str, k: &str) -> String {
    if id.is_empty() {
        k.to_string()
    } else {
        format!("{id}#{k}")
    }
}

/// MONAI's `merge_kv`: `a#b` sets a nested entry, `+a` extends a dict or list.
fn merge(root: &mut Value, key: &str, v: Value) -> Result<(), String> {
    if let Some(target) = key.strip_prefix('+') {
        let target = normalize_id(target);
        let parts = split_id(&target);
        if let Some(existing) = lookup_mut(root, &parts) {
            match (existing, v) {
                (Value::Object(a), Value::Object(b)) => a.extend(b),
                (Value::Array(a), Value::Array(b)) => a.extend(b),
                _ => return Err(format!("`{key}`: only a dict or a list can be extended")),
            }
            return Ok(());
        }
        return merge(root, &target, v);
    }
    let key = normalize_id(key);
    let parts = split_id(&key);
    let Some((last, parents)) = parts.split_last() else {
        return Err("an empty key".into());
    };
    match lookup_mut(root, parents) {
        Some(Value::Object(o)) => {
            o.insert(last.to_string(), v);
            Ok(())
        }
        Some(Value::Array(a)) => {
            let slot = last.parse::<usize>().ok().and_then(|i| a.get_mut(i));
            match slot {
                Some(s) => {
                    *s = v;
                    Ok(())
                }
                None => Err(format!("`{key}`: no list entry `{last}` to replace")),
            }
        }
        _ => Err(format!(
            "`{key}`: `{}` is not a dict or list defined earlier",
            parents.join("#")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(files: &[Value]) -> Result<BundleConfig, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let mut paths = Vec::new();
        for (i, f) in files.iter().enumerate() {
            let p = dir.path().join(format!("c{i}.json"));
            std::fs::write(&p, serde_json::to_vec(f).unwrap()).unwrap();
            paths.push(p);
        }
        BundleConfig::load(&paths, dir.path())
    }

    #[test]
    fn references_paths_expressions_and_relative_ids() {
        let mut c = config(&[json!({
            "imports": ["$import torch"],
            "device": "$torch.device('cuda')",
            "latent_channels": 4,
            "width": "$@latent_channels * 8",
            "shape": ["@latent_channels", 48, "$@net#heads#1 + 16"],
            "net": {"_target_": "X", "_requires_": "@device", "in": "@latent_channels",
                    "out": "@#in", "heads": [0, 32], "up": {"k": "@##heads#1"},
                    "off": {"_target_": "Y", "_disabled_": true}},
            "plain": "mail@example",
            "copy": "%net#heads",
        })])
        .unwrap();
        assert_eq!(c.resolve("width").unwrap(), json!(32));
        assert_eq!(c.resolve("shape").unwrap(), json!([4, 48, 48]));
        assert_eq!(
            c.resolve("net").unwrap(),
            json!({"_target_": "X", "in": 4, "out": 4, "heads": [0, 32], "up": {"k": 32}})
        );
        assert_eq!(c.resolve("net::heads::1").unwrap(), json!(32));
        assert_eq!(c.resolve("plain").unwrap(), json!("mail@example"));
        assert_eq!(c.resolve("copy").unwrap(), json!([0, 32]));
        let e = c.resolve("device").unwrap_err().to_string();
        assert!(
            e.contains("`device`") && e.contains("`torch.device(...)`"),
            "{e}"
        );
    }

    #[test]
    fn later_files_replace_keys_and_nested_keys_merge() {
        let mut c = config(&[
            json!({"a": 1, "net": {"x": 1, "y": 2}, "list": [1]}),
            json!({"a": 2, "net#y": 3, "+list": [2]}),
        ])
        .unwrap();
        assert_eq!(c.resolve("a").unwrap(), json!(2));
        assert_eq!(c.resolve("net").unwrap(), json!({"x": 1, "y": 3}));
        assert_eq!(c.resolve("list").unwrap(), json!([1, 2]));
        assert!(c.file_of("a").ends_with("c1.json"));
    }

    #[test]
    fn cycles_depth_and_size_end_with_errors() {
        let mut c =
            config(&[json!({"a": {"x": "@b"}, "b": {"y": "$@c + 1"}, "c": "@a#x"})]).unwrap();
        let e = c.resolve("a").unwrap_err().to_string();
        assert!(
            e.contains("circular reference: a#x -> b -> b#y -> c -> a#x"),
            "{e}"
        );
        let mut c = config(&[json!({"s": "@s"})]).unwrap();
        assert!(c.resolve("s").unwrap_err().to_string().contains("s -> s"));
        // Not a reference (MONAI's pattern is `@` and word characters): a plain string.
        let mut c = config(&[json!({"`": "@`", "a-b": "@a-b"})]).unwrap();
        assert_eq!(c.resolve("`").unwrap(), json!("@`"));
        assert_eq!(c.resolve("a-b").unwrap(), json!("@a-b"));
        let mut chain = serde_json::Map::new();
        for i in 0..200 {
            chain.insert(format!("k{i}"), json!(format!("@k{}", i + 1)));
        }
        chain.insert("k200".into(), json!(1));
        let mut c = config(&[Value::Object(chain)]).unwrap();
        assert!(c
            .resolve("k0")
            .unwrap_err()
            .to_string()
            .contains("deeper than 64"));
        let mut laughs = serde_json::Map::new();
        laughs.insert("l0".into(), json!([1, 1, 1, 1]));
        for i in 1..20 {
            let r = format!("@l{}", i - 1);
            laughs.insert(format!("l{i}"), json!([r, r, r, r]));
        }
        let mut c = config(&[Value::Object(laughs)]).unwrap();
        let e = c.resolve("l19").unwrap_err().to_string();
        assert!(e.contains("more than 100000 values"), "{e}");
        let mut c = config(&[json!({"a": "@nope"})]).unwrap();
        let e = c.resolve("a").unwrap_err().to_string();
        assert!(e.contains("`@nope`, which is not defined"), "{e}");
        let e = config(&[json!({"a": {"b": "@###x"}})])
            .unwrap_err()
            .to_string();
        assert!(e.contains("above the top"), "{e}");
    }

    /// A config of about 1 MiB that names one value many times: each way of copying it ends in
    /// an error before the copies pass 64 MiB, instead of building gigabytes.
    #[test]
    fn values_named_many_times_stop_at_the_copy_limit() {
        let many = |r: &str, n: usize| Value::Array(vec![json!(r); n]);
        let limit = "copy more than 64 MiB";
        // References: 99 000 numbers, named 2 000 times in one list (12 GiB if built).
        let big = Value::Array(vec![json!(0); 99_000]);
        let mut c = config(&[json!({"a": big, "b": many("@a", 2000)})]).unwrap();
        let e = c.resolve("b").unwrap_err().to_string();
        assert!(e.contains(limit), "{e}");
        // Long strings count by their bytes: a 100 kB string named 5 000 times.
        let long = "x".repeat(100_000);
        let mut c = config(&[json!({"a": long, "b": many("@a", 5000)})]).unwrap();
        let e = c.resolve("b").unwrap_err().to_string();
        assert!(e.contains(limit), "{e}");
        // The cache: asking for the same id again and again copies it each time.
        let mut c = config(&[json!({"a": "x".repeat(1 << 20)})]).unwrap();
        let e = (0..100)
            .find_map(|_| c.resolve("a").err())
            .unwrap()
            .to_string();
        assert!(e.contains(limit), "{e}");
        // Macros copy when the config is read.
        let big = Value::Array(vec![json!(0); 50_000]);
        let e = config(&[json!({"a": big, "b": many("%a", 20_000)})])
            .unwrap_err()
            .to_string();
        assert!(e.contains(limit), "{e}");
        // Relative references spell out their absolute id: a long id times many `@#`.
        let deep = json!({"k".repeat(4000): {"x": "@#a".repeat(100_000)}});
        let e = config(&[deep]).unwrap_err().to_string();
        assert!(e.contains(limit), "{e}");
        // Expressions: repetition counts the size of what it repeats.
        let big = Value::Array(vec![json!(0); 10_000]);
        let mut c = config(&[json!({"a": big, "b": "$[@a] * 1000"})]).unwrap();
        let e = c.resolve("b").unwrap_err().to_string();
        assert!(e.contains("a repetition larger than 16 MiB"), "{e}");
        // Every nested item is cached under its id: 50 000 strings 60 levels down.
        let mut deep = Value::Array(vec![json!("s"); 50_000]);
        for i in 0..60 {
            deep = json!({format!("{i:0>60}"): deep});
        }
        let mut c = config(&[json!({"d": deep})]).unwrap();
        let e = c.resolve("d").unwrap_err().to_string();
        assert!(e.contains(limit), "{e}");
    }

    #[test]
    fn ids_longer_than_4096_bytes_are_refused() {
        let mut deep = json!(1);
        for i in 0..100 {
            deep = json!({format!("{i:0>50}"): deep});
        }
        let e = config(&[json!({"d": deep})]).unwrap_err().to_string();
        assert!(e.contains("`d`: holds ids longer than 4096 bytes"), "{e}");
        let ok = json!({"k".repeat(4000): [1]});
        assert!(config(&[ok]).is_ok());
    }

    #[test]
    fn macros_read_each_other_file_once_however_spelled() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("other.json"), r#"{"x": [1, 2]}"#).unwrap();
        let main = dir.path().join("main.json");
        let uses = json!({"a": "%other.json#x", "b": "%./other.json#x#1", "c": "%other.json#y"});
        std::fs::write(&main, serde_json::to_vec(&uses).unwrap()).unwrap();
        let e = BundleConfig::load(std::slice::from_ref(&main), dir.path()).unwrap_err();
        assert!(
            e.to_string().contains("`%other.json#y` names nothing"),
            "{e}"
        );
        let uses = json!({"a": "%other.json#x", "b": "%./other.json#x#1"});
        std::fs::write(&main, serde_json::to_vec(&uses).unwrap()).unwrap();
        let mut c = BundleConfig::load(&[main], dir.path()).unwrap();
        assert_eq!(c.resolve("a").unwrap(), json!([1, 2]));
        assert_eq!(c.resolve("b").unwrap(), json!(2));
    }
}
