//! The engine's case work: assigning and resolving review cases (`crate::cases` keeps
//! them). A resolution is a label like ReportOutcome's and goes through the same
//! `add_outcome`, so it reaches the decision, the outcome windows and the training data by
//! the same path; it may also freeze or limit an account, on the analyst's explicit choice.

use super::accounts::check_text;
use super::{invalid, Engine, EngineError};
use crate::audit::AuditLog;
use crate::cases::CaseStore;
use crate::proto::{
    self, case::CaseResolution, case::CaseStatus, AccountAction, AccountStatus, AuditEntry, Case,
};

impl Engine {
    fn cases(&self) -> CaseStore {
        CaseStore::new(self.decisions.tree().clone())
    }

    fn open_case(&self, case_id: &str) -> Result<Case, EngineError> {
        self.cases()
            .get(case_id)?
            .ok_or_else(|| EngineError::UnknownCase(case_id.to_owned()))
    }

    /// An audit entry of the rules and model in use now, numbered like status changes.
    fn audit_entry(
        &self,
        by: &str,
        action: &str,
        case: &Case,
        note: &str,
        now_ms: i64,
    ) -> Result<AuditEntry, EngineError> {
        Ok(AuditEntry {
            seq: self.db.generate_id()?,
            at_ms: now_ms,
            by: by.to_owned(),
            action: action.to_owned(),
            case_id: case.case_id.clone(),
            decision_id: case.decision_id.clone(),
            account_id: case.account_id.clone(),
            resolution: match case.resolution() {
                CaseResolution::Unspecified => String::new(),
                r => r.as_str_name().to_owned(),
            },
            ruleset_version: self.rules.version().to_owned(),
            model_version: self.model_version().to_owned(),
            note: note.to_owned(),
            rule_ids: case.rule_ids.clone(),
        })
    }

    /// Assigns an open case to `by` (the calling analyst).
    pub fn assign_case(
        &mut self,
        case_id: &str,
        by: &str,
        now_ms: i64,
    ) -> Result<Case, EngineError> {
        let mut case = self.open_case(case_id)?;
        if case.status() == CaseStatus::Resolved {
            return Err(EngineError::CaseState(format!(
                "case {case_id} is already resolved"
            )));
        }
        if case.assignee == by {
            return Ok(case);
        }
        case.assignee = by.to_owned();
        let entry = self.audit_entry(by, "case_assigned", &case, "", now_ms)?;
        let mut batch = sled::Batch::default();
        self.cases().stage_update(&mut batch, &case);
        AuditLog::new(self.decisions.tree().clone()).stage(&mut batch, &entry);
        self.write(batch, &[])?;
        Ok(case)
    }

    /// Resolves a case: see `Cases.ResolveCase` in the proto.
    pub fn resolve_case(
        &mut self,
        req: &proto::ResolveCaseRequest,
        by: &str,
        now_ms: i64,
    ) -> Result<Case, EngineError> {
        let mut case = self.open_case(&req.case_id)?;
        let resolution = match CaseResolution::try_from(req.resolution) {
            Ok(r @ (CaseResolution::Fraud | CaseResolution::Genuine)) => r,
            _ => return Err(invalid("resolution", "must be FRAUD or GENUINE")),
        };
        if case.status() == CaseStatus::Resolved {
            // A retry of the same resolution (the answer was lost) changes nothing.
            if case.resolution() == resolution {
                return Ok(case);
            }
            return Err(EngineError::CaseState(format!(
                "case {} is already resolved as {}",
                case.case_id,
                case.resolution().as_str_name()
            )));
        }
        check_text("note", &req.note)?;
        let account_action = AccountAction::try_from(req.account_action)
            .map_err(|_| invalid("account_action", "is not a known account action"))?;
        if account_action != AccountAction::Unspecified && resolution != CaseResolution::Fraud {
            return Err(invalid(
                "account_action",
                "only a FRAUD resolution may freeze or limit an account",
            ));
        }
        let mut decision = self
            .decisions
            .by_decision_id(&case.decision_id)?
            .ok_or_else(|| EngineError::UnknownDecision(case.decision_id.clone()))?;
        let event_time_ms = decision.request.as_ref().map_or(0, |r| r.event_time_ms);

        let mut batch = sled::Batch::default();
        let outcome = match resolution {
            CaseResolution::Fraud => proto::OutcomeKind::Fraud,
            _ => proto::OutcomeKind::Genuine,
        };
        // The truth is known now, and never before the payment.
        let reported_at = now_ms.max(event_time_ms);
        let entries = match self.add_outcome(
            &mut decision,
            outcome as i32,
            reported_at,
            now_ms,
            self.next_seq,
        ) {
            Ok(Some(entries)) => {
                self.decisions.stage_update(&mut batch, &decision);
                entries
            }
            Ok(None) => Vec::new(),
            Err(e) => return Err(self.rebuild_after(e)),
        };

        let target = match account_action {
            AccountAction::Unspecified => None,
            AccountAction::LimitPayee => {
                Some((case.payee_account_id.clone(), AccountStatus::Limited))
            }
            AccountAction::FreezePayee => {
                Some((case.payee_account_id.clone(), AccountStatus::Frozen))
            }
            AccountAction::LimitPayer => {
                Some((case.payer_account_id.clone(), AccountStatus::Limited))
            }
            AccountAction::FreezePayer => {
                Some((case.payer_account_id.clone(), AccountStatus::Frozen))
            }
        };
        let mut changes = Vec::new();
        if let Some((account, to)) = target {
            if self.statuses.status(&account) != to {
                let change = self.change(
                    &account,
                    to,
                    by,
                    std::slice::from_ref(&case.decision_id),
                    &case.rule_ids,
                    &req.note,
                    now_ms,
                )?;
                self.accounts.stage_change(&mut batch, &change);
                changes.push(change);
            }
        }

        case.status = CaseStatus::Resolved as i32;
        case.resolution = resolution as i32;
        case.note = req.note.clone();
        case.resolved_at_ms = now_ms;
        case.resolved_by = by.to_owned();
        case.account_changes = changes.clone();
        let entry = self.audit_entry(by, "case_resolved", &case, &req.note, now_ms)?;
        self.cases().stage_update(&mut batch, &case);
        AuditLog::new(self.decisions.tree().clone()).stage(&mut batch, &entry);
        self.write(batch, &entries)?;
        self.apply_changes(changes);
        Ok(case)
    }
}
