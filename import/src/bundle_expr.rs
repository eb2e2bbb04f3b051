//! The small part of Python that MONAI bundle configs use in `$` expressions for numbers and
//! paths: literals, `@id` references, lists, `+ - * / // % **`, indexing, and the calls `int`,
//! `float`, `abs`, `min`, `max`, `len`. Everything else (module names, attributes, methods) parses
//! but does not evaluate, and says which construct stopped it; a method call such as
//! `@noise_scheduler.set_timesteps(num_inference_steps=50)` stays available as a tree.

use serde_json::{Number, Value};

/// Longest string or list an expression may build.
const MAX_LEN: usize = 1 << 20;
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

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Int(i64),
    Float(f64),
    Str(String),
    Name(String),
    Ref(String),
    Op(&'static str),
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

fn tokenize(src: &str) -> Result<Vec<Tok>, String> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '@' {
            let mut id = String::new();
            i += 1;
            while i < chars.len() {
                if is_word(chars[i]) || chars[i] == '#' {
                    id.push(chars[i]);
                    i += 1;
                } else if chars[i] == ':' && chars.get(i + 1) == Some(&':') {
                    id.push('#');
                    i += 2;
                } else {
                    break;
                }
            }
            out.push(Tok::Ref(id));
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit()))
        {
            let start = i;
            let mut float = false;
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '_') {
                i += 1;
            }
            if i < chars.len() && chars[i] == '.' {
                float = true;
                i += 1;
                while i < chars.len() && chars[i].is_ascii_digit() {
                    i += 1;
                }
            }
            if i < chars.len() && (chars[i] == 'e' || chars[i] == 'E') {
                float = true;
                i += 1;
                if i < chars.len() && (chars[i] == '+' || chars[i] == '-') {
                    i += 1;
                }
                while i < chars.len() && chars[i].is_ascii_digit() {
                    i += 1;
                }
            }
            let text: String = chars[start..i].iter().filter(|&&c| c != '_').collect();
            if float {
                let v: f64 = text.parse().map_err(|_| format!("bad number `{text}`"))?;
                out.push(Tok::Float(v));
            } else {
                let v: i64 = text
                    .parse()
                    .map_err(|_| format!("integer `{text}` is out of range"))?;
                out.push(Tok::Int(v));
            }
        } else if is_word(c) {
            let start = i;
            while i < chars.len() && is_word(chars[i]) {
                i += 1;
            }
            out.push(Tok::Name(chars[start..i].iter().collect()));
        } else if c == '\'' || c == '"' {
            let mut s = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err("unterminated string".into()),
                    Some(&q) if q == c => {
                        i += 1;
                        break;
                    }
                    Some('\\') => {
                        let e = chars.get(i + 1).ok_or("unterminated string")?;
                        s.push(match e {
                            'n' => '\n',
                            't' => '\t',
                            other => *other,
                        });
                        i += 2;
                    }
                    Some(&ch) => {
                        s.push(ch);
                        i += 1;
                    }
                }
            }
            out.push(Tok::Str(s));
        } else {
            let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
            let op = match two.as_str() {
                "**" => Some("**"),
                "//" => Some("//"),
                _ => None,
            };
            if let Some(op) = op {
                out.push(Tok::Op(op));
                i += 2;
                continue;
            }
            let op = match c {
                '+' => "+",
                '-' => "-",
                '*' => "*",
                '/' => "/",
                '%' => "%",
                '(' => "(",
                ')' => ")",
                '[' => "[",
                ']' => "]",
                ',' => ",",
                '.' => ".",
                '=' => "=",
                other => return Err(format!("the character `{other}`")),
            };
            out.push(Tok::Op(op));
            i += 1;
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn eat(&mut self, op: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Op(o)) if *o == op) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, op: &str) -> Result<(), String> {
        if self.eat(op) {
            Ok(())
        } else {
            Err(format!("expected `{op}`"))
        }
    }

    fn enter(&mut self) -> Result<(), String> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return Err(format!("nested deeper than {MAX_NESTING}"));
        }
        Ok(())
    }

    fn expr(&mut self) -> Result<Expr, String> {
        self.enter()?;
        let mut lhs = self.term()?;
        loop {
            let op = if self.eat("+") {
                BinOp::Add
            } else if self.eat("-") {
                BinOp::Sub
            } else {
                break;
            };
            let rhs = self.term()?;
            lhs = Expr::Binary(op, Box::new(lhs), Box::new(rhs));
        }
        self.depth -= 1;
        Ok(lhs)
    }

    fn term(&mut self) -> Result<Expr, String> {
        let mut lhs = self.unary()?;
        loop {
            let op = if self.eat("*") {
                BinOp::Mul
            } else if self.eat("//") {
                BinOp::FloorDiv
            } else if self.eat("/") {
                BinOp::Div
            } else if self.eat("%") {
                BinOp::Mod
            } else {
                break;
            };
            let rhs = self.unary()?;
            lhs = Expr::Binary(op, Box::new(lhs), Box::new(rhs));
        }
        Ok(lhs)
    }

    fn unary(&mut self) -> Result<Expr, String> {
        self.enter()?;
        let e = if self.eat("-") {
            Expr::Neg(Box::new(self.unary()?))
        } else if self.eat("+") {
            self.unary()?
        } else {
            self.power()?
        };
        self.depth -= 1;
        Ok(e)
    }

    fn power(&mut self) -> Result<Expr, String> {
        let base = self.postfix()?;
        if self.eat("**") {
            let exp = self.unary()?;
            return Ok(Expr::Binary(BinOp::Pow, Box::new(base), Box::new(exp)));
        }
        Ok(base)
    }

    fn postfix(&mut self) -> Result<Expr, String> {
        let mut e = self.atom()?;
        loop {
            if self.eat("(") {
                let (args, kwargs) = self.arguments()?;
                e = Expr::Call {
                    func: Box::new(e),
                    args,
                    kwargs,
                };
            } else if self.eat("[") {
                let i = self.expr()?;
                self.expect("]")?;
                e = Expr::Index(Box::new(e), Box::new(i));
            } else if self.eat(".") {
                match self.toks.get(self.pos).cloned() {
                    Some(Tok::Name(n)) => {
                        self.pos += 1;
                        e = Expr::Attr(Box::new(e), n);
                    }
                    _ => return Err("expected a name after `.`".into()),
                }
            } else {
                return Ok(e);
            }
        }
    }

    fn arguments(&mut self) -> Result<Arguments, String> {
        let (mut args, mut kwargs) = (Vec::new(), Vec::new());
        while !self.eat(")") {
            let keyword = match (self.toks.get(self.pos), self.toks.get(self.pos + 1)) {
                (Some(Tok::Name(n)), Some(Tok::Op("="))) => Some(n.clone()),
                _ => None,
            };
            if let Some(k) = keyword {
                self.pos += 2;
                kwargs.push((k, self.expr()?));
            } else {
                args.push(self.expr()?);
            }
            if !self.eat(",") {
                self.expect(")")?;
                break;
            }
        }
        Ok((args, kwargs))
    }

    fn atom(&mut self) -> Result<Expr, String> {
        self.enter()?;
        let tok = self.toks.get(self.pos).cloned().ok_or("unexpected end")?;
        self.pos += 1;
        let e = match tok {
            Tok::Int(v) => Expr::Lit(Value::from(v)),
            Tok::Float(v) => {
                Expr::Lit(float::<()>(v).map_err(|_| format!("the number {v} is not finite"))?)
            }
            Tok::Str(s) => Expr::Lit(Value::String(s)),
            Tok::Ref(id) => Expr::Ref(id),
            Tok::Name(n) => match n.as_str() {
                "True" => Expr::Lit(Value::Bool(true)),
                "False" => Expr::Lit(Value::Bool(false)),
                "None" => Expr::Lit(Value::Null),
                _ => Expr::Name(n),
            },
            Tok::Op("(") => {
                if self.eat(")") {
                    Expr::List(Vec::new())
                } else {
                    let first = self.expr()?;
                    if self.eat(",") {
                        // A tuple: read as a list.
                        let mut items = vec![first];
                        while !self.eat(")") {
                            items.push(self.expr()?);
                            if !self.eat(",") {
                                self.expect(")")?;
                                break;
                            }
                        }
                        Expr::List(items)
                    } else {
                        self.expect(")")?;
                        first
                    }
                }
            }
            Tok::Op("[") => {
                let mut items = Vec::new();
                while !self.eat("]") {
                    items.push(self.expr()?);
                    if !self.eat(",") {
                        self.expect("]")?;
                        break;
                    }
                }
                Expr::List(items)
            }
            Tok::Op(op) => return Err(format!("unexpected `{op}`")),
        };
        self.depth -= 1;
        Ok(e)
    }
}

/// Parse the text after the `$` of an expression; the error says what could not be read.
pub fn parse(src: &str) -> Result<Expr, String> {
    let toks = tokenize(src)?;
    let mut p = Parser {
        toks,
        pos: 0,
        depth: 0,
    };
    let e = p.expr()?;
    if p.pos != p.toks.len() {
        return Err("unexpected text after the expression (statements, lambdas and comparisons are not evaluated)".into());
    }
    Ok(e)
}

fn float<E>(v: f64) -> Result<Value, EvalError<E>> {
    Number::from_f64(v)
        .map(Value::Number)
        .ok_or_else(|| EvalError::Cannot(format!("the result {v} is not a finite number")))
}

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
    match v {
        Value::String(s) if s.len().saturating_mul(n) <= MAX_LEN => Ok(Value::String(s.repeat(n))),
        Value::Array(a) if a.len().saturating_mul(n) <= MAX_LEN => {
            let mut out = Vec::with_capacity(a.len() * n);
            for _ in 0..n {
                out.extend(a.iter().cloned());
            }
            Ok(Value::Array(out))
        }
        _ => Err(EvalError::Cannot(format!(
            "repetition longer than {MAX_LEN}"
        ))),
    }
}

fn binary<E>(op: BinOp, a: Value, b: Value) -> Result<Value, EvalError<E>> {
    match (op, &a, &b) {
        (BinOp::Add, Value::String(x), Value::String(y)) if x.len() + y.len() <= MAX_LEN => {
            Ok(Value::String(format!("{x}{y}")))
        }
        (BinOp::Add, Value::Array(x), Value::Array(y)) if x.len() + y.len() <= MAX_LEN => {
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
        assert!(ev("[0] * 100000000").unwrap_err().contains("longer"));
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
