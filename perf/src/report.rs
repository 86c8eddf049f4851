//! The report folder `cas bench` writes: report.md (tables in the whitepaper's form, every figure beside its limit
//! or peer), report.json (the same data), and plots of TPS and latency against node count (SVG and PNG) with the
//! whitepaper's rows, our measured rows and our simulated rows drawn and labelled apart. It formats; it measures
//! nothing.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;
use serde::Serialize;

use crate::pipeline::{Durable, UtxoOnly};
use crate::suite::MicroSummary;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot draw {path}: {reason}")]
    Plot { path: PathBuf, reason: String },
}

#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub cpu_model: String,
    pub quick: bool,
    /// Seconds since the Unix epoch when the report was written.
    pub written_unix_s: u64,
    pub wall_s: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct PipelineFigures {
    pub accounts: u32,
    pub blocks: u64,
    pub utxo_only: Vec<UtxoOnly>,
    pub durable: Durable,
    /// Batched verifications per second of the same cores, measured right before and after the durable run.
    pub verify_limit_sig_s: f64,
}

/// One `cas local` run of the sweep.
#[derive(Clone, Debug, Serialize)]
pub struct MeasuredRow {
    pub nodes: usize,
    pub offered_tps: f64,
    pub tps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// cores x batched verifications per core per second / verifications per tx across the cluster.
    pub cpu_limit_tps: f64,
    pub rejected: usize,
    pub commitments_equal: bool,
}

/// One projection of the scale model.
#[derive(Clone, Debug, Serialize)]
pub struct SimulatedRow {
    pub nodes: usize,
    /// Which calibration of the model gave the row.
    pub model: String,
    pub committee: usize,
    pub tps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub bottleneck: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct WhitepaperRow {
    pub nodes: usize,
    pub tps: f64,
    pub latency_s: f64,
}

/// The scale model run at a measured row's configuration (same nodes, offered rate, cores), beside the measurement.
#[derive(Clone, Debug, Serialize)]
pub struct Validation {
    pub nodes: usize,
    /// Which calibration of the model was run.
    pub model: String,
    pub measured_tps: f64,
    pub simulated_tps: f64,
    pub measured_p50_ms: f64,
    pub simulated_p50_ms: f64,
}

impl Validation {
    /// Relative error of the simulated TPS against the measured.
    pub fn tps_error(&self) -> f64 {
        (self.simulated_tps - self.measured_tps) / self.measured_tps
    }

    pub fn p50_error(&self) -> f64 {
        (self.simulated_p50_ms - self.measured_p50_ms) / self.measured_p50_ms
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub machine: Machine,
    pub micro: MicroSummary,
    pub pipeline: PipelineFigures,
    pub measured: Vec<MeasuredRow>,
    pub simulated: Vec<SimulatedRow>,
    pub validation: Vec<Validation>,
    pub whitepaper: Vec<WhitepaperRow>,
    /// The scale model's parameters as used (calibrated and assumed), one line each.
    pub model_parameters: Vec<String>,
}

/// The files one report writes, in `dir`.
pub const REPORT_FILES: [&str; 6] = [
    "report.md",
    "report.json",
    "tps.svg",
    "tps.png",
    "latency.svg",
    "latency.png",
];

impl Report {
    /// Writes every file of [`REPORT_FILES`] into `dir` (created if missing); returns their paths.
    pub fn write(&self, dir: &Path) -> Result<Vec<PathBuf>, ReportError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ReportError::Io { path, source }
        };
        fs::create_dir_all(dir).map_err(io(dir))?;
        register_font();
        let md = dir.join("report.md");
        fs::write(&md, self.markdown()).map_err(io(&md))?;
        let json = dir.join("report.json");
        let bytes = serde_json::to_vec_pretty(self).expect("the report serialises");
        fs::write(&json, bytes).map_err(io(&json))?;
        for chart in [Chart::Tps, Chart::Latency] {
            let svg = dir.join(format!("{}.svg", chart.file_stem()));
            self.draw(chart, SVGBackend::new(&svg, PLOT_SIZE).into_drawing_area())
                .map_err(|reason| ReportError::Plot {
                    path: svg.clone(),
                    reason,
                })?;
            let png = dir.join(format!("{}.png", chart.file_stem()));
            self.draw(
                chart,
                BitMapBackend::new(&png, PLOT_SIZE).into_drawing_area(),
            )
            .map_err(|reason| ReportError::Plot {
                path: png.clone(),
                reason,
            })?;
        }
        Ok(REPORT_FILES.iter().map(|name| dir.join(name)).collect())
    }

    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let m = &self.machine;
        let _ = writeln!(md, "# CAS benchmark report\n");
        let _ = writeln!(
            md,
            "{} cores ({}), {} run, {:.0} s. Every figure stands beside its limit or a peer measured in the same run.\n",
            m.cores,
            m.cpu_model,
            if m.quick { "quick" } else { "full" },
            m.wall_s
        );

        let _ = writeln!(md, "## Micro summary (one core)\n");
        let _ = writeln!(
            md,
            "| figure | value | peer or limit | peer value | ratio |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|");
        for f in &self.micro.figures {
            let _ = writeln!(
                md,
                "| {} | {} {} | {} | {} {} | {:.2} |",
                f.name,
                grouped(f.value),
                f.unit,
                f.peer_name,
                grouped(f.peer_value),
                f.unit,
                f.ratio()
            );
        }

        let p = &self.pipeline;
        let _ = writeln!(md, "\n## Single-node pipeline\n");
        let _ = writeln!(
            md,
            "{} transfers per block, {} dependent blocks; durable = untrusted decode, batched signatures on the \
             shards, UTXO rules, commit, fdatasync per block.\n",
            grouped(f64::from(p.accounts)),
            p.blocks
        );
        let _ = writeln!(md, "| stage | shards | TPS | limit | TPS / limit |");
        let _ = writeln!(md, "|---|---|---|---|---|");
        let _ = writeln!(
            md,
            "| durable pipeline | {} | {} | {} batched verifications/s, same cores | {:.2} |",
            p.durable.shards,
            grouped(p.durable.tps),
            grouped(p.verify_limit_sig_s),
            p.durable.tps / p.verify_limit_sig_s
        );
        for u in &p.utxo_only {
            let _ = writeln!(
                md,
                "| UTXO check + commit, signatures attested | {} | {} (wall), {} per CPU-second | - | - |",
                u.shards,
                grouped(u.tx_per_s_wall),
                grouped(u.tx_per_cpu_s)
            );
        }

        let _ = writeln!(md, "\n## Nodes against TPS and latency\n");
        let _ = writeln!(
            md,
            "Measured rows are real `cas local` clusters on this machine (all nodes share its {} cores). Simulated \
             rows are the scale model (consensus/src/sim/scale.rs) calibrated from the figures above. Whitepaper \
             rows are the source's own table (its hardware, not ours).\n",
            m.cores
        );
        let _ = writeln!(
            md,
            "| source | nodes | TPS | p50 latency s | p99 latency s | note |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|");
        let mut rows: Vec<(usize, u8, String)> = Vec::new();
        for w in &self.whitepaper {
            rows.push((
                w.nodes,
                0,
                format!(
                    "| whitepaper | {} | {} | {:.2} (mean) | - | their cluster |",
                    w.nodes,
                    grouped(w.tps),
                    w.latency_s
                ),
            ));
        }
        for r in &self.measured {
            rows.push((
                r.nodes,
                1,
                format!(
                    "| measured | {} | {} | {:.3} | {:.3} | offered {}; {:.2} of the CPU limit {}; same commitment: {} |",
                    r.nodes,
                    grouped(r.tps),
                    r.p50_ms / 1e3,
                    r.p99_ms / 1e3,
                    grouped(r.offered_tps),
                    r.tps / r.cpu_limit_tps,
                    grouped(r.cpu_limit_tps),
                    if r.commitments_equal { "yes" } else { "NO" }
                ),
            ));
        }
        for s in &self.simulated {
            rows.push((
                s.nodes,
                2,
                format!(
                    "| simulated | {} | {} | {:.3} | {:.3} | {}; committee {}; bound by {} |",
                    s.nodes,
                    grouped(s.tps),
                    s.p50_ms / 1e3,
                    s.p99_ms / 1e3,
                    s.model,
                    s.committee,
                    s.bottleneck
                ),
            ));
        }
        rows.sort_by_key(|(nodes, source, _)| (*nodes, *source));
        for (_, _, row) in rows {
            let _ = writeln!(md, "{row}");
        }

        let _ = writeln!(md, "\n## Scale model against the measured sweep\n");
        let _ = writeln!(
            md,
            "The model run at each measured configuration (same nodes, offered rate, cores shared by all nodes).\n"
        );
        let _ = writeln!(md, "| model | nodes | measured TPS | simulated TPS | TPS error | measured p50 ms | simulated p50 ms | p50 error |");
        let _ = writeln!(md, "|---|---|---|---|---|---|---|---|");
        for v in &self.validation {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {:+.0}% | {:.0} | {} | {} |",
                v.model,
                v.nodes,
                grouped(v.measured_tps),
                grouped(v.simulated_tps),
                v.tps_error() * 100.0,
                v.measured_p50_ms,
                finite_or(v.simulated_p50_ms, |ms| format!("{ms:.0}")),
                finite_or(v.p50_error(), |e| format!("{:+.0}%", e * 100.0)),
            );
        }
        let _ = writeln!(md, "\nModel parameters:\n");
        for line in &self.model_parameters {
            let _ = writeln!(md, "- {line}");
        }
        let _ = writeln!(md, "\nPlots: tps.svg / tps.png, latency.svg / latency.png.");
        md
    }

    fn draw<DB: DrawingBackend>(
        &self,
        chart: Chart,
        root: DrawingArea<DB, Shift>,
    ) -> Result<(), String> {
        let series = self.series(chart);
        let values: Vec<f64> = series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .collect();
        let (low, high) = values
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
        let (low, high) = if values.is_empty() {
            (1.0, 10.0)
        } else {
            (low / 2.0, high * 2.0)
        };
        let text = |e: &dyn std::fmt::Debug| format!("{e:?}");
        root.fill(&WHITE).map_err(|e| text(&e))?;
        let mut context = ChartBuilder::on(&root)
            .caption(chart.title(), ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(
                (2f64..1_200f64).log_scale(),
                (low.max(1e-3)..high).log_scale(),
            )
            .map_err(|e| text(&e))?;
        context
            .configure_mesh()
            .x_desc("network nodes")
            .y_desc(chart.y_label())
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| match chart {
                Chart::Tps => grouped(*y),
                Chart::Latency => format!("{y:.2}"),
            })
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(|e| text(&e))?;
        for s in series {
            let color = s.color;
            let points = s.points.clone();
            context
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
                .map_err(|e| text(&e))?
                .label(s.label.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
            context
                .draw_series(
                    points
                        .into_iter()
                        .map(|p| Circle::new(p, 4, color.filled())),
                )
                .map_err(|e| text(&e))?;
        }
        context
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(|e| text(&e))?;
        root.present().map_err(|e| text(&e))
    }

    fn series(&self, chart: Chart) -> Vec<Series> {
        let pick = |tps: f64, latency_s: f64| match chart {
            Chart::Tps => tps,
            Chart::Latency => latency_s,
        };
        let mut series = vec![
            Series {
                label: "whitepaper (their cluster)".into(),
                color: RGBColor(120, 120, 120),
                points: self
                    .whitepaper
                    .iter()
                    .map(|w| (w.nodes as f64, pick(w.tps, w.latency_s)))
                    .collect(),
            },
            Series {
                label: "measured here (cas local)".into(),
                color: RGBColor(200, 30, 30),
                points: self
                    .measured
                    .iter()
                    .map(|r| (r.nodes as f64, pick(r.tps, r.p50_ms / 1e3)))
                    .collect(),
            },
        ];
        // One series per calibration of the model, in the order the rows came.
        let colors = [RGBColor(30, 90, 200), RGBColor(20, 150, 90)];
        let mut models: Vec<&str> = Vec::new();
        for row in &self.simulated {
            if !models.contains(&row.model.as_str()) {
                models.push(&row.model);
            }
        }
        for (index, model) in models.into_iter().enumerate() {
            series.push(Series {
                label: format!("simulated: {model}"),
                color: colors[index % colors.len()],
                points: self
                    .simulated
                    .iter()
                    .filter(|s| s.model == model)
                    .map(|s| (s.nodes as f64, pick(s.tps, s.p50_ms / 1e3)))
                    .collect(),
            });
        }
        series
    }
}

const PLOT_SIZE: (u32, u32) = (900, 560);

struct Series {
    label: String,
    color: RGBColor,
    points: Vec<(f64, f64)>,
}

#[derive(Clone, Copy)]
enum Chart {
    Tps,
    Latency,
}

impl Chart {
    fn file_stem(self) -> &'static str {
        match self {
            Chart::Tps => "tps",
            Chart::Latency => "latency",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Chart::Tps => "Committed TPS against network nodes",
            Chart::Latency => "Submit-to-final latency against network nodes",
        }
    }

    fn y_label(self) -> &'static str {
        match self {
            Chart::Tps => "TPS (log)",
            Chart::Latency => "p50 latency, s (whitepaper: mean), log",
        }
    }
}

/// Text layout (SVG) and rendering (PNG) need a font: the embedded Ubuntu Light, so no system fonts are needed.
fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            epaint_default_fonts::UBUNTU_LIGHT,
        )
        .unwrap_or_else(|_| panic!("the embedded font parses"));
    });
}

/// A figure, or "not final" where the model left most transactions unfinished (an infinite latency).
fn finite_or(value: f64, show: impl Fn(f64) -> String) -> String {
    if value.is_finite() {
        show(value)
    } else {
        "not final".into()
    }
}

/// 12345.6 -> "12,346".
pub fn grouped(value: f64) -> String {
    let digits = format!("{:.0}", value.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if value < -0.5 {
        out.insert(0, '-');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_thousands() {
        assert_eq!(grouped(0.4), "0");
        assert_eq!(grouped(999.0), "999");
        assert_eq!(grouped(1_234.0), "1,234");
        assert_eq!(grouped(138_363.0), "138,363");
        assert_eq!(grouped(-1_234_567.0), "-1,234,567");
    }
}
