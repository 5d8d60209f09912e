//! Quality metrics for models and rule sets: ROC AUC, average precision, precision at k per
//! day (the analyst-queue view) and the flagged-vs-label confusion with money caught.
//!
//! Scores are "higher = more suspicious". Tied scores are treated as one threshold everywhere,
//! so a metric never depends on the order rows arrived in: a model that gives everything the
//! same score gets AUC 0.5 and AP = the fraud rate, not a lucky number.

use std::collections::BTreeMap;

use serde::Serialize;

/// Why a metric cannot be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetricsError {
    #[error("scores and labels differ in length ({scores} vs {labels})")]
    LengthMismatch { scores: usize, labels: usize },
    #[error("no rows")]
    Empty,
    #[error("no positive (fraud) labels, so the metric is undefined")]
    NoPositives,
    #[error("no negative (genuine) labels, so the metric is undefined")]
    NoNegatives,
    #[error("score at row {0} is not a number")]
    NanScore(usize),
    #[error("k must be at least 1")]
    ZeroK,
    #[error("score at row {0} is not a probability in [0, 1]")]
    NotAProbability(usize),
}

fn check(scores: &[f64], labels: &[bool]) -> Result<(usize, usize), MetricsError> {
    if scores.len() != labels.len() {
        return Err(MetricsError::LengthMismatch {
            scores: scores.len(),
            labels: labels.len(),
        });
    }
    if scores.is_empty() {
        return Err(MetricsError::Empty);
    }
    if let Some(i) = scores.iter().position(|s| s.is_nan()) {
        return Err(MetricsError::NanScore(i));
    }
    let pos = labels.iter().filter(|&&l| l).count();
    Ok((pos, labels.len() - pos))
}

/// Indices sorted by score, highest first (NaN already rejected, so `total_cmp` is a true order;
/// -0.0 and 0.0 are merged into one tie group by comparing with `==` when grouping).
fn order_desc(scores: &[f64]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    idx
}

/// Walks tie groups from the highest score down, giving (positives, negatives) per group.
fn tie_groups(scores: &[f64], labels: &[bool]) -> Vec<(u64, u64)> {
    let idx = order_desc(scores);
    let mut groups = Vec::new();
    let mut i = 0;
    while i < idx.len() {
        let s = scores[idx[i]];
        let (mut p, mut n) = (0u64, 0u64);
        while i < idx.len() && scores[idx[i]] == s {
            if labels[idx[i]] {
                p += 1;
            } else {
                n += 1;
            }
            i += 1;
        }
        groups.push((p, n));
    }
    groups
}

/// Area under the ROC curve: the chance a random fraud scores above a random genuine payment,
/// ties counting one half (Mann–Whitney U).
pub fn roc_auc(scores: &[f64], labels: &[bool]) -> Result<f64, MetricsError> {
    let (pos, neg) = check(scores, labels)?;
    if pos == 0 {
        return Err(MetricsError::NoPositives);
    }
    if neg == 0 {
        return Err(MetricsError::NoNegatives);
    }
    // Going down the scores: each positive beats every negative not yet seen.
    let mut neg_above = 0f64;
    let mut wins = 0f64;
    let neg_total = neg as f64;
    for (p, n) in tie_groups(scores, labels) {
        let (p, n) = (p as f64, n as f64);
        wins += p * (neg_total - neg_above - n) + 0.5 * p * n;
        neg_above += n;
    }
    Ok(wins / (pos as f64 * neg_total))
}

/// Average precision: the sum over score thresholds of (recall gained) x (precision there), each
/// tie group being one threshold (as scikit-learn computes it).
pub fn average_precision(scores: &[f64], labels: &[bool]) -> Result<f64, MetricsError> {
    let (pos, _) = check(scores, labels)?;
    if pos == 0 {
        return Err(MetricsError::NoPositives);
    }
    let (mut tp, mut fp) = (0u64, 0u64);
    let mut ap = 0.0;
    for (p, n) in tie_groups(scores, labels) {
        tp += p;
        fp += n;
        if p > 0 {
            ap += (p as f64 / pos as f64) * (tp as f64 / (tp + fp) as f64);
        }
    }
    Ok(ap)
}

/// UTC-based day index of an event time shifted by `utc_offset_minutes` (480 for Beijing days,
/// which is what review queues in this market follow).
pub fn day_index(event_time_ms: i64, utc_offset_minutes: i32) -> i64 {
    (event_time_ms + i64::from(utc_offset_minutes) * 60_000).div_euclid(86_400_000)
}

/// Precision at k per day, averaged over days.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PrecisionAtK {
    /// Mean over days of that day's precision among its top k scores.
    pub mean: f64,
    /// Days that had at least one row.
    pub days: usize,
    /// Per day: (day, precision).
    pub per_day: Vec<(i64, f64)>,
}

/// For each day, the precision of the k highest-scored rows (all rows when the day has fewer
/// than k), then the mean over days: "if analysts review k alerts a day, how many are fraud".
/// When a tie group straddles the k-th place, it counts its fraud share for the places left,
/// i.e. the expected precision under random tie-breaking.
/// Rows are `(day, score, label)`; see [`day_index`].
pub fn precision_at_k_per_day(
    rows: &[(i64, f64, bool)],
    k: usize,
) -> Result<PrecisionAtK, MetricsError> {
    if k == 0 {
        return Err(MetricsError::ZeroK);
    }
    if rows.is_empty() {
        return Err(MetricsError::Empty);
    }
    if let Some(i) = rows.iter().position(|r| r.1.is_nan()) {
        return Err(MetricsError::NanScore(i));
    }
    let mut by_day: BTreeMap<i64, (Vec<f64>, Vec<bool>)> = BTreeMap::new();
    for &(day, score, label) in rows {
        let e = by_day.entry(day).or_default();
        e.0.push(score);
        e.1.push(label);
    }
    let mut per_day = Vec::with_capacity(by_day.len());
    for (day, (scores, labels)) in by_day {
        let k_eff = k.min(scores.len()) as f64;
        let mut left = k_eff;
        let mut hits = 0.0;
        for (p, n) in tie_groups(&scores, &labels) {
            if left <= 0.0 {
                break;
            }
            let size = (p + n) as f64;
            let take = size.min(left);
            hits += take * p as f64 / size;
            left -= take;
        }
        per_day.push((day, hits / k_eff));
    }
    let mean = per_day.iter().map(|d| d.1).sum::<f64>() / per_day.len() as f64;
    Ok(PrecisionAtK {
        mean,
        days: per_day.len(),
        per_day,
    })
}

/// The ROC curve: `(false positive rate, true positive rate)` after each score threshold
/// (each tie group), from `(0, 0)` to `(1, 1)`. The area under it is [`roc_auc`].
pub fn roc_curve(scores: &[f64], labels: &[bool]) -> Result<Vec<(f64, f64)>, MetricsError> {
    let (pos, neg) = check(scores, labels)?;
    if pos == 0 {
        return Err(MetricsError::NoPositives);
    }
    if neg == 0 {
        return Err(MetricsError::NoNegatives);
    }
    let (mut tp, mut fp) = (0u64, 0u64);
    let mut points = vec![(0.0, 0.0)];
    for (p, n) in tie_groups(scores, labels) {
        tp += p;
        fp += n;
        points.push((fp as f64 / neg as f64, tp as f64 / pos as f64));
    }
    Ok(points)
}

/// The precision-recall curve: `(recall, precision)` after each score threshold (each tie
/// group), highest threshold first. [`average_precision`] is its step-wise area.
pub fn pr_curve(scores: &[f64], labels: &[bool]) -> Result<Vec<(f64, f64)>, MetricsError> {
    let (pos, _) = check(scores, labels)?;
    if pos == 0 {
        return Err(MetricsError::NoPositives);
    }
    let (mut tp, mut fp) = (0u64, 0u64);
    let mut points = Vec::new();
    for (p, n) in tie_groups(scores, labels) {
        tp += p;
        fp += n;
        points.push((tp as f64 / pos as f64, tp as f64 / (tp + fp) as f64));
    }
    Ok(points)
}

/// One bin of a reliability diagram.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CalibrationBin {
    /// The bin is `[from, to)` (the last one includes 1).
    pub from: f64,
    pub to: f64,
    pub rows: u64,
    pub positives: u64,
    /// Mean score of its rows: what the model promised.
    pub mean_score: f64,
    /// Share of its rows that are fraud: what happened.
    pub fraud_rate: f64,
}

/// Probabilities in `bins` equal-width bins over [0, 1], each with the mean probability and
/// the observed fraud rate of its rows (empty bins are left out): a calibrated model's
/// points lie on the diagonal. Scores must be probabilities.
pub fn calibration_bins(
    scores: &[f64],
    labels: &[bool],
    bins: usize,
) -> Result<Vec<CalibrationBin>, MetricsError> {
    check(scores, labels)?;
    if bins == 0 {
        return Err(MetricsError::ZeroK);
    }
    if let Some(i) = scores.iter().position(|s| !(0.0..=1.0).contains(s)) {
        return Err(MetricsError::NotAProbability(i));
    }
    let mut sums = vec![(0u64, 0u64, 0.0f64); bins];
    for (&s, &l) in scores.iter().zip(labels) {
        let b = ((s * bins as f64) as usize).min(bins - 1);
        sums[b].0 += 1;
        sums[b].1 += u64::from(l);
        sums[b].2 += s;
    }
    Ok(sums
        .into_iter()
        .enumerate()
        .filter(|(_, (rows, ..))| *rows > 0)
        .map(|(b, (rows, positives, total))| CalibrationBin {
            from: b as f64 / bins as f64,
            to: (b + 1) as f64 / bins as f64,
            rows,
            positives,
            mean_score: total / rows as f64,
            fraud_rate: positives as f64 / rows as f64,
        })
        .collect())
}

/// Flagged-vs-label counts and money, built row by row (streaming backtests) or at once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Confusion {
    pub true_positives: u64,
    pub false_positives: u64,
    pub true_negatives: u64,
    pub false_negatives: u64,
    /// Fraud money in total, and the part that was flagged (caught).
    pub fraud_amount_fen: i64,
    pub caught_amount_fen: i64,
    /// Genuine money that was flagged: the customer-friction cost.
    pub false_positive_amount_fen: i64,
}

impl Confusion {
    /// Counts one labeled row.
    pub fn add(&mut self, flagged: bool, fraud: bool, amount_fen: i64) {
        match (flagged, fraud) {
            (true, true) => {
                self.true_positives += 1;
                self.caught_amount_fen = self.caught_amount_fen.saturating_add(amount_fen);
            }
            (true, false) => {
                self.false_positives += 1;
                self.false_positive_amount_fen =
                    self.false_positive_amount_fen.saturating_add(amount_fen);
            }
            (false, false) => self.true_negatives += 1,
            (false, true) => self.false_negatives += 1,
        }
        if fraud {
            self.fraud_amount_fen = self.fraud_amount_fen.saturating_add(amount_fen);
        }
    }

    /// Builds from `(flagged, fraud, amount_fen)` rows.
    pub fn from_rows(rows: impl IntoIterator<Item = (bool, bool, i64)>) -> Self {
        let mut c = Confusion::default();
        for (flagged, fraud, amount) in rows {
            c.add(flagged, fraud, amount);
        }
        c
    }

    fn ratio(num: u64, den: u64) -> Option<f64> {
        (den > 0).then(|| num as f64 / den as f64)
    }

    /// Share of flagged rows that are fraud; `None` when nothing was flagged.
    pub fn precision(&self) -> Option<f64> {
        Self::ratio(
            self.true_positives,
            self.true_positives + self.false_positives,
        )
    }

    /// Share of fraud rows that were flagged; `None` when there is no fraud.
    pub fn recall(&self) -> Option<f64> {
        Self::ratio(
            self.true_positives,
            self.true_positives + self.false_negatives,
        )
    }

    /// Share of genuine rows that were flagged; `None` when there are no genuine rows.
    pub fn false_positive_rate(&self) -> Option<f64> {
        Self::ratio(
            self.false_positives,
            self.false_positives + self.true_negatives,
        )
    }

    /// Share of fraud money that was flagged; `None` when there is no fraud money.
    pub fn amount_recall(&self) -> Option<f64> {
        (self.fraud_amount_fen > 0)
            .then(|| self.caught_amount_fen as f64 / self.fraud_amount_fen as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::SmallRng, Rng, SeedableRng};

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn auc_perfect_reversed_and_tied() {
        let labels = [true, true, false, false, false];
        assert_eq!(roc_auc(&[0.9, 0.8, 0.3, 0.2, 0.1], &labels), Ok(1.0));
        assert_eq!(roc_auc(&[0.1, 0.2, 0.3, 0.8, 0.9], &labels), Ok(0.0));
        assert_eq!(roc_auc(&[0.5; 5], &labels), Ok(0.5));
    }

    #[test]
    fn auc_hand_computed() {
        // positives 0.8, 0.4; negatives 0.6, 0.4, 0.2.
        // 0.8 beats all 3; 0.4 beats 0.2, ties 0.4 (half), loses to 0.6 => (3 + 1.5) / 6.
        let s = [0.8, 0.6, 0.4, 0.4, 0.2];
        let l = [true, false, true, false, false];
        assert!(close(roc_auc(&s, &l).unwrap(), 4.5 / 6.0));
        // Order of input rows must not matter.
        let s2 = [0.4, 0.2, 0.6, 0.4, 0.8];
        let l2 = [false, false, false, true, true];
        assert!(close(roc_auc(&s2, &l2).unwrap(), 4.5 / 6.0));
    }

    #[test]
    fn ap_hand_computed() {
        // Ranking: +, -, +, -, - : AP = 1/2*1 + 1/2*(2/3) = 5/6.
        let s = [0.9, 0.8, 0.7, 0.6, 0.5];
        let l = [true, false, true, false, false];
        assert!(close(average_precision(&s, &l).unwrap(), 5.0 / 6.0));
        assert_eq!(
            average_precision(&[0.9, 0.8, 0.1], &[true, true, false]),
            Ok(1.0)
        );
    }

    #[test]
    fn ap_ties_are_one_threshold() {
        // All tied: AP = fraud rate, whatever the input order.
        let l = [false, true, false, false];
        assert!(close(average_precision(&[0.3; 4], &l).unwrap(), 0.25));
        // Top group {+,-} tied, then +: 1/2 * 1/2 + 1/2 * 2/3 = 7/12.
        let s = [0.9, 0.9, 0.5, 0.1];
        for l in [[true, false, true, false], [false, true, true, false]] {
            assert!(close(average_precision(&s, &l).unwrap(), 7.0 / 12.0));
        }
    }

    #[test]
    fn random_scores_give_auc_near_half_and_ap_near_rate() {
        let mut rng = SmallRng::seed_from_u64(7);
        let n = 20_000;
        let labels: Vec<bool> = (0..n).map(|_| rng.random_bool(0.1)).collect();
        let scores: Vec<f64> = (0..n).map(|_| rng.random()).collect();
        let auc = roc_auc(&scores, &labels).unwrap();
        assert!((auc - 0.5).abs() < 0.03, "auc {auc}");
        let ap = average_precision(&scores, &labels).unwrap();
        assert!((ap - 0.1).abs() < 0.02, "ap {ap}");
    }

    #[test]
    fn curves_hand_computed_and_consistent_with_the_areas() {
        // Ranking +, -, {+, -} tied, -.
        let s = [0.9, 0.8, 0.5, 0.5, 0.1];
        let l = [true, false, true, false, false];
        let roc = roc_curve(&s, &l).unwrap();
        let third = 1.0 / 3.0;
        let want = [
            (0.0, 0.0),
            (0.0, 0.5),
            (third, 0.5),
            (2.0 * third, 1.0),
            (1.0, 1.0),
        ];
        assert_eq!(roc.len(), want.len());
        for (got, want) in roc.iter().zip(want) {
            assert!(close(got.0, want.0) && close(got.1, want.1), "{roc:?}");
        }
        // Trapezoids under the ROC points are the AUC (ties count one half).
        let area: f64 = roc
            .windows(2)
            .map(|w| (w[1].0 - w[0].0) * (w[0].1 + w[1].1) / 2.0)
            .sum();
        assert!(close(area, roc_auc(&s, &l).unwrap()));
        let pr = pr_curve(&s, &l).unwrap();
        assert_eq!(pr, [(0.5, 1.0), (0.5, 0.5), (1.0, 0.5), (1.0, 0.4)]);
        // Steps of recall times precision are the AP.
        let mut last_recall = 0.0;
        let mut ap = 0.0;
        for (r, p) in &pr {
            ap += (r - last_recall) * p;
            last_recall = *r;
        }
        assert!(close(ap, average_precision(&s, &l).unwrap()));
        assert_eq!(roc_curve(&[0.1], &[true]), Err(MetricsError::NoNegatives));
        assert_eq!(pr_curve(&[0.1], &[false]), Err(MetricsError::NoPositives));
    }

    #[test]
    fn calibration_bins_hand_computed() {
        let s = [0.05, 0.15, 0.12, 0.95, 1.0, 0.91];
        let l = [false, false, true, true, true, false];
        let bins = calibration_bins(&s, &l, 10).unwrap();
        assert_eq!(bins.len(), 3, "empty bins are left out: {bins:?}");
        assert_eq!((bins[0].from, bins[0].rows, bins[0].positives), (0.0, 1, 0));
        assert_eq!((bins[1].rows, bins[1].positives), (2, 1));
        assert!(close(bins[1].mean_score, 0.135) && close(bins[1].fraud_rate, 0.5));
        // 1.0 falls in the last bin, not past it.
        assert_eq!((bins[2].from, bins[2].to, bins[2].rows), (0.9, 1.0, 3));
        assert!(close(bins[2].fraud_rate, 2.0 / 3.0));
        assert_eq!(
            calibration_bins(&[0.5, 1.5], &[true, false], 10),
            Err(MetricsError::NotAProbability(1))
        );
        assert_eq!(
            calibration_bins(&[0.5], &[true], 0),
            Err(MetricsError::ZeroK)
        );
    }

    #[test]
    fn errors() {
        assert_eq!(
            roc_auc(&[0.1], &[true, false]),
            Err(MetricsError::LengthMismatch {
                scores: 1,
                labels: 2
            })
        );
        assert_eq!(roc_auc(&[], &[]), Err(MetricsError::Empty));
        assert_eq!(
            roc_auc(&[0.1, 0.2], &[false, false]),
            Err(MetricsError::NoPositives)
        );
        assert_eq!(
            roc_auc(&[0.1, 0.2], &[true, true]),
            Err(MetricsError::NoNegatives)
        );
        assert_eq!(
            average_precision(&[0.1, f64::NAN], &[true, false]),
            Err(MetricsError::NanScore(1))
        );
        assert_eq!(
            average_precision(&[0.1], &[false]),
            Err(MetricsError::NoPositives)
        );
        assert_eq!(
            precision_at_k_per_day(&[(0, 0.1, true)], 0),
            Err(MetricsError::ZeroK)
        );
        assert_eq!(precision_at_k_per_day(&[], 5), Err(MetricsError::Empty));
    }

    #[test]
    fn precision_at_k_hand_computed() {
        let rows = [
            // day 0: top 2 by score are 0.9 (+) and 0.8 (-) => 0.5
            (0, 0.9, true),
            (0, 0.8, false),
            (0, 0.7, true),
            // day 1: only one row, fraud => 1.0 (k larger than the day)
            (1, 0.1, true),
            // day 2: top 2 are one sure + then a tie of {+, -, -} for 1 place => (1 + 1/3) / 2
            (2, 0.9, true),
            (2, 0.5, true),
            (2, 0.5, false),
            (2, 0.5, false),
        ];
        let r = precision_at_k_per_day(&rows, 2).unwrap();
        assert_eq!(r.days, 3);
        assert!(close(r.per_day[0].1, 0.5));
        assert!(close(r.per_day[1].1, 1.0));
        assert!(close(r.per_day[2].1, 2.0 / 3.0));
        assert!(close(r.mean, (0.5 + 1.0 + 2.0 / 3.0) / 3.0));
    }

    #[test]
    fn day_index_follows_offset() {
        let t = 1_772_323_200_000 - 3_600_000; // 2026-02-28T23:00Z = 2026-03-01T07:00+08:00
        assert_eq!(day_index(t, 480), day_index(t, 0) + 1);
        assert_eq!(day_index(-1, 0), -1);
    }

    #[test]
    fn confusion_counts_and_money() {
        let c = Confusion::from_rows([
            (true, true, 500),
            (true, false, 100),
            (false, true, 300),
            (false, false, 50),
            (false, false, 60),
        ]);
        assert_eq!(
            (
                c.true_positives,
                c.false_positives,
                c.false_negatives,
                c.true_negatives
            ),
            (1, 1, 1, 2)
        );
        assert_eq!(c.precision(), Some(0.5));
        assert_eq!(c.recall(), Some(0.5));
        assert_eq!(c.false_positive_rate(), Some(1.0 / 3.0));
        assert_eq!(
            (
                c.fraud_amount_fen,
                c.caught_amount_fen,
                c.false_positive_amount_fen
            ),
            (800, 500, 100)
        );
        assert_eq!(c.amount_recall(), Some(500.0 / 800.0));
        let empty = Confusion::default();
        assert_eq!(
            (
                empty.precision(),
                empty.recall(),
                empty.false_positive_rate()
            ),
            (None, None, None)
        );
    }

    proptest::proptest! {
        #[test]
        fn auc_in_unit_range_and_flips_with_negated_scores(
            rows in proptest::collection::vec((-1e6f64..1e6, proptest::bool::ANY), 2..60)
        ) {
            let scores: Vec<f64> = rows.iter().map(|r| r.0).collect();
            let labels: Vec<bool> = rows.iter().map(|r| r.1).collect();
            if let Ok(a) = roc_auc(&scores, &labels) {
                let neg: Vec<f64> = scores.iter().map(|s| -s).collect();
                let b = roc_auc(&neg, &labels).unwrap();
                proptest::prop_assert!((0.0..=1.0).contains(&a));
                proptest::prop_assert!((a + b - 1.0).abs() < 1e-9);
            }
            if let Ok(ap) = average_precision(&scores, &labels) {
                proptest::prop_assert!(ap > 0.0 && ap <= 1.0 + 1e-12);
            }
        }
    }
}
