//! Two "hosts" for tests that need a real network between them: network namespaces A and B
//! joined by a veth pair, created inside the namespaces so the machine's own interfaces
//! never see them, and deleted when the [`VethPair`] is dropped (also when a test fails).
#![allow(dead_code, clippy::unwrap_used)]

use std::process::Command;

/// The namespaces and the veth pair between them; dropping it deletes them.
pub struct VethPair {
    pub a: String,
    pub b: String,
    /// The veth end in A.
    pub dev_a: String,
    /// The veth end in B.
    pub dev_b: String,
}

impl VethPair {
    /// Namespaces `kb{tag}-a-PID` and `kb{tag}-b-PID` with `a_addr` and `b_addr` (such as
    /// "10.77.0.1/24") on their ends, and loopback up in both. `tag` keeps tests that run at
    /// once apart; with the process id it must fit an interface name (15 bytes).
    pub fn create(tag: &str, a_addr: &str, b_addr: &str) -> Result<VethPair, String> {
        let id = std::process::id() % 100_000;
        let pair = VethPair {
            a: format!("kb{tag}-a-{id}"),
            b: format!("kb{tag}-b-{id}"),
            dev_a: format!("kb{tag}a{id}"),
            dev_b: format!("kb{tag}b{id}"),
        };
        ip(&["netns", "add", &pair.a])?;
        ip(&["netns", "add", &pair.b])?;
        ip(&[
            "link",
            "add",
            &pair.dev_a,
            "netns",
            &pair.a,
            "type",
            "veth",
            "peer",
            "name",
            &pair.dev_b,
            "netns",
            &pair.b,
        ])?;
        for (ns, dev, addr) in [(&pair.a, &pair.dev_a, a_addr), (&pair.b, &pair.dev_b, b_addr)] {
            ip(&["-n", ns, "addr", "add", addr, "dev", dev])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(pair)
    }

    /// `args` as a command run inside namespace `ns`.
    pub fn exec(&self, ns: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns]).args(args);
        cmd
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Runs `ip ARGS`; its error output when it fails.
pub fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("ip: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// Why these tests cannot run here, if they cannot: they need root, `ip netns`, and each of
/// `tools` (run with `--version`).
pub fn can_run(tools: &[&str]) -> Result<(), String> {
    let uid = Command::new("id").arg("-u").output().map_err(|e| e.to_string())?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Err("not root".into());
    }
    let netns = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map_err(|e| format!("no ip command: {e}"))?;
    if !netns.status.success() {
        return Err("`ip netns` does not work here".into());
    }
    for tool in tools {
        Command::new(tool)
            .arg("--version")
            .output()
            .map_err(|e| format!("no {tool}: {e}"))?;
    }
    Ok(())
}
