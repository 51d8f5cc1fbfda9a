//! The command line: `--help`, `--check-config` on good and bad files. No root needed.

use std::process::Command;

fn director() -> Command {
    Command::new(env!("CARGO_BIN_EXE_strata-director"))
}

fn write(name: &str, text: &str) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("strata-director-cli-{}-{name}", std::process::id()));
    std::fs::write(&p, text).expect("temp file");
    p
}

#[test]
fn help_names_the_options() {
    let out = director().arg("--help").output().expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        text.contains("--config") && text.contains("--check-config") && text.contains("SIGHUP"),
        "{text}"
    );
}

#[test]
fn check_config_accepts_the_example() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/director.toml");
    let out = director()
        .args(["--check-config", "--config", example])
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn check_config_prints_every_problem_by_key_and_fails() {
    let p = write(
        "bad.toml",
        "interface = \"eth0\"\nvip = \"nope\"\n[[backend]]\naddr = \"192.0.2.11\"\nhealth_url = \"http://node/\"\nweight = -1\n[health]\nfall = 0\n",
    );
    let out = director()
        .args(["--check-config", "--config"])
        .arg(&p)
        .output()
        .expect("run");
    let _ = std::fs::remove_file(&p);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for key in ["vip:", "backend[0].health_url:", "backend[0].weight:", "health.fall:"] {
        assert!(err.contains(key), "{key} missing from:\n{err}");
    }
}
