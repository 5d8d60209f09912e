//! The evaluation report of `fengkong eval --report report.html`: one self-contained HTML
//! file (inline CSS and inline SVG, nothing fetched) with the numbers `eval` prints and the
//! pictures behind them: the precision-recall and ROC curves, a calibration plot, the score
//! distribution of fraud and genuine payments, and precision at the top 100 per day.
//!
//! **Why plotters.** It is the well-kept plotting crate of the Rust ecosystem (axes, ticks,
//! log scales, legends, series), pure Rust, and its SVG backend writes into a `String`, so
//! charts are drawn without fonts, images or a browser on the machine that makes them. With
//! its default features off it brings only the SVG backend (plotters, plotters-backend,
//! plotters-svg): no font or image libraries. The text in the SVG is drawn by the browser
//! that opens the report.
//!
//! The curves come from `quality.rs`, the same code as the numbers, so the picture and the
//! printed AP cannot disagree. Long curves are thinned to the points a reader can see
//! (about one per 0.2% of the axis) before drawing, which keeps a million-row report small.

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::quality::{self, CalibrationBin, MetricsError};
use crate::training::{self, Metrics, ALERTS_PER_DAY, UTC_OFFSET_MINUTES};

/// Why a report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("metrics: {0}")]
    Metrics(#[from] MetricsError),
    #[error("cannot draw the {chart} chart: {reason}")]
    Draw { chart: &'static str, reason: String },
    #[error("cannot write `{path}`: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What the report is about.
pub struct ReportInput<'a> {
    /// Where the scores came from (shown at the top).
    pub source: &'a str,
    /// The evaluated period, `[from_ms, to_ms)`.
    pub from_ms: i64,
    pub to_ms: i64,
    /// `(event_time_ms, score, label)` of every labeled payment in the period.
    pub rows: &'a [(i64, f64, bool)],
}

/// Series colours; `tests/eval_report.rs` looks for them in screenshots of the charts.
pub const CURVE: RGBColor = RGBColor(0x1f, 0x5f, 0xbf);
pub const FRAUD: RGBColor = RGBColor(0xc0, 0x39, 0x2b);
pub const GENUINE: RGBColor = RGBColor(0x2e, 0x8b, 0x57);
const REFERENCE: RGBColor = RGBColor(0x99, 0x99, 0x99);
const LIGHT_GRID: RGBColor = RGBColor(0xf2, 0xf2, 0xf2);

const SIZE: (u32, u32) = (560, 380);
const CALIBRATION_BINS: usize = 10;
const SCORE_BINS: usize = 20;

/// Renders the report as one HTML document.
pub fn render(input: &ReportInput<'_>) -> Result<String, ReportError> {
    let metrics = training::metrics(input.rows)?;
    let scores: Vec<f64> = input.rows.iter().map(|r| r.1).collect();
    let labels: Vec<bool> = input.rows.iter().map(|r| r.2).collect();
    let roc = quality::roc_curve(&scores, &labels)?;
    let pr = quality::pr_curve(&scores, &labels)?;
    let by_day: Vec<(i64, f64, bool)> = input
        .rows
        .iter()
        .map(|&(t, s, l)| (quality::day_index(t, UTC_OFFSET_MINUTES), s, l))
        .collect();
    let per_day = quality::precision_at_k_per_day(&by_day, ALERTS_PER_DAY)?;
    // The best a perfect ranking could do each day: all of the day's fraud, up to k.
    let mut best_per_day = Vec::with_capacity(per_day.per_day.len());
    for &(day, _) in &per_day.per_day {
        let (rows, fraud) = by_day
            .iter()
            .filter(|r| r.0 == day)
            .fold((0usize, 0usize), |(n, f), r| (n + 1, f + usize::from(r.2)));
        let k = ALERTS_PER_DAY.min(rows).max(1);
        best_per_day.push((day, fraud.min(k) as f64 / k as f64));
    }
    let base_rate = metrics.positives as f64 / metrics.rows as f64;
    let probabilities = scores.iter().all(|s| (0.0..=1.0).contains(s));

    let mut figures = String::new();
    figures += &figure(
        "pr-curve",
        "Precision and recall",
        &format!(
            "Each point is a score threshold: of the payments above it, the share that is \
             fraud (precision) and the share of all fraud they hold (recall). Average \
             precision {:.4}; the dashed line is the fraud rate ({:.2}%), what random \
             ranking gives.",
            metrics.average_precision,
            100.0 * base_rate
        ),
        draw("precision-recall", |area| {
            pr_chart(area, &thin(&pr), base_rate)
        })?,
    );
    figures += &figure(
        "roc-curve",
        "ROC curve",
        &format!(
            "Share of fraud caught against share of genuine payments flagged, threshold by \
             threshold. ROC AUC {:.4} (the dashed diagonal is chance).",
            metrics.roc_auc
        ),
        draw("ROC", |area| roc_chart(area, &thin(&roc)))?,
    );
    let calibration = if probabilities {
        quality::calibration_bins(&scores, &labels, CALIBRATION_BINS)?
    } else {
        Vec::new()
    };
    figures += &if probabilities {
        figure(
            "calibration",
            "Calibration",
            "Payments binned by predicted fraud probability: the bin's mean prediction against \
             the share of its payments that were fraud. A calibrated model lies on the \
             diagonal, so that model_weight x probability means what it says. The table \
             below gives each bin's size.",
            draw("calibration", |area| calibration_chart(area, &calibration))?,
        )
    } else {
        figure_note(
            "calibration",
            "Calibration",
            "The scores are not all probabilities in [0, 1], so there is no calibration to show.",
        )
    };
    let (lo, hi) = if probabilities {
        (0.0, 1.0)
    } else {
        let lo = scores.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (lo, if hi > lo { hi } else { lo + 1.0 })
    };
    let histogram = score_histogram(&scores, &labels, lo, hi);
    figures += &figure(
        "score-distribution",
        "Scores of fraud and genuine payments",
        "Share of each class's payments per score bin (log scale): genuine payments should \
         pile up on the left, fraud on the right; the overlap is what ranking cannot separate.",
        draw("score distribution", |area| {
            histogram_chart(area, &histogram, lo, hi)
        })?,
    );
    figures += &figure(
        "precision-per-day",
        &format!("Precision at the top {ALERTS_PER_DAY} a day"),
        &format!(
            "If analysts review the {ALERTS_PER_DAY} highest scores each day (Beijing days), \
             the share that is fraud; mean {:.4} over {} days. The dashed line is what a \
             perfect ranking would reach: a day with fewer than {ALERTS_PER_DAY} frauds cannot \
             fill the queue.",
            per_day.mean, per_day.days
        ),
        draw("precision per day", |area| {
            per_day_chart(area, &per_day.per_day, &best_per_day)
        })?,
    );

    Ok(page(input, &metrics, &figures, &calibration))
}

/// [`render`] into a file.
pub fn write(path: &Path, input: &ReportInput<'_>) -> Result<(), ReportError> {
    let html = render(input)?;
    std::fs::write(path, html).map_err(|source| ReportError::Write {
        path: path.to_path_buf(),
        source,
    })
}

pub(crate) type DrawResult = Result<(), DrawingAreaErrorKind<std::io::Error>>;

/// Runs a chart function on a fresh white SVG canvas of `size` and returns the SVG text, or
/// what plotters said went wrong (also used by `crate::rule_charts`).
pub(crate) fn svg_chart(
    size: (u32, u32),
    f: impl FnOnce(&DrawingArea<SVGBackend<'_>, Shift>) -> DrawResult,
) -> Result<String, String> {
    let mut svg = String::new();
    {
        let area = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        area.fill(&WHITE)
            .and_then(|_| f(&area))
            .and_then(|_| area.present())
            .map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

fn draw(
    chart: &'static str,
    f: impl FnOnce(&DrawingArea<SVGBackend<'_>, Shift>) -> DrawResult,
) -> Result<String, ReportError> {
    svg_chart(SIZE, f).map_err(|reason| ReportError::Draw { chart, reason })
}

/// Keeps the first and last points and every point at least 0.002 from the last kept one
/// (in axis units, both axes spanning [0, 1]).
fn thin(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut kept: Vec<(f64, f64)> = Vec::new();
    for (i, &p) in points.iter().enumerate() {
        let far = kept
            .last()
            .is_none_or(|k| (p.0 - k.0).abs().max((p.1 - k.1).abs()) >= 0.002);
        if far || i + 1 == points.len() {
            kept.push(p);
        }
    }
    kept
}

fn unit_chart<'a, 'b>(
    area: &'a DrawingArea<SVGBackend<'b>, Shift>,
    x_desc: &str,
    y_desc: &str,
) -> Result<
    ChartContext<
        'a,
        SVGBackend<'b>,
        Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
    >,
    DrawingAreaErrorKind<std::io::Error>,
> {
    let mut chart = ChartBuilder::on(area)
        .margin(14)
        .x_label_area_size(42)
        .y_label_area_size(52)
        .build_cartesian_2d(0f64..1f64, 0f64..1.02f64)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .light_line_style(LIGHT_GRID)
        .x_labels(6)
        .y_labels(6)
        .draw()?;
    Ok(chart)
}

fn pr_chart(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    pr: &[(f64, f64)],
    base_rate: f64,
) -> DrawResult {
    let mut chart = unit_chart(area, "recall", "precision")?;
    chart.draw_series(DashedLineSeries::new(
        [(0.0, base_rate), (1.0, base_rate)],
        6,
        4,
        REFERENCE.stroke_width(1),
    ))?;
    chart.draw_series(LineSeries::new(pr.iter().copied(), CURVE.stroke_width(3)))?;
    Ok(())
}

fn roc_chart(area: &DrawingArea<SVGBackend<'_>, Shift>, roc: &[(f64, f64)]) -> DrawResult {
    let mut chart = unit_chart(area, "false positive rate", "true positive rate (recall)")?;
    chart.draw_series(DashedLineSeries::new(
        [(0.0, 0.0), (1.0, 1.0)],
        6,
        4,
        REFERENCE.stroke_width(1),
    ))?;
    chart.draw_series(LineSeries::new(roc.iter().copied(), CURVE.stroke_width(3)))?;
    Ok(())
}

fn calibration_chart(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    bins: &[CalibrationBin],
) -> DrawResult {
    let mut chart = unit_chart(area, "mean predicted probability", "observed fraud rate")?;
    chart.draw_series(DashedLineSeries::new(
        [(0.0, 0.0), (1.0, 1.0)],
        6,
        4,
        REFERENCE.stroke_width(1),
    ))?;
    let points: Vec<(f64, f64)> = bins.iter().map(|b| (b.mean_score, b.fraud_rate)).collect();
    chart.draw_series(LineSeries::new(
        points.iter().copied(),
        CURVE.stroke_width(2),
    ))?;
    chart.draw_series(points.iter().map(|&p| Circle::new(p, 5, CURVE.filled())))?;
    Ok(())
}

/// Per score bin: (share of genuine rows, share of fraud rows) falling in it.
fn score_histogram(scores: &[f64], labels: &[bool], lo: f64, hi: f64) -> Vec<(f64, f64)> {
    let mut counts = vec![(0u64, 0u64); SCORE_BINS];
    for (&s, &l) in scores.iter().zip(labels) {
        let b = (((s - lo) / (hi - lo) * SCORE_BINS as f64) as usize).min(SCORE_BINS - 1);
        if l {
            counts[b].1 += 1;
        } else {
            counts[b].0 += 1;
        }
    }
    let genuine = counts.iter().map(|c| c.0).sum::<u64>().max(1) as f64;
    let fraud = counts.iter().map(|c| c.1).sum::<u64>().max(1) as f64;
    counts
        .iter()
        .map(|&(g, f)| (g as f64 / genuine, f as f64 / fraud))
        .collect()
}

/// Bars below this share are not drawn (the log axis starts here).
const MIN_SHARE: f64 = 1e-4;

fn histogram_chart(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    bins: &[(f64, f64)],
    lo: f64,
    hi: f64,
) -> DrawResult {
    let mut chart = ChartBuilder::on(area)
        .margin(14)
        .x_label_area_size(42)
        .y_label_area_size(60)
        .build_cartesian_2d(lo..hi, (MIN_SHARE..1.0f64).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("score")
        .y_desc("share of the class")
        .light_line_style(LIGHT_GRID)
        .x_labels(6)
        .y_label_formatter(&|v| format!("{v:.0e}"))
        .draw()?;
    let width = (hi - lo) / bins.len() as f64;
    // Side by side in each bin: genuine on the left half, fraud on the right.
    for (i, &(g, f)) in bins.iter().enumerate() {
        let x0 = lo + i as f64 * width;
        let mid = x0 + width / 2.0;
        for (share, from, to, colour) in [(g, x0, mid, GENUINE), (f, mid, x0 + width, FRAUD)] {
            if share >= MIN_SHARE {
                chart.draw_series(std::iter::once(Rectangle::new(
                    [(from, MIN_SHARE), (to, share)],
                    colour.filled(),
                )))?;
            }
        }
    }
    chart
        .draw_series(std::iter::empty::<Rectangle<(f64, f64)>>())?
        .label("genuine")
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], GENUINE.filled()));
    chart
        .draw_series(std::iter::empty::<Rectangle<(f64, f64)>>())?
        .label("fraud")
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], FRAUD.filled()));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperMiddle)
        .background_style(WHITE.mix(0.9))
        .border_style(REFERENCE)
        .draw()?;
    Ok(())
}

fn day_label(day: i64) -> String {
    // Day indices are of Beijing days; the UTC date of `day * 24 h` is that local date.
    let date = crate::events::format_rfc3339_ms(day * 86_400_000);
    date.get(5..10).unwrap_or(&date).to_owned()
}

fn per_day_chart(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    per_day: &[(i64, f64)],
    best: &[(i64, f64)],
) -> DrawResult {
    let first = per_day.first().map_or(0, |d| d.0) as f64;
    let last = per_day.last().map_or(0, |d| d.0) as f64;
    let mut chart = ChartBuilder::on(area)
        .margin(14)
        .x_label_area_size(42)
        .y_label_area_size(52)
        .build_cartesian_2d((first - 0.5)..(last + 0.5), 0f64..1.02f64)?;
    let label = |d: &f64| day_label(d.round() as i64);
    chart
        .configure_mesh()
        .x_desc("day")
        .y_desc("precision")
        .light_line_style(LIGHT_GRID)
        .x_labels(8)
        .x_label_formatter(&label)
        .draw()?;
    let as_xy = |v: &[(i64, f64)]| v.iter().map(|&(d, p)| (d as f64, p)).collect::<Vec<_>>();
    chart.draw_series(DashedLineSeries::new(
        as_xy(best),
        6,
        4,
        REFERENCE.stroke_width(2),
    ))?;
    let points = as_xy(per_day);
    chart.draw_series(LineSeries::new(
        points.iter().copied(),
        CURVE.stroke_width(2),
    ))?;
    chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, CURVE.filled())))?;
    Ok(())
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn figure(id: &str, title: &str, caption: &str, svg: String) -> String {
    format!(
        "<figure id=\"{id}\"><h2>{}</h2>{svg}<figcaption>{}</figcaption></figure>\n",
        escape(title),
        escape(caption)
    )
}

fn figure_note(id: &str, title: &str, note: &str) -> String {
    format!(
        "<figure id=\"{id}\"><h2>{}</h2><p class=\"note\">{}</p></figure>\n",
        escape(title),
        escape(note)
    )
}

const STYLE: &str = "body{font-family:sans-serif;margin:24px;color:#222;max-width:1240px}\
h1{font-size:22px}h2{font-size:16px;margin:0 0 6px}\
table{border-collapse:collapse;margin:12px 0}td,th{border:1px solid #ccc;padding:4px 10px;\
text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}\
.charts{display:flex;flex-wrap:wrap;gap:16px;margin-bottom:20px}figure{margin:0;width:560px}\
figcaption,.note{font-size:13px;color:#444}.source{color:#555;font-size:14px}";

fn page(
    input: &ReportInput<'_>,
    m: &Metrics,
    figures: &str,
    calibration: &[CalibrationBin],
) -> String {
    let period = format!(
        "{} to {}",
        crate::events::format_rfc3339_ms(input.from_ms),
        crate::events::format_rfc3339_ms(input.to_ms)
    );
    let mut bins = String::new();
    for b in calibration {
        bins += &format!(
            "<tr><td>{:.1}–{:.1}</td><td>{}</td><td>{}</td><td>{:.4}</td><td>{:.4}</td></tr>",
            b.from, b.to, b.rows, b.positives, b.mean_score, b.fraud_rate
        );
    }
    let calibration_table = if bins.is_empty() {
        String::new()
    } else {
        format!(
            "<h2>Calibration bins</h2><table id=\"calibration-table\"><tr><th>predicted</th>\
             <th>payments</th><th>fraud</th><th>mean prediction</th><th>fraud rate</th></tr>\
             {bins}</table>"
        )
    };
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>fengkong eval: {source}</title><style>{STYLE}</style></head><body>\n\
         <h1>Model evaluation</h1>\n<p class=\"source\">Scores from <code>{source}</code>, \
         labeled payments from {period} (UTC, end excluded).</p>\n\
         <table id=\"metrics\"><tr><th>payments</th><th>fraud</th><th>fraud rate</th>\
         <th>ROC AUC</th><th>average precision</th><th>precision at top {ALERTS_PER_DAY} a day</th></tr>\
         <tr><td>{}</td><td>{}</td><td>{:.2}%</td><td>{:.4}</td><td>{:.4}</td><td>{:.4}</td></tr></table>\n\
         <section class=\"charts\">\n{figures}</section>\n{calibration_table}\n\
         <p class=\"source\">Made by fengkong {} (<code>fengkong eval --report</code>).</p>\n\
         </body></html>\n",
        m.rows,
        m.positives,
        100.0 * m.positives as f64 / m.rows.max(1) as f64,
        m.roc_auc,
        m.average_precision,
        m.precision_at_100_per_day,
        env!("CARGO_PKG_VERSION"),
        source = escape(input.source),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows() -> Vec<(i64, f64, bool)> {
        let day = 86_400_000;
        (0..3_000)
            .map(|i: i64| {
                let fraud = i % 37 == 0;
                let noise = ((i * 7919) % 1000) as f64 / 1000.0;
                let score = if fraud {
                    0.4 + 0.6 * noise
                } else {
                    0.5 * noise * noise
                };
                (1_772_294_400_000 + (i % 5) * day + i, score, fraud)
            })
            .collect()
    }

    #[test]
    fn the_report_holds_every_chart_and_the_printed_numbers() {
        let rows = rows();
        let input = ReportInput {
            source: "scores <test>.csv",
            from_ms: 1_772_294_400_000,
            to_ms: 1_772_294_400_000 + 5 * 86_400_000,
            rows: &rows,
        };
        let html = render(&input).unwrap();
        let m = training::metrics(&rows).unwrap();
        for id in [
            "pr-curve",
            "roc-curve",
            "calibration",
            "score-distribution",
            "precision-per-day",
        ] {
            let at = html.find(&format!("<figure id=\"{id}\">")).unwrap();
            let end = at + html[at..].find("</figure>").unwrap();
            assert!(html[at..end].contains("<svg"), "{id} has no chart");
        }
        assert!(html.contains(&format!("<td>{:.4}</td>", m.average_precision)));
        assert!(
            html.contains("scores &lt;test&gt;.csv"),
            "the source is escaped"
        );
        assert!(!html.contains("<script"), "the report runs no code");
        assert!(!html.contains("src=\""), "the report loads nothing");
        assert!(html.contains("id=\"calibration-table\""));
    }

    #[test]
    fn scores_that_are_not_probabilities_get_no_calibration() {
        let rows: Vec<(i64, f64, bool)> = rows()
            .into_iter()
            .map(|(t, s, l)| (t, 10.0 * s - 2.0, l))
            .collect();
        let html = render(&ReportInput {
            source: "x",
            from_ms: 0,
            to_ms: 1,
            rows: &rows,
        })
        .unwrap();
        let at = html.find("<figure id=\"calibration\">").unwrap();
        let end = at + html[at..].find("</figure>").unwrap();
        let figure = &html[at..end];
        assert!(figure.contains("not all probabilities"), "{figure}");
        assert!(!figure.contains("<svg"), "{figure}");
        assert!(!html.contains("calibration-table"));
    }

    #[test]
    fn thinning_keeps_the_ends_and_the_shape() {
        let points: Vec<(f64, f64)> = (0..=10_000).map(|i| (i as f64 / 10_000.0, 0.3)).collect();
        let kept = thin(&points);
        assert_eq!(kept.first(), points.first());
        assert_eq!(kept.last(), points.last());
        assert!(kept.len() <= 502, "{}", kept.len());
        // A jump is never thinned away.
        let step = [(0.0, 0.0), (0.0001, 0.0), (0.0001, 1.0), (1.0, 1.0)];
        assert_eq!(thin(&step).len(), 3);
    }

    #[test]
    fn empty_or_one_class_is_an_error_not_a_blank_report() {
        let only_genuine = [(0, 0.1, false), (1, 0.2, false)];
        let input = ReportInput {
            source: "x",
            from_ms: 0,
            to_ms: 2,
            rows: &only_genuine,
        };
        assert!(matches!(render(&input), Err(ReportError::Metrics(_))));
    }
}
