//! Text log fields that a client cannot forge. Values from outside (addresses, HELO names,
//! admin query parameters) may hold newlines, escape sequences or ` key=value` text; written
//! raw, they would start fake log lines or fake fields. Here every value that is not a plain
//! token is quoted logfmt-style, with quotes, backslashes and control characters escaped.
//! (JSON logs are escaped by the JSON encoder already.)

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::Writer;

/// `FormatFields` for the text log format.
pub struct EscapedFields;

impl<'writer> FormatFields<'writer> for EscapedFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut visitor = Visitor { writer: &mut writer, result: Ok(()), first: true };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct Visitor<'a, 'w> {
    writer: &'a mut Writer<'w>,
    result: fmt::Result,
    first: bool,
}

impl Visitor<'_, '_> {
    fn write(&mut self, field: &Field, value: &str) {
        if self.result.is_err() {
            return;
        }
        let sep = if std::mem::take(&mut self.first) { "" } else { " " };
        self.result = if field.name() == "message" {
            // Our own text; still no control characters.
            write!(self.writer, "{sep}{}", Escaped(value, false))
        } else {
            write!(self.writer, "{sep}{}={}", field.name(), Escaped(value, needs_quotes(value)))
        };
    }
}

impl Visit for Visitor<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.write(field, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.write(field, &format!("{value:?}"));
    }
}

fn needs_quotes(value: &str) -> bool {
    value.is_empty()
        || value.chars().any(|c| c.is_whitespace() || c.is_control() || matches!(c, '"' | '=' | '\\'))
}

/// A value with control characters escaped; quoted (and quotes and backslashes escaped) when
/// the second field says so.
struct Escaped<'a>(&'a str, bool);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let quoted = self.1;
        if quoted {
            f.write_char('"')?;
        }
        // Runs of plain characters go out whole (a value is usually one run): a write per
        // character made this the gateway's costliest formatting.
        let mut run = 0;
        for (at, c) in self.0.char_indices() {
            let escape = match c {
                '"' | '\\' if quoted => true,
                c => c.is_control(),
            };
            if !escape {
                continue;
            }
            f.write_str(&self.0[run..at])?;
            run = at + c.len_utf8();
            match c {
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                '"' | '\\' => write!(f, "\\{c}")?,
                c => write!(f, "\\u{{{:x}}}", c as u32)?,
            }
        }
        f.write_str(&self.0[run..])?;
        if quoted {
            f.write_char('"')?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

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

    /// The escaping as first written, a character at a time: the definition the run-wise one
    /// must match.
    fn escaped_by_char(value: &str, quoted: bool) -> String {
        let mut out = String::new();
        if quoted {
            out.push('"');
        }
        for c in value.chars() {
            match c {
                '"' | '\\' if quoted => out.push_str(&format!("\\{c}")),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
                c => out.push(c),
            }
        }
        if quoted {
            out.push('"');
        }
        out
    }

    #[test]
    fn escaping_by_runs_matches_escaping_by_characters() {
        let alphabet = ['a', '"', '\\', '\n', '\r', '\t', '\u{1b}', '\u{85}', 'é', '=', ' '];
        let mut values = vec![String::new()];
        for _ in 0..3 {
            let longer: Vec<String> =
                values.iter().flat_map(|v| alphabet.iter().map(move |c| format!("{v}{c}"))).collect();
            values.extend(longer);
        }
        for v in &values {
            for quoted in [false, true] {
                assert_eq!(Escaped(v, quoted).to_string(), escaped_by_char(v, quoted), "{v:?} {quoted}");
            }
        }
    }

    #[test]
    fn values_from_outside_cannot_forge_lines_or_fields() {
        let buf = Buffer::default();
        let out = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || out.clone())
            .with_ansi(false)
            .without_time()
            .with_target(false)
            .fmt_fields(EscapedFields)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let by = "eve\nINFO forged line reason=ok \u{1b}[31m\"x\\";
            tracing::info!(released_by = %by, plain = "alice", n = 3, "quarantine entry released");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(
            text.contains(
                r#"quarantine entry released released_by="eve\nINFO forged line reason=ok \u{1b}[31m\"x\\" plain=alice n=3"#
            ),
            "{text}"
        );
    }
}
