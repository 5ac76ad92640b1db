//! Machines as they describe themselves: name, labels, slots and facts.
//!
//! A leaf module: plans select machines by these labels, the wire carries
//! them in `hello`, and the API lists them; none of those depend on each other
//! through it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A machine's self-description, sent when it joins.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MachineInfo {
    pub name: String,
    /// Includes the built-in `os` and `arch` labels.
    pub labels: BTreeMap<String, String>,
    /// How many shards it runs at once.
    pub slots: u32,
    pub facts: Facts,
    /// Programs its operator lets services start (`--allow-exec`): names,
    /// absolute paths, `DIR/*`, or `*`. Empty: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_exec: Vec<String>,
}

/// What a machine reports about itself.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Facts {
    pub os: String,
    pub arch: String,
    pub cpus: u32,
    pub memory_bytes: u64,
    pub ensemble_version: String,
    pub wasmtime_version: String,
}

/// The longest machine name.
pub const MAX_NAME: usize = 64;
/// The most labels a machine may have, and their sizes.
pub const MAX_LABELS: usize = 32;
const MAX_LABEL_KEY: usize = 64;
const MAX_LABEL_VALUE: usize = 256;
/// The longest reported fact.
const MAX_FACT: usize = 256;
/// The most programs a machine may let services start (`--allow-exec`),
/// and the longest (a path).
pub const MAX_ALLOW_EXEC: usize = 256;
const MAX_ALLOW_EXEC_ENTRY: usize = 4096;

/// Checks a machine name: 1 to 64 of letters, digits, `.`, `_` and `-`.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || ".-_".contains(c);
    if name.is_empty() || name.len() > MAX_NAME || !name.chars().all(ok_char) {
        let shown: String = name.chars().take(MAX_NAME).collect();
        return Err(format!(
            "{shown:?} is not a valid machine name: use 1 to {MAX_NAME} letters, digits, '.', '_' or '-'"
        ));
    }
    Ok(())
}

/// A valid machine name made of a host name: characters a name cannot
/// have become `-`, cut to the longest name; `machine` when nothing is left.
pub fn name_from_host(host: &str) -> String {
    let name: String = host
        .trim()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || ".-_".contains(c) { c } else { '-' })
        .take(MAX_NAME)
        .collect();
    if name.is_empty() { "machine".to_string() } else { name }
}

impl MachineInfo {
    /// Checks what a machine says of itself before anyone stores or shows it.
    pub fn check(&self) -> Result<(), String> {
        check_name(&self.name)?;
        if self.labels.len() > MAX_LABELS {
            return Err(format!("{} labels is more than the limit of {MAX_LABELS}", self.labels.len()));
        }
        for (k, v) in &self.labels {
            if k.is_empty()
                || k.len() > MAX_LABEL_KEY
                || v.len() > MAX_LABEL_VALUE
                || k.contains(char::is_control)
            {
                let key: String = k.chars().take(MAX_LABEL_KEY).collect();
                return Err(format!(
                    "label {key:?} is not valid: keys take 1 to {MAX_LABEL_KEY} characters, values up to {MAX_LABEL_VALUE}"
                ));
            }
        }
        let f = &self.facts;
        for fact in [&f.os, &f.arch, &f.ensemble_version, &f.wasmtime_version] {
            if fact.len() > MAX_FACT {
                return Err(format!("a fact of {} bytes is over the limit of {MAX_FACT}", fact.len()));
            }
        }
        if self.allow_exec.len() > MAX_ALLOW_EXEC {
            return Err(format!(
                "--allow-exec names {} programs, more than the limit of {MAX_ALLOW_EXEC} (a directory's `DIR/*` names all of it)",
                self.allow_exec.len()
            ));
        }
        if let Some(long) = self.allow_exec.iter().find(|p| p.len() > MAX_ALLOW_EXEC_ENTRY) {
            let shown: String = long.chars().take(64).collect();
            return Err(format!(
                "--allow-exec {shown}… is {} bytes long, over the limit of {MAX_ALLOW_EXEC_ENTRY}",
                long.len()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &str) -> MachineInfo {
        MachineInfo {
            name: name.into(),
            labels: BTreeMap::new(),
            slots: 1,
            facts: Facts::default(),
            allow_exec: Vec::new(),
        }
    }

    #[test]
    fn names_and_labels_are_bounded() {
        assert!(info("box-1.lab_2").check().is_ok());
        for bad in ["", "has space", "new\nline", &"x".repeat(65)] {
            assert!(info(bad).check().is_err(), "{bad:?}");
        }
        let mut many = info("m");
        many.labels = (0..33).map(|i| (format!("k{i}"), "v".to_string())).collect();
        assert!(many.check().unwrap_err().contains("labels"));
        let mut big = info("m");
        big.labels.insert("k".into(), "v".repeat(1 << 20));
        assert!(big.check().is_err());
        let mut programs = info("m");
        programs.allow_exec = (0..MAX_ALLOW_EXEC).map(|i| format!("/opt/bin/p{i}")).collect();
        assert!(programs.check().is_ok());
        programs.allow_exec.push("/opt/bin/one-more".into());
        assert!(programs.check().unwrap_err().contains("more than the limit of 256"));
        programs.allow_exec = vec![format!("/{}", "d".repeat(5000))];
        assert!(programs.check().unwrap_err().contains("over the limit of 4096"));
    }

    #[test]
    fn a_host_name_becomes_a_valid_machine_name() {
        for (host, name) in [
            ("build-01.lab", "build-01.lab"),
            ("DESKTOP-ÆØÅ 7", "DESKTOP-----7"),
            ("  ", "machine"),
            ("win:box\\x", "win-box-x"),
        ] {
            assert_eq!(name_from_host(host), name, "{host:?}");
            assert!(check_name(&name_from_host(host)).is_ok());
        }
        assert_eq!(name_from_host(&"h".repeat(300)).len(), MAX_NAME);
    }
}
