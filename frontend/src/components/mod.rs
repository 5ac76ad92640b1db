//! Small building blocks of the pages.

pub mod download;
pub mod entry_card;
pub mod field;
pub mod flaky_list;
pub mod matrix;
pub mod nav;
pub mod plan_runs;
pub mod profile_card;
pub mod run_state;
pub mod service_card;
pub mod test_table;
pub mod timeline;
pub mod token_prompt;
pub mod upload;
