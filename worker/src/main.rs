//! The `openshell` command.

fn main() {}
