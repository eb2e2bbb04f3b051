//! Evaluating a parsed expression: Python's arithmetic on ints and floats, string and list
//! concatenation and repetition (bounded by `MAX_BUILT_BYTES`), indexing, the calls `int`, `float`,
//! `abs`, `min`, `max`, `len`, and `@` references through the caller's resolver.

use serde_json::Value;

use super::{float, BinOp, EvalError, Expr, MAX_BUILT_BYTES};
use crate::json_size::heap_bytes;

enum Num {
    I(i64),
    F(f64),
}

fn num(v: &Value) -> Option<Num> {
    match v {
        Value::Number(n) => n.as_i64().map(Num::I).or_else(|| n.as_f64().map(Num::F)),
        Value::Bool(b) => Some(Num::I(*b as i64)),
        _ => None,
    }
}

fn as_f(n: &Num) -> f64 {
    match n {
        Num::I(i) => *i as f64,
        Num::F(f) => *f,
    }
}

fn overflow<E>() -> EvalError<E> {
    EvalError::Cannot("integer overflow".into())
}

fn arith<E>(op: BinOp, a: Num, b: Num) -> Result<Value, EvalError<E>> {
    if let (Num::I(x), Num::I(y)) = (&a, &b) {
        let (x, y) = (*x, *y);
        let r = match op {
            BinOp::Add => x.checked_add(y),
            BinOp::Sub => x.checked_sub(y),
            BinOp::Mul => x.checked_mul(y),
            BinOp::FloorDiv | BinOp::Mod if y == 0 => {
                return Err(EvalError::Cannot("division by zero".into()))
            }
            // Python floors the quotient and gives the remainder the divisor's sign.
            BinOp::FloorDiv => x.checked_div(y).map(|q| {
                if x % y != 0 && ((x < 0) != (y < 0)) {
                    q - 1
                } else {
                    q
                }
            }),
            BinOp::Mod => x.checked_rem(y).map(|r| {
                if r != 0 && ((r < 0) != (y < 0)) {
                    r + y
                } else {
                    r
                }
            }),
            BinOp::Pow if y >= 0 => u32::try_from(y).ok().and_then(|y| x.checked_pow(y)),
            BinOp::Pow => return float((x as f64).powf(y as f64)),
            BinOp::Div => {
                if y == 0 {
                    return Err(EvalError::Cannot("division by zero".into()));
                }
                return float(x as f64 / y as f64);
            }
        };
        return r.map(Value::from).ok_or_else(overflow);
    }
    let (x, y) = (as_f(&a), as_f(&b));
    if matches!(op, BinOp::Div | BinOp::FloorDiv | BinOp::Mod) && y == 0.0 {
        return Err(EvalError::Cannot("division by zero".into()));
    }
    float(match op {
        BinOp::Add => x + y,
        BinOp::Sub => x - y,
        BinOp::Mul => x * y,
        BinOp::Div => x / y,
        BinOp::FloorDiv => (x / y).floor(),
        BinOp::Mod => x - y * (x / y).floor(),
        BinOp::Pow => x.powf(y),
    })
}

fn repeat<E>(v: &Value, times: i64) -> Result<Value, EvalError<E>> {
    let n = usize::try_from(times.max(0)).map_err(|_| overflow())?;
    if heap_bytes(v).saturating_mul(n) > MAX_BUILT_BYTES {
        return Err(too_large("repetition"));
    }
    match v {
        Value::String(s) => Ok(Value::String(s.repeat(n))),
        Value::Array(a) => {
            let mut out = Vec::with_capacity(a.len() * n);
            for _ in 0..n {
                out.extend(a.iter().cloned());
            }
            Ok(Value::Array(out))
        }
        _ => Err(EvalError::Cannot("repetition of a number".into())),
    }
}

fn too_large<E>(what: &str) -> EvalError<E> {
    EvalError::Cannot(format!(
        "a {what} larger than {} MiB",
        MAX_BUILT_BYTES >> 20
    ))
}

fn binary<E>(op: BinOp, a: Value, b: Value) -> Result<Value, EvalError<E>> {
    let joins = matches!(
        (op, &a, &b),
        (BinOp::Add, Value::String(_), Value::String(_))
            | (BinOp::Add, Value::Array(_), Value::Array(_))
    );
    if joins && heap_bytes(&a) + heap_bytes(&b) > MAX_BUILT_BYTES {
        return Err(too_large("concatenation"));
    }
    match (op, &a, &b) {
        (BinOp::Add, Value::String(x), Value::String(y)) => Ok(Value::String(format!("{x}{y}"))),
        (BinOp::Add, Value::Array(x), Value::Array(y)) => {
            Ok(Value::Array(x.iter().chain(y).cloned().collect()))
        }
        (BinOp::Mul, Value::String(_) | Value::Array(_), Value::Number(n)) if n.is_i64() => {
            repeat(&a, n.as_i64().unwrap_or(0))
        }
        (BinOp::Mul, Value::Number(n), Value::String(_) | Value::Array(_)) if n.is_i64() => {
            repeat(&b, n.as_i64().unwrap_or(0))
        }
        _ => match (num(&a), num(&b)) {
            (Some(x), Some(y)) => arith(op, x, y),
            _ => Err(EvalError::Cannot(format!(
                "{op:?} of {} and {}",
                kind(&a),
                kind(&b)
            ))),
        },
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "None",
        Value::Bool(_) => "a bool",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a dict",
    }
}

fn call<E>(name: &str, args: Vec<Value>) -> Result<Value, EvalError<E>> {
    let one = |args: &[Value]| -> Result<Value, EvalError<E>> {
        match args {
            [v] => Ok(v.clone()),
            _ => Err(EvalError::Cannot(format!(
                "`{name}` with {} arguments",
                args.len()
            ))),
        }
    };
    match name {
        "int" => match one(&args)? {
            Value::String(s) => s
                .trim()
                .parse::<i64>()
                .map(Value::from)
                .map_err(|_| EvalError::Cannot(format!("int('{s}')"))),
            v => match num(&v) {
                Some(Num::I(i)) => Ok(Value::from(i)),
                Some(Num::F(f)) if f.is_finite() && f.abs() < 9.2e18 => {
                    Ok(Value::from(f.trunc() as i64))
                }
                _ => Err(EvalError::Cannot(format!("int() of {}", kind(&v)))),
            },
        },
        "float" => match one(&args)? {
            Value::String(s) => s
                .trim()
                .parse::<f64>()
                .map_err(|_| EvalError::Cannot(format!("float('{s}')")))
                .and_then(float),
            v => num(&v)
                .map(|n| float(as_f(&n)))
                .unwrap_or_else(|| Err(EvalError::Cannot(format!("float() of {}", kind(&v))))),
        },
        "abs" => match num(&one(&args)?) {
            Some(Num::I(i)) => i.checked_abs().map(Value::from).ok_or_else(overflow),
            Some(Num::F(f)) => float(f.abs()),
            None => Err(EvalError::Cannot("abs() of a non-number".into())),
        },
        "len" => match one(&args)? {
            Value::String(s) => Ok(Value::from(s.chars().count() as u64)),
            Value::Array(a) => Ok(Value::from(a.len() as u64)),
            Value::Object(o) => Ok(Value::from(o.len() as u64)),
            v => Err(EvalError::Cannot(format!("len() of {}", kind(&v)))),
        },
        "min" | "max" => {
            let items = match args.as_slice() {
                [Value::Array(a)] => a.clone(),
                _ => args,
            };
            let mut best: Option<(Value, f64)> = None;
            for v in items {
                let x = num(&v)
                    .map(|n| as_f(&n))
                    .ok_or_else(|| EvalError::Cannot(format!("{name}() of {}", kind(&v))))?;
                let better = match &best {
                    None => true,
                    Some((_, b)) => (name == "min" && x < *b) || (name == "max" && x > *b),
                };
                if better {
                    best = Some((v, x));
                }
            }
            best.map(|(v, _)| v)
                .ok_or_else(|| EvalError::Cannot(format!("{name}() of nothing")))
        }
        other => Err(EvalError::Cannot(format!("the call `{other}(...)`"))),
    }
}

/// Evaluate `e`, resolving `@id` references with `refs`.
pub fn eval<E>(
    e: &Expr,
    refs: &mut dyn FnMut(&str) -> Result<Value, E>,
) -> Result<Value, EvalError<E>> {
    match e {
        Expr::Lit(v) => Ok(v.clone()),
        Expr::Ref(id) => refs(id).map_err(EvalError::Ref),
        Expr::Name(n) => Err(EvalError::Cannot(format!("the name `{n}`"))),
        Expr::List(items) => {
            let mut out = Vec::with_capacity(items.len());
            for i in items {
                out.push(eval(i, refs)?);
            }
            Ok(Value::Array(out))
        }
        Expr::Neg(x) => match num(&eval(x, refs)?) {
            Some(Num::I(i)) => i.checked_neg().map(Value::from).ok_or_else(overflow),
            Some(Num::F(f)) => float(-f),
            None => Err(EvalError::Cannot("negation of a non-number".into())),
        },
        Expr::Binary(op, a, b) => {
            let a = eval(a, refs)?;
            let b = eval(b, refs)?;
            binary(*op, a, b)
        }
        Expr::Call { func, args, kwargs } => match func.as_ref() {
            Expr::Name(n) if kwargs.is_empty() => {
                let mut vals = Vec::with_capacity(args.len());
                for a in args {
                    vals.push(eval(a, refs)?);
                }
                call(n, vals)
            }
            Expr::Name(n) => Err(EvalError::Cannot(format!("`{n}` with keyword arguments"))),
            Expr::Attr(..) => Err(EvalError::Cannot(format!(
                "the call `{}(...)`",
                dotted(func)
            ))),
            _ => Err(EvalError::Cannot("a call of a computed value".into())),
        },
        Expr::Index(x, i) => {
            let x = eval(x, refs)?;
            let i = eval(i, refs)?;
            match (&x, &i) {
                (Value::Array(a), Value::Number(n)) if n.is_i64() => {
                    let k = n.as_i64().unwrap_or(0);
                    let idx = if k < 0 { a.len() as i64 + k } else { k };
                    usize::try_from(idx)
                        .ok()
                        .and_then(|j| a.get(j).cloned())
                        .ok_or_else(|| EvalError::Cannot(format!("index {k} is out of range")))
                }
                (Value::Object(o), Value::String(k)) => o
                    .get(k)
                    .cloned()
                    .ok_or_else(|| EvalError::Cannot(format!("no key '{k}'"))),
                _ => Err(EvalError::Cannot(format!(
                    "indexing {} with {}",
                    kind(&x),
                    kind(&i)
                ))),
            }
        }
        Expr::Attr(..) => Err(EvalError::Cannot(format!("the attribute `{}`", dotted(e)))),
    }
}

/// `torch.cuda.is_available`, `@noise_scheduler.set_timesteps`: how an attribute chain reads.
fn dotted(e: &Expr) -> String {
    match e {
        Expr::Name(n) => n.clone(),
        Expr::Ref(r) => format!("@{r}"),
        Expr::Attr(x, a) => format!("{}.{a}", dotted(x)),
        Expr::Call { func, .. } => format!("{}(...)", dotted(func)),
        _ => "(...)".into(),
    }
}
