//! The `Cases` and `Audit` services: the review queue and the log of analysts' actions,
//! for analysts only.

use tonic::{Request, Response, Status};

use super::{authorize, read, Shared};
use crate::audit::AuditLog;
use crate::auth::Role;
use crate::cases::{self, CaseFilter, CaseStore};
use crate::proto::{self, case::CaseStatus, Case};
use crate::server::now_ms;

/// How long a case has waited (open) or took (resolved), as of `now_ms`.
fn with_age(mut case: Case, now_ms: i64) -> Case {
    let until = match case.status() {
        CaseStatus::Resolved => case.resolved_at_ms,
        _ => now_ms,
    };
    case.age_ms = until.saturating_sub(case.opened_at_ms).max(0);
    case
}

fn page_size(requested: u32) -> Result<usize, Status> {
    match requested as usize {
        0 => Ok(cases::DEFAULT_PAGE),
        n if n <= cases::MAX_PAGE => Ok(n),
        n => Err(Status::invalid_argument(format!(
            "page_size: at most {} (got {n})",
            cases::MAX_PAGE
        ))),
    }
}

fn text_filter(value: String) -> Option<String> {
    Some(value).filter(|v| !v.is_empty())
}

pub struct CasesService {
    shared: Shared,
}

impl CasesService {
    pub fn new(shared: Shared) -> CasesService {
        CasesService { shared }
    }

    fn store(&self) -> CaseStore {
        CaseStore::new(self.shared.decisions.tree().clone())
    }
}

#[tonic::async_trait]
impl proto::cases_server::Cases for CasesService {
    async fn list_cases(
        &self,
        request: Request<proto::ListCasesRequest>,
    ) -> Result<Response<proto::ListCasesResponse>, Status> {
        authorize(&self.shared.keys, &request, &[Role::Analyst], "list cases")?;
        let req = request.into_inner();
        let status = match CaseStatus::try_from(req.status) {
            Ok(CaseStatus::Unspecified) => None,
            Ok(s) => Some(s),
            Err(_) => return Err(Status::invalid_argument("status: not a case status")),
        };
        let after = cases::parse_token(&req.page_token)
            .ok_or_else(|| Status::invalid_argument("page_token: not a token this server gave"))?;
        let filter = CaseFilter {
            status,
            account_id: text_filter(req.account_id),
            rule_id: text_filter(req.rule_id),
            page_size: page_size(req.page_size)?,
            after,
        };
        let store = self.store();
        let page = read(move || Ok(store.list(&filter)?)).await?;
        let now = now_ms();
        Ok(Response::new(proto::ListCasesResponse {
            cases: page.cases.into_iter().map(|c| with_age(c, now)).collect(),
            next_page_token: cases::token(page.next),
        }))
    }

    async fn get_case(
        &self,
        request: Request<proto::GetCaseRequest>,
    ) -> Result<Response<Case>, Status> {
        authorize(&self.shared.keys, &request, &[Role::Analyst], "read cases")?;
        let id = request.into_inner().case_id;
        let store = self.store();
        let lookup = id.clone();
        let case = read(move || Ok(store.get(&lookup)?)).await?;
        match case {
            Some(case) => Ok(Response::new(with_age(case, now_ms()))),
            None => Err(super::status(crate::engine::EngineError::UnknownCase(id))),
        }
    }

    async fn assign_case(
        &self,
        request: Request<proto::AssignCaseRequest>,
    ) -> Result<Response<Case>, Status> {
        let caller = authorize(
            &self.shared.keys,
            &request,
            &[Role::Analyst],
            "assign cases",
        )?;
        let id = request.into_inner().case_id;
        let by = caller.describe();
        let case = self
            .shared
            .engine
            .run_durable(move |e| e.assign_case(&id, &by, now_ms()))
            .await?;
        tracing::info!(case = %case.case_id, by = %caller.describe(), "case assigned");
        Ok(Response::new(with_age(case, now_ms())))
    }

    async fn resolve_case(
        &self,
        request: Request<proto::ResolveCaseRequest>,
    ) -> Result<Response<Case>, Status> {
        let caller = authorize(
            &self.shared.keys,
            &request,
            &[Role::Analyst],
            "resolve cases",
        )?;
        let req = request.into_inner();
        let by = caller.describe();
        let case = self
            .shared
            .engine
            .run_durable(move |e| e.resolve_case(&req, &by, now_ms()))
            .await?;
        tracing::info!(case = %case.case_id, resolution = case.resolution().as_str_name(), by = %caller.describe(), "case resolved");
        Ok(Response::new(with_age(case, now_ms())))
    }
}

pub struct AuditService {
    shared: Shared,
}

impl AuditService {
    pub fn new(shared: Shared) -> AuditService {
        AuditService { shared }
    }
}

#[tonic::async_trait]
impl proto::audit_server::Audit for AuditService {
    async fn list_audit_entries(
        &self,
        request: Request<proto::ListAuditEntriesRequest>,
    ) -> Result<Response<proto::ListAuditEntriesResponse>, Status> {
        authorize(
            &self.shared.keys,
            &request,
            &[Role::Analyst],
            "read the audit log",
        )?;
        let req = request.into_inner();
        let limit = page_size(req.page_size)?;
        let before = match req.page_token.as_str() {
            "" => None,
            token => Some(
                token
                    .strip_prefix('u')
                    .and_then(|s| s.parse::<u64>().ok())
                    .ok_or_else(|| {
                        Status::invalid_argument("page_token: not a token this server gave")
                    })?,
            ),
        };
        let log = AuditLog::new(self.shared.decisions.tree().clone());
        let (entries, more) = read(move || Ok(log.newest(before, limit)?)).await?;
        let next_page_token = match (more, entries.last()) {
            (true, Some(last)) => format!("u{}", last.seq),
            _ => String::new(),
        };
        Ok(Response::new(proto::ListAuditEntriesResponse {
            entries,
            next_page_token,
        }))
    }
}
