//! Scoring one payment: probability plus signed per-feature contributions, with no allocation.
//!
//! Contract for every learner: `base_value() + Σ contributions == raw log-odds` (calibrated) and
//! `score == sigmoid(raw)`. Non-finite feature values (NaN, ±inf) are scored as 0, the same value
//! `train` substitutes for them, and a feature vector shorter than the model's is padded with 0.
//! A categorical column's code is replaced by its learned encoding before anything else.

use super::artifact::{CategoryEncoding, ModelArtifact, ModelBody, Platt, TreeArrays, LEAF};

/// Ready-to-score form of a [`ModelArtifact`]; immutable, so `Send + Sync` and shareable.
#[derive(Debug, Clone)]
pub struct Scorer {
    n_features: usize,
    base: f64,
    /// Per feature: index into `encodings`, or `NOT_CATEGORICAL`.
    encoding_of: Vec<u32>,
    encodings: Vec<CategoryEncoding>,
    kind: Kind,
}

const NOT_CATEGORICAL: u32 = u32::MAX;

#[derive(Debug, Clone)]
enum Kind {
    /// Calibration is folded into the weights and bias.
    Logistic { terms: Vec<Term> },
    Trees {
        nodes: Vec<Node>,
        roots: Vec<u32>,
        /// Σ root values, so the walk need not add them up again.
        root_sum: f64,
        combine: Combine,
        calibration: Platt,
    },
}

#[derive(Debug, Clone, Copy)]
enum Combine {
    /// Boosting: raw = `offset` + Σ leaf values.
    Sum { offset: f64 },
    /// Forest: p = mean leaf fraction, raw = logit(p).
    MeanProbability { inv_trees: f64 },
}

#[derive(Debug, Clone, Copy)]
struct Term {
    log1p: bool,
    mean: f64,
    inv_std: f64,
    weight: f64,
}

/// 32 bytes, so two nodes share a cache line; leaves have `feature == u32::MAX`.
#[derive(Debug, Clone, Copy)]
struct Node {
    threshold: f64,
    value: f64,
    feature: u32,
    left: u32,
    right: u32,
}

const LEAF_U32: u32 = u32::MAX;

/// A forest whose every tree says "never fraud" still gets a finite log-odds.
const FOREST_CLAMP: f64 = 1e-6;

#[inline]
fn clean(x: f64) -> f64 {
    if x.is_finite() {
        x
    } else {
        0.0
    }
}

#[inline]
fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

#[inline]
fn forest_logit(p: f64) -> f64 {
    let p = p.clamp(FOREST_CLAMP, 1.0 - FOREST_CLAMP);
    (p / (1.0 - p)).ln()
}

impl CategoryEncoding {
    /// The encoded value of a (clean) category code.
    #[inline]
    pub fn encode(&self, code: f64) -> f64 {
        match self.codes.binary_search_by(|c| c.total_cmp(&code)) {
            Ok(i) => self.values.get(i).copied().unwrap_or(self.unseen),
            Err(_) => self.unseen,
        }
    }
}

impl Scorer {
    /// Builds from an artifact; expects one that passed `validate` (as `load` and `train`
    /// guarantee) but stays total on anything else: bad child links end the walk early.
    pub fn new(artifact: &ModelArtifact) -> Scorer {
        Scorer::build(
            artifact.feature_names.len(),
            &artifact.body,
            artifact.calibration,
            &artifact.categorical,
        )
    }

    /// The scorer of a body that is not (yet) part of an artifact; `train` uses it to judge
    /// candidates on the holdout exactly as they will be scored in production.
    pub(crate) fn build(
        n_features: usize,
        body: &ModelBody,
        calibration: Platt,
        categorical: &[CategoryEncoding],
    ) -> Scorer {
        let mut encoding_of = vec![NOT_CATEGORICAL; n_features];
        for (k, e) in categorical.iter().enumerate() {
            if let Some(slot) = encoding_of.get_mut(e.feature) {
                *slot = k as u32;
            }
        }
        let Platt { a, b } = calibration;
        let (base, kind) = match body {
            ModelBody::Logistic(l) => (
                a * l.bias + b,
                Kind::Logistic {
                    terms: l
                        .scaling
                        .iter()
                        .zip(&l.weights)
                        .map(|(s, &w)| Term {
                            log1p: s.log1p,
                            mean: s.mean,
                            inv_std: if s.std > 0.0 { 1.0 / s.std } else { 1.0 },
                            weight: a * w,
                        })
                        .collect(),
                },
            ),
            ModelBody::Forest(f) => {
                let inv_trees = 1.0 / f.trees.len().max(1) as f64;
                let combine = Combine::MeanProbability { inv_trees };
                tree_kind(&f.trees, combine, calibration)
            }
            ModelBody::Gbdt(g) => {
                let combine = Combine::Sum {
                    offset: g.base_score,
                };
                tree_kind(&g.trees, combine, calibration)
            }
        };
        Scorer {
            n_features,
            base,
            encoding_of,
            encodings: categorical.to_vec(),
            kind,
        }
    }

    pub fn n_features(&self) -> usize {
        self.n_features
    }

    /// Calibrated log-odds before any feature is seen: what the model says of an average
    /// payment (logistic bias, or the trees' root values).
    pub fn base_value(&self) -> f64 {
        self.base
    }

    /// Fraud probability in [0, 1]. Non-finite feature values are scored as 0 and missing
    /// trailing features as 0. `contributions` receives one log-odds contribution per
    /// feature (entries past the model's features are zeroed; a shorter buffer drops the
    /// contributions that do not fit but the probability is unaffected). Never allocates.
    pub fn score(&self, features: &[f64], contributions: &mut [f64]) -> f64 {
        sigmoid(self.raw_score(features, contributions))
    }

    /// Like [`Scorer::score`] but returns the calibrated log-odds `base_value() + Σ contributions`.
    pub fn raw_score(&self, features: &[f64], contributions: &mut [f64]) -> f64 {
        contributions.iter_mut().for_each(|c| *c = 0.0);
        let x = |i: usize| {
            let v = clean(features.get(i).copied().unwrap_or(0.0));
            match self.encoding_of.get(i) {
                Some(&k) if k != NOT_CATEGORICAL => {
                    self.encodings.get(k as usize).map_or(v, |e| e.encode(v))
                }
                _ => v,
            }
        };
        match &self.kind {
            Kind::Logistic { terms } => {
                let mut raw = self.base;
                for (i, t) in terms.iter().enumerate() {
                    let mut v = x(i);
                    if t.log1p {
                        v = v.max(0.0).ln_1p();
                    }
                    let c = t.weight * (v - t.mean) * t.inv_std;
                    raw += c;
                    if let Some(slot) = contributions.get_mut(i) {
                        *slot = c;
                    }
                }
                raw
            }
            Kind::Trees {
                nodes,
                roots,
                root_sum,
                combine,
                calibration,
            } => {
                let mut leaf_sum = 0.0;
                for &root in roots {
                    let Some(mut node) = nodes.get(root as usize) else {
                        continue;
                    };
                    while node.feature != LEAF_U32 {
                        let f = node.feature as usize;
                        let next = if x(f) <= node.threshold {
                            node.left
                        } else {
                            node.right
                        };
                        let Some(child) = nodes.get(next as usize) else {
                            break;
                        };
                        // Saabas: the split feature gets the change in prediction it caused.
                        if let Some(slot) = contributions.get_mut(f) {
                            *slot += child.value - node.value;
                        }
                        node = child;
                    }
                    leaf_sum += node.value;
                }
                let Platt { a, b } = *calibration;
                // `scale` turns the walk's sums into calibrated log-odds; the raw score is
                // computed directly so the probability does not depend on the caller's buffer.
                let (scale, raw) = match *combine {
                    Combine::Sum { offset } => (a, a * (offset + leaf_sum) + b),
                    Combine::MeanProbability { inv_trees } => {
                        // The path sums add up to p - p0 in probability; each is stretched by
                        // the same factor so that together they make logit(p) - logit(p0).
                        let (p, p0) = (leaf_sum * inv_trees, root_sum * inv_trees);
                        let (l, l0) = (forest_logit(p), forest_logit(p0));
                        let stretch = if (p - p0).abs() > 1e-12 {
                            (l - l0) / (p - p0)
                        } else {
                            let q = p0.clamp(FOREST_CLAMP, 1.0 - FOREST_CLAMP);
                            1.0 / (q * (1.0 - q))
                        };
                        (a * stretch * inv_trees, a * l + b)
                    }
                };
                contributions
                    .iter_mut()
                    .take(self.n_features)
                    .for_each(|c| *c *= scale);
                raw
            }
        }
    }

    /// The `k` contributions largest in absolute value, largest first, as (feature index,
    /// contribution); zero and non-finite contributions are skipped. Reuses `out`'s capacity.
    pub fn top_factors(&self, contributions: &[f64], k: usize, out: &mut Vec<(usize, f64)>) {
        out.clear();
        if k == 0 {
            return;
        }
        for (i, &c) in contributions.iter().enumerate() {
            if c == 0.0 || !c.is_finite() {
                continue;
            }
            if out.len() == k {
                match out.last() {
                    Some(&(_, last)) if c.abs() > last.abs() => {
                        out.pop();
                    }
                    _ => continue,
                }
            }
            // Insert after every entry at least as large, so ties keep feature order.
            let pos = out.partition_point(|&(_, o)| o.abs() >= c.abs());
            out.insert(pos, (i, c));
        }
    }
}

/// The base value and scoring form of a tree ensemble.
fn tree_kind(trees: &[TreeArrays], combine: Combine, calibration: Platt) -> (f64, Kind) {
    let (nodes, roots, root_sum) = flatten(trees);
    let uncalibrated = match combine {
        Combine::Sum { offset } => offset + root_sum,
        Combine::MeanProbability { inv_trees } => forest_logit(root_sum * inv_trees),
    };
    let kind = Kind::Trees {
        nodes,
        roots,
        root_sum,
        combine,
        calibration,
    };
    (calibration.a * uncalibrated + calibration.b, kind)
}

/// All trees in one node array (roots at their offsets), and the sum of the root values.
fn flatten(trees: &[TreeArrays]) -> (Vec<Node>, Vec<u32>, f64) {
    let mut nodes = Vec::new();
    let mut roots = Vec::with_capacity(trees.len());
    let mut root_sum = 0.0;
    for t in trees {
        let len = t.feature.len();
        let offset = u32::try_from(nodes.len()).unwrap_or(u32::MAX);
        roots.push(offset);
        root_sum += t.value.first().copied().unwrap_or(0.0);
        for (i, &f) in t.feature.iter().enumerate() {
            let left = t.left.get(i).copied().unwrap_or(0);
            let right = t.right.get(i).copied().unwrap_or(0);
            // Children must come later in the same tree; anything else (only possible in an
            // unvalidated artifact) becomes a leaf, so scoring always terminates.
            let linked = |c: u32| (c as usize) > i && (c as usize) < len;
            let split = f >= 0 && f != LEAF && linked(left) && linked(right);
            nodes.push(Node {
                threshold: t.threshold.get(i).copied().unwrap_or(0.0),
                value: t.value.get(i).copied().unwrap_or(0.0),
                feature: if split {
                    u32::try_from(f).unwrap_or(LEAF_U32)
                } else {
                    LEAF_U32
                },
                left: offset.saturating_add(left),
                right: offset.saturating_add(right),
            });
        }
    }
    (nodes, roots, root_sum)
}
