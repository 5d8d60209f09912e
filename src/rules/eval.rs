//! Evaluation of compiled plans over one payment's variables.
//!
//! Hot path: no allocation, no hashing except named-list lookups. Errors are
//! values (`EvalError`), never panics: the engine may hand us a short or
//! mistyped variable slice and the rule must then simply not fire.

use super::compile::{Arith, Cmp, Func, Node};
use super::{List, Value};

/// Why a rule could not be evaluated; the rule does not fire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    #[error("division by zero")]
    DivisionByZero,
    #[error("remainder by zero")]
    RemainderByZero,
    #[error("variable slot {0} was not supplied")]
    MissingVariable(u32),
    #[error("variable slot {0} has the wrong type")]
    WrongType(u32),
    #[error("list {0} does not exist")]
    MissingList(u32),
}

pub struct Ctx<'a, 'v> {
    pub vars: &'a [Value<'v>],
    pub lists: &'a [List],
    pub now_ms: i64,
}

/// Arithmetic with division/remainder by zero as errors (not inf/NaN, which
/// would make comparisons silently false or true).
pub fn arith(op: Arith, a: f64, b: f64) -> Result<f64, EvalError> {
    Ok(match op {
        Arith::Add => a + b,
        Arith::Sub => a - b,
        Arith::Mul => a * b,
        Arith::Div if b == 0.0 => return Err(EvalError::DivisionByZero),
        Arith::Div => a / b,
        Arith::Rem if b == 0.0 => return Err(EvalError::RemainderByZero),
        Arith::Rem => a % b,
    })
}

impl Node {
    fn var<'s>(slot: u32, ctx: &Ctx<'_, 's>) -> Result<Value<'s>, EvalError> {
        ctx.vars
            .get(slot as usize)
            .copied()
            .ok_or(EvalError::MissingVariable(slot))
    }

    pub fn eval_bool(&self, ctx: &Ctx) -> Result<bool, EvalError> {
        Ok(match self {
            Node::Bool(b) => *b,
            Node::Var(s) => match Self::var(*s, ctx)? {
                Value::Bool(b) => b,
                _ => return Err(EvalError::WrongType(*s)),
            },
            Node::Not(n) => !n.eval_bool(ctx)?,
            // Short-circuit: a false left side hides errors on the right,
            // the same as in every C-like language analysts know.
            Node::And(a, b) => a.eval_bool(ctx)? && b.eval_bool(ctx)?,
            Node::Or(a, b) => a.eval_bool(ctx)? || b.eval_bool(ctx)?,
            Node::CmpNum(op, a, b) => {
                let (x, y) = (a.eval_num(ctx)?, b.eval_num(ctx)?);
                match op {
                    Cmp::Eq => x == y,
                    Cmp::Ne => x != y,
                    Cmp::Lt => x < y,
                    Cmp::Le => x <= y,
                    Cmp::Gt => x > y,
                    Cmp::Ge => x >= y,
                }
            }
            Node::EqStr(eq, a, b) => (a.eval_str(ctx)? == b.eval_str(ctx)?) == *eq,
            Node::EqBool(eq, a, b) => (a.eval_bool(ctx)? == b.eval_bool(ctx)?) == *eq,
            Node::InStrs(a, items) => {
                let v = a.eval_str(ctx)?;
                items.iter().any(|s| &**s == v)
            }
            Node::InNums(a, items) => {
                let v = a.eval_num(ctx)?;
                items.contains(&v)
            }
            Node::InList(a, idx) => {
                let v = a.eval_str(ctx)?;
                let list = ctx
                    .lists
                    .get(*idx as usize)
                    .ok_or(EvalError::MissingList(*idx))?;
                list.contains(v, ctx.now_ms)
            }
            // The compiler only builds well-typed trees; this arm is unreachable
            // for compiled plans but must not panic.
            _ => return Err(EvalError::WrongType(u32::MAX)),
        })
    }

    pub fn eval_num(&self, ctx: &Ctx) -> Result<f64, EvalError> {
        Ok(match self {
            Node::Num(n) => *n,
            Node::Var(s) => match Self::var(*s, ctx)? {
                Value::Num(n) => n,
                _ => return Err(EvalError::WrongType(*s)),
            },
            Node::Neg(n) => -n.eval_num(ctx)?,
            Node::Arith(op, a, b) => arith(*op, a.eval_num(ctx)?, b.eval_num(ctx)?)?,
            Node::Call(f, args) => {
                let mut it = args.iter();
                let first = match it.next() {
                    Some(a) => a.eval_num(ctx)?,
                    None => return Err(EvalError::WrongType(u32::MAX)),
                };
                match f {
                    Func::Abs => first.abs(),
                    Func::Min => {
                        let mut m = first;
                        for a in it {
                            m = m.min(a.eval_num(ctx)?);
                        }
                        m
                    }
                    Func::Max => {
                        let mut m = first;
                        for a in it {
                            m = m.max(a.eval_num(ctx)?);
                        }
                        m
                    }
                }
            }
            _ => return Err(EvalError::WrongType(u32::MAX)),
        })
    }

    pub fn eval_str<'s>(&'s self, ctx: &Ctx<'_, 's>) -> Result<&'s str, EvalError> {
        match self {
            Node::Str(s) => Ok(s),
            Node::Var(s) => match Self::var(*s, ctx)? {
                Value::Str(v) => Ok(v),
                _ => Err(EvalError::WrongType(*s)),
            },
            _ => Err(EvalError::WrongType(u32::MAX)),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::rules::compile::{compile_expr, Env, Refs};
    use crate::rules::parse::parse_expr;
    use crate::rules::test_schema::schema;
    use std::collections::HashMap;

    fn run(src: &str, set: &[(&str, Value)]) -> Result<bool, EvalError> {
        let s = schema();
        let params = HashMap::from([("limit".to_string(), 30.0)]);
        let lists_idx = HashMap::from([("blocked".to_string(), 0usize)]);
        let env = Env {
            schema: &s,
            params: &params,
            lists: &lists_idx,
        };
        let c = compile_expr(&parse_expr(src).unwrap(), &env, &mut Refs::default()).unwrap();
        let mut vars: Vec<Value> = s.vars().iter().map(|v| Value::zero(v.ty)).collect();
        for (n, v) in set {
            vars[s.slot(n).unwrap()] = *v;
        }
        let mut list = List {
            name: "blocked".into(),
            entries: HashMap::new(),
        };
        list.entries.insert("acc-1".into(), None);
        list.entries.insert("acc-2".into(), Some(1_000));
        let lists = vec![list];
        c.node.eval_bool(&Ctx {
            vars: &vars,
            lists: &lists,
            now_ms: 500,
        })
    }

    #[test]
    fn examples_from_the_brief() {
        let rent = r#"payee.kind == "PERSONAL" && payee.distinct_payers_1h > params.limit"#;
        assert_eq!(
            run(
                rent,
                &[
                    ("payee.kind", Value::Str("PERSONAL")),
                    ("payee.distinct_payers_1h", Value::Num(37.0))
                ]
            ),
            Ok(true)
        );
        assert_eq!(
            run(
                rent,
                &[
                    ("payee.kind", Value::Str("MERCHANT")),
                    ("payee.distinct_payers_1h", Value::Num(37.0))
                ]
            ),
            Ok(false)
        );
        let round = "payment.amount_fen >= 500000 && payment.amount_fen % 100000 == 0";
        assert_eq!(
            run(round, &[("payment.amount_fen", Value::Num(500000.0))]),
            Ok(true)
        );
        assert_eq!(
            run(round, &[("payment.amount_fen", Value::Num(500001.0))]),
            Ok(false)
        );
        assert_eq!(run("!(payer.real_name_verified)", &[]), Ok(true));
        assert_eq!(
            run(
                r#"scene in ["P2P_TRANSFER", "RED_PACKET"]"#,
                &[("scene", Value::Str("RED_PACKET"))]
            ),
            Ok(true)
        );
        let ratio = "payer.amount_1h / max(payer.avg_amount_30d, 1) > 10";
        assert_eq!(
            run(ratio, &[("payer.amount_1h", Value::Num(11.0))]),
            Ok(true)
        );
        assert_eq!(
            run(
                "-payer.count_1h < abs(-3) - min(1, 2, 0)",
                &[("payer.count_1h", Value::Num(1.0))]
            ),
            Ok(true)
        );
    }

    #[test]
    fn division_by_zero_is_an_error_not_a_panic() {
        assert_eq!(
            run("payer.amount_1h / payer.avg_amount_30d > 10", &[]),
            Err(EvalError::DivisionByZero)
        );
        assert_eq!(
            run("payer.amount_1h % payer.avg_amount_30d > 10", &[]),
            Err(EvalError::RemainderByZero)
        );
        // Short-circuit hides the error when the guard is false.
        assert_eq!(
            run(
                "payer.avg_amount_30d > 0 && payer.amount_1h / payer.avg_amount_30d > 10",
                &[]
            ),
            Ok(false)
        );
    }

    #[test]
    fn list_membership_honours_expiry() {
        assert_eq!(
            run(
                "payer.account_id in lists.blocked",
                &[("payer.account_id", Value::Str("acc-1"))]
            ),
            Ok(true)
        );
        assert_eq!(
            run(
                "payer.account_id in lists.blocked",
                &[("payer.account_id", Value::Str("acc-2"))]
            ),
            Ok(true)
        );
        assert_eq!(
            run(
                "payer.account_id in lists.blocked",
                &[("payer.account_id", Value::Str("acc-3"))]
            ),
            Ok(false)
        );
    }

    #[test]
    fn wrong_or_missing_vars_are_errors() {
        let s = schema();
        let env_p = HashMap::new();
        let env_l = HashMap::new();
        let env = Env {
            schema: &s,
            params: &env_p,
            lists: &env_l,
        };
        let c = compile_expr(
            &parse_expr("payer.count_1h > 1").unwrap(),
            &env,
            &mut Refs::default(),
        )
        .unwrap();
        let slot = s.slot("payer.count_1h").unwrap() as u32;
        assert_eq!(
            c.node.eval_bool(&Ctx {
                vars: &[],
                lists: &[],
                now_ms: 0
            }),
            Err(EvalError::MissingVariable(slot))
        );
        let vars = vec![Value::Str("x"); s.len()];
        assert_eq!(
            c.node.eval_bool(&Ctx {
                vars: &vars,
                lists: &[],
                now_ms: 0
            }),
            Err(EvalError::WrongType(slot))
        );
    }
}
