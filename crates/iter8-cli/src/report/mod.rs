//! Reports of a finished run: text for the terminal, JSON, and a self-contained HTML page.

pub mod html;
pub mod svg;
pub mod text;

use crate::record::RunRecord;

/// The report formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Tables for the terminal.
    Text,
    /// The run as saved (pretty-printed).
    Json,
    /// A self-contained page with charts.
    Html,
}

/// Renders `run` in `format`.
pub fn render(run: &RunRecord, format: Format) -> Result<String, serde_json::Error> {
    Ok(match format {
        Format::Text => text::render(run),
        Format::Json => serde_json::to_string_pretty(run)? + "\n",
        Format::Html => html::render(run),
    })
}
