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

/// Rewrites the schema of an "exactly one of" enum (or of a struct with one flattened) into
/// an object with one optional property per variant and a CEL rule that says, by name, that
/// exactly one must be set. Left as a `oneOf` of `required` keys, the API server would answer
/// a spec with none with "must validate one and only one schema (oneOf)" and skip the CEL
/// rules; this way both mistakes get the one clear message. The variants are read from the
/// schema, so a new variant needs no rule written by hand.
pub(crate) fn exactly_one_of(schema: &mut schemars::Schema) {
    let Some(object) = schema.as_object_mut() else {
        return;
    };
    let Some(serde_json::Value::Array(variants)) = object.remove("oneOf") else {
        return;
    };
    let mut keys = Vec::new();
    let mut properties = match object.remove("properties") {
        Some(serde_json::Value::Object(p)) => p,
        _ => serde_json::Map::new(),
    };
    for variant in variants {
        let Some(serde_json::Value::Object(variant_properties)) =
            variant.get("properties").cloned()
        else {
            continue;
        };
        for (key, mut property) in variant_properties {
            // The variant's description belongs to its property, as kube would hoist it.
            if let (Some(d), Some(p)) = (variant.get("description"), property.as_object_mut()) {
                p.insert("description".into(), d.clone());
            }
            keys.push(key.clone());
            properties.insert(key, property);
        }
    }
    object.insert("properties".into(), serde_json::Value::Object(properties));
    object.insert("type".into(), "object".into());
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
    if let Some(bounds) = needs.iterations {
        // `duration` and its fields have schema defaults (20 and 1), which meet any bound.
        add(
            &format!(
                "!has(self.duration) || !has(self.duration.maxIterations) || \
                 self.duration.maxIterations >= {}",
                bounds.max_at_least
            ),
            Requirements::max_iterations_reason(subject, bounds),
            ".duration.maxIterations",
        );
        add(
            &format!(
                "!has(self.duration) || !has(self.duration.minIterations) || \
                 self.duration.minIterations <= {}",
                bounds.min_at_most
            ),
            Requirements::min_iterations_reason(subject, bounds),
            ".duration.minIterations",
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
        assert!(!yaml.contains("oneOf"), "no oneOf hides the CEL message");
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
