//! Post-mortems, their participants, sealed ballots and action items in PostgreSQL.

use tokio_postgres::Row;

use super::big;
use crate::timeline::*;
use crate::{PgStore, StoreError};

const PARTICIPANT_COLUMNS: &str = "token_hash, incident, name, seal_key, slot, claimed";

fn participant_row(r: &Row) -> ParticipantRow {
    ParticipantRow {
        token_hash: r.get(0),
        incident: r.get(1),
        name: r.get(2),
        seal_key: r.get(3),
        slot: r.get(4),
        claimed: r.get(5),
    }
}

fn action_row(r: &Row) -> ActionRow {
    ActionRow {
        id: r.get(0),
        incident: r.get(1),
        proposal: r.get(2),
        text: r.get(3),
        owner: r.get(4),
        due_ms: r.get::<_, i64>(5) as u64,
        created_ms: r.get::<_, i64>(6) as u64,
        done_ms: r.get::<_, Option<i64>>(7).map(|v| v as u64),
        done_by: r.get(8),
    }
}

#[async_trait::async_trait]
impl PostmortemStore for PgStore {
    async fn add_postmortem(
        &self,
        incident: i64,
        expires_ms: u64,
        body: String,
        participants: Vec<ParticipantRow>,
    ) -> Result<bool, StoreError> {
        let f = |e| self.failed(e);
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(f)?;
        let n = tx
            .execute(
                "INSERT INTO postmortems (incident, phase, expires_ms, version, body)
                 VALUES ($1, 'round', $2, 1, $3) ON CONFLICT DO NOTHING",
                &[&incident, &big(expires_ms), &body],
            )
            .await
            .map_err(f)?;
        if n == 0 {
            return Ok(false);
        }
        for p in &participants {
            tx.execute(
                "INSERT INTO pm_participants (token_hash, incident, name, seal_key, slot, claimed)
                 VALUES ($1, $2, $3, $4, NULL, $5)",
                &[&p.token_hash, &incident, &p.name, &p.seal_key, &p.claimed],
            )
            .await
            .map_err(f)?;
        }
        tx.commit().await.map_err(f)?;
        Ok(true)
    }

    async fn postmortem(&self, incident: i64) -> Result<Option<PostmortemRow>, StoreError> {
        let c = self.client().await?;
        let r = c
            .query_opt(
                &format!(
                    "SELECT incident, phase, expires_ms, version, body,
                    (SELECT COUNT(*) FROM pm_ballots WHERE incident = $1),
                    (SELECT COUNT(*) FROM pm_ballots WHERE incident = $1 AND {CAST})
                 FROM postmortems WHERE incident = $1"
                ),
                &[&incident],
            )
            .await
            .map_err(|e| self.failed(e))?;
        Ok(r.map(|r| PostmortemRow {
            incident: r.get(0),
            phase: r.get(1),
            expires_ms: r.get::<_, i64>(2) as u64,
            version: r.get(3),
            body: r.get(4),
            ballots: r.get::<_, i64>(5) as u64,
            ballots_cast: r.get::<_, i64>(6) as u64,
        }))
    }

    async fn participant(&self, token_hash: String) -> Result<Option<ParticipantRow>, StoreError> {
        let c = self.client().await?;
        let r = c
            .query_opt(
                &format!("SELECT {PARTICIPANT_COLUMNS} FROM pm_participants WHERE token_hash = $1"),
                &[&token_hash],
            )
            .await
            .map_err(|e| self.failed(e))?;
        Ok(r.as_ref().map(participant_row))
    }

    async fn participants(&self, incident: i64) -> Result<Vec<ParticipantRow>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                &format!(
                    "SELECT {PARTICIPANT_COLUMNS} FROM pm_participants WHERE incident = $1 ORDER BY token_hash"
                ),
                &[&incident],
            )
            .await
            .map_err(|e| self.failed(e))?;
        Ok(rows.iter().map(participant_row).collect())
    }

    async fn update_postmortem(
        &self,
        incident: i64,
        version: i64,
        phase: String,
        body: String,
    ) -> Result<bool, StoreError> {
        let f = |e| self.failed(e);
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(f)?;
        let n = tx
            .execute(
                "UPDATE postmortems SET phase = $1, body = $2, version = version + 1
                 WHERE incident = $3 AND version = $4",
                &[&phase, &body, &incident, &version],
            )
            .await
            .map_err(f)?;
        if n == 0 {
            return Ok(false);
        }
        if phase != "voting" {
            tx.execute(
                "UPDATE pm_participants SET slot = NULL WHERE incident = $1 AND slot IS NOT NULL",
                &[&incident],
            )
            .await
            .map_err(f)?;
        }
        tx.commit().await.map_err(f)?;
        Ok(true)
    }

    async fn open_voting(
        &self,
        incident: i64,
        version: i64,
        body: String,
        ballots: Vec<(String, String)>,
        slots: Vec<(String, String)>,
    ) -> Result<bool, StoreError> {
        let f = |e| self.failed(e);
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(f)?;
        let n = tx
            .execute(
                "UPDATE postmortems SET phase = 'voting', body = $1, version = version + 1
                 WHERE incident = $2 AND version = $3 AND phase = 'round'",
                &[&body, &incident, &version],
            )
            .await
            .map_err(f)?;
        if n == 0 {
            return Ok(false);
        }
        // In hash order, one statement: the rows' order says nothing of who
        // holds which.
        let mut ballots = ballots;
        ballots.sort();
        let (hashes, fillers): (Vec<String>, Vec<String>) = ballots.into_iter().unzip();
        tx.execute(
            "INSERT INTO pm_ballots (token_hash, incident, content)
             SELECT h, $3, f FROM UNNEST($1::TEXT[], $2::TEXT[]) AS t(h, f) ORDER BY h",
            &[&hashes, &fillers, &incident],
        )
        .await
        .map_err(f)?;
        for (who, slot) in &slots {
            tx.execute(
                "UPDATE pm_participants SET slot = $1 WHERE token_hash = $2 AND incident = $3",
                &[slot, who, &incident],
            )
            .await
            .map_err(f)?;
        }
        tx.commit().await.map_err(f)?;
        Ok(true)
    }

    async fn cast_ballot(
        &self,
        token_hash: String,
        content: String,
        now_ms: u64,
    ) -> Result<BallotOutcome, StoreError> {
        let f = |e| self.failed(e);
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(f)?;
        // The post-mortem's row locked: closing waits for this ballot, or
        // this ballot sees it closed.
        let found = tx
            .query_opt(
                "SELECT b.incident, (b.content IS NOT NULL AND substr(b.content, 1, 1) <> 'u'),
                    p.phase, p.expires_ms
                 FROM pm_ballots b JOIN postmortems p ON p.incident = b.incident
                 WHERE b.token_hash = $1 FOR UPDATE",
                &[&token_hash],
            )
            .await
            .map_err(f)?;
        let Some(r) = found else {
            return Ok(BallotOutcome::Unknown);
        };
        let (incident, cast, phase, expires_ms): (i64, bool, String, i64) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        if phase != "voting" || big(now_ms) >= expires_ms {
            return Ok(BallotOutcome::NotOpen);
        }
        if cast {
            return Ok(BallotOutcome::Repeated);
        }
        tx.execute(
            "UPDATE pm_ballots SET content = $1 WHERE token_hash = $2
             AND (content IS NULL OR substr(content, 1, 1) = 'u')",
            &[&content, &token_hash],
        )
        .await
        .map_err(f)?;
        tx.commit().await.map_err(f)?;
        Ok(BallotOutcome::Cast(incident))
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
        let f = |e| self.failed(e);
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(f)?;
        // The post-mortem's row first: a ballot being cast holds it, and
        // once this holds it no ballot gets in.
        let n = tx
            .execute(
                "UPDATE postmortems SET phase = 'closed', body = $1, version = version + 1
                 WHERE incident = $2 AND version = $3 AND phase = 'voting'",
                &[&body, &incident, &version],
            )
            .await
            .map_err(f)?;
        if n == 0 {
            return Ok(false);
        }
        let now_cast: i64 = tx
            .query_one(
                &format!("SELECT COUNT(*) FROM pm_ballots WHERE incident = $1 AND {CAST}"),
                &[&incident],
            )
            .await
            .map_err(f)?
            .get(0);
        if now_cast as u64 != cast {
            return Ok(false);
        }
        tx.execute(
            "UPDATE pm_participants SET slot = NULL WHERE incident = $1 AND slot IS NOT NULL",
            &[&incident],
        )
        .await
        .map_err(f)?;
        tx.execute(
            &format!(
                "UPDATE pm_ballots SET content = CASE WHEN {CAST} THEN $1 ELSE $2 END
                 WHERE incident = $3"
            ),
            &[&scrub_cast, &scrub_uncast, &incident],
        )
        .await
        .map_err(f)?;
        tx.commit().await.map_err(f)?;
        Ok(true)
    }

    async fn claim_seat(
        &self,
        old_hash: String,
        old_slot: Option<String>,
        new_hash: String,
        seal_key: String,
        slot: Option<String>,
    ) -> Result<bool, StoreError> {
        let c = self.client().await?;
        let n = c
            .execute(
                "UPDATE pm_participants SET token_hash = $1, seal_key = $2, slot = $3, claimed = TRUE
                 WHERE token_hash = $4 AND NOT claimed AND slot IS NOT DISTINCT FROM $5",
                &[&new_hash, &seal_key, &slot, &old_hash, &old_slot],
            )
            .await
            .map_err(|e| self.failed(e))?;
        Ok(n == 1)
    }

    async fn ballot(&self, token_hash: String) -> Result<Option<(i64, bool)>, StoreError> {
        let c = self.client().await?;
        let r = c
            .query_opt(
                &format!("SELECT incident, {CAST} FROM pm_ballots WHERE token_hash = $1"),
                &[&token_hash],
            )
            .await
            .map_err(|e| self.failed(e))?;
        Ok(r.map(|r| (r.get(0), r.get(1))))
    }

    async fn ballot_contents(&self, incident: i64) -> Result<Vec<String>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                &format!(
                    "SELECT content FROM pm_ballots WHERE incident = $1 AND {CAST} ORDER BY token_hash"
                ),
                &[&incident],
            )
            .await
            .map_err(|e| self.failed(e))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn add_action(&self, a: ActionRow) -> Result<i64, StoreError> {
        let c = self.client().await?;
        let r = c
            .query_one(
                "INSERT INTO pm_actions (incident, proposal, text, owner, due_ms, created_ms, done_ms, done_by)
                 VALUES ($1, $2, $3, $4, $5, $6, NULL, NULL) RETURNING id",
                &[
                    &a.incident,
                    &a.proposal,
                    &a.text,
                    &a.owner,
                    &big(a.due_ms),
                    &big(a.created_ms),
                ],
            )
            .await
            .map_err(|e| self.failed(e))?;
        Ok(r.get(0))
    }

    async fn actions(
        &self,
        open_only: bool,
        incident: Option<i64>,
    ) -> Result<Vec<ActionRow>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT id, incident, proposal, text, owner, due_ms, created_ms, done_ms, done_by
                 FROM pm_actions
                 WHERE (NOT $1 OR done_ms IS NULL) AND ($2::BIGINT IS NULL OR incident = $2)
                 ORDER BY id LIMIT 10000",
                &[&open_only, &incident],
            )
            .await
            .map_err(|e| self.failed(e))?;
        Ok(rows.iter().map(action_row).collect())
    }

    async fn finish_action(&self, id: i64, done_ms: u64, by: String) -> Result<bool, StoreError> {
        let c = self.client().await?;
        let n = c
            .execute(
                "UPDATE pm_actions SET done_ms = $1, done_by = $2 WHERE id = $3 AND done_ms IS NULL",
                &[&big(done_ms), &by, &id],
            )
            .await
            .map_err(|e| self.failed(e))?;
        Ok(n == 1)
    }

    async fn reopen_action(&self, id: i64) -> Result<bool, StoreError> {
        let c = self.client().await?;
        let n = c
            .execute(
                "UPDATE pm_actions SET done_ms = NULL, done_by = NULL WHERE id = $1 AND done_ms IS NOT NULL",
                &[&id],
            )
            .await
            .map_err(|e| self.failed(e))?;
        Ok(n == 1)
    }
}
