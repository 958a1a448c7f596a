//! The Experiment's CEL rules that come from what each kind and algorithm requires
//! ([`iter8_api::requirements`]): generated, so the API server refuses at admission exactly
//! what the analytics service would refuse later, with the same words, and a new kind or
//! algorithm needs no rule written by hand.

use iter8_api::{Algorithm, ExperimentKind, Requirements, SplitUse, VersionCount};
use kube::core::{Message, Rule};

/// Adds the generated rules to the `ExperimentSpec` schema (a schemars transform).
pub(crate) fn add_requirement_rules(schema: &mut schemars::Schema) {
    for rule in requirement_rules() {
        kube::core::validate(schema, rule).expect("a rule of strings serialises");
    }
}

/// Adds to the schema of an "exactly one of" enum (or a struct with one flattened) the CEL rule
/// that says so by name: the `oneOf` of its variants alone would be refused with "must validate
/// one and only one schema". The variants are read from the schema, so a new variant needs no
/// rule written by hand.
pub(crate) fn exactly_one_of(schema: &mut schemars::Schema) {
    let keys: Vec<String> = schema
        .get("oneOf")
        .and_then(serde_json::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|variant| variant.get("required")?.as_array()?.first()?.as_str())
        .map(str::to_owned)
        .collect();
    if keys.len() < 2 {
        return;
    }
    let present: Vec<String> = keys.iter().map(|k| format!("has(self.{k})")).collect();
    let rule = Rule::new(format!("[{}].exists_one(x, x)", present.join(", "))).message(
        Message::Message(format!("set exactly one of {}", words(&keys))),
    );
    kube::core::validate(schema, rule).expect("a rule of strings serialises");
}

/// `a, b or c`.
fn words(keys: &[String]) -> String {
    match keys {
        [] => String::new(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
    }
}

/// One rule per requirement of each kind and each algorithm that has it.
pub fn requirement_rules() -> Vec<Rule> {
    let mut rules = Vec::new();
    for kind in ExperimentKind::ALL {
        let when = format!("self.kind != '{}'", kind.name());
        push(&mut rules, &when, kind.subject(), kind.requirements());
    }
    for algorithm in Algorithm::ALL {
        // The API server fills in `strategy` and its `algorithm` (defaults in the schema).
        let when = format!("self.strategy.algorithm != '{}'", algorithm.name());
        push(
            &mut rules,
            &when,
            algorithm.name(),
            algorithm.requirements(),
        );
    }
    rules
}

/// The rules of one subject's requirements; each holds unless `unless` is true.
fn push(rules: &mut Vec<Rule>, unless: &str, subject: &str, needs: Requirements) {
    let mut add = |holds: &str, message: String, field: &str| {
        rules.push(
            Rule::new(format!("{unless} || ({holds})"))
                .message(Message::Message(message))
                .field_path(field),
        );
    };
    let versions = match needs.versions {
        VersionCount::Any => None,
        VersionCount::Exactly(n) => Some(format!("size(self.versions) == {n}")),
        VersionCount::AtLeast(n) => Some(format!("size(self.versions) >= {n}")),
    };
    if let Some(holds) = versions {
        add(&holds, needs.versions_reason(subject), ".versions");
    }
    match needs.split {
        SplitUse::Required => add(
            "has(self.strategy.split)",
            needs.split_reason(subject),
            ".strategy.split",
        ),
        SplitUse::Refused => add(
            "!has(self.strategy.split)",
            needs.split_reason(subject),
            ".strategy.split",
        ),
        SplitUse::Optional => {}
    }
    if needs.objectives {
        add(
            "(has(self.criteria.objectives) && size(self.criteria.objectives) > 0) || \
             (has(self.criteria.relativeObjectives) && size(self.criteria.relativeObjectives) > 0)",
            Requirements::objectives_reason(subject),
            ".criteria.objectives",
        );
    }
    if needs.rewards {
        add(
            "has(self.criteria.rewards) && size(self.criteria.rewards) > 0",
            Requirements::rewards_reason(subject),
            ".criteria.rewards",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules_text() -> Vec<(String, String)> {
        requirement_rules()
            .into_iter()
            .map(|r| {
                let message = match r.message {
                    Some(Message::Message(m)) => m,
                    other => panic!("a plain message, got {other:?}"),
                };
                (r.rule, message)
            })
            .collect()
    }

    #[test]
    fn every_kind_gets_its_version_count_rule() {
        let rules = rules_text();
        for kind in ExperimentKind::ALL {
            let guard = format!("self.kind != '{}'", kind.name());
            assert!(
                rules.iter().any(|(r, m)| r.starts_with(&guard)
                    && r.contains("size(self.versions)")
                    && m.starts_with(kind.subject())),
                "{kind:?}"
            );
        }
    }

    #[test]
    fn two_version_algorithms_and_the_split_rules_come_from_their_requirements() {
        let rules = rules_text();
        let of = |a: Algorithm| -> Vec<&(String, String)> {
            let guard = format!("self.strategy.algorithm != '{}' ||", a.name());
            rules
                .iter()
                .filter(|(r, _)| r.starts_with(&guard))
                .collect()
        };
        for a in Algorithm::ALL {
            let versions = of(a)
                .iter()
                .any(|(r, _)| r.contains("size(self.versions) == 2"));
            assert_eq!(
                versions,
                a.requirements().versions == VersionCount::Exactly(2),
                "{a:?}"
            );
            let split: Vec<_> = of(a)
                .into_iter()
                .filter(|(r, _)| r.contains("has(self.strategy.split)"))
                .collect();
            assert_eq!(split.len(), 1, "{a:?}: one split rule");
            assert_eq!(
                split[0].0.contains("!has("),
                a != Algorithm::FixedSplit,
                "{a:?}"
            );
        }
    }

    #[test]
    fn exactly_one_of_names_every_variant_of_the_router_and_the_provider() {
        let yaml = crate::crds_yaml().expect("CRDs serialize");
        assert!(yaml.contains("[has(self.httpRoute), has(self.virtualService)].exists_one(x, x)"));
        assert!(yaml.contains("set exactly one of httpRoute or virtualService"));
        assert!(yaml.contains("[has(self.prometheus), has(self.http)].exists_one(x, x)"));
        assert!(yaml.contains("set exactly one of prometheus or http"));
    }

    #[test]
    fn the_generated_schema_carries_the_rules_with_the_services_words() {
        let yaml = crate::crds_yaml().expect("CRDs serialize");
        assert!(yaml.contains(
            "check_and_increment needs exactly two versions (a baseline and a candidate)"
        ));
        assert!(yaml.contains("a canary experiment needs exactly two versions"));
        assert!(yaml.contains("an A/B/n experiment picks its winner by a reward"));
    }
}
