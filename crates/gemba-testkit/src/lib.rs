//! What gemba's tests share across crates, so that each crate's tests say
//! only what is particular to them: a [`Config`] or [`Policy`] from TOML
//! text as `gemba.toml` would hold it, a fresh scratch directory, and
//! waiting (bounded) for a condition. A dev-dependency only: nothing a
//! node runs links it.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use gemba_core::{Config, ConfigFile, Overrides, Policy};

/// The config `toml` gives with these command-line overrides; panics with
/// the validation's message when the text is not a valid config.
pub fn config_with(toml: &str, overrides: &Overrides) -> Config {
    let file = ConfigFile::parse(Path::new("test.toml"), toml)
        .unwrap_or_else(|e| panic!("test config does not parse: {e}"));
    Config::from_file(file, overrides, "test.toml")
        .unwrap_or_else(|e| panic!("test config is not valid: {e}"))
}

/// The config `toml` gives to node `node`.
pub fn config(node: &str, toml: &str) -> Config {
    config_with(
        toml,
        &Overrides {
            node_id: Some(node.into()),
            ..Default::default()
        },
    )
}

/// The checks, levels and notify targets `toml` gives to node `node`.
pub fn policy(node: &str, toml: &str) -> Policy {
    config(node, toml).policy
}

/// An empty directory under the system's temporary directory, named after
/// the test and this process (so that two test runs do not share it).
pub fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gemba-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
    d
}

/// Waits until `f` is true, asking every 200 ms; panics naming `what`
/// after `limit`.
pub async fn wait_for<F, Fut>(what: &str, limit: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = tokio::time::Instant::now();
    while !f().await {
        assert!(start.elapsed() < limit, "waited {limit:?} for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_config_names_what_is_wrong() {
        let err = std::panic::catch_unwind(|| config("srv", "[[check]]\nname = 3\n"))
            .err()
            .and_then(|e| e.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        assert!(err.contains("test config"), "{err}");
        let p = policy(
            "srv",
            "[[level]]\nlevel = 1\nname = \"restart\"\nrun = [\"/bin/true\"]\n",
        );
        assert_eq!(p.level(1).map(|l| l.name.as_str()), Some("restart"));
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_gives_up_after_its_limit_naming_what() {
        let mut n = 0;
        wait_for("three asks", Duration::from_secs(5), || {
            n += 1;
            let done = n >= 3;
            async move { done }
        })
        .await;
        assert_eq!(n, 3);
        let never = tokio::spawn(wait_for("never", Duration::from_secs(1), || async {
            false
        }));
        let err = never.await.unwrap_err().into_panic();
        let text = err.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(text.contains("for never"), "{text}");
    }
}
