//! Builds a pool's backend from its configuration, by name.
