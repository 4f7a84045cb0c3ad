//! Post-mortems, their participants, sealed ballots and action items in SQLite.

use rusqlite::{params, OptionalExtension};

use crate::timeline::*;
use crate::{SqliteStore, StoreError};

const PARTICIPANT_COLUMNS: &str = "token_hash, incident, name, seal_key, slot, claimed";

fn participant_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ParticipantRow> {
    Ok(ParticipantRow {
        token_hash: r.get(0)?,
        incident: r.get(1)?,
        name: r.get(2)?,
        seal_key: r.get(3)?,
        slot: r.get(4)?,
        claimed: r.get(5)?,
    })
}

#[async_trait::async_trait]
impl PostmortemStore for SqliteStore {
    async fn add_postmortem(
        &self,
        incident: i64,
        expires_ms: u64,
        body: String,
        participants: Vec<ParticipantRow>,
    ) -> Result<bool, StoreError> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let n = tx.execute(
                "INSERT OR IGNORE INTO postmortems (incident, phase, expires_ms, version, body)
                 VALUES (?1, 'round', ?2, 1, ?3)",
                params![incident, expires_ms as i64, body],
            )?;
            if n == 0 {
                return Ok(false);
            }
            {
                let mut st = tx.prepare_cached(
                    "INSERT INTO pm_participants (token_hash, incident, name, seal_key, slot, claimed)
                     VALUES (?1, ?2, ?3, ?4, NULL, ?5)",
                )?;
                for p in &participants {
                    st.execute(params![p.token_hash, incident, p.name, p.seal_key, p.claimed])?;
                }
            }
            tx.commit()?;
            Ok(true)
        })
        .await
    }

    async fn postmortem(&self, incident: i64) -> Result<Option<PostmortemRow>, StoreError> {
        self.with(move |c| {
            c.query_row(
                &format!(
                    "SELECT incident, phase, expires_ms, version, body,
                    (SELECT COUNT(*) FROM pm_ballots WHERE incident = ?1),
                    (SELECT COUNT(*) FROM pm_ballots WHERE incident = ?1 AND {CAST})
                 FROM postmortems WHERE incident = ?1"
                ),
                [incident],
                |r| {
                    Ok(PostmortemRow {
                        incident: r.get(0)?,
                        phase: r.get(1)?,
                        expires_ms: r.get::<_, i64>(2)? as u64,
                        version: r.get(3)?,
                        body: r.get(4)?,
                        ballots: r.get::<_, i64>(5)? as u64,
                        ballots_cast: r.get::<_, i64>(6)? as u64,
                    })
                },
            )
            .optional()
        })
        .await
    }

    async fn participant(&self, token_hash: String) -> Result<Option<ParticipantRow>, StoreError> {
        self.with(move |c| {
            c.query_row(
                &format!("SELECT {PARTICIPANT_COLUMNS} FROM pm_participants WHERE token_hash = ?1"),
                [token_hash],
                participant_row,
            )
            .optional()
        })
        .await
    }

    async fn participants(&self, incident: i64) -> Result<Vec<ParticipantRow>, StoreError> {
        self.with(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {PARTICIPANT_COLUMNS} FROM pm_participants WHERE incident = ?1 ORDER BY token_hash"
            ))?;
            let rows = st.query_map([incident], participant_row)?;
            rows.collect()
        })
        .await
    }

    async fn update_postmortem(
        &self,
        incident: i64,
        version: i64,
        phase: String,
        body: String,
    ) -> Result<bool, StoreError> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let n = tx.execute(
                "UPDATE postmortems SET phase = ?1, body = ?2, version = version + 1
                 WHERE incident = ?3 AND version = ?4",
                params![phase, body, incident, version],
            )?;
            if n == 0 {
                return Ok(false);
            }
            let forget = phase != "voting";
            if forget {
                // Zeroes the freed bytes so the slots do not linger in the
                // file's free pages.
                tx.pragma_update(None, "secure_delete", true)?;
                tx.execute(
                    "UPDATE pm_participants SET slot = NULL WHERE incident = ?1 AND slot IS NOT NULL",
                    [incident],
                )?;
            }
            tx.commit()?;
            if forget {
                c.pragma_update(None, "secure_delete", false)?;
                // The write-ahead log still holds the pages as they were:
                // copy them home and empty it.
                c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
            }
            Ok(true)
        })
        .await
    }

    async fn open_voting(
        &self,
        incident: i64,
        version: i64,
        body: String,
        ballots: Vec<(String, String)>,
        slots: Vec<(String, String)>,
    ) -> Result<bool, StoreError> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let n = tx.execute(
                "UPDATE postmortems SET phase = 'voting', body = ?1, version = version + 1
                 WHERE incident = ?2 AND version = ?3 AND phase = 'round'",
                params![body, incident, version],
            )?;
            if n == 0 {
                return Ok(false);
            }
            {
                let mut st = tx.prepare_cached(
                    "INSERT INTO pm_ballots (token_hash, incident, content) VALUES (?1, ?2, ?3)",
                )?;
                let mut ballots = ballots;
                ballots.sort();
                for (hash, filler) in &ballots {
                    st.execute(params![hash, incident, filler])?;
                }
                let mut st = tx.prepare_cached(
                    "UPDATE pm_participants SET slot = ?1 WHERE token_hash = ?2 AND incident = ?3",
                )?;
                for (who, slot) in &slots {
                    st.execute(params![slot, who, incident])?;
                }
            }
            tx.commit()?;
            Ok(true)
        })
        .await
    }

    async fn cast_ballot(
        &self,
        token_hash: String,
        content: String,
        now_ms: u64,
    ) -> Result<BallotOutcome, StoreError> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let found: Option<(i64, bool, String, i64)> = tx
                .query_row(
                    "SELECT b.incident, (b.content IS NOT NULL AND substr(b.content, 1, 1) <> 'u'),
                        p.phase, p.expires_ms
                     FROM pm_ballots b JOIN postmortems p ON p.incident = b.incident
                     WHERE b.token_hash = ?1",
                    [&token_hash],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .optional()?;
            let Some((incident, cast, phase, expires_ms)) = found else {
                return Ok(BallotOutcome::Unknown);
            };
            if phase != "voting" || now_ms >= expires_ms as u64 {
                return Ok(BallotOutcome::NotOpen);
            }
            if cast {
                return Ok(BallotOutcome::Repeated);
            }
            // In place: the content has its filler's length, so the row
            // keeps its place in the page (storage order stays hash order).
            tx.pragma_update(None, "secure_delete", true)?;
            tx.execute(
                "UPDATE pm_ballots SET content = ?1 WHERE token_hash = ?2
                 AND (content IS NULL OR substr(content, 1, 1) = 'u')",
                params![content, token_hash],
            )?;
            tx.commit()?;
            c.pragma_update(None, "secure_delete", false)?;
            Ok(BallotOutcome::Cast(incident))
        })
        .await
    }

    async fn close_voting(
        &self,
        incident: i64,
        version: i64,
        body: String,
        cast: u64,
        scrub_uncast: String,
        scrub_cast: String,
    ) -> Result<bool, StoreError> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let now_cast: i64 = tx.query_row(
                &format!("SELECT COUNT(*) FROM pm_ballots WHERE incident = ?1 AND {CAST}"),
                [incident],
                |r| r.get(0),
            )?;
            if now_cast as u64 != cast {
                return Ok(false);
            }
            let n = tx.execute(
                "UPDATE postmortems SET phase = 'closed', body = ?1, version = version + 1
                 WHERE incident = ?2 AND version = ?3 AND phase = 'voting'",
                params![body, incident, version],
            )?;
            if n == 0 {
                return Ok(false);
            }
            tx.pragma_update(None, "secure_delete", true)?;
            tx.execute(
                "UPDATE pm_participants SET slot = NULL WHERE incident = ?1 AND slot IS NOT NULL",
                [incident],
            )?;
            tx.execute(
                &format!(
                    "UPDATE pm_ballots SET content = CASE WHEN {CAST} THEN ?1 ELSE ?2 END
                     WHERE incident = ?3"
                ),
                params![scrub_cast, scrub_uncast, incident],
            )?;
            tx.commit()?;
            c.pragma_update(None, "secure_delete", false)?;
            // The write-ahead log still holds the pages as they were: copy
            // them home and empty it.
            c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
            Ok(true)
        })
        .await
    }

    async fn claim_seat(
        &self,
        old_hash: String,
        old_slot: Option<String>,
        new_hash: String,
        seal_key: String,
        slot: Option<String>,
    ) -> Result<bool, StoreError> {
        self.with(move |c| {
            let n = c.execute(
                "UPDATE pm_participants SET token_hash = ?1, seal_key = ?2, slot = ?3, claimed = 1
                 WHERE token_hash = ?4 AND claimed = 0 AND slot IS ?5",
                params![new_hash, seal_key, slot, old_hash, old_slot],
            )?;
            Ok(n == 1)
        })
        .await
    }

    async fn ballot(&self, token_hash: String) -> Result<Option<(i64, bool)>, StoreError> {
        self.with(move |c| {
            c.query_row(
                &format!("SELECT incident, {CAST} FROM pm_ballots WHERE token_hash = ?1"),
                [token_hash],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
        })
        .await
    }

    async fn ballot_contents(&self, incident: i64) -> Result<Vec<String>, StoreError> {
        self.with(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT content FROM pm_ballots WHERE incident = ?1 AND {CAST} ORDER BY token_hash"
            ))?;
            let rows = st.query_map([incident], |r| r.get(0))?;
            rows.collect()
        })
        .await
    }

    async fn add_action(&self, a: ActionRow) -> Result<i64, StoreError> {
        self.with(move |c| {
            c.execute(
                "INSERT INTO pm_actions (incident, proposal, text, owner, due_ms, created_ms, done_ms, done_by)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, NULL, NULL)",
                params![
                    a.incident,
                    a.proposal,
                    a.text,
                    a.owner,
                    a.due_ms as i64,
                    a.created_ms as i64
                ],
            )?;
            Ok(c.last_insert_rowid())
        })
        .await
    }

    async fn actions(
        &self,
        open_only: bool,
        incident: Option<i64>,
    ) -> Result<Vec<ActionRow>, StoreError> {
        self.with(move |c| {
            let mut st = c.prepare_cached(
                "SELECT id, incident, proposal, text, owner, due_ms, created_ms, done_ms, done_by
                 FROM pm_actions
                 WHERE (?1 = 0 OR done_ms IS NULL) AND (?2 IS NULL OR incident = ?2)
                 ORDER BY id LIMIT 10000",
            )?;
            let rows = st.query_map(params![open_only as i64, incident], |r| {
                Ok(ActionRow {
                    id: r.get(0)?,
                    incident: r.get(1)?,
                    proposal: r.get(2)?,
                    text: r.get(3)?,
                    owner: r.get(4)?,
                    due_ms: r.get::<_, i64>(5)? as u64,
                    created_ms: r.get::<_, i64>(6)? as u64,
                    done_ms: r.get::<_, Option<i64>>(7)?.map(|v| v as u64),
                    done_by: r.get(8)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    async fn finish_action(&self, id: i64, done_ms: u64, by: String) -> Result<bool, StoreError> {
        self.with(move |c| {
            let n = c.execute(
                "UPDATE pm_actions SET done_ms = ?1, done_by = ?2 WHERE id = ?3 AND done_ms IS NULL",
                params![done_ms as i64, by, id],
            )?;
            Ok(n == 1)
        })
        .await
    }

    async fn reopen_action(&self, id: i64) -> Result<bool, StoreError> {
        self.with(move |c| {
            let n = c.execute(
                "UPDATE pm_actions SET done_ms = NULL, done_by = NULL WHERE id = ?1 AND done_ms IS NOT NULL",
                params![id],
            )?;
            Ok(n == 1)
        })
        .await
    }
}
