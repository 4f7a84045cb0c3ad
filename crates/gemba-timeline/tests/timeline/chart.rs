//! Charts as a user sees them: axes with round values and time labels,
//! one path per series (broken where samples are missing), a labelled
//! marker per change event (a band when it lasted), a legend; the PNG
//! decodes at the size asked for.

use gemba_timeline::chart::{Area, Chart, Line, Marker};

const T0: u64 = 1_795_392_000; // 2026-11-22T00:00:00Z

fn chart() -> Chart {
    let climb: Vec<(u64, f64)> = (0..360)
        .map(|i| (T0 + i * 10, (i / 6) as f64 * 4.0))
        .collect();
    // web-2 misses ten minutes of samples in the middle.
    let flat: Vec<(u64, f64)> = (0..360)
        .filter(|i| !(150..210).contains(i))
        .map(|i| (T0 + i * 10, 12.0))
        .collect();
    Chart {
        title: "tcp_established of shop".into(),
        metric: "tcp_established".into(),
        since_ms: T0 * 1000,
        until_ms: (T0 + 3600) * 1000,
        width: 900,
        height: 320,
        lines: vec![
            Line {
                label: "web-1".into(),
                points: climb,
            },
            Line {
                label: "web-2".into(),
                points: flat,
            },
        ],
        markers: vec![
            Marker {
                at_ms: (T0 + 600) * 1000,
                end_ms: None,
                kind: "deploy".into(),
                label: "shop v2.3.1 <released>".into(),
            },
            Marker {
                at_ms: (T0 + 2400) * 1000,
                end_ms: Some((T0 + 2700) * 1000),
                kind: "escalation".into(),
                label: "node:web-1 step-start: restart".into(),
            },
            Marker {
                at_ms: (T0 + 7200) * 1000,
                end_ms: None,
                kind: "deploy".into(),
                label: "outside the window".into(),
            },
        ],
    }
}

fn count(s: &str, needle: &str) -> usize {
    s.matches(needle).count()
}

#[test]
fn the_svg_has_axes_series_markers_and_a_legend() {
    let svg = chart().svg();
    assert!(
        svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"900\" height=\"320\"")
    );
    assert!(svg.ends_with("</svg>"));
    // Values from 0 to the top of the climb (236) in round steps.
    for label in [">0<", ">50<", ">100<", ">150<", ">200<", ">250<"] {
        assert!(svg.contains(label), "y label {label} missing");
    }
    assert_eq!(count(&svg, "class=\"y-tick\""), 6);
    // Time ticks in UTC over the hour.
    for label in [">00:00<", ">00:30<", ">01:00<"] {
        assert!(svg.contains(label), "x label {label} missing");
    }
    // Two series, each one path; web-2's is broken once by the gap.
    assert_eq!(count(&svg, "class=\"series\""), 2);
    let web2 = svg.split("data-label=\"web-2\" d=\"").nth(1).unwrap();
    let d = web2.split('"').next().unwrap();
    assert_eq!(count(d, "M"), 2, "a gap starts a new stroke: {d}");
    // Two markers in the window, escaped labels, a band for the one that lasted.
    assert_eq!(count(&svg, "class=\"marker\""), 2);
    assert!(svg.contains("shop v2.3.1 &lt;released&gt;"));
    assert!(svg.contains("data-kind=\"escalation\""));
    assert!(!svg.contains("outside the window"));
    let band = svg.split("data-kind=\"escalation\"").nth(1).unwrap();
    assert!(band.split("</g>").next().unwrap().contains("<rect"));
    // The legend names both lines.
    let legend = svg.split("class=\"legend\"").nth(1).unwrap();
    assert!(legend.contains(">web-1<") && legend.contains(">web-2<"));
}

#[test]
fn bytes_get_binary_units_and_an_empty_chart_says_so() {
    let mut c = chart();
    c.metric = "rss_bytes".into();
    c.lines = vec![Line {
        label: "shop".into(),
        points: vec![(T0, 0.0), (T0 + 60, 512.0 * 1024.0 * 1024.0)],
    }];
    let svg = c.svg();
    for label in [">0B<", ">200MiB<", ">400MiB<", ">600MiB<"] {
        assert!(svg.contains(label), "{label} missing: {svg}");
    }
    c.lines[0].points.clear();
    assert!(c.svg().contains("no samples in this window"));
}

#[test]
fn the_png_decodes_at_the_size_asked_for() {
    let png = chart().png().unwrap();
    let img = resvg::tiny_skia::Pixmap::decode_png(&png).unwrap();
    assert_eq!((img.width(), img.height()), (900, 320));
    // Not blank: the series colour is on the canvas.
    let blue = img
        .pixels()
        .iter()
        .filter(|p| p.red() < 80 && p.blue() > 150)
        .count();
    assert!(blue > 100, "{blue} blue pixels");
}

#[test]
fn seven_events_in_one_second_are_one_readable_group() {
    let mut c = chart();
    c.markers = (0..7)
        .map(|i| Marker {
            at_ms: (T0 + 1200) * 1000 + i * 100,
            end_ms: None,
            kind: "deploy".into(),
            label: format!("service {i} v1.{i} released"),
        })
        .collect();
    c.markers.push(Marker {
        at_ms: (T0 + 2400) * 1000,
        end_ms: None,
        kind: "note".into(),
        label: "a lone note".into(),
    });
    let svg = c.svg();
    assert_eq!(count(&svg, "class=\"marker\""), 2, "{svg}");
    let group = svg.split("data-count=\"7\"").nth(1).expect("a group of 7");
    let group = group.split("</g>").next().unwrap();
    assert!(group.contains(">7 events<"), "{group}");
    // Each event is in the group's tooltip, none printed over another.
    for i in 0..7 {
        assert!(
            group.contains(&format!("service {i} v1.{i} released")),
            "{group}"
        );
    }
    assert_eq!(
        count(&svg, "released</text>"),
        0,
        "no label printed seven times"
    );
    assert!(svg.contains("data-count=\"1\"") && svg.contains(">a lone note<"));
}

#[test]
fn title_legend_and_plot_never_collide_from_480_px_up() {
    for lines in [2usize, 5, 12] {
        for width in [480u32, 640, 900, 1600] {
            let mut c = chart();
            c.width = width;
            c.title = "tcp_established of shop on web-1, web-2 · 2026-11-22T00:00:00Z → 2026-11-22T01:00:00Z".into();
            c.lines = (0..lines)
                .map(|i| Line {
                    label: format!("web-{i} shop-frontend-{i}"),
                    points: vec![(T0, i as f64), (T0 + 60, i as f64 + 1.0)],
                })
                .collect();
            let l = c.layout();
            let all: Vec<Area> = std::iter::once(l.title)
                .chain(l.legend.iter().map(|(a, ..)| *a))
                .collect();
            for (i, a) in all.iter().enumerate() {
                assert!(
                    a.x >= 0.0 && a.x + a.w <= width as f64,
                    "{width} px, {lines} lines: {a:?} leaves the chart"
                );
                assert!(
                    !a.overlaps(&l.plot),
                    "{width} px: {a:?} on the plot {:?}",
                    l.plot
                );
                for b in &all[i + 1..] {
                    assert!(!a.overlaps(b), "{width} px, {lines} lines: {a:?} on {b:?}");
                }
            }
            // Every line is named, or counted in "+n more".
            let named = l.legend.iter().filter(|(_, i, _)| i.is_some()).count();
            let more: usize = l
                .legend
                .iter()
                .filter(|(_, i, _)| i.is_none())
                .map(|(_, _, t)| {
                    t.trim_start_matches('+')
                        .split(' ')
                        .next()
                        .unwrap()
                        .parse::<usize>()
                        .unwrap()
                })
                .sum();
            assert_eq!(named + more, lines, "{width} px: {:?}", l.legend);
            assert!(l.plot.h >= 100.0, "{width} px: the plot keeps its room");
            assert!(c.svg().contains(&l.title_text.replace('>', "&gt;")));
        }
    }
}
