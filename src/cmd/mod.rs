//! One module per subcommand: its clap arguments and its `run`.
