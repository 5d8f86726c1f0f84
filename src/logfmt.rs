//! The text log format, written for speed: the same lines as
//! tracing-subscriber's default `Full` format without colours
//! (`2026-12-01T13:47:43.662575Z  INFO target: message key=value …`, string
//! values quoted and escaped as `Debug` does), but the timestamp's date and
//! time are formatted once a second per thread, and a string that needs no
//! escaping is copied as it is rather than escaped character by character.
//! The access log writes a line per request, and the default format spent
//! more time on it than the rest of the proxy's own code (BENCHMARKS.md,
//! "Against nginx"). Used when stderr is not a terminal; a terminal gets
//! the default format, with colours.

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The event format: `time level target: fields`.
pub struct Text;

impl<S, N> FormatEvent<S, N> for Text
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write_time(&mut writer, SystemTime::now())?;
        let meta = event.metadata();
        write!(writer, " {:>5} {}: ", meta.level(), meta.target())?;
        let mut fields = Fields {
            writer: &mut writer,
            first: true,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        writer.write_char('\n')
    }
}

/// RFC 3339 in UTC with microseconds, as tracing-subscriber writes it.
fn write_time(w: &mut impl fmt::Write, now: SystemTime) -> fmt::Result {
    thread_local! {
        /// The last second formatted, and its `YYYY-MM-DDTHH:MM:SS`.
        static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    SECOND.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != secs {
            let time = i64::try_from(secs)
                .ok()
                .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
                .unwrap_or_default();
            cached.1.clear();
            let _ = write!(cached.1, "{}", time.format("%Y-%m-%dT%H:%M:%S"));
            cached.0 = secs;
        }
        write!(w, "{}.{:06}Z", cached.1, since.subsec_micros())
    })
}

/// Writes `message key=value key="text" …`.
struct Fields<'a, 'w> {
    writer: &'a mut Writer<'w>,
    first: bool,
    result: fmt::Result,
}

impl Fields<'_, '_> {
    fn name(&mut self, field: &Field) -> fmt::Result {
        if !std::mem::replace(&mut self.first, false) {
            self.writer.write_char(' ')?;
        }
        if field.name() != "message" {
            self.writer.write_str(field.name())?;
            self.writer.write_char('=')?;
        }
        Ok(())
    }
}

/// True when `Debug` would write `text` between quotes unchanged.
fn plain(text: &str) -> bool {
    text.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
}

/// Writes through, escaping the characters a terminal could be driven by,
/// as tracing-subscriber does for messages and errors.
struct Escaping<'a, W: fmt::Write>(&'a mut W);

impl<W: fmt::Write> fmt::Write for Escaping<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for ch in s.chars() {
            match ch {
                '\x1b' => self.0.write_str("\\x1b")?,
                '\x07' => self.0.write_str("\\x07")?,
                '\x08' => self.0.write_str("\\x08")?,
                '\x0c' => self.0.write_str("\\x0c")?,
                '\x7f' => self.0.write_str("\\x7f")?,
                ch if ('\u{80}'..='\u{9f}').contains(&ch) => {
                    write!(self.0, "\\u{{{:x}}}", ch as u32)?;
                }
                ch => self.0.write_char(ch)?,
            }
        }
        Ok(())
    }
}

impl Visit for Fields<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.result.is_err() {
            return;
        }
        if field.name() == "message" {
            return self.record_debug(field, &format_args!("{value}"));
        }
        self.result = self.name(field).and_then(|()| {
            if plain(value) {
                self.writer.write_char('"')?;
                self.writer.write_str(value)?;
                self.writer.write_char('"')
            } else {
                write!(self.writer, "{value:?}")
            }
        });
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.result.is_ok() {
            self.result = self
                .name(field)
                .and_then(|()| write!(self.writer, "{value}"));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if self.result.is_ok() {
            self.result = self
                .name(field)
                .and_then(|()| write!(self.writer, "{value}"));
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.result.is_ok() {
            self.result = self
                .name(field)
                .and_then(|()| write!(self.writer, "{value}"));
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if self.result.is_err() {
            return;
        }
        self.result = self.name(field).and_then(|()| {
            write!(Escaping(&mut *self.writer), "{value}")?;
            let Some(source) = value.source() else {
                return Ok(());
            };
            write!(self.writer, " {}.sources=[", field.name())?;
            let mut next = Some(source);
            let mut first = true;
            while let Some(e) = next {
                if !std::mem::replace(&mut first, false) {
                    self.writer.write_str(", ")?;
                }
                write!(Escaping(&mut *self.writer), "{e}")?;
                next = e.source();
            }
            self.writer.write_char(']')
        });
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.result.is_err() {
            return;
        }
        self.result = self.name(field).and_then(|()| {
            if field.name() == "message" {
                write!(Escaping(&mut *self.writer), "{value:?}")
            } else {
                write!(self.writer, "{value:?}")
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    /// The lines a subscriber writes, with the timestamp cut off.
    fn lines(format: impl FnOnce(Buffer) -> tracing::Dispatch, emit: impl Fn()) -> Vec<String> {
        let buffer = Buffer::default();
        tracing::dispatcher::with_default(&format(buffer.clone()), emit);
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| l.split_once(' ').map_or(l, |(_, rest)| rest).to_owned())
            .collect()
    }

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[derive(Debug)]
    struct Outer(std::io::Error);

    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("outer")
        }
    }

    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    fn emit() {
        let err = std::io::Error::other("disk on fire");
        let chained = Outer(std::io::Error::other("inner \x1b[31m"));
        let verb = "GET";
        tracing::info!(target: "modelarts_proxy::access", request_id = "abc", method = %verb, path = "/v1/a b\"c\\d\n", status = 200u16, delta = -3i64, ok = true, "request");
        tracing::warn!(error = &err as &(dyn std::error::Error + 'static), shown = ?Some(1), "something {} happened", 7);
        tracing::error!(
            cause = &chained as &(dyn std::error::Error + 'static),
            "plain \x1b[2J {}",
            "\u{9b}"
        );
    }

    #[test]
    fn lines_match_the_default_format_without_colours() {
        let ours = lines(
            |b| {
                tracing_subscriber::fmt()
                    .with_writer(move || b.clone())
                    .with_ansi(false)
                    .event_format(Text)
                    .into()
            },
            emit,
        );
        let default = lines(
            |b| {
                tracing_subscriber::fmt()
                    .with_writer(move || b.clone())
                    .with_ansi(false)
                    .into()
            },
            emit,
        );
        assert_eq!(ours.len(), 3, "{ours:#?}");
        assert_eq!(ours, default);
        assert!(
            ours[2].contains("cause.sources=[inner \\x1b[31m]"),
            "{}",
            ours[2]
        );
        assert!(ours[0].contains(r#"path="/v1/a b\"c\\d\n""#), "{}", ours[0]);
    }

    #[test]
    fn the_time_is_rfc3339_utc_with_microseconds_across_a_second_boundary() {
        let t = UNIX_EPOCH + Duration::from_micros(1_764_596_863_999_999);
        let mut a = String::new();
        write_time(&mut a, t).unwrap();
        let mut b = String::new();
        write_time(&mut b, t + Duration::from_micros(1)).unwrap();
        assert_eq!(a, "2025-12-01T13:47:43.999999Z");
        assert_eq!(b, "2025-12-01T13:47:44.000000Z");
    }
}
