//! Training configurations (`train --config FILE`, and the `config.json` a run saves and
//! `--resume` reads back): `TrainConfig::from_json`. An accepted configuration, saved the way a
//! run saves it (pretty JSON), reads back equal.

#![no_main]

use ldm_trainer::train::setup::TrainConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ldm_fuzz::run(data, |data| {
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        let Ok(cfg) = TrainConfig::from_json(text, "config.json") else {
            return;
        };
        let saved = serde_json::to_string_pretty(&cfg).expect("a configuration serialises");
        let again = TrainConfig::from_json(&saved, "saved config.json")
            .expect("a saved configuration reads back");
        assert_eq!(again, cfg);
    })
});
