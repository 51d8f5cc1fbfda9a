//! `strata-dist`: writes what the Debian package installs besides the programs, generated
//! from the programs' own command-line definitions (`strata_*::cli`), so the manual pages
//! and the shell completions can never disagree with `--help`:
//!
//! - `man/man1/strata-proxy.1`, `strata-proxy-ban.1`, `strata-proxy-tune-check.1`, …, one page
//!   per program and subcommand, the programs' pages ending with their files and signals;
//! - `completions/bash/strata-proxy`, `completions/zsh/_strata-proxy`,
//!   `completions/fish/strata-proxy.fish`, … for each program.
//!
//! `scripts/deb.sh` runs it while staging the package.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{CommandFactory, Parser};
use clap_complete::Shell;

/// Writes the manual pages and shell completions of strata-proxy, strata-syncer and
/// strata-director.
#[derive(Parser)]
#[command(name = "strata-dist", version, about)]
struct Cli {
    /// Directory to write `man/` and `completions/` into (created if missing).
    out: PathBuf,
}

/// What a program's page says beyond its options: the files it reads and what its signals do.
struct Extra {
    /// Text of the FILES section (roff).
    files: &'static str,
    /// Text of the SIGNALS section (roff).
    signals: &'static str,
    /// The documentation page installed with the package.
    doc: &'static str,
}

const PROXY: Extra = Extra {
    files: ".TP\n\\fI/etc/strata/proxy.toml\\fR\nThe configuration (\\fB\\-\\-config\\fR).\n\
            .TP\n\\fI/var/lib/strata/cluster.secret\\fR\nThe cluster secret bans and admin requests are signed with (\\fBcluster.secret_file\\fR).\n\
            .TP\n\\fI/usr/share/strata/sysctl/\\fR\nThe kernel profiles \\fBstrata\\-proxy tune\\fR compares and applies.\n",
    signals: ".TP\n\\fBSIGHUP\\fR\nRead the configuration and the TLS certificates again; what can change at once applies, a file with problems is refused and the running configuration stays.\n\
              .TP\n\\fBSIGTERM\\fR, \\fBSIGINT\\fR\nStop accepting, finish in-flight requests, tell the siblings, exit.\n",
    doc: "proxy.md",
};

const SYNCER: Extra = Extra {
    files: ".TP\n\\fI/etc/strata/syncer.toml\\fR\nThe configuration (\\fB\\-\\-config\\fR).\n\
            .TP\n\\fI/var/lib/strata/cluster.secret\\fR\nThe cluster secret its bans are signed with.\n",
    signals: ".TP\n\\fBSIGTERM\\fR, \\fBSIGINT\\fR\nStop between two rounds; a round cut short is redone by the next start.\n",
    doc: "comments-and-syncer.md",
};

const DIRECTOR: Extra = Extra {
    files: ".TP\n\\fI/etc/strata/director.toml\\fR\nThe configuration (\\fB\\-\\-config\\fR).\n\
            .TP\n\\fI/usr/share/strata/sysctl/director.conf\\fR\nThe kernel profile for a director host.\n",
    signals: ".TP\n\\fBSIGHUP\\fR\nRead the configuration again: nodes, weights, ports and health checks; pinned flows are kept.\n\
              .TP\n\\fBSIGTERM\\fR, \\fBSIGINT\\fR\nStop.\n",
    doc: "director.md",
};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let programs = [
        (strata_proxy::cli::Cli::command(), PROXY),
        (strata_syncer::cli::Cli::command(), SYNCER),
        (strata_director::cli::Cli::command(), DIRECTOR),
    ];
    let man = cli.out.join("man/man1");
    std::fs::create_dir_all(&man).with_context(|| format!("cannot create {}", man.display()))?;
    for (cmd, extra) in programs {
        let name = cmd.get_name().to_string();
        pages(cmd.clone(), &man, &extra).with_context(|| format!("manual pages of {name}"))?;
        completions(cmd, &name, &cli.out.join("completions")).with_context(|| format!("completions of {name}"))?;
    }
    Ok(())
}

/// The program's page, with its files, signals and documentation, and one page per
/// subcommand (`strata-proxy-ban.1`).
fn pages(cmd: clap::Command, dir: &Path, extra: &Extra) -> anyhow::Result<()> {
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let name = cmd.get_name().to_string();
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        // The subcommand's page and, below it, those of its own subcommands.
        clap_mangen::generate_to(sub.clone(), dir)?;
    }
    let mut text = Vec::new();
    clap_mangen::Man::new(cmd).render(&mut text)?;
    let mut text = String::from_utf8(text).context("the page is not UTF-8")?;
    text.push_str(&format!(
        ".SH FILES\n{}.SH SIGNALS\n{}.SH SEE ALSO\n\\fI/usr/share/doc/strata/{}\\fR, \\fI/usr/share/doc/strata/debian.md\\fR\n",
        extra.files, extra.signals, extra.doc
    ));
    let path = dir.join(format!("{name}.1"));
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// bash, zsh and fish completions, under the names those shells look for.
fn completions(mut cmd: clap::Command, name: &str, dir: &Path) -> anyhow::Result<()> {
    for (shell, sub, file) in [
        (Shell::Bash, "bash", name.to_string()),
        (Shell::Zsh, "zsh", format!("_{name}")),
        (Shell::Fish, "fish", format!("{name}.fish")),
    ] {
        let dir = dir.join(sub);
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let path = dir.join(file);
        let mut out = std::fs::File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
        clap_complete::generate(shell, &mut cmd, name, &mut out);
    }
    Ok(())
}
