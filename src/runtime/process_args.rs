//! The container process's argv, environment and working directory, merged from the
//! image config and the CRI container config.
//!
//! Rules (Kubernetes' "Define a command and arguments" semantics, as containerd's
//! `WithProcessArgs` and `WithEnv` implement them):
//! - argv = entrypoint + cmd, where CRI `command` replaces the image ENTRYPOINT and CRI
//!   `args` replaces the image CMD; an explicit `command` without `args` drops the image
//!   CMD too (it belonged to the entrypoint being replaced).
//! - env = default `PATH`, `HOSTNAME`, then the image env, then the CRI envs; a later
//!   entry with an existing key replaces that entry's value in place, new keys are
//!   appended, so the order is stable and predictable.
//! - cwd = CRI `working_dir`, else the image's, else `/`.

use super::input::{ContainerConfig, ImageConfig};
use super::SpecError;

/// What a process gets when neither the image nor the request sets `PATH` (the value
/// containerd and Docker use).
const DEFAULT_PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The process argv, or [`SpecError::NoCommand`] when nothing gives one.
pub(super) fn process_args(
    config: &ContainerConfig,
    image: &ImageConfig,
) -> Result<Vec<String>, SpecError> {
    let args = if !config.command.is_empty() {
        config.command.iter().chain(&config.args).cloned().collect()
    } else {
        let cmd = if config.args.is_empty() {
            &image.cmd
        } else {
            &config.args
        };
        image
            .entrypoint
            .iter()
            .chain(cmd)
            .cloned()
            .collect::<Vec<_>>()
    };
    if args.is_empty() {
        return Err(SpecError::NoCommand);
    }
    Ok(args)
}

/// The process environment as `KEY=value` strings. `hostname` is the container's view of
/// the hostname, exported as `HOSTNAME` when non-empty (as containerd does).
pub(super) fn process_env(
    config: &ContainerConfig,
    image: &ImageConfig,
    hostname: &str,
) -> Vec<String> {
    let mut env = EnvList::default();
    if !hostname.is_empty() {
        env.set(format!("HOSTNAME={hostname}"));
    }
    for entry in &image.env {
        env.set(entry.clone());
    }
    for kv in &config.envs {
        env.set(format!("{}={}", kv.key, kv.value));
    }
    if !env.contains_key("PATH") {
        env.entries.insert(0, DEFAULT_PATH_ENV.to_string());
    }
    env.entries
}

/// The process working directory.
pub(super) fn process_cwd(config: &ContainerConfig, image: &ImageConfig) -> String {
    [config.working_dir.as_str(), image.working_dir.as_str()]
        .into_iter()
        .find(|dir| !dir.is_empty())
        .unwrap_or("/")
        .to_string()
}

/// `KEY=value` entries where setting an existing key replaces it in place.
#[derive(Default)]
struct EnvList {
    entries: Vec<String>,
}

impl EnvList {
    fn set(&mut self, entry: String) {
        let key = env_key(&entry).to_string();
        match self.entries.iter_mut().find(|e| env_key(e) == key) {
            Some(existing) => *existing = entry,
            None => self.entries.push(entry),
        }
    }

    fn contains_key(&self, key: &str) -> bool {
        self.entries.iter().any(|e| env_key(e) == key)
    }
}

/// The key of a `KEY=value` entry (the whole entry when it has no `=`).
fn env_key(entry: &str) -> &str {
    entry.split_once('=').map_or(entry, |(key, _)| key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::input::KeyValue;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn image(entrypoint: &[&str], cmd: &[&str]) -> ImageConfig {
        ImageConfig {
            entrypoint: strings(entrypoint),
            cmd: strings(cmd),
            ..Default::default()
        }
    }

    fn config(command: &[&str], args: &[&str]) -> ContainerConfig {
        ContainerConfig {
            command: strings(command),
            args: strings(args),
            ..Default::default()
        }
    }

    #[test]
    fn image_entrypoint_and_cmd_when_the_request_sets_neither() {
        let args = process_args(&config(&[], &[]), &image(&["/ep"], &["c1", "c2"])).unwrap();
        assert_eq!(args, strings(&["/ep", "c1", "c2"]));
    }

    #[test]
    fn args_replace_the_image_cmd_but_keep_the_entrypoint() {
        let args = process_args(&config(&[], &["a1"]), &image(&["/ep"], &["c1"])).unwrap();
        assert_eq!(args, strings(&["/ep", "a1"]));
    }

    #[test]
    fn command_replaces_the_entrypoint_and_drops_the_image_cmd() {
        let args = process_args(&config(&["/cmd"], &[]), &image(&["/ep"], &["c1"])).unwrap();
        assert_eq!(args, strings(&["/cmd"]));
    }

    #[test]
    fn command_and_args_replace_both() {
        let args =
            process_args(&config(&["/cmd"], &["a1", "a2"]), &image(&["/ep"], &["c1"])).unwrap();
        assert_eq!(args, strings(&["/cmd", "a1", "a2"]));
    }

    #[test]
    fn image_cmd_alone_is_the_argv() {
        let args = process_args(&config(&[], &[]), &image(&[], &["/bin/sh"])).unwrap();
        assert_eq!(args, strings(&["/bin/sh"]));
    }

    #[test]
    fn no_argv_at_all_is_an_error_naming_command() {
        let err = process_args(&config(&[], &[]), &image(&[], &[])).unwrap_err();
        assert!(matches!(err, SpecError::NoCommand));
        assert!(err.to_string().contains("command"), "{err}");
    }

    #[test]
    fn request_env_overrides_image_env_in_place_and_appends_new_keys() {
        let image = ImageConfig {
            env: strings(&["PATH=/img/bin", "A=image", "B=image"]),
            ..Default::default()
        };
        let config = ContainerConfig {
            envs: vec![
                KeyValue {
                    key: "C".into(),
                    value: "new".into(),
                },
                KeyValue {
                    key: "A".into(),
                    value: "request=with=equals".into(),
                },
            ],
            ..Default::default()
        };
        assert_eq!(
            process_env(&config, &image, "pod-a"),
            strings(&[
                "HOSTNAME=pod-a",
                "PATH=/img/bin",
                "A=request=with=equals",
                "B=image",
                "C=new"
            ])
        );
    }

    #[test]
    fn default_path_comes_first_when_nobody_sets_one() {
        let config = ContainerConfig {
            envs: vec![KeyValue {
                key: "X".into(),
                value: "1".into(),
            }],
            ..Default::default()
        };
        let env = process_env(&config, &ImageConfig::default(), "");
        assert_eq!(env, vec![DEFAULT_PATH_ENV.to_string(), "X=1".to_string()]);
    }

    #[test]
    fn request_path_replaces_the_image_path() {
        let image = ImageConfig {
            env: strings(&["PATH=/img"]),
            ..Default::default()
        };
        let config = ContainerConfig {
            envs: vec![KeyValue {
                key: "PATH".into(),
                value: "/req".into(),
            }],
            ..Default::default()
        };
        assert_eq!(process_env(&config, &image, ""), strings(&["PATH=/req"]));
    }

    #[test]
    fn working_dir_prefers_request_then_image_then_root() {
        let image = ImageConfig {
            working_dir: "/img".into(),
            ..Default::default()
        };
        let request = ContainerConfig {
            working_dir: "/req".into(),
            ..Default::default()
        };
        assert_eq!(process_cwd(&request, &image), "/req");
        assert_eq!(process_cwd(&ContainerConfig::default(), &image), "/img");
        assert_eq!(
            process_cwd(&ContainerConfig::default(), &ImageConfig::default()),
            "/"
        );
    }
}
