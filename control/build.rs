//! Builds the XDP program (`xdp-redirect/ebpf`) for `bpfel-unknown-none` with the
//! nightly toolchain and bpf-linker, so that `cargo build` of the workspace embeds
//! it in the `fastrelay` binary with no manual step. `ci/bootstrap` installs both.
use std::{env, path::PathBuf, process::Command};

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let ebpf_dir = manifest_dir
        .join("../xdp-redirect/ebpf")
        .canonicalize()
        .unwrap();
    let common_dir = manifest_dir.join("../xdp-redirect/common");
    let out_dir = PathBuf::from(env::var("OUT_DIR").unwrap());
    let target_dir = out_dir.join("ebpf-target");

    for dir in [ebpf_dir.join("src"), common_dir.join("src")] {
        println!("cargo:rerun-if-changed={}", dir.display());
    }
    println!(
        "cargo:rerun-if-changed={}",
        ebpf_dir.join("Cargo.toml").display()
    );
    println!(
        "cargo:rerun-if-changed={}",
        ebpf_dir.join("Cargo.lock").display()
    );

    // Run the nightly cargo through rustup with a clean environment: the outer
    // (stable) cargo exports variables that would otherwise leak into this build.
    let mut cmd = Command::new("rustup");
    cmd.current_dir(&ebpf_dir)
        .args(["run", "nightly", "cargo", "build", "--release", "--locked"])
        .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
        .arg("--target-dir")
        .arg(&target_dir);
    for (key, _) in env::vars_os() {
        let key_str = key.to_string_lossy();
        if key_str.starts_with("CARGO")
            || key_str.starts_with("RUST")
            || key_str == "TARGET"
            || key_str == "HOST"
            || key_str == "OPT_LEVEL"
            || key_str == "PROFILE"
            || key_str == "DEBUG"
            || key_str == "OUT_DIR"
            || key_str == "NUM_JOBS"
        {
            cmd.env_remove(&key);
        }
    }
    let status = cmd.status().unwrap_or_else(|e| {
        panic!(
            "cannot run `rustup run nightly cargo` to build the XDP program: {e}; run ci/bootstrap"
        )
    });
    if !status.success() {
        panic!(
            "building the XDP program failed ({status}); it needs the nightly toolchain with \
             rust-src and bpf-linker on PATH: run ci/bootstrap"
        );
    }
    let object = target_dir.join("bpfel-unknown-none/release/xdp-redirect");
    println!("cargo:rustc-env=XDP_REDIRECT_OBJECT={}", object.display());
}
