//! The small part of Python that MONAI bundle configs use in `$` expressions for numbers and
//! paths: literals, `@id` references, lists, `+ - * / // % **`, indexing, and the calls `int`,
//! `float`, `abs`, `min`, `max`, `len`. Everything else (module names, attributes, methods) parses
//! but does not evaluate, and says which construct stopped it; a method call such as
//! `@noise_scheduler.set_timesteps(num_inference_steps=50)` stays available as a tree.

use serde_json::{Number, Value};

mod eval;
mod parse;

pub use eval::eval;
pub use parse::parse;

/// Largest string or list an expression may build by repetition or concatenation, in the
/// bytes `json_size::heap_bytes` counts (16 MiB: a list of 256 Ki numbers, or a 16 MiB string).
const MAX_BUILT_BYTES: usize = 16 << 20;
/// Deepest nesting of brackets and operators an expression may have.
const MAX_NESTING: usize = 64;

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Lit(Value),
    /// `@id` (separators normalised to `#`).
    Ref(String),
    Name(String),
    List(Vec<Expr>),
    Neg(Box<Expr>),
    Binary(BinOp, Box<Expr>, Box<Expr>),
    Call {
        func: Box<Expr>,
        args: Vec<Expr>,
        kwargs: Vec<(String, Expr)>,
    },
    Index(Box<Expr>, Box<Expr>),
    Attr(Box<Expr>, String),
}

/// A call's positional and keyword arguments.
type Arguments = (Vec<Expr>, Vec<(String, Expr)>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    FloorDiv,
    Mod,
    Pow,
}

/// Why an expression gave no value.
#[derive(Debug)]
pub enum EvalError<E> {
    /// A reference could not be resolved.
    Ref(E),
    /// The expression uses something this evaluator does not do; the text names it.
    Cannot(String),
}

/// A finite float as a JSON number (parser literals and evaluation results alike).
fn float<E>(v: f64) -> Result<Value, EvalError<E>> {
    Number::from_f64(v)
        .map(Value::Number)
        .ok_or_else(|| EvalError::Cannot(format!("the result {v} is not a finite number")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(src: &str) -> Result<Value, String> {
        let e = parse(src)?;
        eval(&e, &mut |id: &str| -> Result<Value, String> {
            match id {
                "root" => Ok(Value::from("/b")),
                "n" => Ok(Value::from(4)),
                "shape" => Ok(serde_json::json!([4, 48, 48, 32])),
                "a#b#0" => Ok(Value::from(7)),
                other => Err(format!("no {other}")),
            }
        })
        .map_err(|e| match e {
            EvalError::Ref(r) => r,
            EvalError::Cannot(c) => c,
        })
    }

    #[test]
    fn numbers_strings_lists_and_references() {
        assert_eq!(
            ev("@root + '/models/model.pt'").unwrap(),
            Value::from("/b/models/model.pt")
        );
        assert_eq!(ev("@n * 2 + 1").unwrap(), Value::from(9));
        assert_eq!(ev("@n // 3").unwrap(), Value::from(1));
        assert_eq!(ev("-7 // 2").unwrap(), Value::from(-4));
        assert_eq!(ev("-7 % 3").unwrap(), Value::from(2));
        assert_eq!(ev("@n / 8").unwrap(), serde_json::json!(0.5));
        assert_eq!(ev("2 ** 3 ** 2").unwrap(), Value::from(512));
        assert_eq!(ev("-2 ** 2").unwrap(), Value::from(-4));
        assert_eq!(
            ev("[1] + @shape").unwrap(),
            serde_json::json!([1, 4, 48, 48, 32])
        );
        assert_eq!(ev("@shape[0]").unwrap(), Value::from(4));
        assert_eq!(ev("@shape[-1]").unwrap(), Value::from(32));
        assert_eq!(ev("@a::b::0 + @a#b#0").unwrap(), Value::from(14));
        assert_eq!(ev("int(2.9) + max(1, @n, 3)").unwrap(), Value::from(6));
        assert_eq!(ev("float('1e-3')").unwrap(), serde_json::json!(0.001));
        assert_eq!(ev("(1 + 2) * 3").unwrap(), Value::from(9));
        assert_eq!(ev("(1, @n)").unwrap(), serde_json::json!([1, 4]));
    }

    #[test]
    fn what_cannot_be_evaluated_is_named() {
        let e = ev("torch.device('cpu')").unwrap_err();
        assert!(e.contains("`torch.device(...)`"), "{e}");
        assert!(ev("torch").unwrap_err().contains("the name `torch`"));
        let e = ev("@root.set_timesteps(num_inference_steps=50)").unwrap_err();
        assert!(e.contains("`@root.set_timesteps(...)`"), "{e}");
        assert!(ev("@missing + 1").unwrap_err().contains("no missing"));
        assert!(ev("1 / 0").unwrap_err().contains("division by zero"));
        assert!(ev("9223372036854775807 + 1")
            .unwrap_err()
            .contains("overflow"));
        assert!(ev("[0] * 100000000")
            .unwrap_err()
            .contains("larger than 16 MiB"));
        // Elements count by their size, not one each: 300 lists of 1000 numbers fit, 3000 not.
        let thousand = format!("[{}]", vec!["0"; 1000].join(","));
        let e = ev(&format!("[{thousand}] * 3000")).unwrap_err();
        assert!(e.contains("a repetition larger than 16 MiB"), "{e}");
        assert!(ev(&format!("[{thousand}] * 200")).is_ok());
        let e = ev(&format!("'{}' + 'x'", "y".repeat(16 << 20))).unwrap_err();
        assert!(e.contains("a concatenation larger"), "{e}");
        assert!(ev("lambda x: x").is_err());
        assert!(ev("1 if True else 2").is_err());
        let deep = "(".repeat(200) + "1" + &")".repeat(200);
        assert!(ev(&deep).unwrap_err().contains("nested deeper"));
    }

    #[test]
    fn method_calls_stay_available_as_trees() {
        let e = parse("@noise_scheduler.set_timesteps(num_inference_steps=50)").unwrap();
        let Expr::Call { func, kwargs, .. } = e else {
            panic!("not a call")
        };
        assert_eq!(
            *func,
            Expr::Attr(
                Box::new(Expr::Ref("noise_scheduler".into())),
                "set_timesteps".into()
            )
        );
        assert_eq!(
            kwargs,
            vec![("num_inference_steps".into(), Expr::Lit(Value::from(50)))]
        );
    }
}
