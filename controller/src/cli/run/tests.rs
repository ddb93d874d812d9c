//! Tests of running.
