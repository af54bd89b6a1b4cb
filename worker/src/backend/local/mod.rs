//! Local process backend (placeholder).
