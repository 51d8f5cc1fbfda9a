//! Compiles the XDP program (`bpf/director.bpf.c`) with clang into `$OUT_DIR/director.bpf.o`,
//! which the binary embeds.
//!
//! Needs clang (Debian: `apt-get install clang`) and the kernel UAPI headers
//! (`linux-libc-dev`, always there with a C toolchain). A program clang rejects fails the
//! build; without clang at all the build still succeeds, with a warning and an empty object: such a binary runs the AF_PACKET plane
//! only (`data_plane = "xdp"` then fails at start saying so, `"auto"` logs it and falls
//! back). `CLANG` names another compiler.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=bpf/director.bpf.c");
    println!("cargo:rerun-if-changed=bpf/bpf.h");
    println!("cargo:rerun-if-env-changed=CLANG");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("director.bpf.o");
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".into());
    // <linux/types.h> includes <asm/types.h>, which Debian keeps under the multiarch directory.
    let multiarch = match std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("x86_64") => "x86_64-linux-gnu",
        Ok("aarch64") => "aarch64-linux-gnu",
        Ok("arm") => "arm-linux-gnueabihf",
        Ok("riscv64") => "riscv64-linux-gnu",
        Ok("powerpc64") => "powerpc64le-linux-gnu",
        Ok("s390x") => "s390x-linux-gnu",
        _ => "x86_64-linux-gnu",
    };
    let result = Command::new(&clang)
        .args(["-O2", "-g", "-Wall", "-Werror", "-target", "bpf"])
        .arg(format!("-I/usr/include/{multiarch}"))
        .args(["-c", "bpf/director.bpf.c", "-o"])
        .arg(&out)
        .output();
    match result {
        Ok(o) if o.status.success() => {}
        // A broken program is a build error, as in any other source file.
        Ok(o) => panic!(
            "{clang} failed on bpf/director.bpf.c:\n{}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => {
            // Still build: the AF_PACKET plane works without the program.
            println!("cargo:warning=XDP data plane not built: cannot run {clang} ({e}); install it with `apt-get install clang`");
            std::fs::write(&out, b"").expect("write the empty XDP object");
        }
    }
}
