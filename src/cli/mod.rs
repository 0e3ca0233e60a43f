//! One file per subcommand. `main.rs` only parses arguments and dispatches here.
