//! The deployment files (deploy/README.md, "Vagrant, bare metal and
//! systemd"): `deploy/provision.sh` installs and starts three nodes that
//! form a cluster and serve the Kafka lab's commands, here in network
//! namespaces instead of VMs (`tests/deploy/provision-netns.sh`, which
//! needs root); and the `Vagrantfile` is one Vagrant accepts.

use std::path::Path;
use std::process::{Command, Output};

/// The netns script gets this long before it is stopped (SIGTERM, so that
/// its trap removes the namespaces and stops the nodes).
const NETNS_TIMEOUT_SECS: u32 = 240;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Stdout then stderr, for a failure message.
fn transcript(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn provisioning_script_forms_a_cluster_in_namespaces() {
    let script = repo().join("tests/deploy/provision-netns.sh");
    // One stream (stderr into stdout), so that the steps and the errors
    // stay in order in the transcript.
    let out = Command::new("timeout")
        .arg("--kill-after=20s")
        .arg(format!("{NETNS_TIMEOUT_SECS}s"))
        .args(["bash", "-c", r#"exec bash "$0" "$@" 2>&1"#])
        .arg(&script)
        .arg("--binary")
        .arg(env!("CARGO_BIN_EXE_runnel"))
        .output()
        .expect("run tests/deploy/provision-netns.sh (needs timeout and bash)");
    let text = transcript(&out);
    // Shown with --nocapture, and by the harness when the test fails.
    eprintln!("{text}");
    assert!(
        out.status.success(),
        "{} failed ({}; status 124 is the {NETNS_TIMEOUT_SECS}s timeout):\n{text}",
        script.display(),
        out.status
    );
    assert!(
        text.lines().any(|l| l.ends_with("] passed")),
        "the script exited 0 without passing:\n{text}"
    );
}

/// `vagrant validate` on a Vagrantfile in `dir`: Ok, or Vagrant's
/// complaint. `--ignore-provider` skips the VirtualBox/libvirt blocks, so
/// that no hypervisor is needed; the dot dir goes to a temp dir, not the
/// repository.
fn vagrant_validate(dir: &Path) -> Result<String, String> {
    let dot = std::env::temp_dir().join(format!("runnel-vagrant-dot-{}", std::process::id()));
    let out = Command::new("vagrant")
        .args(["validate", "--ignore-provider", "--no-color"])
        .current_dir(dir)
        .env("VAGRANT_CHECKPOINT_DISABLE", "1")
        .env("VAGRANT_DOTFILE_PATH", &dot)
        .output()
        .expect("run vagrant (make deps installs it: apt-get install vagrant ruby)");
    let _ = std::fs::remove_dir_all(&dot);
    let text = transcript(&out);
    if out.status.success() && text.contains("validated successfully") {
        Ok(text)
    } else {
        Err(format!("vagrant validate: {}\n{text}", out.status))
    }
}

#[test]
fn vagrantfile_is_valid() {
    if let Err(e) = vagrant_validate(repo()) {
        panic!("the Vagrantfile is not valid: {e}");
    }
    // The shell provisioner runs provision.sh from /vagrant; the file must
    // be there, with the templates and the unit next to it.
    for f in [
        "deploy/provision.sh",
        "deploy/templates/server.properties.tmpl",
        "deploy/systemd/runnel.service",
    ] {
        assert!(repo().join(f).is_file(), "{f} is missing");
    }
    // And the check can fail: the same file with a hostname Vagrant
    // refuses.
    let broken = std::env::temp_dir().join(format!("runnel-vagrant-{}", std::process::id()));
    std::fs::create_dir_all(&broken).unwrap();
    let text = std::fs::read_to_string(repo().join("Vagrantfile")).unwrap();
    let bad = text.replace(
        "node.vm.hostname = \"node#{i}\"",
        "node.vm.hostname = \"node_#{i}\"",
    );
    assert_ne!(
        bad, text,
        "the Vagrantfile no longer sets node.vm.hostname as this test expects"
    );
    std::fs::write(broken.join("Vagrantfile"), bad).unwrap();
    let result = vagrant_validate(&broken);
    let _ = std::fs::remove_dir_all(&broken);
    match result {
        Err(e) => assert!(e.contains("hostname"), "unexpected complaint: {e}"),
        Ok(text) => panic!("vagrant validate accepted a hostname with an underscore:\n{text}"),
    }
}
