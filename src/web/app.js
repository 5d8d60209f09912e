// The merchant and analyst page. Everything shown is set with textContent: statements and
// notes are other people's words and must never be parsed as HTML.
"use strict";

const TEXT = {
  en: {
    lang: "中文", sign_in: "Sign in", sign_out: "Sign out", key_label: "Access key",
    key_help: "Paste the key your platform gave you. It stays in this browser tab only.",
    open_mode: "Open mode: this server has no keys, anyone can act as an analyst. For local development only.",
    gateway_key: "This key is for payment gateways. Use a merchant or analyst key to see accounts.",
    who_merchant: "Merchant", who_analyst: "Analyst", who_open: "Open mode",
    queue: "Appeals", lookup: "Account", explain: "Explain", show: "Show", all: "All",
    OPEN: "Open", UPHELD: "Upheld", OVERTURNED: "Overturned",
    NORMAL: "Normal", LIMITED: "Limited", FROZEN: "Frozen",
    account: "Account", since: "since", never_changed: "never changed",
    decisions: "Why", payment: "Payment", amount: "amount", action: "action", risk: "risk score",
    value: "Value", detail: "Detail", name: "Name",
    remedies: "What would change the outcome", model: "Model factors",
    model_p: "Model factors (fraud probability {p})",
    ALLOW: "Allowed", CHALLENGE: "Extra verification", REVIEW: "Held for review", BLOCK: "Blocked",
    yes: "yes", no: "no", times: "{x} times", days: "{x} days", day: "1 day",
    seconds: "{x} seconds", second: "1 second", minutes: "{x} minutes", minute: "1 minute",
    hours: "{x} hours", hour: "1 hour",
    PERSONAL: "personal collection code", MERCHANT: "merchant", AGGREGATOR_SUB_MERCHANT: "aggregator sub-merchant",
    MERCHANT_STATIC_CODE: "merchant static code", MERCHANT_SCANS_PAYER: "merchant scans the payer",
    PERSONAL_CODE_COLLECTION: "personal code collection", P2P_TRANSFER: "transfer", RED_PACKET: "red packet",
    WITHDRAWAL: "withdrawal", CARD_TOPUP: "card top-up",
    BALANCE: "balance", DEBIT_CARD: "debit card", CREDIT_CARD: "credit card", CREDIT_LINE: "credit line",
    ALIPAY: "Alipay", WECHAT_PAY: "WeChat Pay", UNIONPAY_QUICKPASS: "UnionPay QuickPass",
    AGGREGATOR: "aggregator", BANK_CARD: "bank card",
    by_rule: "a risk check", by_model: "the risk model", by_analyst: "a risk analyst",
    by_appeal: "appeal {id}", by_other: "the platform", rules_label: "rules",
    versions: "Versions: rules {r}, model {m}, features {f}",
    rescore_stands: "Under today's rules ({r}) and model this decision would still stand: {a}.",
    rescore_falls: "Under today's rules ({r}) and model this decision would not stand: {a}.",
    history: "History", by: "by", suppressions: "Protection after an overturned appeal",
    suppressed: "Rule {rule} will not act on this account until {until} (appeal {appeal}).",
    suppressed_merchant: "The checks behind appeal {appeal} will not act on this account until {until}.",
    your_appeals: "Appeals", no_appeals: "No appeals yet.", no_queue: "No appeals here.",
    file_appeal: "Appeal this decision", statement: "Tell us what happened",
    send_appeal: "Send appeal", appeal_open: "Your appeal is being reviewed.",
    filed: "filed", resolved: "resolved", note: "Note from the reviewer",
    review: "Review", resolve: "Resolve appeal", uphold: "Uphold (keep the status)",
    overturn: "Overturn (restore the account)", resolve_note: "Reason shown to the merchant",
    submit: "Submit", statement_label: "Statement", decisions_label: "Decisions",
    nothing: "Nothing to explain: no recent payment of this account was challenged, held or blocked.",
    by_hand: "No payment caused this status: it was set by hand (see the history).",
  },
  zh: {
    lang: "English", sign_in: "登录", sign_out: "退出", key_label: "访问密钥",
    key_help: "粘贴平台发给您的密钥。密钥只保存在当前浏览器标签页中。",
    open_mode: "开放模式：服务器未配置任何密钥，任何人都可以作为分析员操作。仅用于本地开发。",
    gateway_key: "此密钥供支付网关使用。请使用商户或分析员密钥查看账户。",
    who_merchant: "商户", who_analyst: "分析员", who_open: "开放模式",
    queue: "申诉", lookup: "账户", explain: "查看原因", show: "显示", all: "全部",
    OPEN: "待处理", UPHELD: "已维持", OVERTURNED: "已推翻",
    NORMAL: "正常", LIMITED: "受限", FROZEN: "已冻结",
    account: "账户", since: "自", never_changed: "从未变更",
    decisions: "原因", payment: "支付", amount: "金额", action: "处理", risk: "风险分",
    value: "数值", detail: "说明", name: "名称",
    remedies: "怎样会得到不同的结果", model: "模型因素",
    model_p: "模型因素（欺诈概率 {p}）",
    ALLOW: "已放行", CHALLENGE: "需要额外验证", REVIEW: "转人工审核", BLOCK: "已拦截",
    yes: "是", no: "否", times: "{x} 倍", days: "{x} 天", day: "1 天",
    seconds: "{x} 秒", second: "1 秒", minutes: "{x} 分钟", minute: "1 分钟",
    hours: "{x} 小时", hour: "1 小时",
    PERSONAL: "个人收款码", MERCHANT: "商户", AGGREGATOR_SUB_MERCHANT: "聚合支付子商户",
    MERCHANT_STATIC_CODE: "商户静态码", MERCHANT_SCANS_PAYER: "商户扫码",
    PERSONAL_CODE_COLLECTION: "个人收款码收款", P2P_TRANSFER: "转账", RED_PACKET: "红包",
    WITHDRAWAL: "提现", CARD_TOPUP: "银行卡充值",
    BALANCE: "余额", DEBIT_CARD: "借记卡", CREDIT_CARD: "信用卡", CREDIT_LINE: "信用额度",
    ALIPAY: "支付宝", WECHAT_PAY: "微信支付", UNIONPAY_QUICKPASS: "云闪付",
    AGGREGATOR: "聚合支付", BANK_CARD: "银行卡",
    by_rule: "风控检查", by_model: "风控模型", by_analyst: "风控审核人员",
    by_appeal: "申诉 {id}", by_other: "平台", rules_label: "规则",
    versions: "版本：规则 {r}，模型 {m}，特征 {f}",
    rescore_stands: "按照今天的规则（{r}）和模型，该决定依然成立：{a}。",
    rescore_falls: "按照今天的规则（{r}）和模型，该决定不再成立：{a}。",
    history: "记录", by: "操作方", suppressions: "申诉撤销后的保护",
    suppressed: "规则 {rule} 在 {until} 之前不会再对该账户生效（申诉 {appeal}）。",
    suppressed_merchant: "申诉 {appeal} 涉及的检查在 {until} 之前不会再对该账户生效。",
    your_appeals: "申诉", no_appeals: "暂无申诉。", no_queue: "这里没有申诉。",
    file_appeal: "对该决定提出申诉", statement: "请说明情况",
    send_appeal: "提交申诉", appeal_open: "您的申诉正在审核中。",
    filed: "提交于", resolved: "处理于", note: "审核说明",
    review: "审核", resolve: "处理申诉", uphold: "维持（保持当前状态）",
    overturn: "推翻（恢复账户）", resolve_note: "向商户展示的理由",
    submit: "提交", statement_label: "申诉内容", decisions_label: "相关决定",
    nothing: "没有需要解释的内容：该账户近期没有付款被要求验证、转人工审核或拦截。",
    by_hand: "该状态并非由付款触发，而是由人工设置（见记录）。",
  },
};

const KEY_ITEM = "fengkong.key";
const LANG_ITEM = "fengkong.lang";
let lang = localStorage.getItem(LANG_ITEM) || (navigator.language.startsWith("zh") ? "zh" : "en");
let me = null;
let current = null; // what the page shows, to re-render on a language change

const $ = (id) => document.getElementById(id);
const t = (key, vars) => {
  let s = TEXT[lang][key] ?? key;
  for (const [k, v] of Object.entries(vars || {})) s = s.replace(`{${k}}`, v);
  return s;
};
// In the chosen language, falling back to the other when a rule has only one.
const pick = (en, zh) => (lang === "zh" ? zh || en : en || zh) || "";

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) node.setAttribute(k, v === true ? "" : v);
  }
  for (const child of children.flat()) if (child) node.append(child);
  return node;
}

function time(ms) {
  const n = Number(ms || 0);
  if (!n) return "—";
  return new Intl.DateTimeFormat(lang === "zh" ? "zh-CN" : "en-GB", {
    year: "numeric", month: "short", day: "numeric",
    hour: "2-digit", minute: "2-digit", second: "2-digit", timeZoneName: "short",
  }).format(new Date(n));
}

// Minor units (fen) as yuan, with integer arithmetic: never through a float.
function yuan(fen) {
  const f = BigInt(Math.round(Number(fen || 0)));
  const sign = f < 0n ? "-" : "";
  const a = f < 0n ? -f : f;
  return `${sign}¥${a / 100n}.${String(a % 100n).padStart(2, "0")}`;
}

async function api(path, options = {}) {
  const headers = { "content-type": "application/json" };
  const key = sessionStorage.getItem(KEY_ITEM);
  if (key) headers.authorization = `Bearer ${key}`;
  const response = await fetch(path, { ...options, headers });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = new Error(body.message || `${response.status} ${response.statusText}`);
    error.code = body.code || String(response.status);
    throw error;
  }
  return body;
}

function showError(error) {
  $("error").textContent = error ? `${error.code ? error.code + ": " : ""}${error.message}` : "";
  $("error").hidden = !error;
}

function translateStatic() {
  document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
  for (const node of document.querySelectorAll("[data-t]")) node.textContent = t(node.dataset.t);
  $("lang").textContent = t("lang");
  $("signout").textContent = t("sign_out");
}

// ---- explanation -------------------------------------------------------------------

// Analysts (and open mode) see rule, feature and key ids beside the words; merchants only the words.
const isAnalyst = () => !!me && me.role !== "merchant";

// Whole numbers without decimals, others with at most two.
const short = (v) => String(Math.round(Number(v || 0) * 100) / 100);

// A value in the reader's language, the way its unit says (see `Evidence.unit` in the proto).
function shown(value, unit, text) {
  const v = Number(value || 0);
  switch (unit) {
    // Enum values (PERSONAL, FROZEN, CREDIT_CARD) in words; ids as they are.
    case "text": return (/^[A-Z][A-Z0-9_]*$/.test(text || "") && TEXT[lang][text]) || text || "";
    case "count": return String(Math.round(v));
    case "yuan": return yuan(v);
    case "percent": return `${short(v * 100)}%`;
    case "times": return t("times", { x: short(v) });
    case "yes_no": return t(v >= 0.5 ? "yes" : "no");
    case "days": return short(v) === "1" ? t("day") : t("days", { x: short(v) });
    case "duration": return duration(v);
    case "hour": return `${String(Math.min(23, Math.max(0, Math.floor(v)))).padStart(2, "0")}:00`;
    default: return text ? text : short(v);
  }
}

// Seconds in the largest unit under which the value stays below two of the next (units.rs).
function duration(seconds) {
  const s = Math.max(0, seconds);
  const tenth = (x) => Math.round(x * 10) / 10;
  const [n, many, one] = s < 120 ? [Math.round(s), "seconds", "second"]
    : s < 7200 ? [tenth(s / 60), "minutes", "minute"]
    : s < 172800 ? [tenth(s / 3600), "hours", "hour"]
    : [tenth(s / 86400), "days", "day"];
  return short(n) === "1" ? t(one) : t(many, { x: short(n) });
}

function evidenceTable(evidence) {
  const analyst = isAnalyst();
  // Records from before labels carry only names: an analyst still sees them, a merchant not.
  const rows = (evidence || []).filter((e) => analyst || e.label);
  if (!rows.length) return null;
  const head = [el("th", { text: t("detail") }), el("th", { text: t("value") })];
  if (analyst) head.push(el("th", { text: t("name") }));
  return el("table", { class: "evidence" },
    el("thead", {}, el("tr", {}, head)),
    el("tbody", {}, rows.map((e) => el("tr", {},
      el("td", { text: pick(e.label, e.labelZh) || e.name }),
      el("td", { text: shown(e.value, e.unit, e.text) }),
      analyst ? el("td", { class: "muted", text: e.name }) : null))));
}

function reasonNode(reason) {
  const remedies = reason.remedies || [];
  return el("div", { class: "reason", "data-rule": reason.id || "" },
    el("div", { class: "message", text: pick(reason.message, reason.messageZh) }),
    isAnalyst() ? el("div", { class: "muted", text: [reason.code, reason.id, reason.accountAction].filter(Boolean).join(" · ") }) : null,
    evidenceTable(reason.evidence),
    remedies.length ? el("div", { class: "remedies" },
      el("strong", { text: t("remedies") }),
      el("ul", {}, remedies.map((r) => el("li", { text: pick(r.message, r.messageZh) })))) : null);
}

function decisionNode(d) {
  const rescore = d.rescore;
  const factors = d.modelFactors || [];
  const probability = `${Math.round(Number(d.modelProbability || 0) * 1000) / 10}%`;
  return el("div", { class: "decision", "data-decision": d.decisionId },
    el("h3", { text: `${t("payment")} ${d.paymentId} · ${yuan(d.amountFen)} · ${time(d.eventTimeMs)}` }),
    el("div", { class: "muted", text: `${t("action")}: ${d.action ? t(d.action) : "—"} · ${t("risk")}: ${d.riskScore || 0}` }),
    (d.reasons || []).map(reasonNode),
    factors.length ? el("div", { class: "model" },
      el("strong", { text: d.modelProbability ? t("model_p", { p: probability }) : t("model") }),
      el("ul", {}, factors.map((f) => el("li", { text: pick(f.message, f.messageZh) })))) : null,
    el("div", { class: "muted", text: t("versions", { r: d.rulesetVersion || "—", m: d.modelVersion || "—", f: d.featureSetVersion || "—" }) }),
    rescore ? el("p", {
      class: rescore.stillStands ? "rescore rescore-yes" : "rescore rescore-no",
      text: t(rescore.stillStands ? "rescore_stands" : "rescore_falls",
        { r: rescore.rulesetVersion || "—", a: rescore.action ? t(rescore.action) : "—" }),
    }) : null);
}

// Who changed a status, in words; analysts also see the rule and key ids.
function changedBy(h) {
  const [kind, id] = (h.changedBy || "").split(/:(.*)/s);
  const words = kind === "appeal" ? t("by_appeal", { id }) : t(`by_${["rule", "model", "analyst"].includes(kind) ? kind : "other"}`);
  if (!isAnalyst()) return words;
  const rules = (h.ruleIds || []).length ? ` · ${t("rules_label")} ${h.ruleIds.join(", ")}` : "";
  return `${words} (${h.changedBy})${rules}`;
}

function accountNode(x) {
  const status = x.status || "NORMAL";
  const suppressions = x.suppressions || [];
  const appeals = [...new Map(suppressions.map((s) => [s.appealId, s])).values()];
  return [
    el("h2", {}, `${t("account")} `, el("span", { id: "account-id", text: x.accountId })),
    el("p", {},
      el("span", { id: "status", class: `badge status-${status}`, "data-status": status, text: t(status) }),
      " ",
      el("span", { class: "muted", text: Number(x.statusSinceMs || 0) ? `${t("since")} ${time(x.statusSinceMs)}` : t("never_changed") })),
    el("p", { id: "summary", class: "summary", text: pick(x.summary, x.summaryZh) }),
    el("h3", { text: t("decisions") }),
    (x.decisions || []).length ? x.decisions.map(decisionNode)
      : el("p", { class: "muted", text: t(status === "NORMAL" ? "nothing" : "by_hand") }),
    suppressions.length ? [el("h3", { text: t("suppressions") }),
      el("ul", {}, isAnalyst()
        ? suppressions.map((s) => el("li", { text: t("suppressed", { rule: s.ruleId, until: time(s.untilMs), appeal: s.appealId }) }))
        : appeals.map((s) => el("li", { text: t("suppressed_merchant", { until: time(s.untilMs), appeal: s.appealId }) })))] : null,
    (x.history || []).length ? [el("h3", { text: t("history") }),
      el("ul", { id: "history" }, x.history.map((h) => el("li", {
        text: `${time(h.atMs)}: ${t(h.from || "NORMAL")} → ${t(h.to || "NORMAL")} · ${t("by")} ${changedBy(h)}`
          + `${h.note ? " · " + h.note : ""}`,
      })))] : null,
  ];
}

function appealNode(a, extra) {
  return el("div", { class: "appeal", "data-appeal": a.appealId, "data-status": a.status },
    el("strong", { text: `${a.appealId} · ${t(a.status)} · ${a.accountId}` }),
    el("div", { class: "muted", text: `${t("filed")} ${time(a.filedAtMs)} · ${a.filedBy}` }),
    el("p", { class: "statement", text: a.statement }),
    a.note ? el("p", { class: "note", text: `${t("note")}: ${a.note}` }) : null,
    a.resolvedAtMs && Number(a.resolvedAtMs) ? el("div", { class: "muted", text: `${t("resolved")} ${time(a.resolvedAtMs)} · ${a.resolvedBy}` }) : null,
    extra || null);
}

// ---- merchant ----------------------------------------------------------------------

async function showMerchant() {
  const [explanation, listed] = await Promise.all([api("/api/explain"), api("/api/appeals")]);
  current = { kind: "merchant", explanation, appeals: listed.appeals || [] };
  render();
}

function merchantAppealSection() {
  const { explanation, appeals } = current;
  const open = appeals.some((a) => a.status === "OPEN");
  const appealable = (explanation.status || "NORMAL") !== "NORMAL" && !open;
  const form = appealable ? el("form", { id: "appeal-form", class: "stack", onsubmit: fileAppeal },
    el("label", { for: "statement", text: t("statement") }),
    el("textarea", { id: "statement", required: true, maxlength: "4000" }),
    el("button", { type: "submit", class: "primary", text: t("send_appeal") })) : null;
  return [
    el("h2", { text: t("your_appeals") }),
    open ? el("p", { text: t("appeal_open") }) : null,
    appealable ? el("h3", { text: t("file_appeal") }) : null,
    form,
    appeals.length ? appeals.map((a) => appealNode(a)) : el("p", { class: "muted", text: t("no_appeals") }),
  ];
}

async function fileAppeal(event) {
  event.preventDefault();
  const decisionIds = (current.explanation.decisions || []).map((d) => d.decisionId);
  await run(async () => {
    await api("/api/appeals", { method: "POST", body: JSON.stringify({ statement: $("statement").value, decisionIds }) });
    await showMerchant();
  });
}

// ---- analyst -----------------------------------------------------------------------

async function showQueue() {
  const status = $("queue-status").value;
  const listed = await api(`/api/appeals?status=${encodeURIComponent(status)}`);
  const appeals = listed.appeals || [];
  $("queue-list").replaceChildren(appeals.length
    ? el("div", {}, appeals.map((a) => appealNode(a, el("button", {
      type: "button", class: "review", text: t("review"), onclick: () => run(() => review(a.appealId)),
    }))))
    : el("p", { class: "muted", text: t("no_queue") }));
}

async function review(appealId) {
  const appeal = await api(`/api/appeals/${encodeURIComponent(appealId)}`);
  const explanation = await api(`/api/explain?account_id=${encodeURIComponent(appeal.accountId)}&rescore=true`);
  current = { kind: "review", explanation, appeal };
  render();
}

async function lookup(event) {
  event.preventDefault();
  await run(async () => {
    const explanation = await api(`/api/explain?account_id=${encodeURIComponent($("lookup").value)}&rescore=true`);
    current = { kind: "review", explanation, appeal: null };
    render();
  });
}

function resolveSection() {
  const a = current.appeal;
  if (!a) return [];
  const form = a.status === "OPEN" ? el("form", { id: "resolve-form", class: "stack", onsubmit: resolve },
    el("label", {}, el("input", { type: "radio", name: "resolution", value: "UPHOLD", required: true }), ` ${t("uphold")}`),
    el("label", {}, el("input", { type: "radio", name: "resolution", value: "OVERTURN" }), ` ${t("overturn")}`),
    el("label", { for: "resolve-note", text: t("resolve_note") }),
    el("textarea", { id: "resolve-note", required: true }),
    el("button", { type: "submit", class: "primary", text: t("submit") })) : null;
  return [el("h2", { text: t("resolve") }), appealNode(a), form];
}

async function resolve(event) {
  event.preventDefault();
  const chosen = document.querySelector("input[name=resolution]:checked");
  const body = { resolution: chosen ? chosen.value : "", note: $("resolve-note").value };
  await run(async () => {
    await api(`/api/appeals/${encodeURIComponent(current.appeal.appealId)}/resolve`, { method: "POST", body: JSON.stringify(body) });
    await review(current.appeal.appealId);
    await showQueue();
  });
}

// ---- page --------------------------------------------------------------------------

function render() {
  translateStatic();
  // An analyst looking at another view of the workbench (workbench.js) keeps it.
  if (!current || (isAnalyst() && $("queue").hidden)) return;
  $("account").replaceChildren(...accountNode(current.explanation).flat(Infinity).filter(Boolean));
  $("account").hidden = false;
  const appeal = current.kind === "merchant" ? merchantAppealSection() : resolveSection();
  $("appeal").replaceChildren(...appeal.flat(Infinity).filter(Boolean));
  $("appeal").hidden = appeal.length === 0;
}

async function run(work) {
  try {
    showError(null);
    await work();
  } catch (error) {
    showError(error);
    // Without any key yet, being asked for one is not an error worth a red box.
    if (error.code === "UNAUTHENTICATED") signOut(!sessionStorage.getItem(KEY_ITEM));
  }
}

function signOut(clearError = true) {
  sessionStorage.removeItem(KEY_ITEM);
  me = null;
  current = null;
  for (const id of ["queue", "account", "appeal", "banner", "signout", "views", "cases", "search",
    "rules", "status-admin"]) $(id).hidden = true;
  $("who").textContent = "";
  $("signin").hidden = false;
  if (clearError) showError(null);
}

function showWho() {
  $("who").textContent = me ? `${t("who_" + me.role)}${me.account ? " · " + me.account : ""}` : "";
  $("banner").textContent = t("open_mode");
}

async function start() {
  translateStatic();
  me = await api("/api/whoami");
  $("signin").hidden = true;
  $("signout").hidden = me.role === "open";
  showWho();
  $("banner").hidden = me.role !== "open";
  if (me.role === "merchant") return showMerchant();
  if (me.role === "analyst" || me.role === "open") {
    $("queue").hidden = false;
    showWorkbench();
    return showQueue();
  }
  showError({ message: t("gateway_key") });
}

// A key handed over in the link (#key=...) moves to session storage and out of the URL.
function takeKeyFromLink() {
  const fromLink = new URLSearchParams(location.hash.slice(1)).get("key");
  if (!fromLink) return false;
  sessionStorage.setItem(KEY_ITEM, fromLink);
  history.replaceState(null, "", location.pathname + location.search);
  return true;
}

document.addEventListener("DOMContentLoaded", () => {
  takeKeyFromLink();
  window.addEventListener("hashchange", () => {
    if (takeKeyFromLink()) run(start);
  });
  $("lang").addEventListener("click", () => {
    lang = lang === "zh" ? "en" : "zh";
    localStorage.setItem(LANG_ITEM, lang);
    render();
    showWho();
    if (!$("queue").hidden) run(showQueue);
  });
  $("signout").addEventListener("click", () => signOut());
  $("signin-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY_ITEM, $("key").value.trim());
    $("key").value = "";
    run(start);
  });
  $("lookup-form").addEventListener("submit", lookup);
  $("queue-status").addEventListener("change", () => run(showQueue));
  run(start);
});
