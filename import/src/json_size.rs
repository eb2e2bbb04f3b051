//! How much memory a JSON value is counted as, for the limits of the bundle config resolver and
//! of `$` expressions: a fixed cost per node (a `serde_json::Value` and its place in a list or a
//! map) plus the bytes of its strings and keys. Sizes that only grow by copying (references,
//! macros, repetition) are checked against these counts before the copies are made.

use serde_json::Value;

/// What one JSON node is counted as, besides its strings: the value itself (32 bytes) and
/// its share of the list or map entry holding it.
pub const NODE_BYTES: usize = 64;

/// The bytes `v` is counted as: `NODE_BYTES` per node plus every string's and key's length.
pub fn heap_bytes(v: &Value) -> usize {
    match v {
        Value::String(s) => NODE_BYTES + s.len(),
        Value::Array(a) => NODE_BYTES + a.iter().map(heap_bytes).sum::<usize>(),
        Value::Object(o) => {
            NODE_BYTES
                + o.iter()
                    .map(|(k, x)| k.len() + heap_bytes(x))
                    .sum::<usize>()
        }
        _ => NODE_BYTES,
    }
}

/// The number of JSON nodes in `v` (lists and maps count themselves and what they hold).
pub fn nodes(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(nodes).sum::<usize>(),
        Value::Object(o) => 1 + o.values().map(nodes).sum::<usize>(),
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn counts_nodes_strings_and_keys() {
        assert_eq!(heap_bytes(&json!(1)), NODE_BYTES);
        assert_eq!(heap_bytes(&json!("abc")), NODE_BYTES + 3);
        assert_eq!(heap_bytes(&json!([1, "ab"])), 3 * NODE_BYTES + 2);
        assert_eq!(heap_bytes(&json!({"key": [null]})), 3 * NODE_BYTES + 3);
        assert_eq!(nodes(&json!({"a": [1, 2], "b": "x"})), 5);
    }
}
