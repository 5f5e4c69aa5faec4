//! Structured logs: text for people, JSON (one object per line) for log pipelines.
use crate::config::LogArgs;

pub fn init(args: &LogArgs) {
    args.init();
}
