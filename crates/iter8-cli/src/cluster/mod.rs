//! `iter8` on a cluster: list, describe, report on, watch and steer the `Experiment`s the
//! controller runs. The kubeconfig is found the way kubectl finds it (`--kubeconfig`, then
//! `KUBECONFIG`, then `~/.kube/config`, then the Pod's ServiceAccount; `--context`; `-n`, then the context's namespace, then
//! `default`), and every API error is turned into a sentence that names what was refused.

pub mod approve;
pub mod control;
pub mod describe;
pub mod get;
pub mod report;
pub mod table;
pub mod watch;

use std::path::PathBuf;

use iter8_crd::Experiment;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

/// Where to find the cluster: the kubectl flags every cluster command takes.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Target {
    /// The kubeconfig file (default: $KUBECONFIG, then ~/.kube/config, then in a Pod its
    /// ServiceAccount).
    #[arg(long, global = true, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current context).
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
    /// The namespace (default: the context's namespace, then `default`).
    #[arg(short = 'n', long, global = true, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
}

/// A connection to the cluster and the namespace commands act in.
#[derive(Clone)]
pub struct Cluster {
    /// The API client.
    pub client: Client,
    /// The namespace named by `-n`, the context, or `default`.
    pub namespace: String,
}

/// What can go wrong talking to the cluster, in words a person can act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kubeconfig could not be read or used.
    #[error("cannot use the kubeconfig{}: {source}", .path.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default())]
    Kubeconfig {
        /// The file named by `--kubeconfig`, if any.
        path: Option<PathBuf>,
        /// Why.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// Neither a kubeconfig nor an in-cluster ServiceAccount was found.
    #[error("no kubeconfig found ($KUBECONFIG, ~/.kube/config) and not in a Pod: {0}")]
    NoConfig(#[source] Box<kube::config::InferConfigError>),
    /// The client could not be built from the kubeconfig.
    #[error("cannot connect to the cluster: {0}")]
    Client(#[source] Box<kube::Error>),
    /// No such Experiment.
    #[error("experiment {name:?} not found in namespace {namespace:?}")]
    NotFound {
        /// The namespace looked in.
        namespace: String,
        /// The name looked for.
        name: String,
    },
    /// The API server refused (HTTP 403).
    #[error(
        "permission denied: {who} may not {verb} {resource} in namespace {namespace:?}; ask for a Role that grants {verb:?} on {resource}"
    )]
    Forbidden {
        /// Who the API server says we are ("user \"alice\"", or "you" when it does not say).
        who: String,
        /// The verb refused.
        verb: String,
        /// The resource, e.g. `experiments.iter8.tools`.
        resource: String,
        /// The namespace, or `*` for all.
        namespace: String,
    },
    /// Weights that do not fit the experiment.
    #[error("{0}")]
    Weights(String),
    /// The experiment has ended: an override would change nothing.
    #[error(
        "experiment {namespace}/{name} has already ended (phase {phase}); there is nothing to {verb}"
    )]
    Ended {
        /// The namespace.
        namespace: String,
        /// The name.
        name: String,
        /// Its phase.
        phase: iter8_crd::Phase,
        /// What was asked.
        verb: String,
    },
    /// `iter8 approve` on an experiment that waits at no gate.
    #[error(
        "experiment {namespace}/{name} is not waiting at an approval gate; there is nothing to approve (iter8 describe {name} shows what it waits for)"
    )]
    NotAwaitingApproval {
        /// The namespace.
        namespace: String,
        /// The name.
        name: String,
    },
    /// An approval could not be given.
    #[error("{0}")]
    Approval(String),
    /// Any other API error.
    #[error("cannot {verb} {resource} in namespace {namespace:?}: {source}")]
    Api {
        /// The verb.
        verb: String,
        /// The resource.
        resource: String,
        /// The namespace.
        namespace: String,
        /// The API server's answer.
        #[source]
        source: Box<kube::Error>,
    },
    /// The watch stream ended before the experiment did.
    #[error("the watch on experiment {namespace}/{name} ended before the experiment did")]
    WatchEnded {
        /// The namespace.
        namespace: String,
        /// The name.
        name: String,
    },
    /// Output could not be encoded.
    #[error("cannot encode the output: {0}")]
    Encode(String),
}

/// The resource name used in messages and in RBAC rules.
pub const EXPERIMENTS: &str = "experiments.iter8.tools";

impl Target {
    /// Loads the kubeconfig like kubectl does and connects.
    pub async fn connect(&self) -> Result<Cluster, Error> {
        let options = KubeConfigOptions {
            context: self.context.clone(),
            ..KubeConfigOptions::default()
        };
        let kubeconfig_error = |source| Error::Kubeconfig {
            path: self.kubeconfig.clone(),
            source,
        };
        let config = match (&self.kubeconfig, &self.context) {
            (Some(path), _) => {
                let kubeconfig = Kubeconfig::read_from(path).map_err(kubeconfig_error)?;
                Config::from_custom_kubeconfig(kubeconfig, &options)
                    .await
                    .map_err(kubeconfig_error)?
            }
            (None, Some(_)) => Config::from_kubeconfig(&options)
                .await
                .map_err(kubeconfig_error)?,
            // Like kubectl: $KUBECONFIG or ~/.kube/config, else the Pod's ServiceAccount.
            (None, None) => Config::infer()
                .await
                .map_err(|e| Error::NoConfig(Box::new(e)))?,
        };
        let namespace = self
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let client = Client::try_from(config).map_err(|e| Error::Client(Box::new(e)))?;
        Ok(Cluster { client, namespace })
    }
}

impl Cluster {
    /// The Experiments of the namespace.
    pub fn experiments(&self) -> Api<Experiment> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// The Experiment `name` of the namespace, or a not-found error naming both.
    pub async fn experiment(&self, name: &str) -> Result<Experiment, Error> {
        self.experiments()
            .get(name)
            .await
            .map_err(|e| self.api_error(e, "get", EXPERIMENTS, Some(name)))
    }

    /// Turns an API error into one that names what was refused: not found (for a named
    /// Experiment), forbidden (with the identity the API server gives), or the raw error.
    pub fn api_error(
        &self,
        error: kube::Error,
        verb: &str,
        resource: &str,
        name: Option<&str>,
    ) -> Error {
        api_error(error, verb, resource, &self.namespace, name)
    }
}

/// See [`Cluster::api_error`].
pub fn api_error(
    error: kube::Error,
    verb: &str,
    resource: &str,
    namespace: &str,
    name: Option<&str>,
) -> Error {
    match (&error, name) {
        (kube::Error::Api(status), Some(name)) if status.is_not_found() => Error::NotFound {
            namespace: namespace.into(),
            name: name.into(),
        },
        (kube::Error::Api(status), _) if status.is_forbidden() => Error::Forbidden {
            who: requester(&status.message).unwrap_or_else(|| "you".into()),
            verb: verb.into(),
            resource: resource.into(),
            namespace: namespace.into(),
        },
        _ => Error::Api {
            verb: verb.into(),
            resource: resource.into(),
            namespace: namespace.into(),
            source: Box::new(error),
        },
    }
}

/// The identity in an API server's refusal: `... is forbidden: User "alice" cannot patch ...`.
fn requester(message: &str) -> Option<String> {
    let rest = &message[message.find("User \"")? + "User \"".len()..];
    let user = &rest[..rest.find('"')?];
    Some(format!("user {user:?}"))
}

/// How a listing is printed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Aligned columns, like kubectl.
    #[default]
    Table,
    /// The objects as JSON.
    Json,
    /// The objects as YAML.
    Yaml,
}

/// `value` as JSON or YAML (for [`Output::Table`], the caller prints its own table).
pub fn encode<T: serde::Serialize>(value: &T, output: Output) -> Result<String, Error> {
    match output {
        Output::Json => serde_json::to_string_pretty(value)
            .map(|s| s + "\n")
            .map_err(|e| Error::Encode(e.to_string())),
        Output::Yaml | Output::Table => {
            serde_yaml::to_string(value).map_err(|e| Error::Encode(e.to_string()))
        }
    }
}

/// `experiment` as kubectl prints it with `-o json|yaml`: without `metadata.managedFields`,
/// the API server's bookkeeping of who owns which field.
pub fn for_printing(mut experiment: Experiment) -> Experiment {
    experiment.metadata.managed_fields = None;
    experiment
}

/// How long ago `then` was, the way kubectl prints ages: `45s`, `12m`, `5h`, `3d`.
pub fn age(then: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time, now: i64) -> String {
    let seconds = (now - then.0.as_second()).max(0);
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 48 * 3600 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// Now, in seconds since the Unix epoch.
pub fn now() -> i64 {
    k8s_openapi::jiff::Timestamp::now().as_second()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use kube::core::Status;

    fn status(code: u16, reason: &str, message: &str) -> kube::Error {
        kube::Error::Api(Status::failure(message, reason).with_code(code).boxed())
    }

    #[test]
    fn a_refusal_names_the_user_the_verb_and_the_resource() {
        let err = api_error(
            status(
                403,
                "Forbidden",
                r#"experiments.iter8.tools "shop" is forbidden: User "system:serviceaccount:ns:viewer" cannot patch resource "experiments" in API group "iter8.tools" in the namespace "ns""#,
            ),
            "patch",
            EXPERIMENTS,
            "ns",
            Some("shop"),
        );
        assert_eq!(
            err.to_string(),
            r#"permission denied: user "system:serviceaccount:ns:viewer" may not patch experiments.iter8.tools in namespace "ns"; ask for a Role that grants "patch" on experiments.iter8.tools"#
        );
    }

    #[test]
    fn an_admission_policy_refusal_shows_the_policys_own_message() {
        let message = "experiments.iter8.tools \"shop\" is invalid: ValidatingAdmissionPolicy 'iter8-approval-by-caller' denied request: spec.approval.by must be the name of the user who writes it (bob), as iter8 approve writes it";
        let err = api_error(
            status(422, "Invalid", message),
            "patch",
            EXPERIMENTS,
            "ns",
            Some("shop"),
        );
        let shown = err.to_string();
        assert!(
            shown.contains("spec.approval.by must be the name of the user who writes it (bob)")
                && !shown.contains("permission denied"),
            "{shown}"
        );
    }

    #[test]
    fn a_missing_experiment_names_its_namespace_and_name() {
        let err = api_error(
            status(404, "NotFound", "not found"),
            "get",
            EXPERIMENTS,
            "ns",
            Some("shop"),
        );
        assert_eq!(
            err.to_string(),
            r#"experiment "shop" not found in namespace "ns""#
        );
    }

    #[test]
    fn ages_read_like_kubectl() {
        let t = Time(k8s_openapi::jiff::Timestamp::from_second(1_000_000).expect("valid"));
        assert_eq!(age(&t, 1_000_045), "45s");
        assert_eq!(age(&t, 1_000_000 + 12 * 60), "12m");
        assert_eq!(age(&t, 1_000_000 + 5 * 3600), "5h");
        assert_eq!(age(&t, 1_000_000 + 3 * 86_400), "3d");
    }
}
