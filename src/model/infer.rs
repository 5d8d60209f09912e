//! Scoring one payment: probability plus signed per-feature contributions, with no allocation.
//!
//! Contract for both algorithms: `base_value() + Σ contributions == raw log-odds` and
//! `score == sigmoid(raw)`. Non-finite feature values (NaN, ±inf) are scored as 0, the same value
//! `train` substitutes for them, and a feature vector shorter than the model's is padded with 0.

use super::artifact::{ModelArtifact, ModelBody, LEAF};

/// Ready-to-score form of a [`ModelArtifact`]; immutable, so `Send + Sync` and shareable.
#[derive(Debug, Clone)]
pub struct Scorer {
    n_features: usize,
    base: f64,
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    Logistic {
        /// Per feature: (log1p?, mean, 1/std, weight), packed for one pass over the input.
        terms: Vec<Term>,
    },
    Forest {
        nodes: Vec<Node>,
        roots: Vec<u32>,
        inv_trees: f64,
    },
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

impl Scorer {
    /// Builds from an artifact; expects one that passed `validate` (as `load` and `train`
    /// guarantee) but stays total on anything else: bad child links end the walk early.
    pub fn new(artifact: &ModelArtifact) -> Scorer {
        let n_features = artifact.feature_names.len();
        match &artifact.body {
            ModelBody::Logistic(b) => Scorer {
                n_features,
                base: b.bias,
                kind: Kind::Logistic {
                    terms: b
                        .scaling
                        .iter()
                        .zip(&b.weights)
                        .map(|(s, &w)| Term {
                            log1p: s.log1p,
                            mean: s.mean,
                            inv_std: if s.std > 0.0 { 1.0 / s.std } else { 1.0 },
                            weight: w,
                        })
                        .collect(),
                },
            },
            ModelBody::Forest(b) => {
                let mut nodes = Vec::new();
                let mut roots = Vec::with_capacity(b.trees.len());
                let mut root_sum = 0.0;
                for t in &b.trees {
                    let len = t.feature.len();
                    let offset = u32::try_from(nodes.len()).unwrap_or(u32::MAX);
                    roots.push(offset);
                    root_sum += t.value.first().copied().unwrap_or(0.0);
                    for (i, &f) in t.feature.iter().enumerate() {
                        let left = t.left.get(i).copied().unwrap_or(0);
                        let right = t.right.get(i).copied().unwrap_or(0);
                        // Children must come later in the same tree; anything else (only
                        // possible in an unvalidated artifact) becomes a leaf, so scoring
                        // always terminates.
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
                let n_trees = roots.len().max(1) as f64;
                Scorer {
                    n_features,
                    base: b.log_odds_shift + root_sum / n_trees,
                    kind: Kind::Forest {
                        nodes,
                        roots,
                        inv_trees: 1.0 / n_trees,
                    },
                }
            }
        }
    }

    pub fn n_features(&self) -> usize {
        self.n_features
    }

    /// Log-odds before any feature is seen: logistic bias, or the forest's mean root value
    /// plus its sampling correction.
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

    /// Like [`Scorer::score`] but returns the raw log-odds `base_value() + Σ contributions`.
    pub fn raw_score(&self, features: &[f64], contributions: &mut [f64]) -> f64 {
        contributions.iter_mut().for_each(|c| *c = 0.0);
        let x = |i: usize| clean(features.get(i).copied().unwrap_or(0.0));
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
            Kind::Forest {
                nodes,
                roots,
                inv_trees,
            } => {
                let mut leaf_sum = 0.0;
                let mut root_sum = 0.0;
                for &root in roots {
                    let Some(mut node) = nodes.get(root as usize) else {
                        continue;
                    };
                    root_sum += node.value;
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
                        // Saabas: the split feature gets the change in log-odds it caused.
                        if let Some(slot) = contributions.get_mut(f) {
                            *slot += child.value - node.value;
                        }
                        node = child;
                    }
                    leaf_sum += node.value;
                }
                contributions
                    .iter_mut()
                    .take(self.n_features)
                    .for_each(|c| *c *= inv_trees);
                // Equal to base + Σ contributions up to rounding; computed directly so the
                // probability does not depend on the size of the caller's buffer.
                self.base + (leaf_sum - root_sum) * inv_trees
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
