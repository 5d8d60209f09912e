//! The review queue end to end over gRPC: a burst of large payments asks for review, each
//! opens a case; an analyst pages through the queue while more arrive, assigns and resolves
//! cases; the outcome lands on the decision and in the label windows, a FRAUD resolution
//! freezes the payee on request, everything is in the audit log, and it all survives a
//! restart. Merchants and gateways are refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::{payment, with_key, TestServer};
use fengkong::auth::{add_key, Role};
use fengkong::config::Config;
use fengkong::proto::{
    self, audit_client::AuditClient, case::CaseResolution, case::CaseStatus,
    cases_client::CasesClient, get_decision_request::Key, AccountAction, Action, AssignCaseRequest,
    GetCaseRequest, GetDecisionRequest, ListAuditEntriesRequest, ListCasesRequest, OutcomeKind,
    ResolveCaseRequest,
};
use tonic::transport::Channel;
use tonic::Code;

const SHOP: &str = "shop-review";

/// A rule that asks for review of every payment of 8,000 CNY or more, and a features file
/// with a one-minute report window (one-second buckets), so a label counts a second later.
fn inputs(data: &Path, rules: &Path) -> Config {
    common::copy_rules(rules);
    std::fs::write(
        rules.join("95_big_ticket.toml"),
        r#"[[rule]]
id = "big_ticket_review"
description = "Large payments are reviewed by an analyst."
when = "payment.amount_fen >= 800000"
action = "review"
score = 5
reason_code = "BIG_TICKET"
message = "payment of {payment.amount_fen:yuan}"
message_zh = "大额付款 {payment.amount_fen:yuan}"
"#,
    )
    .unwrap();
    let defaults = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/features/default_features.toml");
    let mut features = std::fs::read_to_string(defaults).unwrap();
    features.push_str(
        r#"
[[feature]]
name = "payee.bad_reports_1m"
entity = "payee"
aggregate = "bad_reports"
window = "1m"
description = "bad reports against this payee received in the last minute"
label = "reports against this payee in the last minute"
label_zh = "过去1分钟内针对该收款方的举报"
"#,
    );
    let features_file = data.join("features.toml");
    std::fs::write(&features_file, features).unwrap();
    Config {
        data_dir: data.join("db"),
        rules_dir: Some(rules.to_owned()),
        watch_rules: false,
        features_file: Some(features_file),
        // The bundled model knows the bundled features only.
        model_enabled: false,
        ..Config::default()
    }
}

/// A payment of `yuan` CNY from its own payer (device, IP) to the shop.
fn big(id: &str, n: usize, yuan: i64) -> proto::ScoreRequest {
    let mut req = payment(id);
    req.amount_fen = yuan * 100;
    req.payer.as_mut().unwrap().account_id = format!("buyer-{n}");
    req.payee.as_mut().unwrap().account_id = SHOP.into();
    req.device_id = format!("dev-{n}");
    req.ip = format!("192.0.2.{n}");
    req
}

async fn list(
    cases: &mut CasesClient<Channel>,
    key: &str,
    req: ListCasesRequest,
) -> Result<proto::ListCasesResponse, tonic::Status> {
    cases
        .list_cases(with_key(req, key))
        .await
        .map(|r| r.into_inner())
}

fn open_page(size: u32, token: &str) -> ListCasesRequest {
    ListCasesRequest {
        status: CaseStatus::Open as i32,
        page_size: size,
        page_token: token.into(),
        ..ListCasesRequest::default()
    }
}

/// One HTTP/1.1 call with the key, on loopback; returns (status line, body).
async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    key: &str,
    body: &str,
) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (
        head.lines().next().unwrap_or("").to_owned(),
        body.to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_cases_are_listed_assigned_resolved_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let rules = tempfile::tempdir().unwrap();
    let config = inputs(dir.path(), rules.path());
    let key = |role, account: Option<&str>| {
        add_key(&config.data_dir, role, account.map(str::to_owned), 0).unwrap()
    };
    let gateway = key(Role::Gateway, None).1;
    let merchant = key(Role::Merchant, Some(SHOP)).1;
    let (analyst_record, analyst) = key(Role::Analyst, None);
    let (other_record, other_analyst) = key(Role::Analyst, None);
    let server = TestServer::start_with(config.clone()).await;
    let mut client = server.client().await;
    let channel = Channel::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut cases = CasesClient::new(channel.clone());
    let mut audit = AuditClient::new(channel.clone());

    // A burst: five large payments are reviewed, three small ones simply allowed.
    let mut reviewed = Vec::new();
    for n in 0..8 {
        let yuan = if n % 3 == 1 { 80 } else { 8_000 };
        let resp = client
            .score(with_key(big(&format!("b-{n}"), n, yuan), &gateway))
            .await
            .unwrap()
            .into_inner();
        if yuan == 80 {
            assert_eq!(resp.action(), Action::Allow, "{resp:?}");
        } else {
            assert_eq!(resp.action(), Action::Review, "{resp:?}");
            reviewed.push(resp);
        }
    }
    assert_eq!(reviewed.len(), 5);

    // Only analysts see the queue.
    for (who, key) in [("gateway", &gateway), ("merchant", &merchant)] {
        let err = list(&mut cases, key, open_page(10, "")).await.unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{who}: {err:?}");
        let err = cases
            .get_case(with_key(
                GetCaseRequest {
                    case_id: "c-1".into(),
                },
                key,
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{who}");
        let err = cases
            .resolve_case(with_key(ResolveCaseRequest::default(), key))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{who}");
    }

    // Oldest first, two at a time; a case opened between two pages comes at the end.
    let first = list(&mut cases, &analyst, open_page(2, "")).await.unwrap();
    assert_eq!(first.cases.len(), 2);
    assert!(!first.next_page_token.is_empty());
    let late = client
        .score(with_key(big("b-late", 40, 9_000), &gateway))
        .await
        .unwrap()
        .into_inner();
    reviewed.push(late);
    let mut listed = first.cases.clone();
    let mut token = first.next_page_token.clone();
    while !token.is_empty() {
        let page = list(&mut cases, &analyst, open_page(2, &token))
            .await
            .unwrap();
        listed.extend(page.cases);
        token = page.next_page_token;
    }
    let decision_ids: Vec<&str> = listed.iter().map(|c| c.decision_id.as_str()).collect();
    let expected: Vec<&str> = reviewed.iter().map(|r| r.decision_id.as_str()).collect();
    assert_eq!(
        decision_ids, expected,
        "one case per reviewed decision, oldest first"
    );
    let case = &listed[0];
    assert_eq!(case.payment_id, "b-0");
    assert_eq!(case.account_id, "buyer-0");
    assert_eq!(
        (
            case.payer_account_id.as_str(),
            case.payee_account_id.as_str()
        ),
        ("buyer-0", SHOP)
    );
    assert_eq!(case.amount_fen, 800_000);
    assert_eq!(case.rule_ids, ["big_ticket_review"]);
    assert_eq!(case.status(), CaseStatus::Open);
    assert_eq!(case.action(), Action::Review);
    assert!(case.opened_at_ms > 0 && case.assignee.is_empty());
    // Ages are as of each call, so they are compared within one page; across pages the
    // order is by opening time.
    assert!(
        first.cases.windows(2).all(|w| w[0].age_ms >= w[1].age_ms),
        "the queue shows age, oldest first"
    );
    assert!(
        listed
            .windows(2)
            .all(|w| w[0].opened_at_ms <= w[1].opened_at_ms),
        "oldest first across pages"
    );

    // Filters: by account (payer or payee) and by rule.
    let by_buyer = ListCasesRequest {
        account_id: "buyer-3".into(),
        ..ListCasesRequest::default()
    };
    let found = list(&mut cases, &analyst, by_buyer).await.unwrap();
    assert_eq!(found.cases.len(), 1);
    assert_eq!(found.cases[0].payment_id, "b-3");
    let by_shop = ListCasesRequest {
        account_id: SHOP.into(),
        rule_id: "big_ticket_review".into(),
        ..ListCasesRequest::default()
    };
    assert_eq!(
        list(&mut cases, &analyst, by_shop)
            .await
            .unwrap()
            .cases
            .len(),
        6
    );
    let by_other_rule = ListCasesRequest {
        rule_id: "rent_code_many_payers".into(),
        ..ListCasesRequest::default()
    };
    assert!(list(&mut cases, &analyst, by_other_rule)
        .await
        .unwrap()
        .cases
        .is_empty());

    // Assign to the calling analyst; another analyst may take it over.
    let assign = |case_id: &str, key: &str| {
        with_key(
            AssignCaseRequest {
                case_id: case_id.into(),
            },
            key,
        )
    };
    let assigned = cases
        .assign_case(assign(&listed[0].case_id, &analyst))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(assigned.assignee, format!("analyst:{}", analyst_record.id));
    let taken = cases
        .assign_case(assign(&listed[1].case_id, &other_analyst))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(taken.assignee, format!("analyst:{}", other_record.id));

    // GENUINE: the outcome on the decision, as ReportOutcome stores it.
    let resolve =
        |case_id: &str, resolution: CaseResolution, action: AccountAction| ResolveCaseRequest {
            case_id: case_id.into(),
            resolution: resolution as i32,
            note: "called the buyer".into(),
            account_action: action as i32,
        };
    let genuine = resolve(
        &listed[1].case_id,
        CaseResolution::Genuine,
        AccountAction::Unspecified,
    );
    let resolved = cases
        .resolve_case(with_key(genuine.clone(), &other_analyst))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resolved.status(), CaseStatus::Resolved);
    assert_eq!(resolved.resolution(), CaseResolution::Genuine);
    assert_eq!(resolved.note, "called the buyer");
    assert_eq!(resolved.resolved_by, format!("analyst:{}", other_record.id));
    let stored = |decision_id: &str| GetDecisionRequest {
        key: Some(Key::DecisionId(decision_id.into())),
    };
    let decision = client
        .get_decision(with_key(stored(&resolved.decision_id), &analyst))
        .await
        .unwrap()
        .into_inner();
    let outcomes: Vec<_> = decision.outcomes.iter().map(|o| o.outcome()).collect();
    assert_eq!(outcomes, [OutcomeKind::Genuine]);

    // Resolving again is idempotent; a different verdict is refused.
    let again = cases
        .resolve_case(with_key(genuine, &analyst))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.resolved_at_ms, resolved.resolved_at_ms);
    let flip = resolve(
        &listed[1].case_id,
        CaseResolution::Fraud,
        AccountAction::Unspecified,
    );
    let err = cases
        .resolve_case(with_key(flip, &analyst))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    let err = cases
        .assign_case(assign(&listed[1].case_id, &analyst))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let decision = client
        .get_decision(with_key(stored(&resolved.decision_id), &analyst))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(decision.outcomes.len(), 1, "stored once");

    // Requests that make no sense are refused before anything changes.
    let no_verdict = resolve(
        &listed[2].case_id,
        CaseResolution::Unspecified,
        AccountAction::Unspecified,
    );
    let err = cases
        .resolve_case(with_key(no_verdict, &analyst))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let freeze_genuine = resolve(
        &listed[2].case_id,
        CaseResolution::Genuine,
        AccountAction::FreezePayee,
    );
    let err = cases
        .resolve_case(with_key(freeze_genuine, &analyst))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let unknown = resolve(
        "c-00000000000000009999",
        CaseResolution::Fraud,
        AccountAction::Unspecified,
    );
    let err = cases
        .resolve_case(with_key(unknown, &analyst))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    // FRAUD: the label feeds the payee's report window (counted from the next second), and
    // the explicit freeze of the payee lands in the account's audit log.
    let fraud = resolve(
        &listed[0].case_id,
        CaseResolution::Fraud,
        AccountAction::FreezePayee,
    );
    let frozen = cases
        .resolve_case(with_key(fraud, &analyst))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(frozen.resolution(), CaseResolution::Fraud);
    assert_eq!(frozen.account_changes.len(), 1);
    let change = &frozen.account_changes[0];
    assert_eq!(change.account_id, SHOP);
    assert_eq!(change.to(), proto::AccountStatus::Frozen);
    assert_eq!(change.changed_by, format!("analyst:{}", analyst_record.id));
    assert_eq!(change.decision_ids, [listed[0].decision_id.clone()]);
    let decision = client
        .get_decision(with_key(stored(&frozen.decision_id), &analyst))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(decision.outcomes[0].outcome(), OutcomeKind::Fraud);
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let after = client
        .score(with_key(big("b-after", 50, 50), &gateway))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after.reasons[0].code, "ACCOUNT_FROZEN", "{after:?}");
    let decision = client
        .get_decision(with_key(stored(&after.decision_id), &analyst))
        .await
        .unwrap()
        .into_inner();
    let reports = decision
        .features
        .iter()
        .find(|f| f.name == "payee.bad_reports_1m")
        .unwrap();
    assert_eq!(
        reports.value, 1.0,
        "the FRAUD resolution is a label in the window"
    );
    let explained = client
        .explain(with_key(
            proto::ExplainRequest {
                account_id: SHOP.into(),
                rescore: false,
            },
            &analyst,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        explained.history.last().unwrap().changed_by,
        change.changed_by
    );

    // The audit log, newest first.
    let entries = audit
        .list_audit_entries(with_key(ListAuditEntriesRequest::default(), &analyst))
        .await
        .unwrap()
        .into_inner()
        .entries;
    let actions: Vec<(&str, &str, &str)> = entries
        .iter()
        .map(|e| (e.action.as_str(), e.case_id.as_str(), e.resolution.as_str()))
        .collect();
    assert_eq!(
        actions,
        [
            ("case_resolved", listed[0].case_id.as_str(), "FRAUD"),
            ("case_resolved", listed[1].case_id.as_str(), "GENUINE"),
            ("case_assigned", listed[1].case_id.as_str(), ""),
            ("case_assigned", listed[0].case_id.as_str(), ""),
        ]
    );
    assert_eq!(entries[0].by, format!("analyst:{}", analyst_record.id));
    assert_eq!(entries[0].note, "called the buyer");
    assert_eq!(entries[0].ruleset_version, reviewed[0].ruleset_version);
    let err = audit
        .list_audit_entries(with_key(ListAuditEntriesRequest::default(), &merchant))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // The page's JSON API runs the same calls with the same checks.
    let (status, body) = http(
        server.http_addr,
        "GET",
        "/api/cases?status=OPEN",
        &analyst,
        "",
    )
    .await;
    assert!(status.contains("200"), "{status} {body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        json["cases"].as_array().unwrap().len(),
        listed.len() - 2,
        "{json}"
    );
    assert_eq!(json["cases"][0]["status"], "OPEN");
    let path = format!("/api/cases/{}/resolve", listed[2].case_id);
    let (status, body) = http(
        server.http_addr,
        "POST",
        &path,
        &analyst,
        r#"{"resolution": "GENUINE", "note": "regular customer"}"#,
    )
    .await;
    assert!(status.contains("200"), "{status} {body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (json["status"].as_str(), json["resolution"].as_str()),
        (Some("RESOLVED"), Some("GENUINE"))
    );
    let (status, _) = http(server.http_addr, "GET", "/api/cases", &merchant, "").await;
    assert!(status.contains("403"), "{status}");
    let path = format!("/api/decisions?account_id={SHOP}&action=REVIEW&page_size=3");
    let (status, body) = http(server.http_addr, "GET", &path, &analyst, "").await;
    assert!(status.contains("200"), "{status} {body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["decisions"].as_array().unwrap().len(), 3, "{json}");
    assert!(
        json["nextPageToken"]
            .as_str()
            .is_some_and(|t| !t.is_empty()),
        "{json}"
    );
    listed.remove(2);

    // After a restart: resolved cases stay resolved, the rest stay in the queue.
    server.stop().await;
    let server = TestServer::start_with(config.clone()).await;
    let channel = Channel::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut cases = CasesClient::new(channel);
    let open = list(&mut cases, &analyst, open_page(0, "")).await.unwrap();
    let open_ids: Vec<&str> = open.cases.iter().map(|c| c.case_id.as_str()).collect();
    let expected: Vec<&str> = listed[2..].iter().map(|c| c.case_id.as_str()).collect();
    assert_eq!(expected.len(), 3);
    assert_eq!(open_ids, expected);
    let kept = cases
        .get_case(with_key(
            GetCaseRequest {
                case_id: listed[0].case_id.clone(),
            },
            &analyst,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(kept.status(), CaseStatus::Resolved);
    assert_eq!(kept.assignee, format!("analyst:{}", analyst_record.id));
    assert_eq!(kept.age_ms, kept.resolved_at_ms - kept.opened_at_ms);
    let resolved = ListCasesRequest {
        status: CaseStatus::Resolved as i32,
        ..ListCasesRequest::default()
    };
    assert_eq!(
        list(&mut cases, &analyst, resolved)
            .await
            .unwrap()
            .cases
            .len(),
        3
    );
    server.stop().await;
}
