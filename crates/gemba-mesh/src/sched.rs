//! Which threads the kernel should run first.
//!
//! Probes are timed: a probe answer or a reply timestamp that waits for a
//! CPU shows up as RTT, and on a busy host as loss. So a node's probe path
//! runs as an ordinary (interactive) thread, and `gemba run` marks the rest
//! of the node (gossip, signature checks, HTTP, the store) as batch work:
//! the kernel then lets a waking probe thread run ahead of them, and never
//! the other way round. Both classes are open to any user; no privilege is
//! asked for.

/// Marks the calling thread, and the threads it starts from now on, as
/// batch work (`SCHED_BATCH`). Returns why not, where it cannot be done.
pub fn batch_thread() -> Result<(), String> {
    set_policy(libc::SCHED_BATCH)
}

/// Marks the calling thread as interactive (`SCHED_OTHER`), whatever it
/// inherited.
pub fn interactive_thread() -> Result<(), String> {
    set_policy(libc::SCHED_OTHER)
}

#[cfg(target_os = "linux")]
fn set_policy(policy: libc::c_int) -> Result<(), String> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_setscheduler reads one sched_param through a valid
    // pointer; pid 0 is the calling thread.
    let rc = unsafe { libc::sched_setscheduler(0, policy, &param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().to_string())
    }
}

#[cfg(not(target_os = "linux"))]
fn set_policy(_policy: libc::c_int) -> Result<(), String> {
    Err("scheduling classes are set on Linux only".into())
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn a_batch_thread_starts_batch_threads_and_a_probe_thread_leaves_the_class() {
        std::thread::spawn(|| {
            batch_thread().unwrap();
            // SAFETY: sched_getscheduler takes a pid and reads nothing.
            let policy = || unsafe { libc::sched_getscheduler(0) };
            assert_eq!(policy(), libc::SCHED_BATCH);
            let child = std::thread::spawn(move || {
                let inherited = policy();
                interactive_thread().unwrap();
                (inherited, policy())
            });
            assert_eq!(
                child.join().unwrap(),
                (libc::SCHED_BATCH, libc::SCHED_OTHER)
            );
        })
        .join()
        .unwrap();
    }
}
