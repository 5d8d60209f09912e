//! What would have kept a fired rule from firing: each numeric threshold it crossed, with
//! the value and the limit, plus the analyst's `advice` step. Worked out when the rule
//! fires and stored with the decision, so an explanation never depends on today's rules.

use super::compile::{Cmp, Node};
use super::eval::Ctx;
use super::{Hit, RuleSet, Schema, Value};
use crate::payment::format_feature;

/// One way out of a rule. `name` is empty for an advice step.
#[derive(Debug, Clone, PartialEq)]
pub struct Remedy {
    pub name: String,
    pub value: f64,
    pub limit: f64,
    pub message: String,
    pub message_zh: String,
}

impl RuleSet {
    /// Every `variable <op> limit` condition the hit's rule had to meet (the top-level
    /// `&&` terms), each a value that, kept on the other side of its limit, would have
    /// kept the rule quiet; then the rule's advice. Other terms (string matches, `||`)
    /// are left to the advice, which says them in the analyst's words.
    pub fn remedies(&self, hit: &Hit, schema: &Schema, vars: &[Value]) -> Vec<Remedy> {
        let Some(rule) = self.rules.get(hit.rule_index) else {
            return Vec::new();
        };
        let ctx = Ctx {
            vars,
            lists: &self.lists,
            now_ms: 0,
        };
        let mut terms = Vec::new();
        conjuncts(&rule.plan, &mut terms);
        let mut out: Vec<Remedy> = terms
            .into_iter()
            .filter_map(|term| threshold(term, schema, &ctx))
            .collect();
        if let Some(advice) = &rule.advice {
            let message = advice.render(vars);
            let message_zh = rule
                .advice_zh
                .as_ref()
                .map_or_else(|| message.clone(), |t| t.render(vars));
            out.push(Remedy {
                name: String::new(),
                value: 0.0,
                limit: 0.0,
                message,
                message_zh,
            });
        }
        out
    }
}

fn conjuncts<'n>(node: &'n Node, out: &mut Vec<&'n Node>) {
    match node {
        Node::And(a, b) => {
            conjuncts(a, out);
            conjuncts(b, out);
        }
        other => out.push(other),
    }
}

/// `var <op> expr` (or mirrored) as a remedy; `expr` is evaluated now, so a limit made of
/// params and other values reads as the number it was.
fn threshold(term: &Node, schema: &Schema, ctx: &Ctx) -> Option<Remedy> {
    let Node::CmpNum(op, a, b) = term else {
        return None;
    };
    let (slot, limit, op) = match (&**a, &**b) {
        (Node::Var(s), other) => (*s, other.eval_num(ctx).ok()?, *op),
        (other, Node::Var(s)) => (*s, other.eval_num(ctx).ok()?, mirror(*op)),
        _ => return None,
    };
    let name = schema.vars().get(slot as usize)?.name.clone();
    let Some(Value::Num(value)) = ctx.vars.get(slot as usize).copied() else {
        return None;
    };
    let (en, zh) = match op {
        Cmp::Gt => ("at most", "不超过"),
        Cmp::Ge => ("below", "低于"),
        Cmp::Lt => ("at least", "不低于"),
        Cmp::Le => ("above", "高于"),
        Cmp::Eq => ("anything but", "不等于"),
        Cmp::Ne => ("exactly", "等于"),
    };
    let (shown, shown_limit) = (format_feature(&name, value), format_feature(&name, limit));
    Some(Remedy {
        message: format!(
            "{name} was {shown}; {en} {shown_limit} would not have triggered this rule"
        ),
        message_zh: format!("{name} 为 {shown}；若{zh} {shown_limit}，则不会触发此规则"),
        name,
        value,
        limit,
    })
}

/// `k < x` is `x > k`.
fn mirror(op: Cmp) -> Cmp {
    match op {
        Cmp::Lt => Cmp::Gt,
        Cmp::Le => Cmp::Ge,
        Cmp::Gt => Cmp::Lt,
        Cmp::Ge => Cmp::Le,
        same => same,
    }
}

#[cfg(test)]
mod tests {
    use crate::rules::test_schema::schema;
    use crate::rules::{RuleSet, Value};

    #[test]
    fn each_threshold_and_the_advice_become_remedies() {
        let schema = schema();
        let rule = r#"
[params]
cap = 30
[[rule]]
id = "many"
when = 'payee.kind == "PERSONAL" && payee.distinct_payers_1h > params.cap && 1000 <= payee.amount_24h'
action = "review"
reason_code = "RENT"
message = "m"
advice = "move to a merchant code"
advice_zh = "改用商户收款码"
"#;
        let set = RuleSet::from_sources(&[("a.toml".into(), rule.into())], &schema).unwrap();
        let mut vars: Vec<Value> = schema.vars().iter().map(|v| Value::zero(v.ty)).collect();
        vars[schema.slot("payee.kind").unwrap()] = Value::Str("PERSONAL");
        vars[schema.slot("payee.distinct_payers_1h").unwrap()] = Value::Num(37.0);
        vars[schema.slot("payee.amount_24h").unwrap()] = Value::Num(250_000.0);
        let mut hits = Vec::new();
        set.evaluate(&vars, 0, &mut hits);
        assert_eq!(hits.len(), 1);
        let remedies = set.remedies(&hits[0], &schema, &vars);
        assert_eq!(remedies.len(), 3, "{remedies:?}");
        assert_eq!(remedies[0].name, "payee.distinct_payers_1h");
        assert_eq!((remedies[0].value, remedies[0].limit), (37.0, 30.0));
        assert!(
            remedies[0].message.contains("at most 30"),
            "{}",
            remedies[0].message
        );
        assert!(remedies[0].message_zh.contains("不超过 30"));
        // `1000 <= amount` is `amount >= 1000`: below 10.00 CNY would not have fired.
        assert_eq!(remedies[1].name, "payee.amount_24h");
        assert!(
            remedies[1].message.contains("below 10.00 CNY"),
            "{}",
            remedies[1].message
        );
        assert_eq!(remedies[2].message_zh, "改用商户收款码");
        assert!(remedies[2].name.is_empty());
    }
}
