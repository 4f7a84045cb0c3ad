//! Reports are read on threads of their own, a few at a time, each within
//! a deadline.
//!
//! - At most [`ParseBudget::parses`] reports (two per core, 4 to 16) are
//!   parsed at once, on
//!   threads that are not the blocking pool the store uses: a flood of
//!   bodies cannot starve the store or the rest of the node.
//! - One client (by address) holds at most `parses - 1` of them, so
//!   another client's report always finds a thread. A client over its
//!   share waits for its own earlier reports.
//! - Waiting and reading together have a deadline. A report past it is
//!   answered 503 with `Retry-After` at once. Its thread cannot be stopped
//!   in the middle of the YAML loader, but the nesting check makes every
//!   parse linear in the body (capped by `max_report_bytes`), and the
//!   thread keeps its permit until it ends: never more than `parses`
//!   threads read reports, however many deadlines pass.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long a report may wait for a thread and be read.
pub const PARSE_DEADLINE: Duration = Duration::from_secs(10);

/// Why a report was not read.
#[derive(Debug, PartialEq, Eq)]
pub enum Busy {
    /// Waited and read past the deadline.
    Deadline,
}

pub struct ParseBudget {
    permits: Arc<Semaphore>,
    parses: usize,
    per_client: usize,
    clients: Mutex<HashMap<IpAddr, Arc<Semaphore>>>,
    deadline: Duration,
    /// Reports answered 503 because they passed the deadline.
    pub over_deadline: Counter,
}

impl ParseBudget {
    /// `parses` threads at most (at least 2, so that a fair share exists).
    pub fn new(parses: usize, deadline: Duration) -> ParseBudget {
        let parses = parses.max(2);
        ParseBudget {
            permits: Arc::new(Semaphore::new(parses)),
            parses,
            per_client: parses - 1,
            clients: Mutex::new(HashMap::new()),
            deadline,
            over_deadline: Counter::default(),
        }
    }

    /// The budget for this machine: two parses per core, 4 to 16 (a
    /// parse also waits on memory; one client gets all but one).
    pub fn for_this_machine() -> ParseBudget {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        ParseBudget::new((2 * cores).clamp(4, 16), PARSE_DEADLINE)
    }

    pub fn parses(&self) -> usize {
        self.parses
    }

    /// Runs `parse` on a thread of its own once `client` is within its
    /// share and a thread is free, within the deadline.
    pub async fn run<T: Send + 'static>(
        &self,
        client: Option<IpAddr>,
        parse: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Busy> {
        let until = tokio::time::Instant::now() + self.deadline;
        let result = async {
            let share = match client {
                Some(ip) => Some(self.client_share(ip, until).await?),
                None => None,
            };
            let permit = tokio::time::timeout_at(until, self.permits.clone().acquire_owned())
                .await
                .map_err(|_| Busy::Deadline)?
                .expect("the semaphore is never closed");
            let (tx, rx) = tokio::sync::oneshot::channel();
            let held: (OwnedSemaphorePermit, Option<OwnedSemaphorePermit>) = (permit, share);
            std::thread::Builder::new()
                .name("gemba-parse".into())
                .spawn(move || {
                    let out = parse();
                    drop(held);
                    let _ = tx.send(out);
                })
                .map_err(|_| Busy::Deadline)?;
            tokio::time::timeout_at(until, rx)
                .await
                .map_err(|_| Busy::Deadline)?
                .map_err(|_| Busy::Deadline)
        }
        .await;
        if let Some(ip) = client {
            self.forget_idle(ip);
        }
        if result.is_err() {
            self.over_deadline.inc();
        }
        result
    }

    async fn client_share(
        &self,
        ip: IpAddr,
        until: tokio::time::Instant,
    ) -> Result<OwnedSemaphorePermit, Busy> {
        let sem = self
            .clients
            .lock()
            .expect("client shares")
            .entry(ip)
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_client)))
            .clone();
        tokio::time::timeout_at(until, sem.acquire_owned())
            .await
            .map_err(|_| Busy::Deadline)
            .map(|p| p.expect("the semaphore is never closed"))
    }

    /// Drops a client's entry once nothing of it runs or waits.
    fn forget_idle(&self, ip: IpAddr) {
        let mut clients = self.clients.lock().expect("client shares");
        if clients
            .get(&ip)
            .is_some_and(|s| Arc::strong_count(s) == 1 && s.available_permits() == self.per_client)
        {
            clients.remove(&ip);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([127, 0, 0, last]))
    }

    #[tokio::test]
    async fn one_client_cannot_take_every_thread_and_a_deadline_answers_at_once() {
        let budget = Arc::new(ParseBudget::new(2, Duration::from_millis(300)));
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        // Four slow reads from one client: one runs at a time (its share
        // is 1 of 2), the rest wait and pass the deadline.
        let mut slow = Vec::new();
        for _ in 0..4 {
            let (b, r, m) = (budget.clone(), running.clone(), most.clone());
            slow.push(tokio::spawn(async move {
                b.run(ip(1), move || {
                    let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                    m.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(1500));
                    r.fetch_sub(1, Ordering::SeqCst);
                })
                .await
            }));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Another client's report finds the second thread.
        assert_eq!(budget.run(ip(2), || 7).await, Ok(7));
        let answers: Vec<_> = futures_join(slow).await;
        assert!(
            answers.iter().all(|a| *a == Err(Busy::Deadline)),
            "{answers:?}"
        );
        assert_eq!(
            most.load(Ordering::SeqCst),
            1,
            "one client ran one at a time"
        );
        assert_eq!(budget.over_deadline.get(), 4);
        // The slow read still runs (real threads: real time here); it
        // keeps its thread until it ends.
        assert_eq!(budget.permits.available_permits(), 1);
        for _ in 0..100 {
            if budget.permits.available_permits() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(budget.permits.available_permits(), 2);
        assert_eq!(budget.run(ip(1), || 1).await, Ok(1));
        assert!(
            budget.clients.lock().unwrap().is_empty(),
            "idle clients are forgotten"
        );
    }

    async fn futures_join<T>(handles: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await.unwrap());
        }
        out
    }
}
