//! The deploy files cannot be run here (no Docker engine), so they are checked: the compose
//! YAML parses, every Warden service runs a real `warden` subcommand with its config mounted
//! where `WARDEN_CONFIG` points. (That the mounted config is valid is a unit test of
//! `src/config.rs`.)

use crate::support;

use std::process::Command;

use support::{run_python, warden_binary};

#[test]
fn compose_services_run_real_subcommands_with_their_config_mounted() {
    let compose = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/docker-compose.yml");
    let services = run_python("compose_services.py", &[compose]);
    let mut roles = Vec::new();
    for (name, service) in services.as_object().expect("services") {
        if service["image"] != "warden:latest" {
            continue;
        }
        let role = service["command"][0]
            .as_str()
            .expect("a command")
            .to_owned();
        let help = Command::new(warden_binary())
            .args([role.as_str(), "--help"])
            .output()
            .expect("warden runs");
        assert!(
            help.status.success(),
            "{name}: `warden {role}` is not a subcommand"
        );
        let config = service["warden_config"].as_str().expect("WARDEN_CONFIG");
        assert!(
            service["mounts"]
                .as_array()
                .expect("mounts")
                .iter()
                .any(|m| m == config),
            "{name}: {config} is not mounted"
        );
        roles.push(role);
    }
    roles.sort();
    assert_eq!(roles, ["archive", "detect", "proxy"]);
}
