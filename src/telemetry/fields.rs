//! `log.fields`: static fields (service, environment, …) on every log line,
//! as distribution's logrus hook adds them. The wrapped formatter writes the
//! line; the fields are appended to it — as `key=value` pairs in text, as
//! members of the object in JSON.

use std::{collections::BTreeMap, fmt::Write as _};

use tracing::{Event, Subscriber};
use tracing_subscriber::{
    fmt::{format::Writer, FmtContext, FormatEvent, FormatFields},
    registry::LookupSpan,
};

/// Keys the JSON formatter writes itself (the event's own fields vary).
const RESERVED: [&str; 5] = ["timestamp", "level", "target", "message", "span"];

pub struct WithFields<F> {
    inner: F,
    /// What to append before the line's end; empty: write through.
    suffix: String,
    json: bool,
}

impl<F> WithFields<F> {
    pub fn text(inner: F, fields: &BTreeMap<String, String>) -> Self {
        let mut suffix = String::new();
        for (k, v) in fields {
            // Quoted like the formatter quotes a string field with spaces.
            if v.is_empty() || v.contains(char::is_whitespace) || v.contains('"') {
                let _ = write!(suffix, " {k}={v:?}");
            } else {
                let _ = write!(suffix, " {k}={v}");
            }
        }
        WithFields {
            inner,
            suffix,
            json: false,
        }
    }

    pub fn json(inner: F, fields: &BTreeMap<String, String>) -> Self {
        let mut suffix = String::new();
        for (k, v) in fields {
            // A static field named like one the formatter writes would make a
            // duplicate key; logrus (distribution) renames it `fields.<key>`.
            let k = if RESERVED.contains(&k.as_str()) {
                format!("fields.{k}")
            } else {
                k.clone()
            };
            let k = serde_json::Value::String(k);
            let v = serde_json::Value::String(v.clone());
            let _ = write!(suffix, ",{k}:{v}");
        }
        WithFields {
            inner,
            suffix,
            json: true,
        }
    }
}

impl<S, N, F> FormatEvent<S, N> for WithFields<F>
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
    ) -> std::fmt::Result {
        if self.suffix.is_empty() {
            return self.inner.format_event(ctx, writer, event);
        }
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        let line = line.strip_suffix('\n').unwrap_or(&line);
        match (self.json, line.strip_suffix('}')) {
            // `{...}` → `{...,"k":"v"}`
            (true, Some(open)) => writeln!(writer, "{open}{}}}", self.suffix),
            _ => writeln!(writer, "{line}{}", self.suffix),
        }
    }
}
