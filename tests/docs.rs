//! The documentation stays usable: every relative link (and anchor) in the README and docs/
//! resolves, the README stays a five-minute read, and the configuration reference documents
//! each key of preflight.example.toml once, and no key the example lacks.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn pages() -> Vec<PathBuf> {
    let mut v = vec![root().join("README.md")];
    for e in std::fs::read_dir(root().join("docs")).unwrap().flatten() {
        if e.path().extension().is_some_and(|x| x == "md") {
            v.push(e.path());
        }
    }
    v.sort();
    v
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(page: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(page).unwrap();
    let mut in_code = false;
    let mut out = BTreeSet::new();
    for line in text.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
        }
        if !in_code && line.starts_with('#') {
            out.insert(slug(line.trim_start_matches('#')));
        }
    }
    out
}

/// `(target)` of every `[text](target)` outside code blocks.
fn links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_code = false;
    for line in text.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        let mut rest = line;
        while let Some(i) = rest.find("](") {
            let after = &rest[i + 2..];
            let Some(j) = after.find(')') else { break };
            out.push(after[..j].to_string());
            rest = &after[j..];
        }
    }
    out
}

#[test]
fn every_relative_link_and_anchor_resolves() {
    let mut broken = Vec::new();
    for page in pages() {
        let text = std::fs::read_to_string(&page).unwrap();
        for target in links(&text) {
            if target.starts_with("http://") || target.starts_with("https://") {
                continue;
            }
            let (file, anchor) = target.split_once('#').unwrap_or((&target, ""));
            let dest = if file.is_empty() {
                page.clone()
            } else {
                page.parent().unwrap().join(file)
            };
            if !dest.exists() {
                broken.push(format!("{}: {target} (no such file)", page.display()));
                continue;
            }
            if !anchor.is_empty() && !anchors(&dest).contains(anchor) {
                broken.push(format!("{}: {target} (no such heading)", page.display()));
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn the_readme_is_a_five_minute_read() {
    let text = std::fs::read_to_string(root().join("README.md")).unwrap();
    let n = text.lines().count();
    assert!(n <= 200, "README.md has {n} lines; move detail to docs/");
    for page in pages().iter().filter(|p| !p.ends_with("README.md")) {
        let name = page.file_name().unwrap().to_str().unwrap();
        assert!(
            text.contains(&format!("docs/{name}")),
            "README.md does not link docs/{name}"
        );
    }
}

/// Every key of the example config, as `section.key` with table names (`policies.strict`)
/// written `<name>`; commented-out keys count, since the file documents them that way.
fn example_keys() -> BTreeMap<String, usize> {
    let text = std::fs::read_to_string(root().join("preflight.example.toml")).unwrap();
    let mut section = String::new();
    let mut keys = BTreeMap::new();
    for raw in text.lines() {
        let line = raw.trim_start_matches('#').trim();
        if let Some(s) = line.strip_prefix("[[").and_then(|s| s.split_once("]]")) {
            let parts: Vec<&str> = s.0.trim().split('.').collect();
            section = match parts.as_slice() {
                ["policies", _, rest] => format!("policies.<name>.{rest}[]"),
                _ => format!("{}[]", s.0.trim()),
            };
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|s| s.split_once(']')) {
            let parts: Vec<&str> = s.0.trim().split('.').collect();
            section = match parts.as_slice() {
                ["policies" | "programs", _] => format!("{}.<name>", parts[0]),
                // A purpose -> channels table: documented as the key that holds it.
                ["policies", _, "require_consent"] => {
                    *keys
                        .entry("policies.<name>.require_consent".to_string())
                        .or_insert(0) += 1;
                    "policies.<name>.require_consent.*".to_string()
                }
                _ => parts.join("."),
            };
            continue;
        }
        let Some((k, _)) = line.split_once(" = ") else {
            continue;
        };
        let k = k.trim();
        if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        if section.ends_with(".*") {
            continue;
        }
        let full = if section.is_empty() {
            k.to_string()
        } else {
            format!("{section}.{k}")
        };
        *keys.entry(full).or_insert(0) += 1;
    }
    keys
}

fn documented_keys() -> BTreeMap<String, usize> {
    let text = std::fs::read_to_string(root().join("docs/configuration.md")).unwrap();
    let mut keys = BTreeMap::new();
    for line in text.lines() {
        let Some(cell) = line.strip_prefix("| `") else {
            continue;
        };
        let Some((key, _)) = cell.split_once('`') else {
            continue;
        };
        *keys.entry(key.to_string()).or_insert(0) += 1;
    }
    keys
}

#[test]
fn the_configuration_reference_matches_the_example_config() {
    let example: BTreeSet<String> = example_keys().into_keys().collect();
    let documented = documented_keys();
    let twice: Vec<&String> = documented
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(k, _)| k)
        .collect();
    assert!(twice.is_empty(), "documented more than once: {twice:?}");
    let documented: BTreeSet<String> = documented.into_keys().collect();
    let undocumented: Vec<&String> = example.difference(&documented).collect();
    let missing: Vec<&String> = documented.difference(&example).collect();
    assert!(
        undocumented.is_empty(),
        "in preflight.example.toml, not in docs/configuration.md: {undocumented:?}"
    );
    assert!(
        missing.is_empty(),
        "in docs/configuration.md, not in preflight.example.toml: {missing:?}"
    );
}
