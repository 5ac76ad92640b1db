//! The optional config file of `ensemble serve` and `ensemble runner`.
//!
//! A TOML file with a `[serve]` and a `[runner]` table whose keys are the
//! commands' long flags (`listen = "0.0.0.0:7878"`, `label = ["tier=a"]`,
//! `no-local-machine = true`). It is read from `--config FILE`, else
//! `ENSEMBLE_CONFIG`, else `config.toml` in the platform's config directory
//! for ensemble when that exists: `$XDG_CONFIG_HOME/ensemble` (or
//! `~/.config/ensemble`) on Linux, `~/Library/Application Support/ensemble`
//! on macOS, `%APPDATA%\ensemble\config` on Windows.
//!
//! Precedence: flags, then `ENSEMBLE_*` environment variables, then the
//! file, then the defaults. The file's settings become flags put in after
//! the command's name, except those the command line gives or whose
//! environment variable is set (a list in the file, like `label`, is then
//! replaced, not added to). A key that is no flag of the command is an
//! error naming the file and the key.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// The commands that read the file, by their table in it.
pub const COMMANDS: &[&str] = &["serve", "runner"];

/// The config file to read for `args` (the command line, program first),
/// if any: `--config FILE`, `ENSEMBLE_CONFIG`, or the default location when
/// it exists.
pub fn path(args: &[OsString]) -> Option<PathBuf> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let a = a.to_string_lossy();
        if a == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(p) = a.strip_prefix("--config=") {
            return Some(PathBuf::from(p));
        }
        if a == "--" {
            break;
        }
    }
    if let Some(p) = std::env::var_os("ENSEMBLE_CONFIG") {
        return Some(PathBuf::from(p));
    }
    let default = directories::ProjectDirs::from("", "", "ensemble")?.config_dir().join("config.toml");
    default.is_file().then_some(default)
}

/// The command of `args` (the command line, program first) and where it
/// is: the first argument that is neither an option nor the value of a
/// global option.
pub fn command(args: &[OsString]) -> Option<(usize, String)> {
    let mut at = 1;
    while let Some(a) = args.get(at).map(|a| a.to_string_lossy()) {
        match a.as_ref() {
            "--config" | "--log-format" => at += 2,
            a if a.starts_with('-') => at += 1,
            _ => break,
        }
    }
    args.get(at).map(|a| (at, a.to_string_lossy().into_owned()))
}

/// `args` with the settings of `file` for its command put in as flags, right
/// after the command's name; `cli` is the command line's definition.
pub fn apply(args: Vec<OsString>, file: &Path, cli: &clap::Command) -> anyhow::Result<Vec<OsString>> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("reading the config file {}", file.display()))?;
    let table: toml::Table = toml::from_str(&text)
        .with_context(|| format!("the config file {} is not valid TOML", file.display()))?;
    for key in table.keys() {
        if !COMMANDS.contains(&key.as_str()) {
            bail!(
                "{}: [{key}] is not a command that reads it (tables: {})",
                file.display(),
                COMMANDS.join(", ")
            );
        }
    }
    let Some((at, command)) = command(&args) else { return Ok(args) };
    if !COMMANDS.contains(&command.as_str()) {
        return Ok(args);
    }
    let Some(settings) = table.get(&command) else { return Ok(args) };
    let settings = settings
        .as_table()
        .with_context(|| format!("{}: [{command}] must be a table of settings", file.display()))?;
    // A runner-only build has no `serve`: the command line's parser says so.
    let Some(sub) = cli.find_subcommand(&command) else { return Ok(args) };
    let mut flags: Vec<OsString> = Vec::new();
    for (key, value) in settings {
        let Some(arg) = sub.get_arguments().find(|a| a.get_long() == Some(key.as_str())) else {
            let known: Vec<&str> =
                sub.get_arguments().filter_map(|a| a.get_long()).filter(|l| *l != "config").collect();
            bail!(
                "{}: [{command}] has no setting {key:?} (settings are the flags of `ensemble {command}`: {})",
                file.display(),
                known.join(", ")
            );
        };
        let flag = format!("--{key}");
        // The command line and the environment come before the file.
        let given = args[at + 1..]
            .iter()
            .map(|a| a.to_string_lossy())
            .take_while(|a| a != "--")
            .any(|a| a == flag.as_str() || a.starts_with(&format!("{flag}=")));
        if given || arg.get_env().is_some_and(|var| std::env::var_os(var).is_some()) {
            continue;
        }
        let scalar = |v: &toml::Value| -> anyhow::Result<String> {
            Ok(match v {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                other => bail!("{}: [{command}] {key} = {other} is not a string or a number", file.display()),
            })
        };
        match value {
            toml::Value::Boolean(true) => flags.push(flag.into()),
            toml::Value::Boolean(false) => {}
            toml::Value::Array(items) => {
                for item in items {
                    flags.push(flag.clone().into());
                    flags.push(scalar(item)?.into());
                }
            }
            v => {
                flags.push(flag.into());
                flags.push(scalar(v)?.into());
            }
        }
    }
    let mut out = args;
    out.splice(at + 1..at + 1, flags);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn args(s: &[&str]) -> Vec<OsString> {
        s.iter().map(OsString::from).collect()
    }

    #[test]
    fn the_files_settings_come_before_the_command_lines_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "[serve]\nlisten = \"127.0.0.1:1\"\nlabel = [\"a=1\", \"b=2\"]\nno-local-machine = true\nslots = 3\n\
             [runner]\njoin = \"http://x:1\"\n",
        )
        .unwrap();
        let cli = crate::cli::Cli::command();
        let got = apply(args(&["ensemble", "serve", "--name", "n", "--slots=5"]), &file, &cli).unwrap();
        assert_eq!(
            got,
            // In the file's order.
            args(&[
                "ensemble",
                "serve",
                "--listen",
                "127.0.0.1:1",
                "--label",
                "a=1",
                "--label",
                "b=2",
                "--no-local-machine",
                "--name",
                "n",
                "--slots=5"
            ])
        );
        // Another command takes nothing from [serve].
        assert_eq!(
            apply(args(&["ensemble", "run", "p.toml"]), &file, &cli).unwrap(),
            args(&["ensemble", "run", "p.toml"])
        );
    }

    #[test]
    fn a_setting_no_flag_has_is_named_with_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "[serve]\nlisen = \"x\"\n").unwrap();
        let err =
            apply(args(&["ensemble", "serve"]), &file, &crate::cli::Cli::command()).unwrap_err().to_string();
        assert!(err.contains("c.toml: [serve] has no setting \"lisen\""), "{err}");
        assert!(err.contains("listen"), "{err}");
        std::fs::write(&file, "[serv]\n").unwrap();
        let err =
            apply(args(&["ensemble", "serve"]), &file, &crate::cli::Cli::command()).unwrap_err().to_string();
        assert!(err.contains("[serv] is not a command that reads it"), "{err}");
    }

    #[test]
    fn the_file_is_the_flags_else_the_variables() {
        assert_eq!(path(&args(&["ensemble", "serve", "--config", "a.toml"])), Some(PathBuf::from("a.toml")));
        assert_eq!(path(&args(&["ensemble", "serve", "--config=b.toml"])), Some(PathBuf::from("b.toml")));
    }
}
