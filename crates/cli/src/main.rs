//! The `tidemark` command line (in progress).

fn main() {}
