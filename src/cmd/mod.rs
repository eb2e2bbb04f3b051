//! One module per subcommand: its clap arguments and its `run`.

pub mod convert;
pub mod inspect;
pub mod download;
pub mod phantoms;
pub mod prepare;
