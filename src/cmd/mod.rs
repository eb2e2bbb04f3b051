//! One module per subcommand: its clap arguments and its `run`.

pub mod bench;
pub mod convert;
pub mod evaluate;
pub mod generate;
pub mod inspect;
// plan bytes against available memory, --max-memory (generate and bench)
pub mod download;
pub mod export;
pub mod memory;
pub mod phantoms;
pub mod prepare;
pub mod train;
