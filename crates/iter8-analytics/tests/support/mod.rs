//! Request generators and invariants shared by the property tests and the fuzz targets.
// Each includer uses a different part of the support code.
#![allow(dead_code)]

pub mod generate;
pub mod invariants;
pub mod mutate;
