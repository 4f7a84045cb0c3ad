//! The config and policy loader: any text as a config file.
#![no_main]

use gemba_core::config::{Config, ConfigFile, Overrides};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(file) = ConfigFile::parse(std::path::Path::new("fuzz.toml"), text) {
        let o = Overrides {
            node_id: Some("fuzz".into()),
            data_dir: Some("/nonexistent/gemba-fuzz".into()),
            ..Default::default()
        };
        let _ = Config::from_file(file, &o, "fuzz");
    }
});
