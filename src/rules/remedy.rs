//! What would have kept a fired rule from firing: each numeric threshold it crossed, with
//! the value and the limit, plus the analyst's `advice` step. Worked out when the rule
//! fires and stored with the decision, so an explanation never depends on today's rules.

use super::compile::{Cmp, Node};
use super::eval::Ctx;
use super::{Hit, RuleSet, Schema, SchemaVar, Value};
use crate::units::{Lang, Unit};

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
    let var = schema.vars().get(slot as usize)?;
    let Some(Value::Num(value)) = ctx.vars.get(slot as usize).copied() else {
        return None;
    };
    let (message, message_zh) = words(var, op, value, limit);
    Some(Remedy {
        message,
        message_zh,
        name: var.name.clone(),
        value,
        limit,
    })
}

/// "31 different payers in the last hour; 30 or fewer would not have triggered this check",
/// in the feature's words and unit, in English and Chinese.
fn words(var: &SchemaVar, op: Cmp, value: f64, limit: f64) -> (String, String) {
    let unit = var.unit;
    let [shown, limit_en] = [value, limit].map(|v| unit.format(v, Lang::En));
    let [shown_zh, limit_zh] = [value, limit].map(|v| unit.format(v, Lang::Zh));
    let fewer = if unit.is_count() { "fewer" } else { "less" };
    let (way_out, way_out_zh) = if unit == Unit::YesNo {
        // A flag has one way out: the other answer.
        let other = if value >= 0.5 { 0.0 } else { 1.0 };
        (
            unit.format(other, Lang::En),
            format!("为{}", unit.format(other, Lang::Zh)),
        )
    } else {
        match op {
            Cmp::Gt => (
                format!("{limit_en} or {fewer}"),
                format!("不超过 {limit_zh}"),
            ),
            Cmp::Ge => (
                format!("{fewer} than {limit_en}"),
                format!("低于 {limit_zh}"),
            ),
            Cmp::Lt => (format!("{limit_en} or more"), format!("不低于 {limit_zh}")),
            Cmp::Le => (format!("more than {limit_en}"), format!("高于 {limit_zh}")),
            Cmp::Eq => (
                format!("anything but {limit_en}"),
                format!("不等于 {limit_zh}"),
            ),
            Cmp::Ne => (format!("exactly {limit_en}"), format!("等于 {limit_zh}")),
        }
    };
    let subject = if unit.is_count() {
        format!("{shown} {}", var.label)
    } else {
        format!("{}: {shown}", var.label)
    };
    (
        format!("{subject}; {way_out} would not have triggered this check"),
        format!(
            "{}：{shown_zh}；若{way_out_zh}，则不会触发此项检查",
            var.label_zh
        ),
    )
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
        assert_eq!(
            remedies[0].message,
            "37 different payers in the last hour; 30 or fewer would not have triggered this check"
        );
        assert_eq!(
            remedies[0].message_zh,
            "过去1小时内的不同付款人：37；若不超过 30，则不会触发此项检查"
        );
        // `1000 <= amount` is `amount >= 1000`: less than 10.00 CNY would not have fired.
        assert_eq!(remedies[1].name, "payee.amount_24h");
        assert_eq!(
            remedies[1].message,
            "total received in the last 24 hours: 2,500.00 CNY; less than 10.00 CNY would not \
             have triggered this check"
        );
        assert_eq!(remedies[2].message_zh, "改用商户收款码");
        assert!(remedies[2].name.is_empty());
    }
}
