//! A run directory's `run.json` on arbitrary bytes: it is refused with a reason or describes a
//! run every command can use (settings its network takes, checkpoint files inside the run).
#![no_main]

use deepcnn::checkpoint::RunRecord;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(record) = RunRecord::parse(data) {
        assert!(record.config.validate().is_ok());
        assert!(!record.model_file.contains('/') && record.model_file != "..");
        assert_eq!(record.history.len(), record.epochs_done);
    }
});
