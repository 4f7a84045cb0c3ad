//! Log lines that repeat are shown once a minute per cause: a warning or
//! an error from the same place in the code (its callsite) is written at
//! most once per [`EVERY`]; the next one shown is preceded by how many were
//! left out meanwhile. A store that is down for an hour then costs sixty
//! lines per cause, not thousands. Info and debug lines are not limited.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::callsite::Identifier;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// How often one cause is shown.
pub const EVERY: Duration = Duration::from_secs(60);

struct Seen {
    shown: Instant,
    left_out: u64,
}

/// Wraps a formatter, limiting repeated warnings and errors.
pub struct Repeats<F> {
    inner: F,
    every: Duration,
    seen: Mutex<HashMap<Identifier, Seen>>,
}

impl<F> Repeats<F> {
    pub fn new(inner: F) -> Repeats<F> {
        Repeats::every(inner, EVERY)
    }

    pub fn every(inner: F, every: Duration) -> Repeats<F> {
        Repeats {
            inner,
            every,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Whether to show an event from `callsite` now, and how many like it
    /// were left out since the last shown.
    fn admit(&self, callsite: Identifier, now: Instant) -> Option<u64> {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        match seen.get_mut(&callsite) {
            None => {
                seen.insert(
                    callsite,
                    Seen {
                        shown: now,
                        left_out: 0,
                    },
                );
                Some(0)
            }
            Some(s) if now.duration_since(s.shown) < self.every => {
                s.left_out += 1;
                None
            }
            Some(s) => {
                s.shown = now;
                Some(std::mem::take(&mut s.left_out))
            }
        }
    }
}

impl<S, N, F> FormatEvent<S, N> for Repeats<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        if *meta.level() > Level::WARN {
            return self.inner.format_event(ctx, writer, event);
        }
        match self.admit(meta.callsite(), Instant::now()) {
            None => Ok(()),
            Some(0) => self.inner.format_event(ctx, writer, event),
            Some(n) => {
                writeln!(
                    writer,
                    "  ({n} more like the next line in the last {} s were not shown: one a minute per cause)",
                    self.every.as_secs()
                )?;
                self.inner.format_event(ctx, writer, event)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// What the subscriber wrote.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_warning_repeated_a_thousand_times_is_one_line_and_a_count() {
        let out = Captured::default();
        let w = out.clone();
        let format = tracing_subscriber::fmt::format()
            .without_time()
            .with_ansi(false);
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || w.clone())
            .event_format(Repeats::every(format, Duration::from_millis(300)))
            .finish();
        // One place in the code: one cause.
        let warn = |i: u32| tracing::warn!(attempt = i, "cannot reach the store");
        tracing::subscriber::with_default(subscriber, || {
            for i in 0..1000 {
                warn(i);
            }
            tracing::error!("another cause is its own");
            tracing::info!("info is never limited");
            tracing::info!("info is never limited");
            std::thread::sleep(Duration::from_millis(350));
            warn(1000);
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines
                .iter()
                .filter(|l| l.contains("cannot reach the store"))
                .count(),
            2,
            "{text}"
        );
        assert!(text.contains("attempt=0"), "{text}");
        assert!(
            text.contains("(999 more like the next line in the last 0 s were not shown"),
            "{text}"
        );
        assert!(text.contains("attempt=1000"), "{text}");
        assert!(text.contains("another cause is its own"), "{text}");
        assert_eq!(
            lines
                .iter()
                .filter(|l| l.contains("info is never limited"))
                .count(),
            2
        );
    }
}
