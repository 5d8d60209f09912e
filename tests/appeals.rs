//! Freezes, explanations and appeals end to end over gRPC: a personal code is driven into a
//! freeze by real Score calls, explained with its numbers, re-scored under changed rules,
//! appealed, overturned, and then collects again without being re-frozen by the same rule.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{collection, daytime_hour_ms, payment, with_key, TestServer};
use fengkong::auth::{add_key, Role};
use fengkong::proto::{
    self, account_admin_client::AccountAdminClient, appeals_client::AppealsClient,
    get_decision_request::Key, rule_admin_client::RuleAdminClient, AccountStatus, Action,
    AppealStatus, ExplainRequest, FileAppealRequest, GetAppealRequest, GetDecisionRequest,
    ListAppealsRequest, ReasonSource, ReloadRulesRequest, Resolution, ResolveAppealRequest,
    ScoreResponse, SetAccountStatusRequest,
};
use tonic::transport::Channel;
use tonic::Code;

const CODE: &str = "code-rented";

struct Keys {
    gateway: String,
    merchant: String,
    other_merchant: String,
    analyst: String,
}

fn set_param(rules: &std::path::Path, limit: u32) {
    let path = rules.join("00_ruleset.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("rent_code_payers_1h"))
        .unwrap()
        .to_owned();
    std::fs::write(
        &path,
        text.replace(&line, &format!("rent_code_payers_1h = {limit}")),
    )
    .unwrap();
}

async fn explain(
    client: &mut proto::risk_engine_client::RiskEngineClient<Channel>,
    key: &str,
    account: &str,
    rescore: bool,
) -> Result<proto::Explanation, tonic::Status> {
    let req = ExplainRequest {
        account_id: account.into(),
        rescore,
    };
    client
        .explain(with_key(req, key))
        .await
        .map(|r| r.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freeze_explain_rescore_appeal_overturn_and_collect_again() {
    let data = tempfile::tempdir().unwrap();
    let rules = tempfile::tempdir().unwrap();
    let key = |role, account: Option<&str>| {
        add_key(data.path(), role, account.map(str::to_owned), 0)
            .unwrap()
            .1
    };
    let keys = Keys {
        gateway: key(Role::Gateway, None),
        merchant: key(Role::Merchant, Some(CODE)),
        other_merchant: key(Role::Merchant, Some("someone-else")),
        analyst: key(Role::Analyst, None),
    };
    let server = TestServer::start_with_rule_copy(data.path(), rules.path()).await;
    let mut client = server.client().await;
    let channel = Channel::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut appeals = AppealsClient::new(channel.clone());
    let mut admin = RuleAdminClient::new(channel.clone());

    // 31 different payers within the hour: the 31st crosses the limit of 30.
    let start = daytime_hour_ms();
    let mut last: Option<ScoreResponse> = None;
    for n in 1..=31 {
        let req = collection(CODE, &format!("c-{n}"), n, start + n as i64 * 60_000);
        let resp = client.score(with_key(req, &keys.gateway)).await.unwrap();
        last = Some(resp.into_inner());
    }
    let freezing = last.unwrap();
    let rent = freezing
        .reasons
        .iter()
        .find(|r| r.id == "rent_code_many_payers")
        .expect("the 31st payer fires the rule");
    assert_eq!(rent.account_action(), proto::AccountAction::FreezePayee);
    assert_eq!(
        rent.message,
        "31 different payers in the last hour (limit 30)"
    );

    // Collection into a frozen code is blocked, with the freeze as the reason.
    let blocked = client
        .score(with_key(
            collection(CODE, "c-32", 32, start + 32 * 60_000),
            &keys.gateway,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(blocked.action(), Action::Block);
    assert_eq!(blocked.reasons[0].code, "ACCOUNT_FROZEN");
    assert_eq!(blocked.reasons[0].source(), ReasonSource::AccountStatus);
    assert!(
        blocked.reasons[0].message.contains("is frozen since")
            && blocked.reasons[0].message.contains("after a risk check"),
        "{}",
        blocked.reasons[0].message
    );

    // The merchant's explanation: status, the numbers, model factors, versions, remedies.
    let explained = explain(&mut client, &keys.merchant, CODE, false)
        .await
        .unwrap();
    assert_eq!(explained.status(), AccountStatus::Frozen);
    assert_eq!(explained.status_since_ms, start + 31 * 60_000);
    assert_eq!(explained.history.len(), 1, "{:?}", explained.history);
    assert_eq!(explained.history[0].changed_by, "rule");
    assert_eq!(explained.history[0].rule_ids, ["rent_code_many_payers"]);
    let decision = &explained.decisions[0];
    assert_eq!(decision.decision_id, freezing.decision_id);
    assert_eq!(decision.ruleset_version, freezing.ruleset_version);
    assert!(!decision.model_version.is_empty() && !decision.feature_set_version.is_empty());
    assert!(!decision.model_factors.is_empty());
    let reason = decision
        .reasons
        .iter()
        .find(|r| r.id == "rent_code_many_payers")
        .unwrap();
    assert_eq!(
        reason.message_zh,
        "在过去1小时内收到 31 位不同付款人的付款（上限 30）"
    );
    let limit = reason
        .remedies
        .iter()
        .find(|m| m.name == "payee.distinct_payers_1h")
        .unwrap();
    assert_eq!((limit.value, limit.limit), (31.0, 30.0));
    assert!(
        reason
            .remedies
            .iter()
            .any(|m| m.message.contains("merchant collection code")),
        "{:?}",
        reason.remedies
    );
    assert!(explained
        .summary
        .contains("31 different payers in the last hour (limit 30)"));
    assert!(explained.summary.contains(
        "31 different payers in the last hour; 30 or fewer would not have triggered this check"
    ));
    assert!(explained.summary_zh.contains("上限 30"));
    assert!(
        !explained.summary.contains("appeal"),
        "{}",
        explained.summary
    );
    common::assert_no_raw_names(&common::merchant_words(&explained), "Explain");
    let words: Vec<(&str, &str, &str)> = reason
        .evidence
        .iter()
        .map(|e| (e.label.as_str(), e.unit.as_str(), e.text.as_str()))
        .collect();
    assert!(
        words.contains(&("kind of receiving account", "text", "PERSONAL"))
            && words.contains(&("different payers in the last hour", "count", ""))
            && words.contains(&(
                "most different payers a personal code may have in an hour",
                "count",
                ""
            )),
        "{words:?}"
    );
    assert!(
        decision
            .model_factors
            .iter()
            .all(|f| !f.message.contains('%')),
        "the probability is stated once, not on every factor: {:?}",
        decision.model_factors
    );

    // Merchants see only their own account, and learn nothing about others.
    let err = explain(&mut client, &keys.other_merchant, CODE, false)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let own = explain(&mut client, &keys.other_merchant, "", false)
        .await
        .unwrap();
    assert_eq!(own.account_id, "someone-else");
    assert_eq!(own.status(), AccountStatus::Normal);
    let err = explain(&mut client, &keys.gateway, CODE, false)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // The rules change: the stored explanation does not, the re-score shows the new outcome.
    set_param(rules.path(), 50);
    let reloaded = admin
        .reload_rules(with_key(ReloadRulesRequest {}, &keys.analyst))
        .await
        .unwrap()
        .into_inner();
    assert!(reloaded.changed);
    let again = explain(&mut client, &keys.merchant, CODE, true)
        .await
        .unwrap();
    assert_eq!(again.decisions[0].reasons, decision.reasons);
    let rescore = again.decisions[0].rescore.clone().unwrap();
    assert_eq!(rescore.ruleset_version, reloaded.ruleset_version);
    assert!(!rescore.still_stands, "{rescore:?}");
    assert!(rescore
        .reasons
        .iter()
        .all(|r| r.id != "rent_code_many_payers"));
    assert!(rescore.missing_features.is_empty());
    set_param(rules.path(), 30);
    admin
        .reload_rules(with_key(ReloadRulesRequest {}, &keys.analyst))
        .await
        .unwrap();

    // Appeal: by the merchant, one at a time, invisible to other merchants.
    let statement = "These are my customers at the night market, not rented traffic.";
    let appeal = appeals
        .file_appeal(with_key(
            FileAppealRequest {
                account_id: String::new(),
                decision_ids: Vec::new(),
                statement: statement.into(),
            },
            &keys.merchant,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(appeal.status(), AppealStatus::Open);
    assert_eq!(appeal.account_id, CODE);
    assert_eq!(
        appeal.decision_ids,
        std::slice::from_ref(&freezing.decision_id)
    );
    assert_eq!(appeal.account_status(), AccountStatus::Frozen);
    let twice = FileAppealRequest {
        account_id: CODE.into(),
        decision_ids: Vec::new(),
        statement: statement.into(),
    };
    let err = appeals
        .file_appeal(with_key(twice.clone(), &keys.merchant))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let err = appeals
        .file_appeal(with_key(twice, &keys.other_merchant))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let get = |key: &str| {
        with_key(
            GetAppealRequest {
                appeal_id: appeal.appeal_id.clone(),
            },
            key,
        )
    };
    let err = appeals
        .get_appeal(get(&keys.other_merchant))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let theirs = appeals
        .list_appeals(with_key(
            ListAppealsRequest::default(),
            &keys.other_merchant,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(theirs.appeals.is_empty());
    let open = ListAppealsRequest {
        status: AppealStatus::Open as i32,
        account_id: String::new(),
    };
    let queue = appeals
        .list_appeals(with_key(open, &keys.analyst))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(queue.appeals, std::slice::from_ref(&appeal));

    // Only analysts resolve.
    let overturn = ResolveAppealRequest {
        appeal_id: appeal.appeal_id.clone(),
        resolution: Resolution::Overturn as i32,
        note: "Stall owner verified in person; payers are real customers.".into(),
        suppress_until_ms: 0,
    };
    let err = appeals
        .resolve_appeal(with_key(overturn.clone(), &keys.merchant))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let resolved = appeals
        .resolve_appeal(with_key(overturn.clone(), &keys.analyst))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resolved.status(), AppealStatus::Overturned);
    assert!(resolved.resolved_by.starts_with("analyst:"));
    assert_eq!(
        resolved.suppressions.len(),
        1,
        "{:?}",
        resolved.suppressions
    );
    assert_eq!(resolved.suppressions[0].rule_id, "rent_code_many_payers");
    let err = appeals
        .resolve_appeal(with_key(overturn, &keys.analyst))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let seen = appeals
        .get_appeal(get(&keys.merchant))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(seen.note, resolved.note);

    // The code collects again; the same pattern does not re-freeze it while suppressed.
    let collected = client
        .score(with_key(
            collection(CODE, "c-33", 33, start + 33 * 60_000),
            &keys.gateway,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(
        collected
            .reasons
            .iter()
            .all(|r| r.code != "ACCOUNT_FROZEN" && r.id != "rent_code_many_payers"),
        "{collected:?}"
    );
    // The model knows nothing of the appeal and may still block this one payment (the bundled
    // model reads 33 new payers in 33 minutes as fraud); only its reasons may be behind that.
    if collected.action() == Action::Block {
        let reasons = &collected.reasons;
        assert!(
            reasons.iter().any(|r| r.source() == ReasonSource::Model)
                && reasons
                    .iter()
                    .all(|r| r.action() != Action::Block || r.source() == ReasonSource::Model),
            "{collected:#?}"
        );
    }
    let stored = client
        .get_decision(with_key(
            GetDecisionRequest {
                key: Some(Key::DecisionId(collected.decision_id.clone())),
            },
            &keys.analyst,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(stored
        .suppressed_reasons
        .iter()
        .any(|r| r.id == "rent_code_many_payers"));
    assert!(stored.account_changes.is_empty());
    let after = explain(&mut client, &keys.merchant, CODE, false)
        .await
        .unwrap();
    assert_eq!(after.status(), AccountStatus::Normal);
    assert_eq!(after.history.len(), 2);
    assert_eq!(
        after.history[1].changed_by,
        format!("appeal:{}", appeal.appeal_id)
    );
    assert_eq!(after.suppressions.len(), 1);
    // NORMAL again: the latest decisions that were not simply allowed, newest first.
    let shown: Vec<&str> = after
        .decisions
        .iter()
        .map(|d| d.decision_id.as_str())
        .collect();
    // The model alone may hold the later collections for review: they are listed too.
    let mut newest = vec![&blocked.decision_id, &freezing.decision_id];
    if collected.action() != Action::Allow {
        newest.insert(0, &collected.decision_id);
    }
    assert!(shown.len() <= fengkong::explain::LATEST_FLAGGED);
    assert_eq!(shown[..newest.len()], newest, "{after:?}");
    assert!(
        after.summary.contains("Payment c-32 of 200.00 CNY")
            && after.summary.contains("was blocked"),
        "{}",
        after.summary
    );
    common::assert_no_raw_names(
        &common::merchant_words(&after),
        "Explain after the overturn",
    );

    // The overturn is a GENUINE label on the appealed payment.
    let frozen_decision = client
        .get_decision(with_key(
            GetDecisionRequest {
                key: Some(Key::DecisionId(freezing.decision_id.clone())),
            },
            &keys.analyst,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        frozen_decision.outcomes[0].outcome(),
        proto::OutcomeKind::Genuine
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analyst_freeze_by_hand_is_audited_and_an_upheld_appeal_keeps_it() {
    let data = tempfile::tempdir().unwrap();
    let analyst = add_key(data.path(), Role::Analyst, None, 0).unwrap().1;
    let merchant = add_key(data.path(), Role::Merchant, Some("shop-9".into()), 0)
        .unwrap()
        .1;
    let gateway = add_key(data.path(), Role::Gateway, None, 0).unwrap().1;
    let server = TestServer::start(data.path()).await;
    let mut client = server.client().await;
    let channel = Channel::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut accounts = AccountAdminClient::new(channel.clone());
    let mut appeals = AppealsClient::new(channel);

    let set = |status: AccountStatus, note: &str| SetAccountStatusRequest {
        account_id: "shop-9".into(),
        status: status as i32,
        note: note.into(),
    };
    let err = accounts
        .set_account_status(with_key(set(AccountStatus::Frozen, "x"), &merchant))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = accounts
        .set_account_status(with_key(set(AccountStatus::Frozen, " "), &analyst))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "a note is required");
    let change = accounts
        .set_account_status(with_key(
            set(
                AccountStatus::Limited,
                "chargeback spike reported by the acquirer",
            ),
            &analyst,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(change.from(), AccountStatus::Normal);
    assert!(change.changed_by.starts_with("analyst:"));

    // Limited: withdrawals are held, small collections still pass.
    let mut withdrawal = payment("w-1");
    withdrawal.scene = proto::Scene::Withdrawal as i32;
    withdrawal.payer.as_mut().unwrap().account_id = "shop-9".into();
    let held = client
        .score(with_key(withdrawal, &gateway))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(held.action(), Action::Block);
    assert_eq!(held.reasons[0].code, "ACCOUNT_LIMITED");
    let mut small = payment("s-1");
    small.payee.as_mut().unwrap().account_id = "shop-9".into();
    let passed = client
        .score(with_key(small, &gateway))
        .await
        .unwrap()
        .into_inner();
    assert!(passed.reasons.iter().all(|r| r.code != "ACCOUNT_LIMITED"));

    let explained = explain(&mut client, &merchant, "", false).await.unwrap();
    assert_eq!(explained.status(), AccountStatus::Limited);
    assert!(explained.decisions.is_empty());
    assert!(
        explained.summary.contains("chargeback spike"),
        "{}",
        explained.summary
    );

    let appeal = appeals
        .file_appeal(with_key(
            FileAppealRequest {
                account_id: "shop-9".into(),
                decision_ids: vec!["d-not-mine".into()],
                statement: "please check".into(),
            },
            &merchant,
        ))
        .await
        .unwrap_err();
    assert_eq!(appeal.code(), Code::InvalidArgument);
    let appeal = appeals
        .file_appeal(with_key(
            FileAppealRequest {
                account_id: "shop-9".into(),
                decision_ids: Vec::new(),
                statement: "The chargebacks were a duplicate batch from the acquirer.".into(),
            },
            &merchant,
        ))
        .await
        .unwrap()
        .into_inner();
    let upheld = appeals
        .resolve_appeal(with_key(
            ResolveAppealRequest {
                appeal_id: appeal.appeal_id,
                resolution: Resolution::Uphold as i32,
                note: "The acquirer confirmed the chargebacks are distinct.".into(),
                suppress_until_ms: 0,
            },
            &analyst,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(upheld.status(), AppealStatus::Upheld);
    assert!(upheld.suppressions.is_empty());
    let still = explain(&mut client, &analyst, "shop-9", false)
        .await
        .unwrap();
    assert_eq!(still.status(), AccountStatus::Limited);
    assert_eq!(still.history.len(), 1);
    server.stop().await;
}

/// The proto promises the latest non-ALLOW decisions for a NORMAL account: a block-list hit
/// blocks a payment without changing any status, and Explain shows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_on_a_normal_account_shows_its_latest_blocked_payment() {
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(data.path()).await;
    let mut client = server.client().await;
    let mut ordinary = payment("ok-1");
    ordinary.payer.as_mut().unwrap().account_id = "acct-mule-0001".into();
    ordinary.payee.as_mut().unwrap().account_id = "shop-quiet".into();
    let mut blocked = ordinary.clone();
    blocked.payment_id = "blocked-1".into();
    ordinary.payer.as_mut().unwrap().account_id = "payer-fine".into();
    let allowed = client.score(ordinary).await.unwrap().into_inner();
    assert_eq!(allowed.action(), Action::Allow);
    let scored = client.score(blocked).await.unwrap().into_inner();
    assert_eq!(scored.action(), Action::Block);

    let explained = client
        .explain(ExplainRequest {
            account_id: "acct-mule-0001".into(),
            rescore: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(explained.status(), AccountStatus::Normal);
    let ids: Vec<&str> = explained
        .decisions
        .iter()
        .map(|d| d.payment_id.as_str())
        .collect();
    assert_eq!(ids, ["blocked-1"]);
    assert!(
        explained
            .summary
            .contains("was blocked: payer account acct-mule-0001 is blocked"),
        "{}",
        explained.summary
    );
    // The payee took both payments; only the blocked one is shown.
    let payee = client
        .explain(ExplainRequest {
            account_id: "shop-quiet".into(),
            rescore: false,
        })
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<&str> = payee
        .decisions
        .iter()
        .map(|d| d.payment_id.as_str())
        .collect();
    assert_eq!(ids, ["blocked-1"]);
    server.stop().await;
}
