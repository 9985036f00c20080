//! Structured logs on stderr through `tracing`, as text for people or JSON for collectors.
//!
//! `CRIUS_LOG` (an `EnvFilter` directive such as `crius=debug,h2=info`) overrides the
//! configured level, so an operator can raise verbosity without editing the config file.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogLevel};

/// Installs the global subscriber. Call once, before anything logs.
pub fn init(level: LogLevel, format: LogFormat) {
    let filter = EnvFilter::try_from_env("CRIUS_LOG").unwrap_or_else(|_| {
        // Our own crate at the configured level; the HTTP/2 stack stays quiet below warn.
        EnvFilter::new(format!(
            "warn,crius={},criusd={}",
            level.as_str(),
            level.as_str()
        ))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().with_current_span(true).init(),
    }
}
