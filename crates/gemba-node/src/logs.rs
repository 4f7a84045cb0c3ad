//! Log excerpts across the grid: where a node's agent is asked for its
//! lines, and the lines every notice about a node carries.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use gemba_core::Scope;
use gemba_escalator::engine::Notice;
use gemba_escalator::notify::{Attach, Attachment};
use gemba_mesh::MeshNode;
use gemba_timeline::logs::{LogQuery, LogSource, Resolve};

/// The address a node's agent is asked at: the HTTP address it publishes,
/// believed only on the address it gossips from (a node may point a
/// server at itself, not elsewhere). A node listening on every address
/// (0.0.0.0) is asked at its gossip address.
pub(crate) fn resolver(mesh: Arc<MeshNode>) -> Resolve {
    Arc::new(move |node: String| {
        let mesh = mesh.clone();
        Box::pin(async move {
            let members = mesh.members().await;
            let m = members
                .iter()
                .find(|m| m.id == node)
                .ok_or_else(|| format!("{node} is not a member of the grid"))?;
            let http: SocketAddr = m
                .http
                .as_deref()
                .and_then(|h| h.parse().ok())
                .ok_or_else(|| format!("{node} publishes no HTTP address"))?;
            // The token goes only to the address the node proved it sends
            // from, never to one it merely advertises.
            let proven = mesh.proven_address(&node).ok_or_else(|| {
                format!("{node} has not proved its address to this server yet (a signed presence every 15 s): not asked")
            })?;
            let ip = if http.ip().is_unspecified() || http.ip() == proven {
                proven
            } else {
                return Err(format!(
                    "{node} publishes HTTP on {}, not on the address it proved, {proven}: not asked",
                    http.ip(),
                ));
            };
            Ok(SocketAddr::new(ip, http.port()))
        })
    })
}

/// How far back a notice's lines go.
const NOTICE_BEFORE: Duration = Duration::from_secs(300);
/// Lines per file in a notice.
const NOTICE_LINES: usize = 20;

/// A notice about a node carries that node's newest log lines.
pub(crate) struct NoticeLogs(pub LogSource);

#[async_trait::async_trait]
impl Attach for NoticeLogs {
    async fn attach(&self, n: &Notice) -> Option<Attachment> {
        let Scope::Node(node) = &n.scope else {
            return None;
        };
        let mut q = LogQuery::around(None, n.at_ms, NOTICE_BEFORE, Duration::ZERO);
        q.limit = NOTICE_LINES;
        let got = self.0.excerpts(node, &q).await;
        let (text, json) = match &got {
            Ok(list) => {
                let text = gemba_timeline::logs::text(list);
                if text.is_empty() {
                    return None;
                }
                (
                    text,
                    serde_json::json!([{ "node": node, "excerpts": list }]),
                )
            }
            Err(why) => (
                format!("log lines of {node}: {why}\n"),
                serde_json::json!([{ "node": node, "error": why }]),
            ),
        };
        Some(Attachment { text, json })
    }
}
