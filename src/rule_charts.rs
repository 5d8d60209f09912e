//! The charts of the page's Rules view, drawn on the server as SVG with `plotters` (see
//! `eval_report.rs` for why that crate): hits per hour of the busiest rules, the
//! distribution of risk scores, and the share of REVIEW and BLOCK decisions per hour. All
//! three come from one `RuleStatsResponse`, the numbers the view shows beside them, so the
//! picture and the table cannot disagree. Axis words are in the reader's language.

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::eval_report::{svg_chart, DrawResult};
use crate::proto::RuleStatsResponse;
use crate::units::Lang;

/// The busiest rules drawn in the hits chart; the table lists them all.
pub const MAX_RULES_DRAWN: usize = 6;
const SIZE: (u32, u32) = (640, 320);
const LIGHT_GRID: RGBColor = RGBColor(0xf2, 0xf2, 0xf2);
/// Series colours, in order; `REVIEW` and `BLOCK` are the share chart's.
pub const SERIES: [RGBColor; MAX_RULES_DRAWN] = [
    RGBColor(0x1f, 0x5f, 0xbf),
    RGBColor(0xc0, 0x39, 0x2b),
    RGBColor(0x2e, 0x8b, 0x57),
    RGBColor(0xd4, 0x8a, 0x00),
    RGBColor(0x7b, 0x3f, 0xa0),
    RGBColor(0x20, 0x9c, 0xb0),
];
pub const REVIEW: RGBColor = RGBColor(0xd4, 0x8a, 0x00);
pub const BLOCK: RGBColor = RGBColor(0xc0, 0x39, 0x2b);
pub const BARS: RGBColor = RGBColor(0x1f, 0x5f, 0xbf);

#[derive(Debug, thiserror::Error)]
#[error("cannot draw the {chart} chart: {reason}")]
pub struct ChartError {
    chart: &'static str,
    reason: String,
}

/// The three charts, as SVG text.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Charts {
    pub hits_per_hour: String,
    pub risk_scores: String,
    pub stopped_share: String,
}

fn draw(
    chart: &'static str,
    f: impl FnOnce(&DrawingArea<SVGBackend<'_>, Shift>) -> DrawResult,
) -> Result<String, ChartError> {
    svg_chart(SIZE, f).map_err(|reason| ChartError { chart, reason })
}

fn words(lang: Lang) -> [&'static str; 5] {
    match lang {
        Lang::En => [
            "hours from the start of the period",
            "hits",
            "risk score",
            "decisions",
            "share of decisions",
        ],
        Lang::Zh => [
            "距时段开始的小时数",
            "命中次数",
            "风险分",
            "决定数",
            "占决定的比例",
        ],
    }
}

pub fn charts(stats: &RuleStatsResponse, lang: Lang) -> Result<Charts, ChartError> {
    let [hours_desc, hits_desc, score_desc, decisions_desc, share_desc] = words(lang);
    let hours = stats.hours.len().max(1);

    let busiest: Vec<_> = stats
        .rules
        .iter()
        .filter(|r| r.hits > 0)
        .take(MAX_RULES_DRAWN)
        .collect();
    let top = busiest
        .iter()
        .flat_map(|r| r.hourly_hits.iter().copied())
        .max()
        .unwrap_or(0)
        .max(1);
    let hits_per_hour = draw("hits per hour", |area| {
        let mut chart = ChartBuilder::on(area)
            .margin(14)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..hours as f64, 0f64..top as f64 * 1.1)?;
        chart
            .configure_mesh()
            .x_desc(hours_desc)
            .y_desc(hits_desc)
            .light_line_style(LIGHT_GRID)
            .draw()?;
        for (rule, color) in busiest.iter().zip(SERIES) {
            let points: Vec<(f64, f64)> = rule
                .hourly_hits
                .iter()
                .enumerate()
                .map(|(h, &n)| (h as f64 + 0.5, n as f64))
                .collect();
            chart
                .draw_series(LineSeries::new(
                    points.iter().copied(),
                    color.stroke_width(2),
                ))?
                .label(rule.rule_id.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
                });
            chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
        }
        if !busiest.is_empty() {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(LIGHT_GRID)
                .draw()?;
        }
        Ok(())
    })?;

    let most = stats
        .risk_score_histogram
        .iter()
        .copied()
        .max()
        .unwrap_or(0)
        .max(1);
    let risk_scores = draw("risk score distribution", |area| {
        let mut chart = ChartBuilder::on(area)
            .margin(14)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..100f64, 0f64..most as f64 * 1.1)?;
        chart
            .configure_mesh()
            .x_desc(score_desc)
            .y_desc(decisions_desc)
            .light_line_style(LIGHT_GRID)
            .draw()?;
        chart.draw_series(
            stats
                .risk_score_histogram
                .iter()
                .enumerate()
                .filter(|(_, &n)| n > 0)
                .map(|(b, &n)| {
                    let x = b as f64 * 10.0;
                    Rectangle::new([(x + 0.5, 0.0), (x + 9.5, n as f64)], BARS.filled())
                }),
        )?;
        Ok(())
    })?;

    let share = |n: u64, of: u64| if of == 0 { 0.0 } else { n as f64 / of as f64 };
    let stopped_share = draw("review and block share", |area| {
        let mut chart = ChartBuilder::on(area)
            .margin(14)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..hours as f64, 0f64..1.02f64)?;
        chart
            .configure_mesh()
            .x_desc(hours_desc)
            .y_desc(share_desc)
            .light_line_style(LIGHT_GRID)
            .draw()?;
        for (name, color, pick) in [
            (
                "REVIEW",
                REVIEW,
                (|h: &crate::proto::TrafficHour| h.reviewed) as fn(&_) -> u64,
            ),
            ("BLOCK", BLOCK, |h: &crate::proto::TrafficHour| h.blocked),
        ] {
            let points: Vec<(f64, f64)> = stats
                .hours
                .iter()
                .enumerate()
                .filter(|(_, h)| h.decisions > 0)
                .map(|(i, h)| (i as f64 + 0.5, share(pick(h), h.decisions)))
                .collect();
            chart
                .draw_series(LineSeries::new(
                    points.iter().copied(),
                    color.stroke_width(2),
                ))?
                .label(name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
                });
            chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(LIGHT_GRID)
            .draw()?;
        Ok(())
    })?;

    Ok(Charts {
        hits_per_hour,
        risk_scores,
        stopped_share,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{RuleStat, TrafficHour};

    #[test]
    fn every_chart_draws_its_series_and_words() {
        let stats = RuleStatsResponse {
            rules: vec![RuleStat {
                rule_id: "blocked_card".into(),
                hits: 3,
                hourly_hits: vec![1, 2],
                ..Default::default()
            }],
            hours: vec![
                TrafficHour {
                    decisions: 4,
                    reviewed: 1,
                    blocked: 2,
                    ..Default::default()
                },
                TrafficHour::default(),
            ],
            risk_score_histogram: vec![3, 0, 0, 0, 0, 0, 0, 0, 1, 0],
            ..Default::default()
        };
        let en = charts(&stats, Lang::En).unwrap();
        assert!(en.hits_per_hour.contains("blocked_card"));
        assert!(en.hits_per_hour.contains("hits"));
        assert!(en.risk_scores.contains("<rect"));
        assert!(en.stopped_share.contains("REVIEW") && en.stopped_share.contains("BLOCK"));
        let zh = charts(&stats, Lang::Zh).unwrap();
        assert!(zh.risk_scores.contains("风险分"));
        // An empty period still draws its axes.
        assert!(charts(&RuleStatsResponse::default(), Lang::En).is_ok());
    }
}
