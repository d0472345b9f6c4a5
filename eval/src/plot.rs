//! PNG charts (plotters): line charts, overlaid histograms, scatter plots, and image galleries
//! with captions. Text needs a TrueType font: the first of a few common system
//! paths, or `MIRAGE_PLOT_FONT`; without one the chart is drawn without labels and a warning
//! says so, rather than failing the run that wanted the plot.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{anyhow, Result};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

/// One named curve.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// (x, y) points in order.
    pub points: Vec<(f64, f64)>,
}

const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

/// A font chosen by the front end (`MIRAGE_PLOT_FONT`), tried before the system's.
static FONT_CHOICE: OnceLock<std::path::PathBuf> = OnceLock::new();

/// Makes plots try the TrueType font at `path` first (front ends pass `MIRAGE_PLOT_FONT`).
/// Only the first call counts, and only before the first plot.
pub fn prefer_font(path: impl Into<std::path::PathBuf>) {
    let _ = FONT_CHOICE.set(path.into());
}

/// Registers a font once; false when none was found.
fn font_available() -> bool {
    static FOUND: OnceLock<bool> = OnceLock::new();
    *FOUND.get_or_init(|| {
        let candidates = FONT_CHOICE
            .get()
            .map(|p| p.display().to_string())
            .into_iter()
            .chain(FONT_PATHS.iter().map(|s| (*s).to_owned()));
        for path in candidates {
            if let Ok(bytes) = std::fs::read(&path) {
                let leaked: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, leaked).is_ok() {
                    return true;
                }
            }
        }
        eprintln!(
            "warning: no TrueType font found (install fonts-dejavu-core or set MIRAGE_PLOT_FONT); \
             plots are drawn without text"
        );
        false
    })
}

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// The drawing error of the chart at `path`.
fn drawing_error(path: &Path, e: &dyn std::fmt::Display) -> anyhow::Error {
    anyhow!("drawing {}: {e}", path.display())
}

type Chart<'a, 'b> =
    ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// Titles, size and axis ranges of a chart.
struct Frame<'t> {
    title: &'t str,
    x_label: &'t str,
    y_label: &'t str,
    size: (u32, u32),
    x: std::ops::Range<f64>,
    y: std::ops::Range<f64>,
}

/// Draws a white chart with axes and titles into a PNG at `path`, lets `series` draw into it
/// (told whether text can be drawn), then the legend.
fn chart(
    path: &Path,
    frame: Frame<'_>,
    series: impl FnOnce(&mut Chart<'_, '_>, bool) -> Result<()>,
) -> Result<()> {
    let text = font_available();
    let err = |e: &dyn std::fmt::Display| drawing_error(path, e);
    let root = BitMapBackend::new(path, frame.size).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut builder = ChartBuilder::on(&root);
    builder
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(60);
    if text {
        builder.caption(frame.title, ("sans-serif", 22));
    }
    let mut chart = builder
        .build_cartesian_2d(frame.x, frame.y)
        .map_err(|e| err(&e))?;
    let mut mesh = chart.configure_mesh();
    if text {
        mesh.x_desc(frame.x_label).y_desc(frame.y_label);
    } else {
        mesh.disable_x_axis().disable_y_axis();
    }
    mesh.draw().map_err(|e| err(&e))?;
    series(&mut chart, text)?;
    if text {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

/// Axis range of the finite values among `xs`, widened when degenerate.
fn span(xs: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::MAX, f64::MIN);
    for x in xs.filter(|x| x.is_finite()) {
        lo = lo.min(x);
        hi = hi.max(x);
    }
    if lo > hi {
        return (0.0, 1.0);
    }
    if hi - lo < 1e-9 {
        return (lo - 0.5, hi + 0.5);
    }
    (lo, hi)
}

/// Draws `series` as lines into a PNG at `path`.
pub fn line_chart(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
) -> Result<()> {
    let finite = || {
        series
            .iter()
            .flat_map(|s| s.points.iter().copied())
            .filter(|(x, y)| x.is_finite() && y.is_finite())
    };
    let (x0, x1) = span(finite().map(|p| p.0));
    let (y0, y1) = span(finite().map(|p| p.1));
    let pad = ((y1 - y0) * 0.05).max(1e-6);
    let frame = Frame {
        title,
        x_label,
        y_label,
        size: (900, 540),
        x: x0..x1,
        y: (y0 - pad)..(y1 + pad),
    };
    chart(path, frame, |chart, text| {
        for (i, s) in series.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let drawn = chart
                .draw_series(LineSeries::new(
                    s.points
                        .iter()
                        .copied()
                        .filter(|(x, y)| x.is_finite() && y.is_finite()),
                    color.stroke_width(2),
                ))
                .map_err(|e| drawing_error(path, &e))?;
            if text {
                drawn.label(s.name.clone()).legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 18, y)], color.stroke_width(2))
                });
            }
        }
        Ok(())
    })
}

/// Overlaid histograms of several named samples on shared `bins` equal-width bins, each
/// normalised to a density (so groups of different sizes compare).
pub fn histogram(
    path: &Path,
    title: &str,
    x_label: &str,
    groups: &[(String, Vec<f64>)],
    bins: usize,
) -> Result<()> {
    let bins = bins.max(1);
    let (x0, x1) = span(groups.iter().flat_map(|(_, v)| v.iter().copied()));
    let width = (x1 - x0) / bins as f64;
    let densities: Vec<Vec<f64>> = groups
        .iter()
        .map(|(_, v)| {
            let mut counts = vec![0.0; bins];
            let finite: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
            for x in &finite {
                let b = (((x - x0) / width) as usize).min(bins - 1);
                counts[b] += 1.0;
            }
            let n = finite.len().max(1) as f64;
            counts.into_iter().map(|c| c / (n * width)).collect()
        })
        .collect();
    let y1 = densities
        .iter()
        .flatten()
        .copied()
        .fold(0.0f64, f64::max)
        .max(1e-9)
        * 1.05;
    let frame = Frame {
        title,
        x_label,
        y_label: "density",
        size: (900, 540),
        x: x0..x1,
        y: 0.0..y1,
    };
    chart(path, frame, |chart, text| {
        for (i, ((name, _), density)) in groups.iter().zip(&densities).enumerate() {
            let color = COLORS[i % COLORS.len()];
            let drawn = chart
                .draw_series(density.iter().enumerate().map(|(b, &d)| {
                    let left = x0 + b as f64 * width;
                    Rectangle::new([(left, 0.0), (left + width, d)], color.mix(0.4).filled())
                }))
                .map_err(|e| drawing_error(path, &e))?;
            if text {
                drawn.label(name.clone()).legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 18, y + 5)], color.mix(0.4).filled())
                });
            }
        }
        Ok(())
    })
}

/// A scatter plot of several named point groups, with the diagonal y = x for reference.
pub fn scatter(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    groups: &[(String, Vec<(f64, f64)>)],
) -> Result<()> {
    let (lo, hi) = span(
        groups
            .iter()
            .flat_map(|(_, v)| v.iter().flat_map(|&(x, y)| [x, y])),
    );
    let frame = Frame {
        title,
        x_label,
        y_label,
        size: (720, 720),
        x: lo..hi,
        y: lo..hi,
    };
    chart(path, frame, |chart, text| {
        chart
            .draw_series(LineSeries::new([(lo, lo), (hi, hi)], BLACK.mix(0.3)))
            .map_err(|e| drawing_error(path, &e))?;
        for (i, (name, points)) in groups.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let drawn = chart
                .draw_series(
                    points
                        .iter()
                        .filter(|(x, y)| x.is_finite() && y.is_finite())
                        .map(|&p| Circle::new(p, 3, color.mix(0.6).filled())),
                )
                .map_err(|e| drawing_error(path, &e))?;
            if text {
                drawn
                    .label(name.clone())
                    .legend(move |(x, y)| Circle::new((x + 9, y), 4, color.filled()));
            }
        }
        Ok(())
    })
}

/// One tile of a gallery: an RGB thumbnail (any size; scaled to fit) and lines of text under it.
#[derive(Debug, Clone)]
pub struct Tile {
    /// Pixels.
    pub image: image::RgbImage,
    /// Text lines (long lines are cut to the tile's width).
    pub lines: Vec<String>,
}

/// Draws `tiles` in a grid of `columns` columns into a PNG at `path`.
pub fn gallery(path: &Path, tiles: &[Tile], columns: usize) -> Result<()> {
    const THUMB: u32 = 160;
    const TILE_W: u32 = 330;
    const LINE_H: u32 = 16;
    let text = font_available();
    let columns = columns.max(1);
    let max_lines = tiles.iter().map(|t| t.lines.len()).max().unwrap_or(0) as u32;
    let tile_h = THUMB + 12 + max_lines * LINE_H + 12;
    let rows = tiles.len().div_ceil(columns).max(1) as u32;
    let (w, h) = (TILE_W * columns as u32, tile_h * rows);
    let mut canvas = image::RgbImage::from_pixel(w, h, image::Rgb([255, 255, 255]));
    for (i, tile) in tiles.iter().enumerate() {
        let (cx, cy) = ((i % columns) as u32 * TILE_W, (i / columns) as u32 * tile_h);
        let thumb = image::imageops::resize(
            &tile.image,
            THUMB,
            THUMB,
            image::imageops::FilterType::Triangle,
        );
        image::imageops::overlay(
            &mut canvas,
            &thumb,
            i64::from(cx + (TILE_W - THUMB) / 2),
            i64::from(cy + 8),
        );
    }
    let mut buffer = canvas.into_raw();
    {
        let root = BitMapBackend::with_buffer(&mut buffer, (w, h)).into_drawing_area();
        let err = |e: &dyn std::fmt::Display| drawing_error(path, e);
        if text {
            let style = ("sans-serif", 13).into_font().color(&BLACK);
            // About 7 px per character at 13 px.
            let chars = (TILE_W as usize - 12) / 7;
            for (i, tile) in tiles.iter().enumerate() {
                let (cx, cy) = ((i % columns) as u32 * TILE_W, (i / columns) as u32 * tile_h);
                for (l, line) in tile.lines.iter().enumerate() {
                    let cut: String = if line.chars().count() > chars {
                        line.chars().take(chars - 1).chain(['…']).collect()
                    } else {
                        line.clone()
                    };
                    let y = cy + THUMB + 14 + l as u32 * LINE_H;
                    root.draw_text(&cut, &style, (cx as i32 + 6, y as i32))
                        .map_err(|e| err(&e))?;
                }
            }
        }
        root.present().map_err(|e| err(&e))?;
    }
    let canvas = image::RgbImage::from_raw(w, h, buffer)
        .ok_or_else(|| anyhow!("gallery buffer of the wrong size — this is a bug"))?;
    canvas
        .save(path)
        .map_err(|e| anyhow!("writing {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_png() {
        let dir = std::env::temp_dir().join(format!("mirage-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.png");
        let s = Series {
            name: "loss".into(),
            points: (0..20)
                .map(|i| (f64::from(i), 1.0 / f64::from(i + 1)))
                .collect(),
        };
        line_chart(&path, "t", "step", "loss", &[s]).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        let groups = vec![
            ("a".to_owned(), vec![0.1, 0.2, 0.2, 0.9]),
            ("b".to_owned(), vec![0.5, f64::NAN]),
        ];
        histogram(&dir.join("h.png"), "t", "s", &groups, 10).unwrap();
        let points = vec![("p".to_owned(), vec![(0.1, 0.2), (0.5, 0.4)])];
        scatter(&dir.join("s.png"), "t", "x", "y", &points).unwrap();
        let tile = Tile {
            image: image::RgbImage::from_pixel(40, 30, image::Rgb([200, 10, 10])),
            lines: vec!["a caption far longer than the tile is wide, cut with an ellipsis".into()],
        };
        gallery(&dir.join("g.png"), &[tile.clone(), tile.clone(), tile], 2).unwrap();
        let g = image::open(dir.join("g.png")).unwrap().to_rgb8();
        assert_eq!(g.width(), 660, "two columns");
        // The first thumbnail is drawn where it belongs.
        assert_eq!(g.get_pixel(165, 80), &image::Rgb([200, 10, 10]));
        for f in ["h.png", "s.png"] {
            assert_eq!(&std::fs::read(dir.join(f)).unwrap()[..4], b"\x89PNG");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}
