//! AST → evaluation plan: names resolved (schema slots, params inlined, lists by
//! index), types checked, constants folded; message templates checked.
//!
//! Everything that can be decided before a payment arrives is decided here, so
//! evaluation only loads slots, compares and branches.

use std::collections::HashMap;

use super::parse::{BinaryOp, Expr, ExprKind, Span, UnaryOp};
use super::{Schema, Type, Value};

/// What names an expression may use besides schema variables.
pub struct Env<'a> {
    pub schema: &'a Schema,
    pub params: &'a HashMap<String, f64>,
    /// List name → index into the rule set's lists.
    pub lists: &'a HashMap<String, usize>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CompileError {
    pub span: Span,
    pub message: String,
    pub hint: Option<String>,
}

fn err<T>(span: Span, message: impl Into<String>) -> Result<T, CompileError> {
    Err(CompileError {
        span,
        message: message.into(),
        hint: None,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arith {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Func {
    Min,
    Max,
    Abs,
}

/// The compiled plan: a typed tree; each node's result type is fixed.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    Num(f64),
    Str(Box<str>),
    Bool(bool),
    /// Load a slot; the type is the schema's and is re-checked at run time.
    Var(u32),
    Not(Box<Node>),
    Neg(Box<Node>),
    And(Box<Node>, Box<Node>),
    Or(Box<Node>, Box<Node>),
    Arith(Arith, Box<Node>, Box<Node>),
    CmpNum(Cmp, Box<Node>, Box<Node>),
    /// Only `==` / `!=` exist for strings and bools.
    EqStr(bool, Box<Node>, Box<Node>),
    EqBool(bool, Box<Node>, Box<Node>),
    InStrs(Box<Node>, Box<[Box<str>]>),
    InNums(Box<Node>, Box<[f64]>),
    InList(Box<Node>, u32),
    Call(Func, Box<[Node]>),
}

/// Output of compiling one expression.
#[derive(Debug)]
pub struct Compiled {
    pub node: Node,
    pub ty: Type,
}

/// Tracks what an expression references (the evidence a hit carries).
#[derive(Default)]
pub struct Refs {
    pub slots: Vec<u32>,
    pub params: Vec<(String, f64)>,
}

impl Refs {
    fn slot(&mut self, s: u32) {
        if !self.slots.contains(&s) {
            self.slots.push(s);
        }
    }
    fn param(&mut self, name: &str, v: f64) {
        if !self.params.iter().any(|(n, _)| n == name) {
            self.params.push((name.to_string(), v));
        }
    }
}

pub fn compile_expr(e: &Expr, env: &Env, refs: &mut Refs) -> Result<Compiled, CompileError> {
    match &e.kind {
        ExprKind::Num(n) => Ok(Compiled {
            node: Node::Num(*n),
            ty: Type::Num,
        }),
        ExprKind::Str(s) => Ok(Compiled {
            node: Node::Str(s.as_str().into()),
            ty: Type::Str,
        }),
        ExprKind::Bool(b) => Ok(Compiled {
            node: Node::Bool(*b),
            ty: Type::Bool,
        }),
        ExprKind::Ident(name) => resolve(name, e.span, env, refs),
        ExprKind::List(_) => err(
            e.span,
            "a list literal can only be used on the right of `in`",
        ),
        ExprKind::Unary(op, inner) => {
            let c = compile_expr(inner, env, refs)?;
            match op {
                UnaryOp::Not => {
                    expect(&c, Type::Bool, inner.span, "`!`")?;
                    Ok(Compiled {
                        node: fold_not(c.node),
                        ty: Type::Bool,
                    })
                }
                UnaryOp::Neg => {
                    expect(&c, Type::Num, inner.span, "unary `-`")?;
                    let node = match c.node {
                        Node::Num(n) => Node::Num(-n),
                        n => Node::Neg(Box::new(n)),
                    };
                    Ok(Compiled {
                        node,
                        ty: Type::Num,
                    })
                }
            }
        }
        ExprKind::Binary(BinaryOp::In, l, r) => compile_in(l, r, env, refs),
        ExprKind::Binary(op, l, r) => {
            let lc = compile_expr(l, env, refs)?;
            let rc = compile_expr(r, env, refs)?;
            let what = format!("`{op}`");
            match op {
                BinaryOp::And | BinaryOp::Or => {
                    expect(&lc, Type::Bool, l.span, &what)?;
                    expect(&rc, Type::Bool, r.span, &what)?;
                    let (a, b) = (Box::new(lc.node), Box::new(rc.node));
                    let node = if *op == BinaryOp::And {
                        Node::And(a, b)
                    } else {
                        Node::Or(a, b)
                    };
                    Ok(Compiled {
                        node,
                        ty: Type::Bool,
                    })
                }
                BinaryOp::Eq | BinaryOp::Ne => {
                    if lc.ty != rc.ty {
                        return err(
                            e.span,
                            format!("cannot compare {} with {} using {what}", lc.ty, rc.ty),
                        );
                    }
                    let eq = *op == BinaryOp::Eq;
                    let (a, b) = (Box::new(lc.node), Box::new(rc.node));
                    let node = match lc.ty {
                        Type::Num => Node::CmpNum(if eq { Cmp::Eq } else { Cmp::Ne }, a, b),
                        Type::Str => Node::EqStr(eq, a, b),
                        Type::Bool => Node::EqBool(eq, a, b),
                    };
                    Ok(Compiled {
                        node,
                        ty: Type::Bool,
                    })
                }
                BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt | BinaryOp::Ge => {
                    expect(&lc, Type::Num, l.span, &what)?;
                    expect(&rc, Type::Num, r.span, &what)?;
                    let cmp = match op {
                        BinaryOp::Lt => Cmp::Lt,
                        BinaryOp::Le => Cmp::Le,
                        BinaryOp::Gt => Cmp::Gt,
                        _ => Cmp::Ge,
                    };
                    Ok(Compiled {
                        node: Node::CmpNum(cmp, Box::new(lc.node), Box::new(rc.node)),
                        ty: Type::Bool,
                    })
                }
                _ => {
                    expect(&lc, Type::Num, l.span, &what)?;
                    expect(&rc, Type::Num, r.span, &what)?;
                    let a = match op {
                        BinaryOp::Add => Arith::Add,
                        BinaryOp::Sub => Arith::Sub,
                        BinaryOp::Mul => Arith::Mul,
                        BinaryOp::Div => Arith::Div,
                        _ => Arith::Rem,
                    };
                    if matches!(a, Arith::Div | Arith::Rem) && rc.node == Node::Num(0.0) {
                        return err(r.span, "division by zero");
                    }
                    let node = match (&lc.node, &rc.node) {
                        (Node::Num(x), Node::Num(y)) => {
                            Node::Num(super::eval::arith(a, *x, *y).unwrap_or(f64::NAN))
                        }
                        _ => Node::Arith(a, Box::new(lc.node), Box::new(rc.node)),
                    };
                    Ok(Compiled {
                        node,
                        ty: Type::Num,
                    })
                }
            }
        }
        ExprKind::Call(name, name_span, args) => {
            let func = match name.as_str() {
                "min" => Func::Min,
                "max" => Func::Max,
                "abs" => Func::Abs,
                _ => {
                    let mut e = CompileError {
                        span: *name_span,
                        message: format!("unknown function `{name}`"),
                        hint: None,
                    };
                    e.hint = suggest(name, ["min", "max", "abs"].iter().copied())
                        .map(|s| format!("did you mean `{s}`?"))
                        .or(Some("functions are `min`, `max`, `abs`".into()));
                    return Err(e);
                }
            };
            let arity_ok = match func {
                Func::Abs => args.len() == 1,
                _ => !args.is_empty(),
            };
            if !arity_ok {
                let want = if func == Func::Abs {
                    "exactly one argument"
                } else {
                    "at least one argument"
                };
                return err(
                    e.span,
                    format!("`{name}` takes {want}, found {}", args.len()),
                );
            }
            let mut nodes = Vec::with_capacity(args.len());
            for a in args {
                let c = compile_expr(a, env, refs)?;
                expect(&c, Type::Num, a.span, &format!("`{name}`"))?;
                nodes.push(c.node);
            }
            Ok(Compiled {
                node: Node::Call(func, nodes.into_boxed_slice()),
                ty: Type::Num,
            })
        }
    }
}

fn fold_not(n: Node) -> Node {
    match n {
        Node::Bool(b) => Node::Bool(!b),
        n => Node::Not(Box::new(n)),
    }
}

fn expect(c: &Compiled, want: Type, span: Span, what: &str) -> Result<(), CompileError> {
    if c.ty == want {
        Ok(())
    } else {
        err(span, format!("{what} needs a {want}, found a {}", c.ty))
    }
}

fn resolve(name: &str, span: Span, env: &Env, refs: &mut Refs) -> Result<Compiled, CompileError> {
    if let Some(p) = name.strip_prefix("params.") {
        if let Some(v) = env.params.get(p) {
            refs.param(p, *v);
            return Ok(Compiled {
                node: Node::Num(*v),
                ty: Type::Num,
            });
        }
        return Err(unknown(name, span, env));
    }
    if let Some(list) = name.strip_prefix("lists.") {
        if env.lists.contains_key(list) {
            return err(
                span,
                format!("list `{name}` can only be used on the right of `in`"),
            );
        }
        return Err(unknown(name, span, env));
    }
    match env.schema.slot(name) {
        Some(slot) => {
            let ty = env.schema.vars()[slot].ty;
            let slot = slot as u32;
            refs.slot(slot);
            Ok(Compiled {
                node: Node::Var(slot),
                ty,
            })
        }
        None => Err(unknown(name, span, env)),
    }
}

fn unknown(name: &str, span: Span, env: &Env) -> CompileError {
    let params: Vec<String> = env.params.keys().map(|k| format!("params.{k}")).collect();
    let lists: Vec<String> = env.lists.keys().map(|k| format!("lists.{k}")).collect();
    let candidates = env
        .schema
        .vars()
        .iter()
        .map(|v| v.name.as_str())
        .chain(params.iter().map(|s| s.as_str()))
        .chain(lists.iter().map(|s| s.as_str()));
    let kind = if name.starts_with("params.") {
        "unknown param"
    } else if name.starts_with("lists.") {
        "unknown list"
    } else {
        "unknown name"
    };
    CompileError {
        span,
        message: format!("{kind} `{name}`"),
        hint: suggest(name, candidates).map(|s| format!("did you mean `{s}`?")),
    }
}

fn compile_in(l: &Expr, r: &Expr, env: &Env, refs: &mut Refs) -> Result<Compiled, CompileError> {
    let lc = compile_expr(l, env, refs)?;
    match &r.kind {
        ExprKind::Ident(name) if name.starts_with("lists.") => {
            let list = &name["lists.".len()..];
            let Some(&idx) = env.lists.get(list) else {
                return Err(unknown(name, r.span, env));
            };
            expect(&lc, Type::Str, l.span, "`in lists.*`")?;
            Ok(Compiled {
                node: Node::InList(Box::new(lc.node), idx as u32),
                ty: Type::Bool,
            })
        }
        ExprKind::List(items) => {
            if lc.ty == Type::Bool {
                return err(
                    l.span,
                    "`in` needs a string or number on the left, found a bool",
                );
            }
            let mut strs = Vec::new();
            let mut nums = Vec::new();
            for it in items {
                let c = compile_expr(it, env, refs)?;
                if c.ty != lc.ty {
                    return err(
                        it.span,
                        format!("list item is a {}, the left of `in` is a {}", c.ty, lc.ty),
                    );
                }
                match c.node {
                    Node::Str(s) => strs.push(s),
                    Node::Num(n) => nums.push(n),
                    _ => return err(it.span, "list items must be literals or params"),
                }
            }
            let a = Box::new(lc.node);
            let node = if lc.ty == Type::Str {
                Node::InStrs(a, strs.into_boxed_slice())
            } else {
                Node::InNums(a, nums.into_boxed_slice())
            };
            Ok(Compiled {
                node,
                ty: Type::Bool,
            })
        }
        _ => err(
            r.span,
            "the right of `in` must be a list literal `[..]` or a named list `lists.NAME`",
        ),
    }
}

/// Levenshtein distance over chars (names are short; O(n·m) is fine).
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// Closest candidate within a third of the name's length (at least 2 edits).
pub fn suggest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    if name.len() > 200 {
        return None;
    }
    let limit = (name.chars().count() / 3).max(2);
    candidates
        .map(|c| (edit_distance(name, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, c)| (*d, c.len()))
        .map(|(_, c)| c)
}

// ---------------------------------------------------------------- templates

#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    Lit(String),
    Var { slot: u32, fmt: Fmt },
    Const { value: f64, fmt: Fmt },
}

/// How a `{name}` placeholder prints a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fmt {
    Plain,
    /// `{name:yuan}`: fen as yuan.
    Yuan,
    /// `{name:percent}`: a share from 0 to 1 as a percentage.
    Percent,
}

/// A checked message template.
///
/// `{name}` inserts a variable or `params.NAME`; numbers print as integers when
/// integral, else with up to 2 decimals. `{name:yuan}` prints an amount held in
/// fen as yuan with exactly 2 decimals (`123456` → `1,234.56`), `{name:percent}` a share
/// as a percentage (`0.05` → `5%`); nothing is converted implicitly, because not every
/// name containing `amount` is money.
/// `{{` and `}}` print literal braces.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Template {
    pub pieces: Vec<Piece>,
}

pub fn compile_template(
    src: &str,
    env: &Env,
    refs: &mut Refs,
) -> Result<Template, Vec<CompileError>> {
    let mut pieces = Vec::new();
    let mut errors = Vec::new();
    let mut lit = String::new();
    let mut chars = src.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '{' if chars.peek().map(|p| p.1) == Some('{') => {
                chars.next();
                lit.push('{');
            }
            '}' if chars.peek().map(|p| p.1) == Some('}') => {
                chars.next();
                lit.push('}');
            }
            '{' => {
                let Some(close) = src[i + 1..].find('}') else {
                    errors.push(CompileError {
                        span: Span::new(i, i + 1),
                        message: "unclosed `{` in message (use `{{` for a literal brace)".into(),
                        hint: None,
                    });
                    break;
                };
                let inner = &src[i + 1..i + 1 + close];
                let span = Span::new(i + 1, i + 1 + close);
                // Skip past the closing brace.
                while let Some(&(j, _)) = chars.peek() {
                    if j > i + 1 + close {
                        break;
                    }
                    chars.next();
                }
                let (name, fmt) = match inner.split_once(':') {
                    Some((n, f)) => (n.trim(), Some(f.trim())),
                    None => (inner.trim(), None),
                };
                let fmt = match fmt {
                    None => Fmt::Plain,
                    Some("yuan") => Fmt::Yuan,
                    Some("percent") => Fmt::Percent,
                    Some(other) => {
                        errors.push(CompileError {
                            span,
                            message: format!(
                                "unknown format `{other}`, expected `yuan` or `percent`"
                            ),
                            hint: None,
                        });
                        continue;
                    }
                };
                match resolve(name, span, env, refs) {
                    Ok(Compiled {
                        node: Node::Num(v), ..
                    }) => {
                        flush(&mut lit, &mut pieces);
                        pieces.push(Piece::Const { value: v, fmt });
                    }
                    Ok(Compiled {
                        node: Node::Var(slot),
                        ty,
                    }) => {
                        if fmt != Fmt::Plain && ty != Type::Num {
                            errors.push(CompileError {
                                span,
                                message: format!("a format needs a number, `{name}` is a {ty}"),
                                hint: None,
                            });
                            continue;
                        }
                        flush(&mut lit, &mut pieces);
                        pieces.push(Piece::Var { slot, fmt });
                    }
                    Ok(_) => errors.push(CompileError {
                        span,
                        message: format!("`{name}` cannot be shown in a message"),
                        hint: None,
                    }),
                    Err(e) => errors.push(e),
                }
            }
            '}' => errors.push(CompileError {
                span: Span::new(i, i + 1),
                message: "unmatched `}` in message (use `}}` for a literal brace)".into(),
                hint: None,
            }),
            c => lit.push(c),
        }
    }
    flush(&mut lit, &mut pieces);
    if errors.is_empty() {
        Ok(Template { pieces })
    } else {
        Err(errors)
    }
}

fn flush(lit: &mut String, pieces: &mut Vec<Piece>) {
    if !lit.is_empty() {
        pieces.push(Piece::Lit(std::mem::take(lit)));
    }
}

/// Integral numbers without decimals; others rounded to 2 decimals, trimmed.
pub fn format_num(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    if v.fract() == 0.0 && v.abs() < 1e15 {
        return format!("{}", v as i64);
    }
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

impl Template {
    pub fn render(&self, vars: &[Value]) -> String {
        let mut out = String::new();
        for p in &self.pieces {
            let (v, fmt) = match p {
                Piece::Lit(s) => {
                    out.push_str(s);
                    continue;
                }
                Piece::Const { value, fmt } => (Value::Num(*value), *fmt),
                Piece::Var { slot, fmt } => match vars.get(*slot as usize) {
                    Some(v) => (*v, *fmt),
                    None => {
                        out.push('?');
                        continue;
                    }
                },
            };
            match v {
                // Fen values are whole numbers held exactly in f64; yuan is rendered with
                // integer arithmetic so money never passes through a float division.
                Value::Num(n) if fmt == Fmt::Yuan => {
                    out.push_str(&crate::payment::format_yuan(n.round() as i64))
                }
                Value::Num(n) if fmt == Fmt::Percent => {
                    out.push_str(&format_num(n * 100.0));
                    out.push('%');
                }
                Value::Num(n) => out.push_str(&format_num(n)),
                Value::Str(s) => out.push_str(s),
                Value::Bool(b) => out.push_str(if b { "true" } else { "false" }),
            }
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::rules::parse::parse_expr;
    use crate::rules::test_schema::schema;

    fn env_parts() -> (Schema, HashMap<String, f64>, HashMap<String, usize>) {
        let mut p = HashMap::new();
        p.insert("limit".to_string(), 30.0);
        let mut l = HashMap::new();
        l.insert("blocked_accounts".to_string(), 0usize);
        (schema(), p, l)
    }

    fn compile(src: &str) -> Result<Compiled, CompileError> {
        let (s, p, l) = env_parts();
        let env = Env {
            schema: &s,
            params: &p,
            lists: &l,
        };
        let e = parse_expr(src).map_err(|e| CompileError {
            span: e.span,
            message: e.message,
            hint: None,
        })?;
        compile_expr(&e, &env, &mut Refs::default())
    }

    #[test]
    fn types_checked() {
        assert!(
            compile(r#"payee.kind == "PERSONAL" && payee.distinct_payers_1h > params.limit"#)
                .is_ok()
        );
        let e = compile(r#"payee.kind == 3"#).unwrap_err();
        assert!(
            e.message.contains("cannot compare string with number"),
            "{}",
            e.message
        );
        let e = compile("payer.count_1h && true").unwrap_err();
        assert_eq!(e.span, Span::new(0, 14));
        assert!(compile("!(payer.real_name_verified)").is_ok());
        assert!(compile("payee.kind < \"a\"").is_err());
        assert!(compile("payer.account_id in lists.blocked_accounts").is_ok());
        assert!(compile("payment.amount_fen in lists.blocked_accounts").is_err());
        assert!(compile("lists.blocked_accounts == \"x\"").is_err());
        assert!(compile(r#"scene in ["P2P_TRANSFER", 3]"#).is_err());
        assert!(compile("payment.amount_fen in [100, 200, params.limit]").is_ok());
        assert!(compile("abs(1, 2) > 0").is_err());
        assert!(compile("payment.amount_fen / 0 > 1").is_err());
    }

    #[test]
    fn unknown_name_hint() {
        let e = compile("payee.distinct_payer_1h > 3").unwrap_err();
        assert_eq!(e.message, "unknown name `payee.distinct_payer_1h`");
        assert_eq!(
            e.hint.as_deref(),
            Some("did you mean `payee.distinct_payers_1h`?")
        );
        let e = compile("params.limt > 3").unwrap_err();
        assert_eq!(e.hint.as_deref(), Some("did you mean `params.limit`?"));
        let e = compile("mx(1, 2) > 3").unwrap_err();
        assert_eq!(e.hint.as_deref(), Some("did you mean `max`?"));
    }

    #[test]
    fn constants_fold() {
        let c = compile("params.limit * 100").unwrap();
        assert_eq!(c.node, Node::Num(3000.0));
    }

    #[test]
    fn templates() {
        let (s, p, l) = env_parts();
        let env = Env {
            schema: &s,
            params: &p,
            lists: &l,
        };
        let mut refs = Refs::default();
        let t = compile_template("{payee.distinct_payers_1h} payers (limit {params.limit}), {{x}} {payment.amount_fen:yuan} {payee.fraud_rate_30d_lag7d:percent}", &env, &mut refs).unwrap();
        let mut vars = vec![Value::Num(0.0); s.len()];
        vars[s.slot("payee.distinct_payers_1h").unwrap()] = Value::Num(37.0);
        vars[s.slot("payment.amount_fen").unwrap()] = Value::Num(123456.0);
        vars[s.slot("payee.fraud_rate_30d_lag7d").unwrap()] = Value::Num(0.0825);
        assert_eq!(t.render(&vars), "37 payers (limit 30), {x} 1,234.56 8.25%");
        let errs =
            compile_template("{payee.distinct_payer_1h} {oops", &env, &mut refs).unwrap_err();
        assert_eq!(errs.len(), 2);
        assert_eq!(errs[0].span, Span::new(1, 24));
        assert_eq!(format_num(2.5), "2.5");
        assert_eq!(format_num(1.0 / 3.0), "0.33");
    }
}
