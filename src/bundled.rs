//! What the binary carries, so `fengkong serve` works from any folder with nothing beside it:
//! the rule pack (`rules/*.toml` and `rules/lists/`), the model (`models/default.json`) and
//! the features (`src/features/default_features.toml`), as they were when it was built.
//!
//! A configured path always wins; these are used only where nothing is configured. They
//! cannot change while the server runs, so there is nothing to watch: a reload of bundled
//! rules or model compiles the same text again and reports `changed = false`.

use crate::model::{ModelArtifact, ModelError};
use crate::rules::{RuleErrors, RuleSet, Schema};

/// Every file of the bundled rule pack, `(name, text)`, named as `RuleSet::load_dir` names
/// them (`00_ruleset.toml`, `lists/blocked_ips.txt`): the version is the folder's.
pub const RULE_FILES: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/bundled_rules.rs"));

/// The bundled model artifact (JSON).
pub const MODEL: &str = include_str!("../models/default.json");

/// How the bundled pack and model are named in messages and logs.
pub const RULES_NAME: &str = "<bundled rules>";
pub const MODEL_NAME: &str = "<bundled model>";

/// The bundled rule pack, compiled against `schema`.
pub fn rules(schema: &Schema) -> Result<RuleSet, RuleErrors> {
    let files: Vec<(String, String)> = RULE_FILES
        .iter()
        .map(|(name, text)| (name.to_string(), text.to_string()))
        .collect();
    RuleSet::from_sources(&files, schema)
}

/// The bundled model bound to the engine's feature names like a model file: where the
/// engine computes each of its features ([`ModelArtifact::bind`]).
pub fn model(feature_names: &[String]) -> Result<(ModelArtifact, Vec<usize>), ModelError> {
    ModelArtifact::from_slice_bound(MODEL.as_bytes(), feature_names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::FeatureSet;
    use std::path::Path;

    #[test]
    fn the_bundled_pack_is_the_rules_folder_with_the_same_version() {
        let schema = crate::vars::schema(&FeatureSet::defaults());
        let bundled = rules(&schema).unwrap();
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
        let folder = RuleSet::load_dir(&dir, &schema).unwrap();
        assert_eq!(bundled.version(), folder.version());
        assert_eq!(bundled.rules().len(), folder.rules().len());
        assert!(RULE_FILES.iter().any(|(n, _)| n.starts_with("lists/")));
    }

    #[test]
    fn every_bundled_rule_speaks_chinese_too() {
        let schema = crate::vars::schema(&FeatureSet::defaults());
        for rule in rules(&schema).unwrap().rules() {
            assert!(rule.message_zh.is_some(), "`{}` has no message_zh", rule.id);
            assert!(
                rule.advice.is_none() || rule.advice_zh.is_some(),
                "`{}` has advice but no advice_zh",
                rule.id
            );
        }
    }

    #[test]
    fn the_bundled_model_matches_the_bundled_features() {
        let set = FeatureSet::defaults();
        let (artifact, _) = model(set.names()).unwrap();
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/default.json");
        let (on_disk, _) = ModelArtifact::load_bound(file, set.names()).unwrap();
        assert_eq!(artifact.version(), on_disk.version());
    }
}
