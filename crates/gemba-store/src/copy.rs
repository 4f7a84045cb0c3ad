//! Moving an installation from SQLite to PostgreSQL: every row of every
//! stage's tables, copied as it is (ids, times, sealed post-mortem slots),
//! in one PostgreSQL transaction, so a copy that fails leaves the
//! destination as empty as it was.
//!
//! The source must be at this gemba's newest schema (open it with
//! `gemba store migrate` first) and is only read; the destination must be
//! empty. Tables and columns are matched by name between the two schemas;
//! one the other lacks stops the copy before anything is written, naming
//! it, rather than leaving data behind.

use std::path::Path;

use rusqlite::types::Value;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};

use crate::migrations::{Backend, STAGES};
use crate::postgres::{big, PgStore};
use crate::StoreError;

/// SQLite tables that have no table of their own in PostgreSQL.
const SQLITE_ONLY: &[&str] = &["schema_stages", "sqlite_sequence", "escalation_ids"];
/// Rows sent from the SQLite reader to the writer at a time.
const CHUNK: usize = 2_000;

/// What was copied: rows per table, in copy order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Copied {
    pub tables: Vec<(String, u64)>,
}

impl Copied {
    pub fn rows(&self) -> u64 {
        self.tables.iter().map(|(_, n)| n).sum()
    }
}

fn failed(what: impl std::fmt::Display) -> StoreError {
    StoreError::Query(format!("copy: {what}"))
}

/// One table to copy: its columns with their PostgreSQL types.
struct Table {
    name: String,
    columns: Vec<(String, Type)>,
    rows: u64,
}

/// Copies the SQLite store at `from` into `to`, calling `progress(table,
/// rows copied so far, rows in all)` as it goes.
pub async fn sqlite_to_postgres(
    from: &Path,
    to: &PgStore,
    mut progress: impl FnMut(&str, u64, u64),
) -> Result<Copied, StoreError> {
    let src = from.to_path_buf();
    let source = tokio::task::spawn_blocking(move || open_source(&src))
        .await
        .map_err(|e| StoreError::Task(e.to_string()))??;
    let mut client = to.client().await?;
    let tx = client.transaction().await.map_err(|e| to.failed(e))?;
    let tables = plan(&source, &tx, to).await?;
    let total: u64 = tables.iter().map(|t| t.rows).sum();
    let mut copied = Copied::default();
    let mut done = 0u64;
    for table in &tables {
        progress(&table.name, done, total);
        let n = copy_table(from, table, &tx, to, |n| {
            progress(&table.name, done + n, total)
        })
        .await?;
        if n != table.rows {
            return Err(failed(format!(
                "table {} changed while it was copied ({} rows counted, {n} read); stop the servers using it and copy again",
                table.name, table.rows
            )));
        }
        done += n;
        copied.tables.push((table.name.clone(), n));
    }
    fix_sequences(&source, &tx, to).await?;
    tx.commit().await.map_err(|e| to.failed(e))?;
    progress("", done, total);
    Ok(copied)
}

/// The source, read-only, checked to be at the newest schema.
fn open_source(path: &Path) -> Result<rusqlite::Connection, StoreError> {
    let shown = path.display().to_string();
    let open = |reason: String| StoreError::Open {
        path: shown.clone(),
        reason,
    };
    if !path.is_file() {
        return Err(open("no such file".into()));
    }
    let c = rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| open(e.to_string()))?;
    let mut versions = std::collections::BTreeMap::new();
    {
        let mut st = c
            .prepare("SELECT stage, version FROM schema_stages")
            .map_err(|e| open(format!("not a gemba store: {e}")))?;
        let rows = st
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .map_err(|e| open(e.to_string()))?;
        for r in rows {
            let (stage, v) = r.map_err(|e| open(e.to_string()))?;
            versions.insert(stage, v);
        }
    }
    for stage in STAGES {
        let have = versions.get(stage.name).copied().unwrap_or(0);
        let newest = stage.newest(Backend::Sqlite) as i64;
        if have != newest {
            return Err(open(format!(
                "stage {} is at schema {have}, this gemba's is {newest}: run `gemba store migrate --url sqlite://{shown}` with this gemba first",
                stage.name
            )));
        }
    }
    Ok(c)
}

/// The tables to copy, with their columns and row counts; refuses a
/// destination that holds rows and tables or columns only one side has.
async fn plan(
    source: &rusqlite::Connection,
    tx: &deadpool_postgres::Transaction<'_>,
    to: &PgStore,
) -> Result<Vec<Table>, StoreError> {
    let q = |e| to.failed(e);
    let pg_tables: Vec<String> = tx
        .query(
            "SELECT table_name::TEXT FROM information_schema.tables
             WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'
               AND table_name <> 'gemba_schema_stages'
             ORDER BY table_name",
            &[],
        )
        .await
        .map_err(q)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let sqlite_tables: Vec<String> = {
        let mut st = source
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .map_err(failed)?;
        let rows = st.query_map([], |r| r.get(0)).map_err(failed)?;
        rows.collect::<Result<_, _>>().map_err(failed)?
    };
    for t in &sqlite_tables {
        if !SQLITE_ONLY.contains(&t.as_str()) && !pg_tables.contains(t) {
            return Err(failed(format!(
                "the SQLite store has a table {t} the PostgreSQL schema lacks; nothing was copied"
            )));
        }
    }
    let mut tables = Vec::new();
    for name in pg_tables {
        if !sqlite_tables.contains(&name) {
            return Err(failed(format!(
                "the PostgreSQL schema has a table {name} the SQLite store lacks; nothing was copied"
            )));
        }
        let busy: bool = tx
            .query_one(&format!("SELECT EXISTS (SELECT 1 FROM {name})"), &[])
            .await
            .map_err(q)?
            .get(0);
        if busy {
            return Err(failed(format!(
                "the destination is not empty (table {name} has rows); copy into a new database"
            )));
        }
        let mut columns = Vec::new();
        for r in tx
            .query(
                "SELECT column_name::TEXT, data_type::TEXT FROM information_schema.columns
                 WHERE table_schema = current_schema() AND table_name = $1
                 ORDER BY ordinal_position",
                &[&name],
            )
            .await
            .map_err(q)?
        {
            let (column, ty): (String, String) = (r.get(0), r.get(1));
            let ty = match ty.as_str() {
                "bigint" => Type::INT8,
                "text" => Type::TEXT,
                "bytea" => Type::BYTEA,
                "boolean" => Type::BOOL,
                "double precision" => Type::FLOAT8,
                other => {
                    return Err(failed(format!(
                        "column {name}.{column} has type {other}, which the copy does not know"
                    )))
                }
            };
            columns.push((column, ty));
        }
        let sqlite_columns: Vec<String> = {
            let mut st = source
                .prepare(&format!("SELECT name FROM pragma_table_info('{name}')"))
                .map_err(failed)?;
            let rows = st.query_map([], |r| r.get(0)).map_err(failed)?;
            rows.collect::<Result<_, _>>().map_err(failed)?
        };
        for c in &sqlite_columns {
            if !columns.iter().any(|(p, _)| p == c) {
                return Err(failed(format!(
                    "column {name}.{c} of the SQLite store has no place in PostgreSQL; nothing was copied"
                )));
            }
        }
        for (c, _) in &columns {
            if !sqlite_columns.contains(c) {
                return Err(failed(format!(
                    "column {name}.{c} of PostgreSQL is missing in the SQLite store; nothing was copied"
                )));
            }
        }
        let rows: i64 = source
            .query_row(&format!("SELECT count(*) FROM {name}"), [], |r| r.get(0))
            .map_err(failed)?;
        tables.push(Table {
            name,
            columns,
            rows: rows as u64,
        });
    }
    Ok(tables)
}

/// Streams one table: a blocking reader sends chunks of rows, the writer
/// turns them into PostgreSQL's binary COPY. Returns the rows written.
async fn copy_table(
    from: &Path,
    table: &Table,
    tx: &deadpool_postgres::Transaction<'_>,
    to: &PgStore,
    mut progress: impl FnMut(u64),
) -> Result<u64, StoreError> {
    let names: Vec<&str> = table.columns.iter().map(|(c, _)| c.as_str()).collect();
    let select = format!("SELECT {} FROM {}", names.join(", "), table.name);
    let width = names.len();
    let (chunks, mut rx) = tokio::sync::mpsc::channel::<Result<Vec<Vec<Value>>, String>>(4);
    let path = from.to_path_buf();
    let reader = tokio::task::spawn_blocking(move || {
        let read = || -> Result<(), String> {
            let c = rusqlite::Connection::open_with_flags(
                &path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )
            .map_err(|e| e.to_string())?;
            let mut st = c.prepare(&select).map_err(|e| e.to_string())?;
            let mut rows = st.query([]).map_err(|e| e.to_string())?;
            let mut chunk = Vec::with_capacity(CHUNK);
            while let Some(r) = rows.next().map_err(|e| e.to_string())? {
                let mut row = Vec::with_capacity(width);
                for i in 0..width {
                    row.push(r.get::<_, Value>(i).map_err(|e| e.to_string())?);
                }
                chunk.push(row);
                if chunk.len() == CHUNK
                    && chunks
                        .blocking_send(Ok(std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK))))
                        .is_err()
                {
                    return Ok(());
                }
            }
            if !chunk.is_empty() {
                let _ = chunks.blocking_send(Ok(chunk));
            }
            Ok(())
        };
        if let Err(e) = read() {
            let _ = chunks.blocking_send(Err(e));
        }
    });
    let sink = tx
        .copy_in(&format!(
            "COPY {} ({}) FROM STDIN BINARY",
            table.name,
            names.join(", ")
        ))
        .await
        .map_err(|e| to.failed(e))?;
    let types: Vec<Type> = table.columns.iter().map(|(_, t)| t.clone()).collect();
    let mut writer = std::pin::pin!(BinaryCopyInWriter::new(sink, &types));
    let mut written = 0u64;
    while let Some(chunk) = rx.recv().await {
        let chunk = chunk.map_err(|e| failed(format!("reading {}: {e}", table.name)))?;
        for row in chunk {
            let values = row
                .into_iter()
                .zip(&table.columns)
                .map(|(v, (column, ty))| {
                    convert(v, ty).map_err(|why| {
                        failed(format!(
                            "{}.{column} of row {}: {why}",
                            table.name,
                            written + 1
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let refs: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| &**v as _).collect();
            writer
                .as_mut()
                .write(&refs)
                .await
                .map_err(|e| to.failed(e))?;
            written += 1;
        }
        progress(written);
    }
    writer.as_mut().finish().await.map_err(|e| to.failed(e))?;
    reader.await.map_err(|e| StoreError::Task(e.to_string()))?;
    Ok(written)
}

type Param = Box<dyn ToSql + Sync + Send>;

/// One SQLite value as the PostgreSQL column's type.
fn convert(v: Value, ty: &Type) -> Result<Param, String> {
    Ok(match (v, ty) {
        (Value::Null, t) if *t == Type::INT8 => Box::new(None::<i64>),
        (Value::Null, t) if *t == Type::TEXT => Box::new(None::<String>),
        (Value::Null, t) if *t == Type::BYTEA => Box::new(None::<Vec<u8>>),
        (Value::Null, t) if *t == Type::BOOL => Box::new(None::<bool>),
        (Value::Null, _) => Box::new(None::<f64>),
        (Value::Integer(i), t) if *t == Type::INT8 => Box::new(i),
        (Value::Integer(i), t) if *t == Type::BOOL => Box::new(i != 0),
        (Value::Integer(i), t) if *t == Type::FLOAT8 => Box::new(i as f64),
        (Value::Integer(i), t) if *t == Type::TEXT => Box::new(i.to_string()),
        (Value::Integer(i), _) => Box::new(i.to_string().into_bytes()),
        (Value::Real(f), t) if *t == Type::FLOAT8 => Box::new(f),
        (Value::Real(f), t) => return Err(format!("a real number ({f}) for a {t} column")),
        (Value::Text(s), t) if *t == Type::TEXT => {
            if s.contains('\0') {
                return Err("text with a NUL, which PostgreSQL's TEXT refuses".into());
            }
            Box::new(s)
        }
        (Value::Text(s), t) if *t == Type::BYTEA => Box::new(s.into_bytes()),
        (Value::Text(s), t) if *t == Type::INT8 => Box::new(
            s.parse::<i64>()
                .map_err(|_| format!("text {:?} for a number column", cut(&s)))?,
        ),
        (Value::Text(s), t) => return Err(format!("text {:?} for a {t} column", cut(&s))),
        (Value::Blob(b), t) if *t == Type::BYTEA => Box::new(b),
        (Value::Blob(b), t) if *t == Type::TEXT => Box::new(
            String::from_utf8(b).map_err(|_| "bytes that are not UTF-8 for a text column")?,
        ),
        (Value::Blob(_), t) => return Err(format!("bytes for a {t} column")),
    })
}

fn cut(s: &str) -> String {
    s.chars().take(40).collect()
}

/// Sequences continue after the copied ids: the serial columns', and the
/// escalation ids (a table in SQLite, a sequence in PostgreSQL).
async fn fix_sequences(
    source: &rusqlite::Connection,
    tx: &deadpool_postgres::Transaction<'_>,
    to: &PgStore,
) -> Result<(), StoreError> {
    let q = |e| to.failed(e);
    for r in tx
        .query(
            "SELECT table_name::TEXT, column_name::TEXT FROM information_schema.columns
             WHERE table_schema = current_schema() AND column_default LIKE 'nextval(%'",
            &[],
        )
        .await
        .map_err(q)?
    {
        let (table, column): (String, String) = (r.get(0), r.get(1));
        // SQLite's AUTOINCREMENT counter: ids of rows since deleted (pruned
        // runs, delivered notices) are never handed out again, so cursors
        // that followers keep by id stay behind every new row.
        let counted: i64 = source
            .query_row(
                "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = ?1), 0)",
                [&table],
                |r| r.get(0),
            )
            .map_err(failed)?;
        tx.execute(
            &format!(
                "SELECT setval(pg_get_serial_sequence('{table}', '{column}'),
                               GREATEST(COALESCE((SELECT max({column}) FROM {table}), 0), $1) + 1, false)"
            ),
            &[&counted],
        )
        .await
        .map_err(q)?;
    }
    let used: i64 = source
        .query_row(
            "SELECT max(n) FROM (
               SELECT COALESCE(max(id), 0) AS n FROM escalation_ids
               UNION ALL SELECT COALESCE(max(id), 0) FROM escalations
               UNION ALL SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'escalation_ids'), 0))",
            [],
            |r| r.get(0),
        )
        .map_err(failed)?;
    tx.execute(
        "SELECT setval('escalation_ids', $1, false)",
        &[&big(used as u64 + 1)],
    )
    .await
    .map_err(q)?;
    Ok(())
}
