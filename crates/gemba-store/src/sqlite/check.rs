//! Finding a damaged SQLite store: SQLite's own `quick_check` (or the
//! slower `integrity_check`) over the file, then, when it finds damage,
//! the same check table by table, so that the answer names the tables
//! affected and how to recover.

use std::path::Path;

use rusqlite::{Connection, OpenFlags};

/// How thoroughly to look.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Depth {
    /// `PRAGMA quick_check`: every page and row, not index contents
    /// against their tables (linear in the file's size).
    Quick,
    /// `PRAGMA integrity_check`: indexes too.
    Full,
}

impl Depth {
    fn pragma(self) -> &'static str {
        match self {
            Depth::Quick => "quick_check",
            Depth::Full => "integrity_check",
        }
    }
}

/// What a check found wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    /// The tables affected; empty when the file as a whole cannot be read
    /// (its header or its list of tables).
    pub tables: Vec<String>,
    /// SQLite's first words about it.
    pub detail: String,
}

impl Damage {
    /// What to do about it, for the store at `path`.
    pub fn recovery(path: &str) -> String {
        format!(
            "restore {path} from a backup (stop the servers first), or keep what can be read: `sqlite3 {path} .recover | sqlite3 NEW.db` and point [store] at NEW.db (or move it into PostgreSQL with `gemba store copy --from NEW.db --to postgres://…`)"
        )
    }

    /// One line naming the damage.
    pub fn describe(&self) -> String {
        if self.tables.is_empty() {
            format!("the file cannot be read as a store ({})", self.detail)
        } else {
            format!(
                "damaged table{} {} ({})",
                if self.tables.len() == 1 { "" } else { "s" },
                self.tables.join(", "),
                self.detail
            )
        }
    }
}

/// The first `n` lines a check pragma answers, or its error.
fn run(conn: &Connection, sql: &str, n: usize) -> Result<Vec<String>, String> {
    let mut stmt = conn.prepare(sql).map_err(|e| e.to_string())?;
    let rows = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for r in rows.take(n) {
        out.push(r.map_err(|e| e.to_string())?);
    }
    Ok(out)
}

fn is_ok(answer: &Result<Vec<String>, String>) -> bool {
    matches!(answer, Ok(lines) if lines.len() == 1 && lines[0] == "ok")
}

fn first_words(answer: Result<Vec<String>, String>) -> String {
    match answer {
        Ok(lines) => lines.join("; "),
        Err(e) => e,
    }
}

/// Checks an open connection; `None` when the store is sound.
pub(crate) fn check_conn(conn: &Connection, depth: Depth) -> Option<Damage> {
    let whole = run(conn, &format!("PRAGMA {}", depth.pragma()), 20);
    if is_ok(&whole) {
        return None;
    }
    let tables = match run(
        conn,
        "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name",
        100_000,
    ) {
        Ok(t) => t,
        Err(e) => {
            return Some(Damage {
                tables: Vec::new(),
                detail: e,
            })
        }
    };
    let mut damaged = Vec::new();
    let mut detail = String::new();
    for t in tables {
        let answer = run(
            conn,
            &format!("PRAGMA {}(\"{}\")", depth.pragma(), t.replace('"', "\"\"")),
            5,
        );
        if !is_ok(&answer) {
            if detail.is_empty() {
                detail = first_words(answer);
            }
            damaged.push(t);
        }
    }
    if damaged.is_empty() {
        detail = first_words(whole);
    }
    Some(Damage {
        tables: damaged,
        detail,
    })
}

/// Checks the store file at `path` without changing it (read-only, no
/// migration); `Ok(None)` when sound. `Err` when it cannot be opened.
pub fn check_file(path: &Path, depth: Depth) -> Result<Option<Damage>, String> {
    if !path.is_file() {
        return Err(format!("no store at {}", path.display()));
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    Ok(check_conn(&conn, depth))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sound_store_passes_and_a_page_of_garbage_names_its_table() {
        let dir = std::env::temp_dir().join(format!("gemba-check-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.db");
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(
                "CREATE TABLE journal (seq INTEGER PRIMARY KEY, text TEXT);
                 CREATE TABLE other (x);",
            )
            .unwrap();
            for i in 0..3000 {
                c.execute(
                    "INSERT INTO journal (text) VALUES (?1)",
                    [format!(
                        "line {i} of the journal, long enough to fill pages"
                    )],
                )
                .unwrap();
            }
        }
        assert_eq!(check_file(&path, Depth::Quick).unwrap(), None);
        assert_eq!(check_file(&path, Depth::Full).unwrap(), None);
        // A page in the middle (the journal's rows) overwritten.
        let len = std::fs::metadata(&path).unwrap().len();
        let page = 4096 * (len / 4096 / 2);
        let mut bytes = std::fs::read(&path).unwrap();
        for (i, b) in bytes[page as usize..page as usize + 4096]
            .iter_mut()
            .enumerate()
        {
            *b = (i * 7 + 13) as u8;
        }
        std::fs::write(&path, &bytes).unwrap();
        let damage = check_file(&path, Depth::Quick)
            .unwrap()
            .expect("damage found");
        assert_eq!(damage.tables, vec!["journal".to_string()], "{damage:?}");
        assert!(damage.describe().starts_with("damaged table journal ("));
        // A file that is not a store at all.
        std::fs::write(&path, vec![0x5a; 8192]).unwrap();
        let damage = check_file(&path, Depth::Quick)
            .unwrap()
            .expect("damage found");
        assert!(damage.tables.is_empty(), "{damage:?}");
        assert!(check_file(&dir.join("nothing.db"), Depth::Quick).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
