//! The engine's account work: suppressions and status on the Score path, status changes
//! by rule, model and analyst, appeals, and re-scoring a stored decision.

use super::{invalid, stored_payment, Engine, EngineError};
use crate::accounts::severity;
use crate::decision;
use crate::payment::{format_yuan, Payment, Scene};
use crate::proto::{
    self, AccountStatus, AccountStatusChange, Appeal, AppealStatus, Decision, Resolution,
    Suppression,
};
use crate::rules::verdict::DecidedBy;
use crate::rules::{AccountAction, Hit, Value, Verdict};
use crate::units::Unit;
use crate::vars;

const DAY_MS: i64 = 86_400_000;
/// Longest appeal statement or analyst note, in characters.
const MAX_TEXT_CHARS: usize = 4_000;

impl Engine {
    /// Moves hits of rules an overturned appeal suppressed for the payer or payee out of
    /// `hits` (into `suppressed`): they are recorded, never acted on.
    pub(super) fn set_aside_suppressed(&mut self, payment: &Payment) {
        self.suppressed.clear();
        let (payer, payee) = (&payment.payer.account_id, &payment.payee.account_id);
        if !self.statuses.has_suppressions(payer) && !self.statuses.has_suppressions(payee) {
            return;
        }
        let at = payment.event_time_ms;
        let statuses = &self.statuses;
        let (suppressed, kept): (Vec<Hit>, Vec<Hit>) =
            std::mem::take(&mut self.hits).into_iter().partition(|h| {
                h.counts()
                    && (statuses.suppressed(payee, &h.id, at)
                        || statuses.suppressed(payer, &h.id, at))
            });
        self.hits = kept;
        self.suppressed = suppressed;
    }

    /// Reasons to block because the payer or payee is frozen or limited; empty when both
    /// are free to pay.
    pub(super) fn status_reasons(&self, payment: &Payment) -> Vec<proto::Reason> {
        let mut reasons = Vec::new();
        let cap = self.config.limited_daily_cap_fen;
        let sides = [
            (
                &payment.payee.account_id,
                "payee",
                "collection on",
                "收款",
                ("receiving", "收款"),
            ),
            (
                &payment.payer.account_id,
                "payer",
                "payments from",
                "付款",
                ("paying", "付款"),
            ),
        ];
        for (account, side, what, what_zh, (role, role_zh)) in sides {
            let Some(change) = self.statuses.restriction(account) else {
                continue;
            };
            let since = format_time(change.at_ms);
            let (why, why_zh) = set_by(&change.changed_by);
            let mut evidence = vec![proto::Evidence {
                name: format!("{side}.status"),
                text: change.to().as_str_name().into(),
                label: format!("status of the {role} account"),
                label_zh: format!("{role_zh}账户状态"),
                unit: Unit::Text.as_str().into(),
                ..Default::default()
            }];
            let (code, message, message_zh) = match change.to() {
                AccountStatus::Frozen => (
                    "ACCOUNT_FROZEN",
                    format!("{what} account {account} is frozen since {since} ({why})"),
                    format!("账户 {account} 的{what_zh}功能已于 {since} 冻结（{why_zh}）"),
                ),
                AccountStatus::Limited if side == "payer" && payment.scene == Scene::Withdrawal => (
                    "ACCOUNT_LIMITED",
                    format!("withdrawals from account {account} are held while it is limited (since {since}, {why})"),
                    format!("账户 {account} 受限期间暂停提现（自 {since} 起，{why_zh}）"),
                ),
                AccountStatus::Limited => {
                    let name = format!("{side}.amount_24h");
                    let slot = self.schema.slot(&name);
                    let total = slot
                        .and_then(|s| s.checked_sub(vars::REQUEST_FIELDS.len()))
                        .and_then(|i| self.values.get(i).copied())
                        .map_or(payment.amount_fen, |v| v.round() as i64);
                    if total <= cap {
                        continue;
                    }
                    if let Some(var) = slot.and_then(|s| self.schema.vars().get(s)) {
                        evidence.push(decision::evidence(var, Some(Value::Num(total as f64))));
                    }
                    evidence.push(proto::Evidence {
                        name: "config.limited_daily_cap_fen".into(),
                        value: cap as f64,
                        label: "what a limited account may move in 24 hours".into(),
                        label_zh: "受限账户24小时内可收付的金额上限".into(),
                        unit: Unit::Yuan.as_str().into(),
                        ..Default::default()
                    });
                    (
                        "ACCOUNT_LIMITED",
                        format!(
                            "account {account} is limited since {since} ({why}): {} CNY in 24 hours with this payment (limit {} CNY while limited)",
                            format_yuan(total),
                            format_yuan(cap)
                        ),
                        format!(
                            "账户 {account} 自 {since} 起受限（{why_zh}）：含本笔 24 小时内 {} 元（受限期间上限 {} 元）",
                            format_yuan(total),
                            format_yuan(cap)
                        ),
                    )
                }
                AccountStatus::Normal | AccountStatus::Unspecified => continue,
            };
            reasons.push(proto::Reason {
                code: code.into(),
                source: proto::ReasonSource::AccountStatus as i32,
                id: account.clone(),
                message,
                message_zh,
                contribution: 0.0,
                action: proto::Action::Block as i32,
                account_action: proto::AccountAction::Unspecified as i32,
                evidence,
                remedies: vec![proto::Remedy {
                    message: "the account owner may file an appeal".into(),
                    message_zh: "账户所有人可以提出申诉".into(),
                    ..Default::default()
                }],
            });
        }
        reasons
    }

    /// The status changes the verdict's account actions (and the model's thresholds) ask
    /// for, where they tighten the current status.
    pub(super) fn account_changes(
        &self,
        payment: &Payment,
        verdict: &Verdict,
        decision_id: &str,
        now_ms: i64,
    ) -> Result<Vec<AccountStatusChange>, EngineError> {
        if !self.config.enforce_account_actions {
            return Ok(Vec::new());
        }
        // (action, rule ids asking for it); the model's own actions carry no rule.
        let mut wanted: Vec<(AccountAction, Vec<String>, &str)> = Vec::new();
        if !verdict.account_actions.is_empty() {
            for &i in &verdict.reasons {
                let hit = &self.hits[i];
                if let Some(action) = hit.account_action {
                    match wanted.iter_mut().find(|(a, _, _)| *a == action) {
                        Some((_, rules, _)) => rules.push(hit.id.to_string()),
                        None => wanted.push((action, vec![hit.id.to_string()], "rule")),
                    }
                }
            }
        }
        // Allow rules beat everything, the model's thresholds included.
        if verdict.decided_by != DecidedBy::AllowRule {
            for m in &self.config.model_account_actions {
                if self.last_probability >= m.probability_at {
                    wanted.push((m.account_action, Vec::new(), "model"));
                }
            }
        }
        let mut changes: Vec<AccountStatusChange> = Vec::new();
        for (action, rule_ids, by) in wanted {
            let (account, to) = match action {
                AccountAction::LimitPayee => (&payment.payee.account_id, AccountStatus::Limited),
                AccountAction::FreezePayee => (&payment.payee.account_id, AccountStatus::Frozen),
                AccountAction::LimitPayer => (&payment.payer.account_id, AccountStatus::Limited),
                AccountAction::FreezePayer => (&payment.payer.account_id, AccountStatus::Frozen),
            };
            let from = changes
                .iter()
                .rev()
                .find(|c| &c.account_id == account)
                .map_or_else(|| self.statuses.status(account), |c| c.to());
            if severity(to) <= severity(from) {
                continue;
            }
            let note = match by {
                "model" => format!(
                    "fraud probability {:.1}% reached the model's {} threshold",
                    self.last_probability * 100.0,
                    action.as_str()
                ),
                _ => String::new(),
            };
            changes.push(AccountStatusChange {
                account_id: account.clone(),
                from: from as i32,
                to: to as i32,
                at_ms: payment.event_time_ms,
                recorded_at_ms: now_ms,
                changed_by: by.into(),
                decision_ids: vec![decision_id.to_owned()],
                rule_ids,
                ruleset_version: self.rules.version().to_owned(),
                model_version: self.model_version().to_owned(),
                note,
                seq: self.db.generate_id()?,
            });
        }
        Ok(changes)
    }

    /// Mirrors written changes in memory, once they are in sled.
    pub(super) fn apply_changes(&mut self, changes: Vec<AccountStatusChange>) {
        for change in changes {
            let to = change.to().as_str_name();
            // `analyst:<key id>` and `appeal:<id>` count by kind: ids would explode labels.
            let by = match change.changed_by.split(':').next().unwrap_or_default() {
                "rule" => "rule",
                "model" => "model",
                "analyst" => "analyst",
                "appeal" => "appeal",
                _ => "other",
            };
            self.telemetry
                .account_changes
                .get_or_create(&crate::telemetry::StatusLabels { to, by })
                .inc();
            self.statuses.apply(change);
        }
    }

    /// An analyst sets an account's status by hand.
    pub fn set_account_status(
        &mut self,
        req: &proto::SetAccountStatusRequest,
        changed_by: &str,
        now_ms: i64,
    ) -> Result<AccountStatusChange, EngineError> {
        check_account(&req.account_id)?;
        let to = match AccountStatus::try_from(req.status) {
            Ok(s) if s != AccountStatus::Unspecified => s,
            _ => return Err(invalid("status", "must be NORMAL, LIMITED or FROZEN")),
        };
        check_text("note", &req.note)?;
        let change = self.change(&req.account_id, to, changed_by, &[], &[], &req.note, now_ms)?;
        let mut batch = sled::Batch::default();
        self.accounts.stage_change(&mut batch, &change);
        self.write(batch, &[])?;
        self.apply_changes(vec![change.clone()]);
        Ok(change)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn change(
        &self,
        account: &str,
        to: AccountStatus,
        changed_by: &str,
        decision_ids: &[String],
        rule_ids: &[String],
        note: &str,
        now_ms: i64,
    ) -> Result<AccountStatusChange, EngineError> {
        Ok(AccountStatusChange {
            account_id: account.to_owned(),
            from: self.statuses.status(account) as i32,
            to: to as i32,
            at_ms: now_ms,
            recorded_at_ms: now_ms,
            changed_by: changed_by.to_owned(),
            decision_ids: decision_ids.to_vec(),
            rule_ids: rule_ids.to_vec(),
            ruleset_version: self.rules.version().to_owned(),
            model_version: self.model_version().to_owned(),
            note: note.to_owned(),
            seq: self.db.generate_id()?,
        })
    }

    /// Opens an appeal for `req.account_id` (the caller has checked it may).
    pub fn file_appeal(
        &mut self,
        req: &proto::FileAppealRequest,
        filed_by: &str,
        now_ms: i64,
    ) -> Result<Appeal, EngineError> {
        check_account(&req.account_id)?;
        check_text("statement", &req.statement)?;
        let account = req.account_id.as_str();
        if let Some(open) = self
            .accounts
            .appeals(Some(account))?
            .into_iter()
            .find(|a| a.status() == AppealStatus::Open)
        {
            return Err(EngineError::AppealState(format!(
                "appeal {} for this account is still open",
                open.appeal_id
            )));
        }
        let decision_ids = if req.decision_ids.is_empty() {
            // A status set by hand has no decisions behind it; the appeal is against it.
            if self.statuses.status(account) == AccountStatus::Normal {
                return Err(invalid(
                    "decision_ids",
                    "the account is neither frozen nor limited; name the decisions to appeal",
                ));
            }
            crate::explain::decisions_behind_status(&self.accounts, account)?
        } else {
            for id in &req.decision_ids {
                let concerns = self
                    .decisions
                    .by_decision_id(id)?
                    .and_then(|d| d.request)
                    .is_some_and(|r| involves(&r, account));
                if !concerns {
                    // The same words whether it does not exist or is someone else's.
                    return Err(invalid(
                        "decision_ids",
                        format!("no decision `{id}` for this account"),
                    ));
                }
            }
            req.decision_ids.clone()
        };
        let appeal = Appeal {
            appeal_id: self.accounts.next_appeal_id()?,
            account_id: account.to_owned(),
            decision_ids,
            statement: req.statement.clone(),
            status: AppealStatus::Open as i32,
            account_status: self.statuses.status(account) as i32,
            filed_at_ms: now_ms,
            filed_by: filed_by.to_owned(),
            ..Default::default()
        };
        let mut batch = sled::Batch::default();
        self.accounts.stage_appeal(&mut batch, &appeal);
        self.write(batch, &[])?;
        Ok(appeal)
    }

    /// Resolves an open appeal: see `Appeals.ResolveAppeal` in the proto.
    pub fn resolve_appeal(
        &mut self,
        req: &proto::ResolveAppealRequest,
        resolved_by: &str,
        now_ms: i64,
    ) -> Result<Appeal, EngineError> {
        let mut appeal = self
            .accounts
            .appeal(&req.appeal_id)?
            .ok_or_else(|| EngineError::UnknownAppeal(req.appeal_id.clone()))?;
        if appeal.status() != AppealStatus::Open {
            return Err(EngineError::AppealState(format!(
                "appeal {} is already {}",
                appeal.appeal_id,
                appeal.status().as_str_name()
            )));
        }
        let resolution = match Resolution::try_from(req.resolution) {
            Ok(r) if r != Resolution::Unspecified => r,
            _ => return Err(invalid("resolution", "must be UPHOLD or OVERTURN")),
        };
        check_text("note", &req.note)?;
        let until = match req.suppress_until_ms {
            0 => now_ms + i64::from(self.config.appeal_suppression_days) * DAY_MS,
            t if t > now_ms => t,
            t => {
                return Err(invalid(
                    "suppress_until_ms",
                    format!("must be after now ({now_ms}), got {t}"),
                ))
            }
        };
        let account = appeal.account_id.clone();
        let mut decisions: Vec<Decision> = Vec::new();
        for id in &appeal.decision_ids {
            decisions.extend(self.decisions.by_decision_id(id)?);
        }

        let mut batch = sled::Batch::default();
        let mut entries = Vec::new();
        let (label, status) = match resolution {
            Resolution::Overturn => (proto::OutcomeKind::Genuine, AppealStatus::Overturned),
            _ => (proto::OutcomeKind::Fraud, AppealStatus::Upheld),
        };
        let mut changes = Vec::new();
        let mut suppressions = Vec::new();
        if resolution == Resolution::Overturn {
            let mut rule_ids: Vec<String> = Vec::new();
            for d in &decisions {
                let reasons = d.response.iter().flat_map(|r| &r.reasons);
                for r in reasons.filter(|r| r.source() == proto::ReasonSource::Rule) {
                    if !rule_ids.contains(&r.id) {
                        rule_ids.push(r.id.clone());
                    }
                }
            }
            for rule_id in &rule_ids {
                let s = Suppression {
                    rule_id: rule_id.clone(),
                    account_id: account.clone(),
                    until_ms: until,
                    appeal_id: appeal.appeal_id.clone(),
                };
                self.accounts.stage_suppression(&mut batch, &s);
                suppressions.push(s);
            }
            if self.statuses.status(&account) != AccountStatus::Normal {
                let by = format!("appeal:{}", appeal.appeal_id);
                // The analyst's words, for the merchant; who resolved it is on the appeal.
                let change = self.change(
                    &account,
                    AccountStatus::Normal,
                    &by,
                    &appeal.decision_ids,
                    &rule_ids,
                    &req.note,
                    now_ms,
                )?;
                self.accounts.stage_change(&mut batch, &change);
                changes.push(change);
            }
        }
        // The verdict is a label for each appealed payment, as if the gateway reported it.
        for d in &mut decisions {
            let reported_at = now_ms.max(d.request.as_ref().map_or(0, |r| r.event_time_ms));
            // Each entry's place in the log, as `write` will number them.
            let position = self.next_seq + entries.len() as u64;
            match self.add_outcome(d, label as i32, reported_at, now_ms, position) {
                Ok(Some(mut e)) => {
                    entries.append(&mut e);
                    self.decisions.stage_update(&mut batch, d);
                }
                Ok(None) => {}
                Err(e) => return Err(self.rebuild_after(e)),
            }
        }
        appeal.status = status as i32;
        appeal.resolved_at_ms = now_ms;
        appeal.resolved_by = resolved_by.to_owned();
        appeal.note = req.note.clone();
        appeal.suppressions = suppressions.clone();
        self.accounts.stage_appeal(&mut batch, &appeal);
        self.write(batch, &entries)?;
        self.apply_changes(changes);
        for s in suppressions {
            self.statuses.add_suppression(s);
        }
        Ok(appeal)
    }

    /// Decides a stored decision again under the rules and model in use now, from its
    /// stored request and feature snapshot; nothing is written and no window changes.
    pub fn rescore(&mut self, stored: &Decision) -> Result<proto::Rescore, EngineError> {
        let request = stored.request.clone().unwrap_or_default();
        let payment = stored_payment(&request)?;
        let mut missing = Vec::new();
        let snapshot: std::collections::HashMap<&str, f64> = stored
            .features
            .iter()
            .map(|f| (f.name.as_str(), f.value))
            .collect();
        self.values.clear();
        for name in self.features.set().names() {
            self.values
                .push(snapshot.get(name.as_str()).copied().unwrap_or_else(|| {
                    missing.push(name.clone());
                    0.0
                }));
        }
        let model_reasons = self.run_model(&payment);
        let mut vars = Vec::with_capacity(self.schema.len());
        vars::fill(&payment, &self.values, &mut vars);
        let mut hits = Vec::new();
        self.rules.evaluate(&vars, payment.event_time_ms, &mut hits);
        let model_points = self.last_probability * self.config.model_weight;
        let verdict = self.rules.decide(&hits, model_points);
        let mut reasons: Vec<proto::Reason> = verdict
            .reasons
            .iter()
            .map(|&i| decision::reason(&self.rules, &self.schema, &hits[i], &vars))
            .collect();
        reasons.extend(model_reasons);
        let account_actions: Vec<i32> = verdict
            .account_actions
            .iter()
            .map(|&a| decision::account_action(a) as i32)
            .collect();
        let original = stored.response.clone().unwrap_or_default();
        let asked: Vec<i32> = original
            .reasons
            .iter()
            .filter(|r| r.account_action != 0)
            .map(|r| r.account_action)
            .collect();
        let action = decision::action(verdict.action);
        let still_stands = strength(action) >= strength(original.action())
            && asked.iter().all(|a| account_actions.contains(a));
        Ok(proto::Rescore {
            ruleset_version: self.rules.version().to_owned(),
            model_version: self.model_version().to_owned(),
            action: action as i32,
            risk_score: verdict.risk_score.clamp(0.0, 100.0).round() as u32,
            reasons,
            account_actions,
            still_stands,
            missing_features: missing,
        })
    }
}

fn strength(action: proto::Action) -> u8 {
    match action {
        proto::Action::Unspecified | proto::Action::Allow => 0,
        proto::Action::Challenge => 1,
        proto::Action::Review => 2,
        proto::Action::Block => 3,
    }
}

fn involves(req: &proto::ScoreRequest, account: &str) -> bool {
    req.payer.as_ref().is_some_and(|p| p.account_id == account)
        || req.payee.as_ref().is_some_and(|p| p.account_id == account)
}

fn check_account(account: &str) -> Result<(), EngineError> {
    if account.is_empty() || account.len() > 128 {
        return Err(invalid("account_id", "must be 1 to 128 bytes"));
    }
    Ok(())
}

pub(super) fn check_text(field: &'static str, text: &str) -> Result<(), EngineError> {
    let chars = text.trim().chars().count();
    if chars == 0 || chars > MAX_TEXT_CHARS {
        return Err(invalid(
            field,
            format!("must be 1 to {MAX_TEXT_CHARS} characters"),
        ));
    }
    Ok(())
}

/// Who set a status, in words for the account's owner (never a rule id or key id).
pub fn set_by(changed_by: &str) -> (&'static str, &'static str) {
    match changed_by.split(':').next().unwrap_or_default() {
        "rule" => ("after a risk check", "因风控检查"),
        "model" => ("by the risk model", "由风控模型设置"),
        "analyst" => ("by a risk analyst", "由风控审核人员设置"),
        "appeal" => ("after an appeal", "经申诉"),
        _ => ("by the platform", "由平台设置"),
    }
}

/// Event or server time for people: `2026-11-29 08:30 UTC`.
pub fn format_time(ms: i64) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| ms.to_string())
}
