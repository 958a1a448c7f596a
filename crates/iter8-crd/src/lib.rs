//! The `iter8.tools/v3alpha1` custom resources, `Experiment` and `Metric`, generated into
//! `api/crds/` and the Helm chart's `crds/` (a test keeps both in step with these types).
#![forbid(unsafe_code)]

pub mod experiment;
pub mod gate;
pub mod ledger;
pub mod metric;
pub mod notification;
pub mod rules;

pub use experiment::*;
pub use gate::*;
pub use iter8_api::duration::{self, parse_duration};
pub use ledger::{Design, Ledger};
pub use metric::*;
pub use notification::*;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// The definitions of every iter8 resource, in a stable order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![Experiment::crd(), Metric::crd()]
}

/// The definitions as one YAML document stream, as checked in under `api/crds/`.
pub fn crds_yaml() -> Result<String, serde_yaml::Error> {
    let mut out = String::from("# Generated from crates/iter8-crd; do not edit.\n");
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&crd)?);
    }
    Ok(out)
}
