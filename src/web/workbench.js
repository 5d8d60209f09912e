// The analyst's workbench on the page: Cases (the review queue by age), Search (stored
// decisions), Rules (performance with server-drawn charts, backtest on stored traffic, ship
// as shadow, promote) and a form for AccountAdmin.SetAccountStatus. Loaded after app.js and
// built from its helpers (el, t, api, run, yuan, time); like it, every text is set with
// textContent. The charts are SVG the server drew (src/rule_charts.rs), parsed as SVG,
// never as HTML.
"use strict";

Object.assign(TEXT.en, {
  view_appeals: "Appeals", view_cases: "Cases", view_search: "Search", view_rules: "Rules",
  view_status: "Account status",
  cases: "Review queue", case_OPEN: "Open", case_RESOLVED: "Resolved", no_cases: "No cases here.",
  waiting: "waiting {d}", took: "took {d}", open_case: "Open", assign: "Assign to me",
  assigned_to: "assigned to {a}", unassigned: "unassigned", case_title: "Case {id}",
  features: "Features at decision time", recent: "The account's recent decisions",
  resolve_case: "Resolve the case", FRAUD: "Fraud", GENUINE: "Genuine",
  case_note: "Note (why)", also_do: "Also (fraud only)", nothing_else: "nothing else",
  FREEZE_PAYEE: "freeze the payee", LIMIT_PAYEE: "limit the payee",
  FREEZE_PAYER: "freeze the payer", LIMIT_PAYER: "limit the payer",
  resolution: "Resolution", resolved_as: "Resolved as {r} by {b}: {n}",
  search: "Decision search", rule: "Rule", min_score: "Min. risk score", find: "Find",
  more: "More", no_results: "No decisions match.", time: "Time", payer: "Payer", payee: "Payee",
  outcomes: "Outcomes", rules_col: "Rules", shadow_col: "Shadow",
  rules_title: "Rule performance", period: "Period", newest_day: "The newest 24 hours",
  last_week: "The last 7 days", refresh: "Show",
  stats_head: "{n} decisions from {f} to {t} · rules {v} · {x} frauds reported",
  truncated: "Cut short: {r}",
  mode: "Mode", hits: "Hits", share: "Share", actions_col: "Actions", amount_col: "Amount",
  precision: "Precision", caught: "Frauds caught", missed: "Missed",
  active: "active", shadow: "shadow", list: "list", retired: "retired",
  chart_hits: "Hits per hour (busiest rules)", chart_scores: "Risk scores",
  chart_share: "Share held for review and blocked, per hour",
  promote: "Promote to active", promote_rule: "Shadow rule", promote_note: "Note (why)",
  promoted: "Promoted {r}: rules {v}",
  backtest: "Backtest on stored traffic", file_name: "File name", upload: "Or load a file",
  file_text: "Rule file (TOML)", run_backtest: "Run backtest",
  bt_head: "Candidate {c} vs live {l} on {n} stored decisions ({x} fraud, {g} genuine)",
  bt_stopped: "Stopped: candidate {c}, live {l}", live_hits: "Live hits", recall: "Recall",
  caught_amount: "Amount caught", fpr: "False positives",
  newly_stopped: "Newly stopped", newly_allowed: "Newly allowed",
  change_line: "{p} payments · {a} · {f} fraud · {g} genuine",
  live_col: "Live", candidate_col: "Candidate",
  ship: "Ship as shadow", ship_note: "Note (why)", shipped: "Shipped {r} as shadow: rules {v}",
  compile_errors: "The candidate does not compile:",
  set_status: "Set an account's status", status_col: "Status", status_note: "Note (shown in the account's history)",
  status_done: "{a}: {f} → {t}",
});

Object.assign(TEXT.zh, {
  view_appeals: "申诉", view_cases: "案件", view_search: "查询", view_rules: "规则",
  view_status: "账户状态",
  cases: "审核队列", case_OPEN: "待处理", case_RESOLVED: "已处理", no_cases: "这里没有案件。",
  waiting: "已等待 {d}", took: "用时 {d}", open_case: "打开", assign: "分配给我",
  assigned_to: "处理人 {a}", unassigned: "未分配", case_title: "案件 {id}",
  features: "决定时的特征", recent: "该账户近期的决定",
  resolve_case: "处理案件", FRAUD: "欺诈", GENUINE: "正常交易",
  case_note: "说明（原因）", also_do: "同时（仅欺诈）", nothing_else: "不做其他处理",
  FREEZE_PAYEE: "冻结收款方", LIMIT_PAYEE: "限制收款方",
  FREEZE_PAYER: "冻结付款方", LIMIT_PAYER: "限制付款方",
  resolution: "结论", resolved_as: "由 {b} 认定为{r}：{n}",
  search: "决定查询", rule: "规则", min_score: "最低风险分", find: "查询",
  more: "更多", no_results: "没有符合条件的决定。", time: "时间", payer: "付款方", payee: "收款方",
  outcomes: "结果反馈", rules_col: "规则", shadow_col: "影子规则",
  rules_title: "规则表现", period: "时段", newest_day: "最近的24小时",
  last_week: "过去7天", refresh: "显示",
  stats_head: "{f} 至 {t} 共 {n} 个决定 · 规则 {v} · 已报告欺诈 {x} 笔",
  truncated: "未完整统计：{r}",
  mode: "模式", hits: "命中", share: "占比", actions_col: "处理", amount_col: "金额",
  precision: "准确率", caught: "识别的欺诈", missed: "漏掉的欺诈",
  active: "生效", shadow: "影子", list: "名单", retired: "已下线",
  chart_hits: "每小时命中次数（命中最多的规则）", chart_scores: "风险分分布",
  chart_share: "每小时转人工审核和拦截的比例",
  promote: "转为生效", promote_rule: "影子规则", promote_note: "说明（原因）",
  promoted: "已将 {r} 转为生效：规则 {v}",
  backtest: "用已存储的交易回测", file_name: "文件名", upload: "或选择文件",
  file_text: "规则文件（TOML）", run_backtest: "开始回测",
  bt_head: "候选规则 {c} 与线上规则 {l}，共 {n} 个已存储的决定（欺诈 {x}，正常 {g}）",
  bt_stopped: "拦截或审核：候选 {c}，线上 {l}", live_hits: "线上命中", recall: "召回率",
  caught_amount: "识别金额", fpr: "误报率",
  newly_stopped: "新增拦截或审核", newly_allowed: "新增放行",
  change_line: "{p} 笔 · {a} · 欺诈 {f} · 正常 {g}",
  live_col: "线上", candidate_col: "候选",
  ship: "以影子模式上线", ship_note: "说明（原因）", shipped: "已以影子模式上线 {r}：规则 {v}",
  compile_errors: "候选规则无法编译：",
  set_status: "设置账户状态", status_col: "状态", status_note: "说明（显示在账户记录中）",
  status_done: "{a}：{f} → {t}",
});

const VIEWS = {
  appeals: ["queue", "account", "appeal"], cases: ["cases"], search: ["search"],
  rules: ["rules"], status: ["status-admin"],
};
let view = "appeals";
let bench = {}; // what each workbench view shows, to re-render on a language change

// replaceChildren with the empty parts (null, false) left out, as `el` leaves them out.
const fill = (node, ...children) => node.replaceChildren(...children.flat(Infinity).filter(Boolean));
const pct = (x) => `${Math.round(Number(x || 0) * 1000) / 10}%`;
const num = (x) => Number(x || 0);
const table = (id, head, rows) => el("table", { id, class: "grid" },
  el("thead", {}, el("tr", {}, head.map((h) => el("th", { text: h })))),
  el("tbody", {}, rows));

function showView(name) {
  view = name;
  for (const ids of Object.values(VIEWS)) for (const id of ids) $(id).hidden = true;
  for (const b of document.querySelectorAll("#views button")) b.classList.toggle("current", b.dataset.view === name);
  if (name === "appeals") {
    $("queue").hidden = false;
    render();
    return run(showQueue);
  }
  $(VIEWS[name][0]).hidden = false;
  if (name === "cases") return run(async () => { await showCases(); renderCase(); });
  if (name === "rules") return run(showRules);
  return renderSearch();
}

// Analysts start on the appeals, with the other views a click away.
function showWorkbench() {
  view = "appeals";
  $("views").hidden = false;
  for (const b of document.querySelectorAll("#views button")) b.classList.toggle("current", b.dataset.view === view);
}

function renderWorkbench() {
  if ($("views").hidden) return;
  if (view === "cases") { renderCases(); renderCase(); }
  if (view === "search") renderSearch();
  if (view === "rules") run(showRules);
}

// ---- cases -------------------------------------------------------------------------

async function showCases() {
  const status = $("cases-status").value;
  bench.cases = (await api(`/api/cases?status=${encodeURIComponent(status)}&page_size=100`)).cases || [];
  renderCases();
}

function renderCases() {
  const cases = bench.cases || [];
  $("cases-list").replaceChildren(cases.length ? table("cases-table",
    [t("case_title", { id: "" }).trim(), t("account"), t("amount"), t("rules_col"), t("action"), t("status_col"), ""],
    cases.map((c) => el("tr", { "data-case": c.caseId },
      el("td", { text: c.caseId }),
      el("td", { text: c.accountId }),
      el("td", { text: yuan(c.amountFen) }),
      el("td", { text: (c.ruleIds || []).join(", ") }),
      el("td", { text: c.action ? t(c.action) : "—" }),
      el("td", { class: "age", text: `${t(`case_${c.status}`)} · ${t(c.status === "RESOLVED" ? "took" : "waiting", { d: duration(num(c.ageMs) / 1000) })}` }),
      el("td", {}, el("button", { type: "button", class: "open-case", text: t("open_case"), onclick: () => run(() => openCase(c.caseId)) })))))
    : el("p", { class: "muted", text: t("no_cases") }));
}

async function openCase(caseId) {
  const c = await api(`/api/cases/${encodeURIComponent(caseId)}`);
  const [decision, recent, explanation] = await Promise.all([
    api(`/api/decisions/${encodeURIComponent(c.decisionId)}`),
    api(`/api/decisions?account_id=${encodeURIComponent(c.accountId)}&page_size=10`),
    api(`/api/explain?account_id=${encodeURIComponent(c.accountId)}`),
  ]);
  bench.case = { c, decision, recent: recent.decisions || [], explanation };
  renderCase();
}

function summaryRows(decisions) {
  return decisions.map((d) => el("tr", { "data-decision": d.decisionId },
    el("td", { text: time(d.eventTimeMs) }),
    el("td", { text: d.paymentId }),
    el("td", { text: d.payerAccountId }),
    el("td", { text: d.payeeAccountId }),
    el("td", { text: yuan(d.amountFen) }),
    el("td", { text: d.action ? t(d.action) : "—" }),
    el("td", { text: String(d.riskScore || 0) }),
    el("td", { text: (d.ruleIds || []).join(", ") }),
    el("td", { class: "muted", text: (d.shadowRuleIds || []).join(", ") }),
    el("td", { text: (d.outcomes || []).join(", ") })));
}

const summaryHead = () => [t("time"), t("payment"), t("payer"), t("payee"), t("amount"), t("action"),
  t("risk"), t("rules_col"), t("shadow_col"), t("outcomes")];

function renderCase() {
  if (!bench.case) return $("case-detail").replaceChildren();
  const { c, decision, recent, explanation } = bench.case;
  const response = decision.response || {};
  const open = c.status !== "RESOLVED";
  const actions = ["", "FREEZE_PAYEE", "LIMIT_PAYEE", "FREEZE_PAYER", "LIMIT_PAYER"];
  fill($("case-detail"), el("div", { id: "case", "data-case": c.caseId, "data-status": c.status },
    el("h2", { text: t("case_title", { id: c.caseId }) }),
    el("p", { class: "muted", text: [c.accountId, yuan(c.amountFen), response.action ? t(response.action) : "",
      `${t("risk")} ${response.riskScore || 0}`, c.assignee ? t("assigned_to", { a: c.assignee }) : t("unassigned"),
      t(open ? "waiting" : "took", { d: duration(num(c.ageMs) / 1000) })].filter(Boolean).join(" · ") }),
    c.resolution && c.resolution !== "CASE_RESOLUTION_UNSPECIFIED"
      ? el("p", { id: "case-resolution", text: t("resolved_as", { r: t(c.resolution), b: c.resolvedBy, n: c.note }) }) : null,
    open ? el("button", { type: "button", id: "assign-case", text: t("assign"), onclick: () => run(() => assignCase(c.caseId)) }) : null,
    el("h3", { text: t("decisions") }),
    (response.reasons || []).map(reasonNode),
    el("h3", { text: t("features") }),
    el("dl", { class: "features" }, (decision.features || []).flatMap((f) =>
      [el("dt", { text: f.name }), el("dd", { text: short(f.value) })])),
    el("h3", { text: t("recent") }),
    table("case-recent", summaryHead(), summaryRows(recent)),
    (explanation.history || []).length ? [el("h3", { text: t("history") }),
      el("ul", {}, explanation.history.map((h) => el("li", {
        text: `${time(h.atMs)}: ${t(h.from || "NORMAL")} → ${t(h.to || "NORMAL")} · ${changedBy(h)}${h.note ? " · " + h.note : ""}`,
      })))] : null,
    open ? el("form", { id: "case-form", class: "stack", onsubmit: resolveCase },
      el("h3", { text: t("resolve_case") }),
      el("label", {}, el("input", { type: "radio", name: "case-resolution", value: "FRAUD", required: true }), ` ${t("FRAUD")}`),
      el("label", {}, el("input", { type: "radio", name: "case-resolution", value: "GENUINE" }), ` ${t("GENUINE")}`),
      el("label", { for: "case-action", text: t("also_do") }),
      el("select", { id: "case-action" }, actions.map((a) => el("option", { value: a, text: a ? t(a) : t("nothing_else") }))),
      el("label", { for: "case-note", text: t("case_note") }),
      el("textarea", { id: "case-note", required: true }),
      el("button", { type: "submit", class: "primary", text: t("submit") })) : null));
}

async function assignCase(caseId) {
  await api(`/api/cases/${encodeURIComponent(caseId)}/assign`, { method: "POST", body: "{}" });
  await openCase(caseId);
}

async function resolveCase(event) {
  event.preventDefault();
  const chosen = document.querySelector("input[name=case-resolution]:checked");
  const body = { resolution: chosen ? chosen.value : "", note: $("case-note").value };
  if ($("case-action").value && body.resolution === "FRAUD") body.accountAction = $("case-action").value;
  const id = bench.case.c.caseId;
  await run(async () => {
    await api(`/api/cases/${encodeURIComponent(id)}/resolve`, { method: "POST", body: JSON.stringify(body) });
    await openCase(id);
    await showCases();
  });
}

// ---- search ------------------------------------------------------------------------

async function search(event, more) {
  if (event) event.preventDefault();
  const query = new URLSearchParams({
    account_id: $("search-account").value.trim(), rule_id: $("search-rule").value.trim(),
    action: $("search-action").value, min_risk_score: $("search-min").value, page_size: "50",
  });
  if (more && bench.search) query.set("page_token", bench.search.token);
  await run(async () => {
    const page = await api(`/api/decisions?${query}`);
    const earlier = more && bench.search ? bench.search.decisions : [];
    bench.search = { decisions: earlier.concat(page.decisions || []), token: page.nextPageToken || "" };
    renderSearch();
  });
}

function renderSearch() {
  const s = bench.search;
  if (!s) return $("search-results").replaceChildren();
  fill($("search-results"),
    s.decisions.length ? table("search-table", summaryHead(), summaryRows(s.decisions))
      : el("p", { class: "muted", text: t("no_results") }),
    s.token ? el("button", { type: "button", id: "search-more", text: t("more"), onclick: () => search(null, true) }) : null);
}

// ---- rules -------------------------------------------------------------------------

function period() {
  if ($("rules-period").value !== "week") return "";
  const now = Date.now();
  return `from_ms=${now - 7 * 86400000}&to_ms=${now}`;
}

async function showRules() {
  // The stats of /api/rules/stats and their charts, from one computation on the server.
  const charts = await api(`/api/rules/charts?${period()}&lang=${lang}`);
  bench.rules = { stats: charts.stats, charts };
  renderRules();
}

// The server's SVG, parsed as SVG (never as HTML) and placed in the page.
function svgNode(text) {
  const parsed = new DOMParser().parseFromString(text, "image/svg+xml").documentElement;
  if (parsed.nodeName !== "svg") return el("p", { class: "muted", text: "—" });
  parsed.removeAttribute("width");
  parsed.removeAttribute("height");
  return document.importNode(parsed, true);
}

function renderRules() {
  const { stats, charts } = bench.rules || {};
  if (!stats) return;
  const actions = (r) => (r.actions || []).map((a) => `${t(a.action)} ${a.count}`).join(", ");
  const shadow = (stats.rules || []).filter((r) => r.mode === "shadow");
  fill($("rules-stats"),
    el("p", { id: "rules-head", text: t("stats_head", { n: num(stats.decisions), f: time(stats.fromMs), t: time(stats.toMs), v: stats.rulesetVersion, x: num(stats.frauds) }) }),
    stats.truncated ? el("p", { class: "warning", text: t("truncated", { r: stats.truncatedReason }) }) : null,
    el("div", { class: "charts" },
      [["chart-hits", "chart_hits", charts.hitsPerHour], ["chart-scores", "chart_scores", charts.riskScores],
        ["chart-share", "chart_share", charts.stoppedShare]].map(([id, title, svg]) =>
        el("figure", { id }, svgNode(svg), el("figcaption", { text: t(title) })))),
    table("rules-table", [t("rule"), t("mode"), t("hits"), t("share"), t("actions_col"), t("amount_col"),
      t("precision"), t("caught"), t("missed")],
    (stats.rules || []).map((r) => el("tr", { "data-rule": r.ruleId, "data-mode": r.mode },
      el("td", { text: r.ruleId }),
      el("td", { text: t(r.mode) }),
      el("td", { class: "hits", text: String(num(r.hits)) }),
      el("td", { text: pct(r.share) }),
      el("td", { text: actions(r) }),
      el("td", { text: yuan(r.amountFen) }),
      el("td", { text: num(r.fraudsCaught) + num(r.genuineHits) ? pct(r.precision) : "—" }),
      el("td", { text: String(num(r.fraudsCaught)) }),
      el("td", { text: String(num(r.fraudsMissed)) })))),
    shadow.length ? el("form", { id: "promote-form", onsubmit: promote },
      el("label", { for: "promote-rule", text: t("promote_rule") }),
      el("select", { id: "promote-rule" }, shadow.map((r) => el("option", { value: r.ruleId, text: r.ruleId }))),
      el("label", { for: "promote-note", text: t("promote_note") }),
      el("input", { id: "promote-note", required: true, autocomplete: "off" }),
      el("button", { type: "submit", class: "primary", text: t("promote") })) : null);
}

async function promote(event) {
  event.preventDefault();
  const body = { ruleIds: [$("promote-rule").value], note: $("promote-note").value };
  await run(async () => {
    const done = await api("/api/rules/promote", { method: "POST", body: JSON.stringify(body) });
    $("rules-done").textContent = t("promoted", { r: done.ruleIds.join(", "), v: done.rulesetVersion });
    await showRules();
  });
}

const candidateFiles = () => ({ [$("candidate-name").value.trim()]: $("candidate-text").value });

async function backtest(event) {
  event.preventDefault();
  const body = { files: candidateFiles() };
  const q = period();
  if (q) for (const [k, v] of new URLSearchParams(q)) body[k === "from_ms" ? "fromMs" : "toMs"] = String(v);
  $("backtest-result").replaceChildren();
  $("ship-form").hidden = true;
  try {
    showError(null);
    bench.backtest = await api("/api/rules/backtest", { method: "POST", body: JSON.stringify(body) });
    bench.compile = null;
  } catch (error) {
    // Compile errors are the analyst's to fix: shown with their positions, not as a failure.
    if (error.code !== "FAILED_PRECONDITION") return showError(error);
    bench.backtest = null;
    bench.compile = error.message;
  }
  renderBacktest();
}

function changeNode(id, title, c) {
  const change = c || {};
  return el("div", { id, class: "change" },
    el("h4", { text: title }),
    el("p", { text: t("change_line", { p: num(change.payments), a: yuan(change.amountFen), f: num(change.frauds), g: num(change.genuine) }) }),
    (change.sample || []).length ? table(`${id}-sample`, [t("time"), t("payment"), t("amount"), t("live_col"), t("candidate_col"), t("rules_col"), t("outcomes")],
      change.sample.map((p) => el("tr", { "data-payment": p.paymentId },
        el("td", { text: time(p.eventTimeMs) }), el("td", { text: p.paymentId }), el("td", { text: yuan(p.amountFen) }),
        el("td", { text: `${t(p.liveAction)} (${p.liveRiskScore || 0})` }),
        el("td", { text: `${t(p.candidateAction)} (${p.candidateRiskScore || 0})` }),
        el("td", { text: (p.ruleIds || []).join(", ") }),
        el("td", { text: p.outcome && p.outcome !== "OUTCOME_KIND_UNSPECIFIED" ? p.outcome : "" })))) : null);
}

function renderBacktest() {
  if (bench.compile) {
    $("backtest-result").replaceChildren(el("p", { text: t("compile_errors") }),
      el("pre", { id: "compile-errors", text: bench.compile }));
    return;
  }
  const r = bench.backtest;
  if (!r) return;
  const rules = (r.rules || []).filter((x) => num(x.hits) || num(x.liveHits));
  fill($("backtest-result"),
    el("p", { id: "backtest-head", text: t("bt_head", { c: r.candidateVersion, l: r.liveVersion, n: num(r.decisions), x: num(r.frauds), g: num(r.genuine) }) }),
    r.truncated ? el("p", { class: "warning", text: t("truncated", { r: r.truncatedReason }) }) : null,
    el("p", { text: t("bt_stopped", { c: num(r.candidateStopped), l: num(r.liveStopped) }) }),
    table("backtest-rules", [t("rule"), t("mode"), t("hits"), t("live_hits"), t("precision"), t("recall"), t("caught_amount"), t("fpr")],
      rules.map((x) => el("tr", { "data-rule": x.ruleId },
        el("td", { text: x.ruleId }), el("td", { text: t(x.mode) }),
        el("td", { class: "hits", text: String(num(x.hits)) }), el("td", { class: "live-hits", text: String(num(x.liveHits)) }),
        el("td", { text: pct(x.precision) }), el("td", { text: pct(x.recall) }),
        el("td", { text: yuan(x.amountCaughtFen) }), el("td", { text: pct(x.falsePositiveRate) })))),
    changeNode("newly-stopped", t("newly_stopped"), r.newlyStopped),
    changeNode("newly-allowed", t("newly_allowed"), r.newlyAllowed));
  $("ship-form").hidden = false;
}

async function ship(event) {
  event.preventDefault();
  const body = { files: candidateFiles(), note: $("ship-note").value };
  await run(async () => {
    const done = await api("/api/rules/ship", { method: "POST", body: JSON.stringify(body) });
    $("rules-done").textContent = t("shipped", { r: done.ruleIds.join(", "), v: done.rulesetVersion });
    $("ship-form").hidden = true;
    await showRules();
  });
}

// ---- account status ----------------------------------------------------------------

async function setStatus(event) {
  event.preventDefault();
  const body = { accountId: $("status-account").value.trim(), status: $("status-value").value, note: $("status-note").value };
  await run(async () => {
    const change = await api("/api/accounts/status", { method: "POST", body: JSON.stringify(body) });
    $("status-result").textContent = t("status_done", { a: change.accountId, f: t(change.from || "NORMAL"), t: t(change.to || "NORMAL") });
  });
}

document.addEventListener("DOMContentLoaded", () => {
  for (const b of document.querySelectorAll("#views button")) b.addEventListener("click", () => showView(b.dataset.view));
  $("cases-status").addEventListener("change", () => run(showCases));
  $("search-form").addEventListener("submit", (e) => search(e, false));
  $("rules-form").addEventListener("submit", (e) => { e.preventDefault(); run(showRules); });
  $("backtest-form").addEventListener("submit", backtest);
  $("ship-form").addEventListener("submit", ship);
  $("status-form").addEventListener("submit", setStatus);
  $("candidate-file").addEventListener("change", async () => {
    const file = $("candidate-file").files[0];
    if (!file) return;
    $("candidate-name").value = file.name;
    $("candidate-text").value = await file.text();
  });
  $("lang").addEventListener("click", () => { renderWorkbench(); renderBacktest(); });
});
