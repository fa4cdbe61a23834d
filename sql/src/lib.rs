//! `warden-sql`: audit history with plain SQL, no server needed.
//!
//! A DataFusion session over the Parquet archive. Each archive table (`events`, `alerts`,
//! `actions` and `notifications`) is registered as a hive-partitioned listing table with the schema from
//! `warden-ingest`, so `dt` (`YYYY-MM-DD`) and `hour` (`HH`) prune partitions in `WHERE`, nested
//! parts read as `response.status`, and an empty archive is an empty table rather than an
//! error. The archive may be a local directory or an S3 bucket (`[archive.s3]`). Sessions are
//! read-only: DDL and DML are refused.
//!
//! Both partition columns are strings, exactly the directory names. `hour` must not be typed
//! as an integer: DataFusion turns `hour = 9` on an integer partition column into the literal
//! path prefix `hour=9/`, which misses the zero-padded `hour=09/`. As a string column,
//! `hour = 9`, `hour = '09'` and ranges all select the right hour (tested).

pub mod saved;

use std::io::Write;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::context::SQLOptions;
use datafusion::prelude::{DataFrame, SessionContext};
use warden_ingest::action::ControlAction;
use warden_ingest::alert::Alert;
use warden_ingest::archive_store::{ArchiveStore, S3Options};
use warden_ingest::columnar::event_schema;
use warden_ingest::incident::IncidentEntry;
use warden_ingest::layout::{ArchiveUrl, EVENTS_TABLE};
use warden_ingest::notification::NotificationRecord;
use warden_ingest::table_record::TableRecord;

/// Errors of a SQL session.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    #[error("archive location: {0}")]
    Location(String),
    #[error("{0}")]
    Query(#[from] DataFusionError),
    #[error("formatting results: {0}")]
    Format(#[from] datafusion::arrow::error::ArrowError),
    #[error("writing results: {0}")]
    Io(#[from] std::io::Error),
    #[error(
        "column {0:?} is nested and CSV cannot hold it; select its fields instead (e.g. response.status)"
    )]
    NestedColumnInCsv(String),
}

/// How query results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputFormat {
    /// An aligned text table for people.
    #[default]
    Table,
    /// CSV with a header row.
    Csv,
    /// One JSON object per row (JSON Lines).
    Json,
}

/// A read-only SQL session over one archive.
pub struct ArchiveSession {
    context: SessionContext,
}

impl std::fmt::Debug for ArchiveSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArchiveSession").finish_non_exhaustive()
    }
}

/// The results of one query: its schema (known even when there are no rows) and its batches.
#[derive(Debug)]
pub struct QueryResult {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
}

impl QueryResult {
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

impl ArchiveSession {
    /// Opens a session over the archive at `url` (local or S3) with every archive table
    /// registered.
    pub fn open(url: &str, s3: &S3Options) -> Result<Self, SqlError> {
        let archive = ArchiveUrl::parse(url).map_err(SqlError::Location)?;
        let store = ArchiveStore::open(&archive, s3).map_err(SqlError::Location)?;
        let context = SessionContext::new();
        context.register_object_store(&store.bucket_url(), store.bucket.clone());
        let tables = [
            (EVENTS_TABLE, event_schema()),
            (Alert::TABLE, Alert::schema()),
            (ControlAction::TABLE, ControlAction::schema()),
            (NotificationRecord::TABLE, NotificationRecord::schema()),
            (IncidentEntry::TABLE, IncidentEntry::schema()),
        ];
        for (table, schema) in tables {
            register_table(&context, &store, &archive, table, schema)?;
        }
        Ok(Self { context })
    }

    /// Registers the `calls` view (a call per row; see [`saved`]).
    pub async fn with_views(self) -> Result<Self, SqlError> {
        self.context.sql(saved::CALLS_VIEW).await?;
        Ok(self)
    }

    /// Runs one read-only query.
    pub async fn query(&self, sql: &str) -> Result<QueryResult, SqlError> {
        let frame = self.plan(sql).await?;
        let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
        let batches = frame.collect().await?;
        Ok(QueryResult { schema, batches })
    }

    /// Runs one read-only query, its results as a stream of batches: for results too large to
    /// hold at once (a replay of the archive).
    pub async fn query_stream(&self, sql: &str) -> Result<SendableRecordBatchStream, SqlError> {
        Ok(self.plan(sql).await?.execute_stream().await?)
    }

    async fn plan(&self, sql: &str) -> Result<DataFrame, SqlError> {
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        Ok(self.context.sql_with_options(sql, options).await?)
    }
}

fn register_table(
    context: &SessionContext,
    store: &ArchiveStore,
    archive: &ArchiveUrl,
    table: &str,
    schema: SchemaRef,
) -> Result<(), SqlError> {
    if let ArchiveUrl::Local(root) = archive {
        // A local table nobody has written yet is empty, not missing. (An object store has no
        // directories: listing an unwritten prefix is already empty.)
        std::fs::create_dir_all(root.join(table))?;
    }
    let table_url = ListingTableUrl::parse(store.table_url(table))?;
    let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
        .with_file_extension(".parquet")
        .with_table_partition_cols(vec![
            ("dt".to_owned(), DataType::Utf8),
            ("hour".to_owned(), DataType::Utf8),
        ]);
    let config = ListingTableConfig::new(table_url)
        .with_listing_options(options)
        .with_schema(schema);
    context.register_table(table, Arc::new(ListingTable::try_new(config)?))?;
    Ok(())
}

/// Prints `result` to `out` in `format`.
pub fn write_result(
    result: &QueryResult,
    format: OutputFormat,
    out: &mut dyn Write,
) -> Result<(), SqlError> {
    use datafusion::arrow::{csv, json, util::pretty};
    match format {
        OutputFormat::Table => {
            let (schema, batches) = readable_floats(result)?;
            let table = pretty::pretty_format_batches_with_schema(schema, &batches)?;
            writeln!(out, "{table}")?;
        }
        OutputFormat::Csv => {
            if let Some(field) = result
                .schema
                .fields()
                .iter()
                .find(|f| f.data_type().is_nested())
            {
                return Err(SqlError::NestedColumnInCsv(field.name().clone()));
            }
            let mut writer = csv::WriterBuilder::new().with_header(true).build(out);
            if result.batches.is_empty() {
                writer.write(&RecordBatch::new_empty(result.schema.clone()))?;
            }
            for batch in &result.batches {
                writer.write(batch)?;
            }
        }
        OutputFormat::Json => {
            let mut writer = json::LineDelimitedWriter::new(out);
            for batch in &result.batches {
                writer.write(batch)?;
            }
            writer.finish()?;
        }
    }
    Ok(())
}

/// The result with its float columns as readable text (`0.0000074`, not
/// `7.3999999999999995e-6`), for the table format; other columns as they are.
fn readable_floats(
    result: &QueryResult,
) -> Result<(SchemaRef, Vec<RecordBatch>), datafusion::arrow::error::ArrowError> {
    use datafusion::arrow::array::{Array, ArrayRef, Float64Array, StringArray};
    use datafusion::arrow::compute::cast;
    use datafusion::arrow::datatypes::{Field, Schema};
    let is_float =
        |data_type: &DataType| matches!(data_type, DataType::Float64 | DataType::Float32);
    if !result
        .schema
        .fields()
        .iter()
        .any(|field| is_float(field.data_type()))
    {
        return Ok((result.schema.clone(), result.batches.clone()));
    }
    let schema: SchemaRef = Arc::new(Schema::new(
        result
            .schema
            .fields()
            .iter()
            .map(|field| {
                if is_float(field.data_type()) {
                    Arc::new(Field::new(field.name(), DataType::Utf8, true))
                } else {
                    Arc::clone(field)
                }
            })
            .collect::<Vec<_>>(),
    ));
    let mut batches = Vec::new();
    for batch in &result.batches {
        let columns: Vec<ArrayRef> = batch
            .columns()
            .iter()
            .map(|column| {
                if !is_float(column.data_type()) {
                    return Ok(Arc::clone(column));
                }
                let floats = cast(column, &DataType::Float64)?;
                let floats = floats
                    .as_any()
                    .downcast_ref::<Float64Array>()
                    .map(|floats| {
                        floats
                            .iter()
                            .map(|value| value.map(saved::readable_number))
                            .collect::<StringArray>()
                    })
                    .unwrap_or_else(|| StringArray::from(vec![None::<String>; column.len()]));
                Ok(Arc::new(floats) as ArrayRef)
            })
            .collect::<Result<_, datafusion::arrow::error::ArrowError>>()?;
        batches.push(RecordBatch::try_new(Arc::clone(&schema), columns)?);
    }
    Ok((schema, batches))
}
