//! The operator's kit holds together: every alert in
//! `dist/prometheus/erlmcp.rules.yml` has its runbook in `docs/runbooks/`
//! (and every runbook an alert), its severity, summary, description and
//! `runbook_url`, and a promtool unit test in which it fires and one in
//! which it does not. (promtool itself runs the rules and those tests: the
//! `promtool` stage of `tests/run`.)

use serde_yaml::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const RULES: &str = "dist/prometheus/erlmcp.rules.yml";
const RULE_TESTS: &str = "dist/prometheus/tests";
const RUNBOOKS: &str = "docs/runbooks";
const RUNBOOK_BASE: &str = "https://erlmcp.example/docs/runbooks/";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The rules of the rules file, each as its YAML mapping.
fn rules() -> Vec<Value> {
    let doc = yaml(&root().join(RULES));
    doc["groups"]
        .as_sequence()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_sequence().expect("rules").clone())
        .collect()
}

/// Alert name → its rule.
fn alerts() -> BTreeMap<String, Value> {
    rules()
        .into_iter()
        .filter_map(|r| Some((r["alert"].as_str()?.to_owned(), r)))
        .collect()
}

#[test]
fn every_alert_has_a_runbook_and_every_runbook_an_alert() {
    let alerts = alerts();
    assert!(alerts.len() >= 20, "{} alerts", alerts.len());
    let mut problems = Vec::new();
    for (name, rule) in &alerts {
        let severity = rule["labels"]["severity"].as_str();
        if !matches!(severity, Some("critical" | "warning")) {
            problems.push(format!("{name}: severity {severity:?}"));
        }
        for a in ["summary", "description"] {
            if rule["annotations"][a].as_str().is_none_or(str::is_empty) {
                problems.push(format!("{name}: no {a}"));
            }
        }
        let url = rule["annotations"]["runbook_url"].as_str();
        if url != Some(&format!("{RUNBOOK_BASE}{name}.md")) {
            problems.push(format!("{name}: runbook_url {url:?}"));
        }
        let runbook = root().join(RUNBOOKS).join(format!("{name}.md"));
        match std::fs::read_to_string(&runbook) {
            Err(_) => problems.push(format!("{name}: no {}", runbook.display())),
            Ok(text) => {
                if !text.starts_with(&format!("# {name}\n")) {
                    problems.push(format!("{name}: its runbook is titled otherwise"));
                }
                for section in ["Meaning", "Impact", "Confirm", "Fix", "Escalate"] {
                    if !text.contains(&format!("\n## {section}\n")) {
                        problems.push(format!("{name}: its runbook lacks ## {section}"));
                    }
                }
                if !text.contains(&format!("Severity: **{}**", severity.unwrap_or("?"))) {
                    problems.push(format!("{name}: its runbook states another severity"));
                }
            }
        }
    }
    for entry in std::fs::read_dir(root().join(RUNBOOKS)).unwrap() {
        let file = entry.unwrap().file_name().into_string().unwrap();
        if file == "README.md" {
            continue;
        }
        match file.strip_suffix(".md") {
            Some(name) if alerts.contains_key(name) => {}
            _ => problems.push(format!("{RUNBOOKS}/{file}: no alert of that name")),
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn every_alert_is_unit_tested_firing_and_not_firing() {
    let mut fires = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    let mut files = 0;
    for entry in std::fs::read_dir(root().join(RULE_TESTS)).unwrap() {
        let path = entry.unwrap().path();
        if !path.to_string_lossy().ends_with(".test.yml") {
            continue;
        }
        files += 1;
        let doc = yaml(&path);
        assert_eq!(
            doc["rule_files"][0].as_str(),
            Some("../erlmcp.rules.yml"),
            "{}",
            path.display()
        );
        for test in doc["tests"].as_sequence().unwrap() {
            let Some(cases) = test["alert_rule_test"].as_sequence() else {
                continue;
            };
            for case in cases {
                let name = case["alertname"].as_str().unwrap().to_owned();
                let expected = case["exp_alerts"].as_sequence().map_or(0, Vec::len);
                if expected == 0 {
                    quiet.insert(name);
                } else {
                    fires.insert(name);
                }
            }
        }
    }
    assert!(files >= 1, "no promtool tests in {RULE_TESTS}");
    let mut problems = Vec::new();
    for name in alerts().keys() {
        if !fires.contains(name) {
            problems.push(format!("{name}: no test in which it fires"));
        }
        if !quiet.contains(name) {
            problems.push(format!("{name}: no test in which it stays quiet"));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}
