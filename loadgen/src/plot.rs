//! Latency distribution images: a percentile plot (x: percentile on a log(1/(1-q))
//! axis, y: latency on a log axis), written as hand-made SVG or, for `.png`, rendered
//! with plotters' bitmap backend.

use std::fmt::Write as _;
use std::path::Path;

use crate::stats::Hist;

const COLORS: [&str; 4] = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e"];
const MAX_NINES: f64 = 5.0;

/// (x = log10(1/(1-q)), y = latency in µs) points of a histogram.
fn points(h: &Hist) -> Vec<(f64, f64)> {
    let mut pts = Vec::new();
    if h.0.is_empty() {
        return pts;
    }
    for v in h.0.iter_quantiles(4) {
        let q = v.quantile_iterated_to();
        let x = if q >= 1.0 {
            MAX_NINES
        } else {
            (1.0 / (1.0 - q)).log10().min(MAX_NINES)
        };
        pts.push((x, (v.value_iterated_to() as f64 / 1000.0).max(0.001)));
    }
    pts
}

fn pct_label(nines: u32) -> String {
    match nines {
        0 => "0%".into(),
        1 => "90%".into(),
        2 => "99%".into(),
        n => format!("99.{}%", "9".repeat(n as usize - 2)),
    }
}

fn short(v: f64) -> String {
    let s = if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    };
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

fn us_label(us: f64) -> String {
    if us >= 1_000_000.0 {
        format!("{}s", short(us / 1e6))
    } else if us >= 1000.0 {
        format!("{}ms", short(us / 1e3))
    } else {
        format!("{}µs", short(us))
    }
}

fn y_range(series: &[(String, Vec<(f64, f64)>)]) -> (f64, f64) {
    let ys = series.iter().flat_map(|s| s.1.iter().map(|p| p.1));
    let lo = ys.clone().fold(f64::MAX, f64::min);
    let hi = ys.fold(0.0f64, f64::max);
    if lo == f64::MAX {
        return (1.0, 1000.0);
    }
    let lo = 10f64.powf(lo.log10().floor());
    let mut hi = 10f64.powf(hi.log10().ceil());
    if hi <= lo {
        hi = lo * 10.0;
    }
    (lo, hi)
}

/// Render `series` (label, histogram) to `path` (.png → PNG, anything else → SVG).
pub fn write(path: &Path, title: &str, series: &[(&str, &Hist)]) -> Result<(), String> {
    let data: Vec<(String, Vec<(f64, f64)>)> = series
        .iter()
        .map(|(l, h)| {
            let h0 = &h.0;
            let label = if h0.is_empty() {
                format!("{l} (no samples)")
            } else {
                format!(
                    "{l}: p50 {} p99 {} p99.9 {} max {}",
                    us_label((h0.value_at_quantile(0.5) as f64 / 100.0).round() / 10.0),
                    us_label((h0.value_at_quantile(0.99) as f64 / 100.0).round() / 10.0),
                    us_label((h0.value_at_quantile(0.999) as f64 / 100.0).round() / 10.0),
                    us_label((h0.max() as f64 / 100.0).round() / 10.0),
                )
            };
            (label, points(h))
        })
        .collect();
    let is_png = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("png"));
    if is_png {
        write_png(path, title, &data)
    } else {
        std::fs::write(path, svg(title, &data)).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// The SVG document for `data`.
pub fn svg(title: &str, data: &[(String, Vec<(f64, f64)>)]) -> String {
    let (w, h) = (960.0, 540.0);
    let (l, r, t, b) = (80.0, 45.0, 50.0, 60.0 + 18.0 * data.len() as f64);
    let (pw, ph) = (w - l - r, h - t - b);
    let (ylo, yhi) = y_range(data);
    let (lylo, lyhi) = (ylo.log10(), yhi.log10());
    let sx = |x: f64| l + x / MAX_NINES * pw;
    let sy = |y: f64| t + ph - (y.max(ylo).log10() - lylo) / (lyhi - lylo) * ph;
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="13">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="28" text-anchor="middle" font-size="17">{}</text>
"##,
        w / 2.0,
        esc(title)
    );
    for n in 0..=MAX_NINES as u32 {
        let x = sx(n as f64);
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{t}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            t + ph,
            t + ph + 18.0,
            pct_label(n)
        );
    }
    let mut d = lylo.round() as i32;
    while d as f64 <= lyhi.round() {
        let y = sy(10f64.powi(d));
        let _ = writeln!(
            s,
            r##"<line x1="{l}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            l + pw,
            l - 6.0,
            y + 4.0,
            esc(&us_label(10f64.powi(d)))
        );
        d += 1;
    }
    let _ = writeln!(
        s,
        r##"<rect x="{l}" y="{t}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>
<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile</text>
<text x="18" y="{:.1}" text-anchor="middle" transform="rotate(-90 18 {:.1})">latency</text>"##,
        l + pw / 2.0,
        t + ph + 38.0,
        t + ph / 2.0,
        t + ph / 2.0
    );
    for (i, (label, pts)) in data.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        if !pts.is_empty() {
            let path: Vec<String> = pts
                .iter()
                .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
                .collect();
            let _ = writeln!(
                s,
                r##"<polyline fill="none" stroke="{c}" stroke-width="2" points="{}"/>"##,
                path.join(" ")
            );
        }
        let ly = t + ph + 58.0 + 18.0 * i as f64;
        let _ = writeln!(
            s,
            r##"<line x1="{l}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{c}" stroke-width="3"/><text x="{:.1}" y="{ly:.1}">{}</text>"##,
            ly - 4.0,
            l + 24.0,
            ly - 4.0,
            l + 30.0,
            esc(label)
        );
    }
    s.push_str("</svg>\n");
    s
}

fn write_png(path: &Path, title: &str, data: &[(String, Vec<(f64, f64)>)]) -> Result<(), String> {
    use plotters::prelude::*;
    const FONT_FILES: [&str; 3] = [
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/TTF/DejaVuSans.ttf",
    ];
    let font = FONT_FILES
        .iter()
        .find_map(|f| std::fs::read(f).ok())
        .ok_or("PNG needs a TrueType font (DejaVuSans.ttf); use .svg instead")?;
    let font: &'static [u8] = Box::leak(font.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, font)
        .map_err(|_| "bad font file".to_string())?;
    let (w, h) = (960u32, 540u32);
    let mut buf = vec![255u8; (w * h * 3) as usize];
    let (ylo, yhi) = y_range(data);
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        let e = |e: DrawingAreaErrorKind<_>| format!("plot: {e}");
        root.fill(&WHITE).map_err(e)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(15)
            .margin_right(40)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..MAX_NINES, (ylo..yhi).log_scale())
            .map_err(e)?;
        chart
            .configure_mesh()
            .x_labels(MAX_NINES as usize + 1)
            .x_label_formatter(&|x| pct_label(x.round() as u32))
            .y_label_formatter(&|y| us_label(*y))
            .x_desc("percentile")
            .y_desc("latency")
            .draw()
            .map_err(e)?;
        let palette = [BLUE, RED, GREEN, MAGENTA];
        for (i, (label, pts)) in data.iter().enumerate() {
            let c = palette[i % palette.len()];
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))
                .map_err(e)?
                .label(label.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(3))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(e)?;
        root.present().map_err(e)?;
    }
    let file = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), w, h);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut wr = enc.write_header().map_err(|e| format!("png: {e}"))?;
    wr.write_image_data(&buf).map_err(|e| format!("png: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn svg_has_series() {
        let mut h = Hist::new();
        for i in 1..10_000u64 {
            h.record(i * 1000);
        }
        let data = vec![("e2e".to_string(), points(&h))];
        let s = svg("test <plot>", &data);
        assert!(s.starts_with("<svg"));
        assert!(s.contains("<polyline"));
        assert!(s.contains("test &lt;plot&gt;"));
        assert!(s.trim_end().ends_with("</svg>"));
        assert_eq!(us_label(12492.8), "12.5ms");
        assert_eq!(us_label(1000.0), "1ms");
        assert_eq!(us_label(3.25), "3.25µs");
    }
}
