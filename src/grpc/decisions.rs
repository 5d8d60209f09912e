//! `RiskEngine.ListDecisions`: the request checked and scoped to the caller, then answered
//! by `DecisionStore::list` from the secondary indexes (`crate::search`).

use tonic::Status;

use super::{account_for, read};
use crate::auth::Caller;
use crate::proto::{self, Action};
use crate::search::{self, Position, Query};
use crate::store::DecisionStore;

/// Checks `req` and turns it into an index query the caller may run: analysts any account,
/// merchants their own as payee.
pub fn query(caller: &Caller, req: &proto::ListDecisionsRequest) -> Result<Query, Status> {
    let account = match (caller.own_account(), req.account_id.as_str()) {
        (None, "") => None,
        _ => Some(account_for(
            caller,
            &req.account_id,
            "list another account's decisions",
        )?),
    };
    let action = match Action::try_from(req.action) {
        Ok(Action::Unspecified) => None,
        Ok(a) => Some(a),
        Err(_) => return Err(Status::invalid_argument("action: not an action")),
    };
    let page_size = match req.page_size as usize {
        0 => search::DEFAULT_PAGE,
        n if n <= search::MAX_PAGE => n,
        n => {
            return Err(Status::invalid_argument(format!(
                "page_size: at most {} (got {n})",
                search::MAX_PAGE
            )))
        }
    };
    if req.from_ms != 0 && req.to_ms != 0 && req.from_ms >= req.to_ms {
        return Err(Status::invalid_argument(
            "from_ms: must be before to_ms (to_ms is exclusive)",
        ));
    }
    let before =
        match req.page_token.as_str() {
            "" => None,
            token => Some(Position::parse(token).ok_or_else(|| {
                Status::invalid_argument("page_token: not a token this server gave")
            })?),
        };
    Ok(Query {
        account,
        payee_only: caller.own_account().is_some(),
        from_ms: Some(req.from_ms).filter(|&t| t != 0),
        to_ms: Some(req.to_ms).filter(|&t| t != 0),
        action,
        rule_id: Some(req.rule_id.clone()).filter(|r| !r.is_empty()),
        min_risk_score: req.min_risk_score,
        page_size,
        before,
    })
}

/// One page for `caller`; merchants never read rule ids.
pub async fn list(
    store: &DecisionStore,
    caller: &Caller,
    req: &proto::ListDecisionsRequest,
) -> Result<proto::ListDecisionsResponse, Status> {
    let query = query(caller, req)?;
    let store = store.clone();
    let (mut decisions, next) = read(move || Ok(store.list(&query)?)).await?;
    if caller.own_account().is_some() {
        for d in &mut decisions {
            d.rule_ids.clear();
            d.shadow_rule_ids.clear();
        }
    }
    Ok(proto::ListDecisionsResponse {
        decisions,
        next_page_token: next.map(|p| p.token()).unwrap_or_default(),
    })
}
