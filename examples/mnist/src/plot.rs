//! The seed's result as a picture: test accuracy per epoch of each run on one
//! axis, with the step where gradguard first flagged a run marked. SVG, drawn
//! with plotters' SVG backend: no system fonts are read (the viewer renders
//! the text).

use std::path::Path;

use gradguard::Check;
use plotters::prelude::*;

/// One run's curve.
#[derive(Debug, Clone)]
pub struct Curve<'a> {
    /// The run's name (`m1`, ...), shown in the legend.
    pub name: &'a str,
    /// What the run did, shown in the legend after the name.
    pub describe: &'a str,
    /// Test accuracy after each epoch, in [0, 1].
    pub accuracy: &'a [f64],
    /// The first step gradguard flagged, and the check.
    pub first_flagged: Option<(u64, Check)>,
}

/// Why the chart could not be written.
#[derive(Debug, thiserror::Error)]
#[error("could not write the chart {path}: {reason}")]
pub struct PlotError {
    path: String,
    reason: String,
}

const COLORS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
];

/// Writes the accuracy chart of `curves` to `path` (SVG). `steps_per_epoch`
/// places a flagged step on the epoch axis.
pub fn write_accuracy_svg(
    path: &Path,
    title: &str,
    curves: &[Curve<'_>],
    steps_per_epoch: usize,
) -> Result<(), PlotError> {
    let fail = |reason: String| PlotError {
        path: path.display().to_string(),
        reason,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
    }
    draw(path, title, curves, steps_per_epoch).map_err(|e| fail(e.to_string()))
}

fn draw(
    path: &Path,
    title: &str,
    curves: &[Curve<'_>],
    steps_per_epoch: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let epochs = curves.iter().map(|c| c.accuracy.len()).max().unwrap_or(0);
    let root = SVGBackend::new(path, (900, 540)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..epochs.max(1) as f64, 0f64..100f64)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc("test accuracy (%)")
        .x_labels(epochs.max(1) + 1)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_labels(11)
        .draw()?;

    for (i, curve) in curves.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        // Earlier curves are drawn wider, so identical runs (m1 and m3) both
        // stay visible, one inside the other.
        let width = 2 + 2 * (curves.len() - 1 - i) as u32;
        let points: Vec<(f64, f64)> = curve
            .accuracy
            .iter()
            .enumerate()
            .map(|(e, a)| ((e + 1) as f64, a * 100.0))
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(width)))?
            .label(format!("{}: {}", curve.name, curve.describe))
            .legend(move |(x, y)| {
                PathElement::new([(x, y), (x + 20, y)], color.stroke_width(width))
            });
        chart.draw_series(points.iter().map(|p| Circle::new(*p, 4, color.filled())))?;
        if let Some((step, check)) = curve.first_flagged {
            // Steps are counted from 1; step s ends at (s / steps) epochs.
            let x = step as f64 / steps_per_epoch.max(1) as f64;
            chart.draw_series(LineSeries::new(
                [(x, 0.0), (x, 100.0)],
                color.mix(0.6).stroke_width(1),
            ))?;
            chart.draw_series([Text::new(
                format!("{} flagged: {check} at step {step}", curve.name),
                (x, 8.0 + 6.0 * i as f64),
                ("sans-serif", 15).into_font().color(&color),
            )])?;
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::MiddleRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chart_names_every_run_and_marks_the_flagged_step() {
        let dir = std::env::temp_dir().join(format!("gradguard-plot-{}", std::process::id()));
        let path = dir.join("nested/acc.svg");
        let curves = [
            Curve {
                name: "m1",
                describe: "fresh gradients",
                accuracy: &[0.9, 0.95],
                first_flagged: None,
            },
            Curve {
                name: "m2",
                describe: "no zero_grad",
                accuracy: &[0.8, 0.1],
                first_flagged: Some((2, Check::Accumulated)),
            },
        ];
        write_accuracy_svg(&path, "seed", &curves, 67).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..80.min(svg.len())]);
        assert!(svg.contains("m1: fresh gradients"));
        assert!(svg.contains("m2: no zero_grad"));
        assert!(svg.contains("m2 flagged: accumulated at step 2"));
        assert!(!svg.contains("m1 flagged"));
    }

    #[test]
    fn an_unwritable_path_is_a_clear_error() {
        let err = write_accuracy_svg(Path::new("/proc/gradguard/acc.svg"), "t", &[], 1)
            .unwrap_err()
            .to_string();
        assert!(err.contains("/proc/gradguard/acc.svg"), "{err}");
    }
}
