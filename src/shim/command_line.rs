//! `crius-shim`'s command line: the one containerd gives every shim v2 binary, plus
//! crius's options for a pod's shim.
//!
//! containerd runs `<shim> -namespace NS -address ADDR -publish-binary BIN -id ID start`
//! with the bundle as the working directory (`-bundle DIR … delete` to clean up after a
//! dead shim), parsed with Go's `flag` package (containerd `runtime/v2/shim/shim.go`
//! `parseFlags`, v1.6/1.7; the runtime v2 README lists the flags). So: `-name value`,
//! `-name=value` and `--name` forms alike, booleans take no value (or `=true`/`=false`),
//! and the action is the one positional argument. Unlike Go's parser, flags may also
//! follow the action.
//!
//! crius's own flags say what a pod's shim holds: `-runtime`, `-netns`, `-new-ipc`,
//! `-new-pid`, `-hostname`; `-socket` (also a containerd shim flag) where it serves.

use std::path::PathBuf;

use super::ShimError;

/// What `crius-shim` is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShimAction {
    /// Start the shim (or find the one serving its group) and print its address.
    Start,
    /// Clean up after a dead shim: delete container `-id` from the runtime and print a
    /// DeleteResponse.
    Delete,
}

/// The parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShimArgs {
    /// containerd's namespace of the shim's tasks (required).
    pub namespace: String,
    /// containerd's gRPC address; events go to `TTRPC_ADDRESS` when set, else here.
    pub address: String,
    /// The binary containerd shims may run to publish events (unused: events go over
    /// ttrpc).
    pub publish_binary: String,
    pub id: String,
    /// The bundle, for `delete` (default: the working directory).
    pub bundle: Option<PathBuf>,
    /// Where to serve; default: containerd's choice, see [`super::daemon`].
    pub socket: Option<PathBuf>,
    pub debug: bool,
    /// `-v`: print the version and exit.
    pub version: bool,
    /// The OCI runtime containers are run with: `embedded` or a binary with runc's
    /// command line (a path, or a name looked up in PATH).
    pub runtime: PathBuf,
    /// Join the pod's network namespace pinned at this path.
    pub netns: Option<PathBuf>,
    /// Give the pod its own IPC namespace.
    pub new_ipc: bool,
    /// Give the pod its own PID namespace, shared by its containers.
    pub new_pid: bool,
    /// Give the pod its own UTS namespace, with this hostname.
    pub hostname: Option<String>,
    pub action: Option<ShimAction>,
}

pub const USAGE: &str = "\
usage: crius-shim -namespace NS -id ID [-address ADDR] [-publish-binary BIN] [-debug]
                  [-socket PATH] [-bundle DIR] [-runtime RUNTIME] [-netns PATH]
                  [-new-ipc] [-new-pid] [-hostname NAME] start|delete
       crius-shim -v
The working directory is the shim's: containerd's bundle, or the pod's shim directory.
Events are published to $TTRPC_ADDRESS (else -address).";

impl Default for ShimArgs {
    fn default() -> ShimArgs {
        ShimArgs {
            namespace: String::new(),
            address: String::new(),
            publish_binary: String::new(),
            id: String::new(),
            bundle: None,
            socket: None,
            debug: false,
            version: false,
            runtime: PathBuf::from(super::runc::EMBEDDED_NAME),
            netns: None,
            new_ipc: false,
            new_pid: false,
            hostname: None,
            action: None,
        }
    }
}

impl ShimArgs {
    /// Parses `args` (without the program name).
    pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<ShimArgs, ShimError> {
        let invalid = |message: String| ShimError::InvalidArgument(message);
        let mut parsed = ShimArgs::default();
        let mut args = args.into_iter();
        let mut only_positionals = false;
        while let Some(arg) = args.next() {
            let flag = arg
                .strip_prefix("--")
                .or_else(|| arg.strip_prefix('-'))
                .filter(|flag| !only_positionals && !flag.is_empty() && arg != "-");
            let Some(flag) = flag else {
                if arg == "--" && !only_positionals {
                    only_positionals = true;
                    continue;
                }
                if parsed.action.is_some() {
                    return Err(invalid(format!("unexpected argument {arg:?}")));
                }
                parsed.action = Some(match arg.as_str() {
                    "start" => ShimAction::Start,
                    "delete" => ShimAction::Delete,
                    _ => return Err(invalid(format!("unknown action {arg:?}"))),
                });
                continue;
            };
            let (name, inline) = match flag.split_once('=') {
                Some((name, value)) => (name, Some(value.to_string())),
                None => (flag, None),
            };
            if let Some(switch) = parsed.switch(name) {
                *switch = match inline.as_deref() {
                    None | Some("true") | Some("1") => true,
                    Some("false") | Some("0") => false,
                    Some(other) => {
                        return Err(invalid(format!("flag -{name}: not a boolean: {other:?}")))
                    }
                };
                continue;
            }
            let value = match inline {
                Some(value) => value,
                None => args
                    .next()
                    .ok_or_else(|| invalid(format!("flag -{name} needs a value")))?,
            };
            match name {
                "namespace" => parsed.namespace = value,
                "address" => parsed.address = value,
                "publish-binary" => parsed.publish_binary = value,
                "id" => parsed.id = value,
                "bundle" => parsed.bundle = Some(value.into()),
                "socket" => parsed.socket = Some(value.into()),
                "runtime" => parsed.runtime = value.into(),
                "netns" => parsed.netns = Some(value.into()),
                "hostname" => parsed.hostname = Some(value),
                _ => return Err(invalid(format!("flag provided but not defined: -{name}"))),
            }
        }
        if parsed.version {
            return Ok(parsed);
        }
        if parsed.action.is_none() {
            return Err(invalid("an action is required: start or delete".into()));
        }
        if parsed.namespace.is_empty() {
            // As containerd's shims: "shim namespace cannot be empty".
            return Err(invalid("-namespace is required".into()));
        }
        if parsed.id.is_empty() {
            return Err(invalid("-id is required".into()));
        }
        Ok(parsed)
    }

    /// The boolean flag `name`, if it is one.
    fn switch(&mut self, name: &str) -> Option<&mut bool> {
        match name {
            "debug" => Some(&mut self.debug),
            "v" => Some(&mut self.version),
            "new-ipc" => Some(&mut self.new_ipc),
            "new-pid" => Some(&mut self.new_pid),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<ShimArgs, ShimError> {
        ShimArgs::parse(line.split_whitespace().map(String::from))
    }

    #[test]
    fn containerds_start_command_line() {
        let args = parse(
            "-namespace k8s.io -address /run/containerd/containerd.sock \
             -publish-binary /usr/bin/containerd -id abc -debug start",
        )
        .unwrap();
        assert_eq!(args.namespace, "k8s.io");
        assert_eq!(args.address, "/run/containerd/containerd.sock");
        assert_eq!(args.publish_binary, "/usr/bin/containerd");
        assert_eq!(args.id, "abc");
        assert!(args.debug);
        assert_eq!(args.action, Some(ShimAction::Start));
        assert_eq!(args.runtime, PathBuf::from("embedded"));
    }

    #[test]
    fn containerds_delete_and_crius_extras() {
        let args =
            parse("--namespace=ns -id c1 -bundle /b delete -runtime /usr/sbin/runc -new-pid")
                .unwrap();
        assert_eq!(args.action, Some(ShimAction::Delete));
        assert_eq!(args.bundle, Some(PathBuf::from("/b")));
        assert_eq!(args.runtime, PathBuf::from("/usr/sbin/runc"));
        assert!(args.new_pid && !args.new_ipc);
        let args = parse("-namespace ns -id p -new-ipc=false -hostname h -netns /n start").unwrap();
        assert!(!args.new_ipc);
        assert_eq!(args.hostname.as_deref(), Some("h"));
        assert_eq!(args.netns, Some(PathBuf::from("/n")));
    }

    #[test]
    fn mistakes_are_named() {
        let message = |line| parse(line).unwrap_err().to_string();
        assert!(message("-namespace ns -id x -bogus 1 start").contains("-bogus"));
        assert!(message("-namespace ns -id x").contains("action"));
        assert!(message("-id x start").contains("-namespace"));
        assert!(message("-namespace ns -id x stop").contains("stop"));
        assert!(message("-namespace ns -id").contains("-id needs a value"));
        assert!(parse("-v").unwrap().version);
    }
}
