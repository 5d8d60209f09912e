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
    versions: "Versions: rules {r}, model {m}, features {f}",
    rescore_stands: "Under today's rules ({r}) and model this decision would still stand: {a}.",
    rescore_falls: "Under today's rules ({r}) and model this decision would not stand: {a}.",
    history: "History", by: "by", suppressions: "Protection after an overturned appeal",
    suppressed: "Rule {rule} will not act on this account until {until} (appeal {appeal}).",
    your_appeals: "Appeals", no_appeals: "No appeals yet.", no_queue: "No appeals here.",
    file_appeal: "Appeal this decision", statement: "Tell us what happened",
    send_appeal: "Send appeal", appeal_open: "Your appeal is being reviewed.",
    filed: "filed", resolved: "resolved", note: "Note from the reviewer",
    review: "Review", resolve: "Resolve appeal", uphold: "Uphold (keep the status)",
    overturn: "Overturn (restore the account)", resolve_note: "Reason shown to the merchant",
    submit: "Submit", statement_label: "Statement", decisions_label: "Decisions",
    nothing: "Nothing to explain: no decision has acted on this account.",
  },
  zh: {
    lang: "English", sign_in: "登录", sign_out: "退出", key_label: "访问密钥",
    key_help: "粘贴平台发给您的密钥。密钥只保存在当前浏览器标签页中。",
    open_mode: "开放模式：服务器未配置任何密钥，任何人都可以作为分析员操作。仅用于本地开发。",
    gateway_key: "此密钥供支付网关使用。请使用商户或分析员密钥查看账户。",
    who_merchant: "商户", who_analyst: "分析员", who_open: "开放模式",
    queue: "申诉", lookup: "账户", explain: "查看原因", show: "显示", all: "全部",
    OPEN: "待处理", UPHELD: "维持", OVERTURNED: "已撤销",
    NORMAL: "正常", LIMITED: "受限", FROZEN: "已冻结",
    account: "账户", since: "自", never_changed: "从未变更",
    decisions: "原因", payment: "支付", amount: "金额", action: "处理", risk: "风险分",
    value: "数值", detail: "说明", name: "名称",
    remedies: "怎样会得到不同的结果", model: "模型因素",
    versions: "版本：规则 {r}，模型 {m}，特征 {f}",
    rescore_stands: "按照今天的规则（{r}）和模型，该决定依然成立：{a}。",
    rescore_falls: "按照今天的规则（{r}）和模型，该决定不再成立：{a}。",
    history: "记录", by: "操作方", suppressions: "申诉撤销后的保护",
    suppressed: "规则 {rule} 在 {until} 之前不会再对该账户生效（申诉 {appeal}）。",
    your_appeals: "申诉", no_appeals: "暂无申诉。", no_queue: "这里没有申诉。",
    file_appeal: "对该决定提出申诉", statement: "请说明情况",
    send_appeal: "提交申诉", appeal_open: "您的申诉正在审核中。",
    filed: "提交于", resolved: "处理于", note: "审核说明",
    review: "审核", resolve: "处理申诉", uphold: "维持（保持当前状态）",
    overturn: "撤销（恢复账户）", resolve_note: "向商户展示的理由",
    submit: "提交", statement_label: "申诉内容", decisions_label: "相关决定",
    nothing: "没有需要解释的内容：没有任何决定影响过该账户。",
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
  const f = BigInt(fen || 0);
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

function evidenceTable(evidence) {
  if (!evidence || !evidence.length) return null;
  return el("table", { class: "evidence" },
    el("thead", {}, el("tr", {}, el("th", { text: t("name") }), el("th", { text: t("value") }),
      el("th", { text: t("detail") }))),
    el("tbody", {}, evidence.map((e) => el("tr", {},
      el("td", { text: e.name }), el("td", { text: String(e.value ?? 0) }),
      el("td", { text: e.text || "" })))));
}

function reasonNode(reason) {
  const remedies = reason.remedies || [];
  return el("div", { class: "reason", "data-rule": reason.id || "" },
    el("div", { class: "message", text: pick(reason.message, reason.messageZh) }),
    el("div", { class: "muted", text: [reason.code, reason.id, reason.accountAction].filter(Boolean).join(" · ") }),
    evidenceTable(reason.evidence),
    remedies.length ? el("div", { class: "remedies" },
      el("strong", { text: t("remedies") }),
      el("ul", {}, remedies.map((r) => el("li", { text: pick(r.message, r.messageZh) })))) : null);
}

function decisionNode(d) {
  const rescore = d.rescore;
  return el("div", { class: "decision", "data-decision": d.decisionId },
    el("h3", { text: `${t("payment")} ${d.paymentId} · ${yuan(d.amountFen)} · ${time(d.eventTimeMs)}` }),
    el("div", { class: "muted", text: `${t("action")}: ${d.action || "—"} · ${t("risk")}: ${d.riskScore || 0}` }),
    (d.reasons || []).map(reasonNode),
    d.modelFactors && d.modelFactors.length ? el("div", {},
      el("strong", { text: t("model") }),
      el("ul", {}, d.modelFactors.map((f) => el("li", { text: pick(f.message, f.messageZh) })))) : null,
    el("div", { class: "muted", text: t("versions", { r: d.rulesetVersion || "—", m: d.modelVersion || "—", f: d.featureSetVersion || "—" }) }),
    rescore ? el("p", {
      class: rescore.stillStands ? "rescore rescore-yes" : "rescore rescore-no",
      text: t(rescore.stillStands ? "rescore_stands" : "rescore_falls",
        { r: rescore.rulesetVersion || "—", a: rescore.action || "—" }),
    }) : null);
}

function accountNode(x) {
  const status = x.status || "NORMAL";
  return [
    el("h2", {}, `${t("account")} `, el("span", { id: "account-id", text: x.accountId })),
    el("p", {},
      el("span", { id: "status", class: `badge status-${status}`, "data-status": status, text: t(status) }),
      " ",
      el("span", { class: "muted", text: Number(x.statusSinceMs || 0) ? `${t("since")} ${time(x.statusSinceMs)}` : t("never_changed") })),
    el("p", { id: "summary", class: "summary", text: pick(x.summary, x.summaryZh) }),
    el("h3", { text: t("decisions") }),
    (x.decisions || []).length ? x.decisions.map(decisionNode) : el("p", { class: "muted", text: t("nothing") }),
    (x.suppressions || []).length ? [el("h3", { text: t("suppressions") }),
      el("ul", {}, x.suppressions.map((s) => el("li", { text: t("suppressed", { rule: s.ruleId, until: time(s.untilMs), appeal: s.appealId }) })))] : null,
    (x.history || []).length ? [el("h3", { text: t("history") }),
      el("ul", { id: "history" }, x.history.map((h) => el("li", {
        text: `${time(h.atMs)}: ${t(h.from || "NORMAL")} → ${t(h.to || "NORMAL")} · ${t("by")} ${h.changedBy}`
          + `${(h.ruleIds || []).length ? " · " + h.ruleIds.join(", ") : ""}${h.note ? " · " + h.note : ""}`,
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
  if (!current) return;
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
  for (const id of ["queue", "account", "appeal", "banner", "signout"]) $(id).hidden = true;
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
