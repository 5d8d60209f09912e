#!/usr/bin/env python3
"""Learner parity: fengkong's three learners against scikit-learn's on the same features.

For each data set (the QR simulator and the card generator):

  fengkong simulate        -> events.csv
  fengkong replay --out    -> features.csv (every feature of every payment, as the server
                              computes them, with labels fed back when they became known)
  time-ordered split       -> history | train | label delay (skipped) | test
  scikit-learn             LogisticRegression, RandomForestClassifier and
                           HistGradientBoostingClassifier fitted on the train rows of
                           features.csv, scoring the test rows
  fengkong                 `fengkong train --algo X --train-from --train-to` (its own replay
                           of the same file, the same features), then `replay --model` and
                           `eval --from --to` on the test period

and every system is judged by the same code on the same test rows: ROC AUC, average
precision and precision at the top 100 a day (Beijing days; tied scores share their places,
as fengkong's own metric does). As in the published card-fraud protocol, payers already
known to be compromised (a fraud label of theirs reported before the day of the payment)
are removed from the test set; the numbers on the full test period are printed too and
checked against `fengkong eval`, so the two metric implementations are known to agree.

Nothing here is tuned: scikit-learn runs with its defaults (the logistic regression on
standardised inputs, as its documentation asks), fengkong with its defaults.

Usage: parity.py --bin target/release/fengkong --work target/model_parity [--payments N]
"""

import argparse
import csv
import datetime as dt
import json
import math
import os
import re
import subprocess
import sys
import time

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

DAY_MS = 86_400_000
# Both generators start at 2026-03-01T00:00:00+08:00 (a Beijing midnight).
START = dt.datetime(2026, 3, 1, tzinfo=dt.timezone(dt.timedelta(hours=8)))
BEIJING_OFFSET_MS = 8 * 3_600_000
ALERTS_PER_DAY = 100
LABEL_DELAY_DAYS = 7

# Days from START: windows fill during the history, the model learns on the training
# weeks, the label delay is skipped (its labels are not known when the test starts), and
# the test week is judged.
HISTORY_DAYS = 28
TRAIN_DAYS = 21
TEST_DAYS = 7
DAYS = HISTORY_DAYS + TRAIN_DAYS + LABEL_DELAY_DAYS + TEST_DAYS

DATASETS = [
    ("simulator", "qr", 11),
    ("cards", "cards", 11),
]
FENGKONG_ALGOS = ["logistic", "forest", "gbdt"]


def day_iso(day):
    return (START + dt.timedelta(days=day)).isoformat()


def run(cmd, log):
    started = time.time()
    print("+ " + " ".join(cmd), file=log, flush=True)
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    log.write(out.stderr)
    log.write(out.stdout)
    log.flush()
    return out.stdout, time.time() - started


def read_features(path):
    """features.csv -> (payment ids, event times, labels, feature names, matrix)."""
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        tail = {"score", "risk_score", "action", "event_time"}
        names = [h for h in header[2:] if h not in tail]
        cols = [header.index(n) for n in names]
        t_col = header.index("event_time")
        ids, times, labels, rows = [], [], [], []
        for r in reader:
            if r[1] == "":
                continue
            ids.append(r[0])
            times.append(int(r[t_col]))
            labels.append(r[1] == "1")
            rows.append([float(r[c]) for c in cols])
    x = np.asarray(rows, dtype=np.float64)
    # fengkong trains and scores non-finite values as 0; scikit-learn gets the same input.
    x[~np.isfinite(x)] = 0.0
    return ids, np.asarray(times), np.asarray(labels), names, x


def read_scores(path):
    """A `replay --model` output -> {payment_id: score}."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return {r["payment_id"]: float(r["score"]) for r in reader}


def parse_time_ms(text):
    text = text.strip()
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    return int(dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def known_compromised_mask(events_path, ids, times):
    """True for test rows whose payer had a fraud label reported before the row's day."""
    first_report = {}
    payer_of = {}
    with open(events_path, newline="") as f:
        for r in csv.DictReader(f):
            payer_of[r["payment_id"]] = r["payer_id"]
            if r["label"] == "1":
                reported = r.get("label_reported_at", "")
                if reported is None or reported == "":
                    if "label_reported_at" in r:
                        continue  # never reported: never known
                    at = parse_time_ms(r["event_time"]) + LABEL_DELAY_DAYS * DAY_MS
                else:
                    at = parse_time_ms(reported)
                payer = r["payer_id"]
                first_report[payer] = min(first_report.get(payer, at), at)
    mask = np.zeros(len(ids), dtype=bool)
    for i, (pid, t) in enumerate(zip(ids, times)):
        day_start = (t + BEIJING_OFFSET_MS) // DAY_MS * DAY_MS - BEIJING_OFFSET_MS
        reported = first_report.get(payer_of[pid])
        mask[i] = reported is not None and reported < day_start
    return mask


def precision_at_k_per_day(times, scores, labels, k=ALERTS_PER_DAY):
    """Mean over Beijing days of the precision of the day's k highest scores; a tie group
    straddling the k-th place counts its fraud share for the places left (fengkong's rule)."""
    days = (times + BEIJING_OFFSET_MS) // DAY_MS
    per_day = []
    for d in np.unique(days):
        sel = days == d
        s, l = scores[sel], labels[sel]
        order = np.argsort(-s, kind="stable")
        s, l = s[order], l[order]
        k_eff = min(k, len(s))
        left, hits, i = float(k_eff), 0.0, 0
        while i < len(s) and left > 0:
            j = i
            while j < len(s) and s[j] == s[i]:
                j += 1
            size = j - i
            take = min(size, left)
            hits += take * l[i:j].sum() / size
            left -= take
            i = j
        per_day.append(hits / k_eff)
    return float(np.mean(per_day))


def metrics(times, scores, labels):
    return {
        "roc_auc": float(roc_auc_score(labels, scores)),
        "average_precision": float(average_precision_score(labels, scores)),
        "precision_at_100_per_day": precision_at_k_per_day(times, scores, labels),
    }


EVAL_LINE = re.compile(
    r"(\d+) payments \((\d+) fraud\): ROC AUC ([0-9.]+), average precision ([0-9.]+), "
    r"precision at top \d+ a day ([0-9.]+)"
)


def sklearn_models(seed):
    return [
        (
            "scikit-learn LogisticRegression",
            make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
        ),
        (
            "scikit-learn RandomForestClassifier",
            RandomForestClassifier(n_jobs=-1, random_state=seed),
        ),
        (
            "scikit-learn HistGradientBoostingClassifier",
            HistGradientBoostingClassifier(random_state=seed),
        ),
    ]


def one_dataset(args, name, generator, seed, log):
    work = os.path.join(args.work, name)
    os.makedirs(work, exist_ok=True)
    events = os.path.join(work, "events.csv")
    features = os.path.join(work, "features.csv")
    train_from, train_to = HISTORY_DAYS, HISTORY_DAYS + TRAIN_DAYS
    test_from = train_to + LABEL_DELAY_DAYS
    test_to = test_from + TEST_DAYS
    t_train = (START + dt.timedelta(days=train_from)).timestamp() * 1000
    t_train_end = (START + dt.timedelta(days=train_to)).timestamp() * 1000
    t_test = (START + dt.timedelta(days=test_from)).timestamp() * 1000
    t_test_end = (START + dt.timedelta(days=test_to)).timestamp() * 1000
    timings = {}

    _, timings["simulate"] = run(
        [args.bin, "simulate", "--generator", generator, "--payments", str(args.payments),
         "--days", str(DAYS), "--seed", str(seed), "--out", events],
        log,
    )
    _, timings["replay"] = run(
        [args.bin, "replay", "--events", events, "--label-delay", f"{LABEL_DELAY_DAYS}d",
         "--out", features],
        log,
    )
    ids, times, labels, names, x = read_features(features)
    train = (times >= t_train) & (times < t_train_end)
    test = (times >= t_test) & (times < t_test_end)
    test_ids = [ids[i] for i in np.flatnonzero(test)]
    known = known_compromised_mask(events, test_ids, times[test])
    kept = ~known
    y_test, t_test_rows = labels[test], times[test]
    summary = {
        "dataset": name,
        "features": len(names),
        "train_rows": int(train.sum()),
        "train_fraud": int(labels[train].sum()),
        "test_rows": int(test.sum()),
        "test_fraud": int(y_test.sum()),
        "test_rows_kept": int(kept.sum()),
        "test_fraud_kept": int(y_test[kept].sum()),
        "systems": [],
    }

    def judge(system, scores, seconds):
        full = metrics(t_test_rows, scores, y_test)
        filtered = metrics(t_test_rows[kept], scores[kept], y_test[kept])
        summary["systems"].append(
            {"system": system, "seconds": seconds, "full": full, **filtered}
        )
        print(
            f"{name}: {system}: AUC {filtered['roc_auc']:.4f} AP "
            f"{filtered['average_precision']:.4f} in {seconds:.0f}s",
            file=sys.stderr,
            flush=True,
        )

    for system, model in sklearn_models(seed):
        started = time.time()
        model.fit(x[train], labels[train])
        scores = model.predict_proba(x[test])[:, 1]
        judge(system, scores, time.time() - started)

    for algo in FENGKONG_ALGOS:
        model_path = os.path.join(work, f"model-{algo}.json")
        scored = os.path.join(work, f"scored-{algo}.csv")
        _, train_s = run(
            [args.bin, "train", "--events", events, "--label-delay", f"{LABEL_DELAY_DAYS}d",
             "--train-from", day_iso(train_from), "--train-to", day_iso(train_to),
             "--algo", algo, "--seed", str(seed), "--out", model_path],
            log,
        )
        _, replay_s = run(
            [args.bin, "replay", "--events", events, "--label-delay", f"{LABEL_DELAY_DAYS}d",
             "--model", model_path, "--out", scored],
            log,
        )
        eval_out, _ = run(
            [args.bin, "eval", "--scores", scored, "--from", day_iso(test_from),
             "--to", day_iso(test_to)],
            log,
        )
        by_id = read_scores(scored)
        scores = np.asarray([by_id[i] for i in test_ids])
        judge(f"fengkong `--algo {algo}`", scores, train_s)
        # The same rows and metrics as `fengkong eval`: the two implementations agree.
        m = EVAL_LINE.search(eval_out)
        if not m:
            raise SystemExit(f"unexpected eval output: {eval_out!r}")
        full = summary["systems"][-1]["full"]
        ours = {
            "roc_auc": float(m.group(3)),
            "average_precision": float(m.group(4)),
            "precision_at_100_per_day": float(m.group(5)),
        }
        if int(m.group(1)) != len(test_ids) or any(
            abs(ours[k] - full[k]) > 1e-4 for k in ours
        ):
            raise SystemExit(
                f"{name} {algo}: fengkong eval says {m.group(0)!r}, parity.py computed "
                f"{len(test_ids)} rows {full}"
            )
        summary["systems"][-1]["replay_seconds"] = replay_s
    summary["timings"] = timings
    return summary


def table(summary):
    s = summary
    lines = [
        f"**{s['dataset']}**: {s['features']} features; train {s['train_rows']} payments "
        f"({s['train_fraud']} fraud), test {s['test_rows_kept']} payments "
        f"({s['test_fraud_kept']} fraud) after removing {s['test_rows'] - s['test_rows_kept']} "
        f"of payers already known to be compromised "
        f"(full test week: {s['test_rows']}, {s['test_fraud']} fraud)",
        "",
        "| system | ROC AUC | average precision | precision @100/day | AP, full test week | fit seconds |",
        "|---|---|---|---|---|---|",
    ]
    best = {
        "sk": max(x["average_precision"] for x in s["systems"] if x["system"].startswith("scikit")),
        "fk": max(x["average_precision"] for x in s["systems"] if x["system"].startswith("fengkong")),
    }
    for x in s["systems"]:
        group = "sk" if x["system"].startswith("scikit") else "fk"
        ap = f"{x['average_precision']:.4f}"
        if x["average_precision"] == best[group]:
            ap = f"**{ap}**"
        lines.append(
            f"| {x['system']} | {x['roc_auc']:.4f} | {ap} | "
            f"{x['precision_at_100_per_day']:.4f} | {x['full']['average_precision']:.4f} | "
            f"{x['seconds']:.0f} |"
        )
    verdict = "at or above" if best["fk"] >= best["sk"] else "BELOW"
    lines += [
        "",
        f"fengkong's best AP {best['fk']:.4f} is {verdict} scikit-learn's best {best['sk']:.4f} "
        f"(difference {best['fk'] - best['sk']:+.4f}).",
    ]
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bin", required=True, help="the fengkong binary (a release build)")
    p.add_argument("--work", required=True, help="folder for data, models and logs")
    p.add_argument("--payments", type=int, default=150_000, help="payments per data set")
    p.add_argument("--only", choices=[d[0] for d in DATASETS], help="one data set")
    args = p.parse_args()
    os.makedirs(args.work, exist_ok=True)
    started = time.time()
    summaries = []
    with open(os.path.join(args.work, "log.txt"), "w") as log:
        for name, generator, seed in DATASETS:
            if args.only and name != args.only:
                continue
            summaries.append(one_dataset(args, name, generator, seed, log))
    with open(os.path.join(args.work, "results.json"), "w") as f:
        json.dump(summaries, f, indent=2)
    print(
        f"Split (days from 2026-03-01, Beijing): history 0-{HISTORY_DAYS}, train "
        f"{HISTORY_DAYS}-{HISTORY_DAYS + TRAIN_DAYS}, label delay skipped "
        f"{HISTORY_DAYS + TRAIN_DAYS}-{HISTORY_DAYS + TRAIN_DAYS + LABEL_DELAY_DAYS}, test "
        f"{DAYS - TEST_DAYS}-{DAYS}; {args.payments} payments per data set over {DAYS} days.\n"
    )
    for s in summaries:
        print(table(s))
        print()
    print(f"Whole run: {time.time() - started:.0f} s.")


if __name__ == "__main__":
    main()
