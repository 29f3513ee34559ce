//! Rendering a request-log export (`export_logs` jobs) as CSV or NDJSON,
//! cut into gzip parts.
//!
//! Each part is a complete gzip member. Members concatenated are one valid
//! gzip file (RFC 1952 §2.2; `gzip -d`, `zcat` and browsers read them as
//! one), so the job stores parts as it goes and a download streams them in
//! order: neither ever holds the whole export in memory.

use crate::api::logs::RequestLogView;
use flate2::Compression;
use flate2::write::GzEncoder;
use serde::{Deserialize, Serialize};
use std::io::Write;
use utoipa::ToSchema;

/// Rendered bytes per part before compression: about a tenth of that is
/// stored. Large enough that per-part costs (a row, a round trip) vanish,
/// small enough to hold in memory while writing and serving.
pub const PART_BYTES: usize = 1 << 20;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExportFormat {
    /// RFC 4180 CSV with a header row; `permissions` space-separated.
    #[default]
    Csv,
    /// One JSON object per line, as `GET /v1/logs` lists them.
    Ndjson,
}

impl ExportFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Csv => "csv",
            Self::Ndjson => "ndjson",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Csv, Self::Ndjson]
            .into_iter()
            .find(|format| format.as_str() == text)
    }

    /// A format as a form or a job's params give it: none (or empty) is the
    /// default; anything else must name a format.
    pub fn parse_or_default(text: Option<&str>) -> Option<Self> {
        match text {
            None | Some("") => Some(Self::default()),
            Some(text) => Self::parse(text),
        }
    }

    /// What a download of this format is called and sent as.
    pub fn file_extension(self) -> &'static str {
        match self {
            Self::Csv => "csv.gz",
            Self::Ndjson => "ndjson.gz",
        }
    }
}

/// One CSV row: the log's fields, flat.
#[derive(Serialize)]
struct CsvRow<'a> {
    id: &'a str,
    at: String,
    key_id: Option<&'a str>,
    workspace_id: Option<&'a str>,
    environment: Option<&'a str>,
    client_ip: Option<&'a str>,
    permissions: String,
    code: &'a str,
    status: u16,
    latency_us: i64,
    method: Option<&'a str>,
    path: Option<&'a str>,
}

impl<'a> CsvRow<'a> {
    fn new(log: &'a RequestLogView) -> Self {
        let at = log
            .at
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        Self {
            id: &log.id,
            at,
            key_id: log.key_id.as_deref(),
            workspace_id: log.workspace_id.as_deref(),
            environment: log.environment.as_deref(),
            client_ip: log.client_ip.as_deref(),
            permissions: log.permissions.join(" "),
            code: &log.code,
            status: log.status,
            latency_us: log.latency_us,
            method: log.method.as_deref(),
            path: log.path.as_deref(),
        }
    }
}

enum Rendering {
    /// Writes into its own buffer; the header row comes with the first row.
    Csv(Box<csv::Writer<Vec<u8>>>),
    Ndjson(Vec<u8>),
}

/// Renders logs one at a time and hands back a compressed part whenever
/// `part_bytes` of rows have been rendered.
pub struct ExportWriter {
    rendering: Rendering,
    part_bytes: usize,
    parts: u32,
    /// Whether any row was written: a CSV header goes out even without.
    rows: u64,
}

impl ExportWriter {
    pub fn new(format: ExportFormat, part_bytes: usize) -> Self {
        let rendering = match format {
            ExportFormat::Csv => Rendering::Csv(Box::new(csv::Writer::from_writer(Vec::new()))),
            ExportFormat::Ndjson => Rendering::Ndjson(Vec::new()),
        };
        Self {
            rendering,
            part_bytes,
            parts: 0,
            rows: 0,
        }
    }

    /// Adds a row; returns a part when enough has been rendered.
    pub fn push(&mut self, log: &RequestLogView) -> std::io::Result<Option<Vec<u8>>> {
        match &mut self.rendering {
            Rendering::Csv(writer) => writer.serialize(CsvRow::new(log))?,
            Rendering::Ndjson(buffer) => {
                serde_json::to_writer(&mut *buffer, log)?;
                buffer.push(b'\n');
            }
        }
        self.rows += 1;
        if self.rendered_len()? >= self.part_bytes {
            return self.cut().map(Some);
        }
        Ok(None)
    }

    /// The last part: what is left, or — when nothing was written at all —
    /// an empty file (a CSV with its header only).
    pub fn finish(mut self) -> std::io::Result<Option<Vec<u8>>> {
        if self.rows == 0
            && let Rendering::Csv(writer) = &mut self.rendering
        {
            writer.write_record(CSV_HEADER)?;
        }
        if self.parts > 0 && self.rendered_len()? == 0 {
            return Ok(None);
        }
        self.cut().map(Some)
    }

    /// How many bytes were rendered since the last part.
    fn rendered_len(&mut self) -> std::io::Result<usize> {
        Ok(match &mut self.rendering {
            Rendering::Csv(writer) => {
                writer.flush()?;
                writer.get_ref().len()
            }
            Rendering::Ndjson(buffer) => buffer.len(),
        })
    }

    /// Takes what was rendered since the last part. A CSV writer is
    /// replaced by one that writes no header: the file has one, up front.
    fn take_rendered(&mut self) -> std::io::Result<Vec<u8>> {
        match &mut self.rendering {
            Rendering::Csv(writer) => {
                let headerless = csv::WriterBuilder::new()
                    .has_headers(false)
                    .from_writer(Vec::new());
                std::mem::replace(writer, Box::new(headerless))
                    .into_inner()
                    .map_err(|e| e.into_error())
            }
            Rendering::Ndjson(buffer) => Ok(std::mem::take(buffer)),
        }
    }

    /// Compresses what was rendered into one gzip member and starts over.
    fn cut(&mut self) -> std::io::Result<Vec<u8>> {
        let rendered = self.take_rendered()?;
        let mut part = GzEncoder::new(Vec::new(), Compression::default());
        part.write_all(&rendered)?;
        self.parts += 1;
        part.finish()
    }
}

/// The CSV columns, as `CsvRow` names them; written by hand only for an
/// export without rows (serde writes it with the first row otherwise).
const CSV_HEADER: [&str; 12] = [
    "id",
    "at",
    "key_id",
    "workspace_id",
    "environment",
    "client_ip",
    "permissions",
    "code",
    "status",
    "latency_us",
    "method",
    "path",
];

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::MultiGzDecoder;
    use std::io::Read;
    use time::OffsetDateTime;

    fn log(i: usize) -> RequestLogView {
        RequestLogView {
            id: format!("log_{i:04}"),
            at: OffsetDateTime::from_unix_timestamp(1_700_000_000 + i as i64).unwrap(),
            key_id: i.is_multiple_of(2).then(|| format!("key_{i}")),
            workspace_id: Some("ws_1".into()),
            environment: Some("production".into()),
            client_ip: Some("203.0.113.7".into()),
            permissions: vec!["customers:read".into(), "orders:write".into()],
            code: "valid".into(),
            status: 200,
            latency_us: 12,
            method: Some("GET".into()),
            path: Some("/v1/orders/\"quoted\",comma".into()),
        }
    }

    /// Every part, in order, as a download would concatenate them.
    fn export(format: ExportFormat, rows: usize, part_bytes: usize) -> (Vec<Vec<u8>>, String) {
        let mut writer = ExportWriter::new(format, part_bytes);
        let mut parts = Vec::new();
        for i in 0..rows {
            parts.extend(writer.push(&log(i)).unwrap());
        }
        parts.extend(writer.finish().unwrap());
        let mut text = String::new();
        MultiGzDecoder::new(parts.concat().as_slice())
            .read_to_string(&mut text)
            .unwrap();
        (parts, text)
    }

    #[test]
    fn parts_concatenate_into_one_gzip_file() {
        let (parts, text) = export(ExportFormat::Ndjson, 50, 1000);
        assert!(parts.len() > 5, "{} parts", parts.len());
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(lines.len(), 50);
        for (i, line) in lines.iter().enumerate() {
            assert_eq!(line["id"], format!("log_{i:04}"));
        }
        assert_eq!(lines[3]["permissions"][1], "orders:write");
        assert_eq!(lines[3]["key_id"], serde_json::Value::Null);
    }

    #[test]
    fn csv_has_one_header_and_quotes_what_needs_it() {
        let (parts, text) = export(ExportFormat::Csv, 40, 700);
        assert!(parts.len() > 3, "{} parts", parts.len());
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        assert_eq!(reader.headers().unwrap(), CSV_HEADER.as_slice());
        let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
        assert_eq!(rows.len(), 40);
        let row = &rows[2];
        assert_eq!(&row[0], "log_0002");
        assert_eq!(&row[1], "2023-11-14T22:13:22Z");
        assert_eq!(&row[6], "customers:read orders:write");
        assert_eq!(&row[11], "/v1/orders/\"quoted\",comma");
        assert_eq!(&rows[3][2], "", "no key: an empty cell");
    }

    #[test]
    fn an_export_without_rows_is_still_a_file() {
        let (parts, csv) = export(ExportFormat::Csv, 0, PART_BYTES);
        assert_eq!(parts.len(), 1);
        assert_eq!(csv.trim_end(), CSV_HEADER.join(","));
        let (parts, ndjson) = export(ExportFormat::Ndjson, 0, PART_BYTES);
        assert_eq!((parts.len(), ndjson.as_str()), (1, ""));
    }

    #[test]
    fn a_full_last_part_is_not_followed_by_an_empty_one() {
        // Every row fills a part: three rows, three parts, none empty.
        let (parts, text) = export(ExportFormat::Ndjson, 3, 1);
        assert_eq!((parts.len(), text.lines().count()), (3, 3));
    }
}
