//! Ingest: turns files of `timestamp,value` rows into validated samples, or says exactly which row is bad.
//!
//! A row whose value is empty or NaN (a CSV cell with nothing or `NaN` in it, a Parquet null or
//! NaN) is a missing sample,
//! not a bad row: it is left out and counted, and the store's resampling leaves its bucket as a gap
//! (NaN) that fitting regularises over, exactly as for a sample that never arrived. This is also
//! what `prescale export` writes for an empty bucket, so an export imports back.
//!
//! A row whose timestamp the destination refuses (the store's rule, [`TimestampRule`]: more than a
//! day ahead of its clock, or outside the years 0000 to 9999) is a bad row like one whose timestamp
//! does not parse, so it is named by its line, or skipped, rather than refusing the whole batch
//! when it reaches the store.

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use polars::prelude::{DataType, ParquetReader, SerReader, TimeUnit};

use crate::domain::{Sample, Timestamp};

pub mod prometheus;

/// The generated messages of the Prometheus remote-write 1.0 specification (`proto/prometheus`).
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod remote_write_proto {
    include!(concat!(env!("OUT_DIR"), "/prometheus.rs"));
}

/// Errors reading a samples file.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The CSV header lacks a `timestamp` or a `value` column.
    #[error("line 1: expected a header with `timestamp` and `value` columns, found {found:?}")]
    BadHeader {
        /// The header as read.
        found: String,
    },
    /// A CSV row is malformed; nothing was imported.
    #[error("line {line}: {kind}: {detail} (nothing imported; --skip-bad-rows imports the rest)")]
    BadRow {
        /// 1-based line number in the file, the header being line 1.
        line: u64,
        /// What kind of problem.
        kind: BadRowKind,
        /// The offending text and why it was refused.
        detail: String,
    },
    /// A Parquet row is malformed; nothing was imported.
    #[error("row {row}: {kind}: {detail} (nothing imported; --skip-bad-rows imports the rest)")]
    BadParquetRow {
        /// 1-based row number.
        row: u64,
        /// What kind of problem.
        kind: BadRowKind,
        /// The offending value and why it was refused.
        detail: String,
    },
    /// The CSV could not be tokenised at all (e.g. invalid UTF-8).
    #[error("{path}: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// The parser's complaint, with its position.
        reason: String,
    },
    /// A Parquet file lacks a needed column or holds one of an unusable type.
    #[error("{path}: {reason}")]
    Parquet {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// Why a row was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BadRowKind {
    /// The row does not have as many fields as the header.
    FieldCount,
    /// The timestamp is empty or not RFC 3339 / epoch seconds / epoch milliseconds.
    Timestamp,
    /// The value is empty or not a number.
    Value,
    /// The value is infinite.
    NonFinite,
    /// The timestamp parses but the destination refuses it ([`TimestampRule`]).
    TimestampOutOfRange,
}

impl fmt::Display for BadRowKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::FieldCount => "wrong number of fields",
            Self::Timestamp => "bad timestamp",
            Self::Value => "bad value",
            Self::NonFinite => "non-finite value",
            Self::TimestampOutOfRange => "timestamp out of range",
        })
    }
}

/// Which parsed timestamps the samples' destination accepts: `Some(reason)` refuses the row. For an
/// import, the store's own rule (`store::timestamp_refusal` at the clock's reading), so that what
/// the parser passes the store takes.
pub type TimestampRule<'rule> = &'rule dyn Fn(Timestamp) -> Option<String>;

/// What to do with a malformed row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BadRowPolicy {
    /// Fail the whole file at the first bad row.
    #[default]
    Reject,
    /// Skip bad rows, import the rest, and report what was skipped.
    Skip,
}

/// A row left out under [`BadRowPolicy::Skip`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedRow {
    /// CSV line number (header is line 1) or Parquet row number (1-based).
    pub position: u64,
    /// What kind of problem.
    pub kind: BadRowKind,
    /// The offending text and why it was refused.
    pub detail: String,
}

/// The samples read from a file and the rows skipped.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ParsedSamples {
    /// Valid samples in file order.
    pub samples: Vec<Sample>,
    /// Rows left out, in file order (always empty under [`BadRowPolicy::Reject`]).
    pub skipped: Vec<SkippedRow>,
    /// Rows with a valid timestamp and an empty value: missing samples, left as gaps.
    pub missing: usize,
}

/// Input file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    /// Comma-separated `timestamp,value` with a header.
    Csv,
    /// Apache Parquet with `timestamp` and `value` columns.
    Parquet,
}

impl FileFormat {
    /// Parquet when the file starts with the Parquet magic bytes, CSV otherwise.
    pub fn sniff(path: &Path) -> Result<Self, IngestError> {
        let mut magic = [0u8; 4];
        let read = File::open(path)
            .and_then(|mut file| file.read(&mut magic))
            .map_err(|source| IngestError::Io {
                path: path.to_owned(),
                source,
            })?;
        Ok(if read == 4 && &magic == b"PAR1" {
            Self::Parquet
        } else {
            Self::Csv
        })
    }
}

/// Reads a CSV or Parquet file (told apart by content, not by name).
pub fn read_file(
    path: &Path,
    policy: BadRowPolicy,
    rule: TimestampRule<'_>,
) -> Result<ParsedSamples, IngestError> {
    let io_error = |source| IngestError::Io {
        path: path.to_owned(),
        source,
    };
    match FileFormat::sniff(path)? {
        FileFormat::Csv => parse_csv(File::open(path).map_err(io_error)?, path, policy, rule),
        FileFormat::Parquet => {
            parse_parquet(File::open(path).map_err(io_error)?, path, policy, rule)
        }
    }
}

/// Collects rows, failing or skipping bad ones per the policy.
struct RowSink<'rule> {
    /// What to do with a bad row.
    policy: BadRowPolicy,
    /// Which timestamps the destination accepts.
    rule: TimestampRule<'rule>,
    /// What has been read so far.
    parsed: ParsedSamples,
}

impl<'rule> RowSink<'rule> {
    fn new(policy: BadRowPolicy, rule: TimestampRule<'rule>) -> Self {
        Self {
            policy,
            rule,
            parsed: ParsedSamples::default(),
        }
    }

    /// A row's timestamp as parsed, or why the row is bad: it did not parse (the parser's reason),
    /// or the destination refuses it.
    fn timestamp(
        &self,
        parsed: Result<Timestamp, String>,
    ) -> Result<Timestamp, (BadRowKind, String)> {
        let timestamp = parsed.map_err(|detail| (BadRowKind::Timestamp, detail))?;
        match (self.rule)(timestamp) {
            Some(reason) => Err((
                BadRowKind::TimestampOutOfRange,
                format!("{timestamp} is {reason}"),
            )),
            None => Ok(timestamp),
        }
    }

    /// Records a bad row; returns the error to stop on under `Reject`.
    fn bad(
        &mut self,
        position: u64,
        kind: BadRowKind,
        detail: String,
    ) -> Option<(u64, BadRowKind, String)> {
        match self.policy {
            BadRowPolicy::Reject => Some((position, kind, detail)),
            BadRowPolicy::Skip => {
                self.parsed.skipped.push(SkippedRow {
                    position,
                    kind,
                    detail,
                });
                None
            }
        }
    }
}

/// Parses a value cell: a finite number, or `None` when empty or `NaN` (a missing sample, as
/// pandas and `prescale export` write it).
fn parse_value(text: &str) -> Result<Option<f64>, (BadRowKind, String)> {
    let trimmed = text.trim();
    if trimmed.is_empty() || trimmed.eq_ignore_ascii_case("nan") {
        return Ok(None);
    }
    let value: f64 = trimmed
        .parse()
        .map_err(|_| (BadRowKind::Value, format!("{trimmed:?} is not a number")))?;
    if !value.is_finite() {
        return Err((BadRowKind::NonFinite, format!("{trimmed:?} is not finite")));
    }
    Ok(Some(value))
}

/// Parses CSV with a header naming `timestamp` and `value` (any order, other columns ignored).
pub fn parse_csv(
    input: impl Read,
    path: &Path,
    policy: BadRowPolicy,
    rule: TimestampRule<'_>,
) -> Result<ParsedSamples, IngestError> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(input);
    let malformed = |error: csv::Error| IngestError::Malformed {
        path: path.to_owned(),
        reason: error.to_string(),
    };
    let header = reader.headers().map_err(malformed)?.clone();
    let column = |name: &str| {
        header.iter().position(|field| {
            field
                .trim_start_matches('\u{feff}')
                .eq_ignore_ascii_case(name)
        })
    };
    let (Some(time_column), Some(value_column)) = (column("timestamp"), column("value")) else {
        return Err(IngestError::BadHeader {
            found: header.iter().collect::<Vec<_>>().join(","),
        });
    };
    let mut sink = RowSink::new(policy, rule);
    let mut record = csv::StringRecord::new();
    while reader.read_record(&mut record).map_err(malformed)? {
        let line = record.position().map_or(0, |position| position.line());
        let row = if record.len() != header.len() {
            Err((
                BadRowKind::FieldCount,
                format!("expected {} fields, found {}", header.len(), record.len()),
            ))
        } else {
            sink.timestamp(
                Timestamp::parse(&record[time_column]).map_err(|error| error.to_string()),
            )
            .and_then(|timestamp| {
                parse_value(&record[value_column])
                    .map(|value| value.map(|value| Sample { timestamp, value }))
            })
        };
        match row {
            Ok(Some(sample)) => sink.parsed.samples.push(sample),
            Ok(None) => sink.parsed.missing += 1,
            Err((kind, detail)) => {
                if let Some((line, kind, detail)) = sink.bad(line, kind, detail) {
                    return Err(IngestError::BadRow { line, kind, detail });
                }
            }
        }
    }
    Ok(sink.parsed)
}

/// Parses Parquet with `timestamp` (datetime, epoch seconds/milliseconds, or RFC 3339 text) and `value`
/// (any numeric type) columns.
pub fn parse_parquet(
    input: File,
    path: &Path,
    policy: BadRowPolicy,
    rule: TimestampRule<'_>,
) -> Result<ParsedSamples, IngestError> {
    let parquet_error = |reason: String| IngestError::Parquet {
        path: path.to_owned(),
        reason,
    };
    let frame = ParquetReader::new(input)
        .finish()
        .map_err(|error| parquet_error(error.to_string()))?;
    let find = |name: &str| {
        frame
            .columns()
            .iter()
            .find(|column| column.name().eq_ignore_ascii_case(name))
            .ok_or_else(|| parquet_error(format!("no `{name}` column")))
    };
    let time_column = find("timestamp")?;
    let value_column = find("value")?;

    let timestamps: Vec<Result<Timestamp, String>> = match time_column.dtype() {
        DataType::Datetime(unit, _) => {
            let per_milli = match unit {
                TimeUnit::Milliseconds => 1,
                TimeUnit::Microseconds => 1_000,
                TimeUnit::Nanoseconds => 1_000_000,
            };
            let raw = time_column
                .cast(&DataType::Int64)
                .map_err(|error| parquet_error(error.to_string()))?;
            let raw = raw
                .i64()
                .map_err(|error| parquet_error(error.to_string()))?;
            raw.iter()
                .map(|cell| {
                    cell.map(|value| Timestamp::from_millis(value.div_euclid(per_milli)))
                        .ok_or_else(|| "missing timestamp".to_owned())
                })
                .collect()
        }
        DataType::String => time_column
            .str()
            .map_err(|error| parquet_error(error.to_string()))?
            .iter()
            .map(|cell| {
                let text = cell.ok_or_else(|| "missing timestamp".to_owned())?;
                Timestamp::parse(text).map_err(|error| error.to_string())
            })
            .collect(),
        dtype if dtype.is_primitive_numeric() => {
            let as_float = time_column
                .cast(&DataType::Float64)
                .map_err(|error| parquet_error(error.to_string()))?;
            as_float
                .f64()
                .map_err(|error| parquet_error(error.to_string()))?
                .iter()
                .map(|cell| {
                    let number = cell.ok_or_else(|| "missing timestamp".to_owned())?;
                    Timestamp::parse(&number.to_string()).map_err(|error| error.to_string())
                })
                .collect()
        }
        other => {
            return Err(parquet_error(format!(
                "`timestamp` column has unusable type {other}"
            )));
        }
    };
    if !value_column.dtype().is_primitive_numeric() {
        return Err(parquet_error(format!(
            "`value` column has non-numeric type {}",
            value_column.dtype()
        )));
    }
    let values = value_column
        .cast(&DataType::Float64)
        .map_err(|error| parquet_error(error.to_string()))?;
    let values = values
        .f64()
        .map_err(|error| parquet_error(error.to_string()))?;

    let mut sink = RowSink::new(policy, rule);
    for (index, (timestamp, value)) in timestamps.into_iter().zip(values.iter()).enumerate() {
        let row = index as u64 + 1;
        let parsed = sink.timestamp(timestamp).and_then(|timestamp| match value {
            None => Ok(None),
            Some(value) if value.is_nan() => Ok(None),
            Some(value) if !value.is_finite() => {
                Err((BadRowKind::NonFinite, format!("{value} is not finite")))
            }
            Some(value) => Ok(Some(Sample { timestamp, value })),
        });
        match parsed {
            Ok(Some(sample)) => sink.parsed.samples.push(sample),
            Ok(None) => sink.parsed.missing += 1,
            Err((kind, detail)) => {
                if let Some((row, kind, detail)) = sink.bad(row, kind, detail) {
                    return Err(IngestError::BadParquetRow { row, kind, detail });
                }
            }
        }
    }
    Ok(sink.parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, policy: BadRowPolicy) -> Result<ParsedSamples, IngestError> {
        parse_under(text, policy, &|_| None)
    }

    fn parse_under(
        text: &str,
        policy: BadRowPolicy,
        rule: TimestampRule<'_>,
    ) -> Result<ParsedSamples, IngestError> {
        parse_csv(text.as_bytes(), Path::new("test.csv"), policy, rule)
    }

    #[test]
    fn reads_all_timestamp_forms() {
        let parsed = parse(
            "timestamp,value\n2014-07-01T00:00:00Z,1\n1404172860,2.5\n1404172920000,-3e2\n",
            BadRowPolicy::Reject,
        )
        .unwrap();
        let times: Vec<i64> = parsed
            .samples
            .iter()
            .map(|s| s.timestamp.as_millis())
            .collect();
        assert_eq!(
            times,
            vec![1_404_172_800_000, 1_404_172_860_000, 1_404_172_920_000]
        );
        assert_eq!(parsed.samples[2].value, -300.0);
    }

    #[test]
    fn accepts_reordered_and_extra_columns() {
        let parsed = parse(
            "host,value,timestamp\na,4,1404172800\n",
            BadRowPolicy::Reject,
        )
        .unwrap();
        assert_eq!(parsed.samples, vec![Sample::new(1_404_172_800_000, 4.0)]);
    }

    #[test]
    fn bad_row_names_its_line_and_imports_nothing() {
        let text = "timestamp,value\n1404172800,1\n1404172860,oops\n1404172920,3\n";
        let error = parse(text, BadRowPolicy::Reject).unwrap_err();
        assert!(
            matches!(
                &error,
                IngestError::BadRow {
                    line: 3,
                    kind: BadRowKind::Value,
                    ..
                }
            ),
            "{error}"
        );
        assert!(error.to_string().starts_with("line 3: bad value"));
    }

    #[test]
    fn every_kind_of_bad_row_is_skipped_and_reported() {
        let text = "timestamp,value\nnot-a-time,1\n1404172860,-inf\n1404172920,inf\n1404172980\n1404173040,x\n1404173100,6\n";
        let parsed = parse(text, BadRowPolicy::Skip).unwrap();
        assert_eq!(parsed.samples, vec![Sample::new(1_404_173_100_000, 6.0)]);
        let kinds: Vec<(u64, BadRowKind)> = parsed
            .skipped
            .iter()
            .map(|row| (row.position, row.kind))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (2, BadRowKind::Timestamp),
                (3, BadRowKind::NonFinite),
                (4, BadRowKind::NonFinite),
                (5, BadRowKind::FieldCount),
                (6, BadRowKind::Value),
            ]
        );
    }

    #[test]
    fn empty_values_are_missing_samples_not_bad_rows() {
        let text = "timestamp,value\n1404172800,1\n1404172860,\n1404172920, \n1404172980,NaN\n1404173040,4\n";
        let parsed = parse(text, BadRowPolicy::Reject).unwrap();
        assert_eq!(
            parsed.samples,
            vec![
                Sample::new(1_404_172_800_000, 1.0),
                Sample::new(1_404_173_040_000, 4.0)
            ]
        );
        assert_eq!(parsed.missing, 3);
        assert!(parsed.skipped.is_empty());
    }

    #[test]
    fn rows_the_timestamp_rule_refuses_are_bad_rows_with_their_line() {
        let latest = Timestamp::from_millis(1_404_172_860_000);
        let rule = |timestamp: Timestamp| (timestamp > latest).then(|| "too late".to_owned());
        let text = "timestamp,value\n1404172800,1\n1404172920,2\n1404172860,3\n";
        let error = parse_under(text, BadRowPolicy::Reject, &rule).unwrap_err();
        assert!(
            matches!(
                &error,
                IngestError::BadRow {
                    line: 3,
                    kind: BadRowKind::TimestampOutOfRange,
                    ..
                }
            ),
            "{error}"
        );
        assert!(
            error
                .to_string()
                .starts_with("line 3: timestamp out of range: 2014-07-01T00:02:00Z is too late"),
            "{error}"
        );
        let parsed = parse_under(text, BadRowPolicy::Skip, &rule).unwrap();
        assert_eq!(
            parsed.samples,
            vec![
                Sample::new(1_404_172_800_000, 1.0),
                Sample::new(1_404_172_860_000, 3.0)
            ]
        );
        let skipped: Vec<(u64, BadRowKind)> = parsed
            .skipped
            .iter()
            .map(|row| (row.position, row.kind))
            .collect();
        assert_eq!(skipped, vec![(3, BadRowKind::TimestampOutOfRange)]);
    }

    #[test]
    fn missing_header_is_an_error() {
        let error = parse("1404172800,1\n", BadRowPolicy::Skip).unwrap_err();
        assert!(matches!(error, IngestError::BadHeader { .. }));
    }
}
