//! `strata-proxy tune`: compares a sysctl profile (`sysctl/*.conf`) with the running kernel,
//! prints every difference with the command that fixes it, and applies the profile on request.
//!
//! Parsing and comparison are plain functions over strings; the only I/O reads and writes
//! the files under `/proc/sys`. `check` never writes; `apply` writes only with `--yes`.

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Where the kernel exposes its parameters.
pub const PROC_SYS: &str = "/proc/sys";
/// Exit code: every key matches (or is marked `-` and absent, unreadable or read-only).
pub const EXIT_MATCH: u8 = 0;
/// Exit code: differences (or keys that cannot be read, or writes that failed).
pub const EXIT_DIFFER: u8 = 1;
/// Exit code: a profile file is missing or has a line that is not `key = value`.
pub const EXIT_BAD_PROFILE: u8 = 2;

/// `strata-proxy tune …`
#[derive(clap::Args, Debug)]
pub struct TuneArgs {
    /// `check` or `apply`.
    #[command(subcommand)]
    pub action: Action,
}

/// What `tune` does with the profiles.
#[derive(clap::Subcommand, Debug)]
pub enum Action {
    /// Compare profiles with the running kernel; print each difference and its fix.
    /// Exit 0 when everything matches, 1 on differences, 2 on a bad profile file.
    Check(Profiles),
    /// Write the keys that differ (a dry run unless --yes) and report each result.
    /// Exit 0 when everything matches afterwards, 1 otherwise, 2 on a bad profile file.
    Apply {
        #[command(flatten)]
        profiles: Profiles,
        /// Really write to /proc/sys; without it, only say what would be written.
        #[arg(long)]
        yes: bool,
    },
}

/// The profiles to work on, and where the kernel's parameters are.
#[derive(clap::Args, Debug)]
pub struct Profiles {
    /// sysctl profile (`key = value` lines, as for `sysctl -p`); repeat for several.
    #[arg(long, required = true, value_name = "FILE")]
    pub profile: Vec<PathBuf>,
    /// Directory that holds the parameters (tests point it at a copy).
    #[arg(long, default_value = PROC_SYS, value_name = "DIR", hide = true)]
    pub root: PathBuf,
}

/// One `key = value` line of a profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// The key as written (`net.core.somaxconn` or `net/core/somaxconn`).
    pub key: String,
    /// The value as written, surrounding blanks removed.
    pub value: String,
    /// The line started with `-`: failing to read or set this key is not an error.
    pub ignore_errors: bool,
    /// 1-based line number, for messages.
    pub line: usize,
}

impl Setting {
    /// The parameter's file, relative to `/proc/sys`.
    pub fn rel_path(&self) -> PathBuf {
        key_path(&self.key)
    }
}

/// A line of a profile that is not a setting, a comment or blank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub problem: String,
}

/// Why a profile cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The file cannot be read (missing, permissions).
    #[error("{}: cannot read the profile: {source}", .path.display())]
    Read { path: PathBuf, source: io::Error },
    /// Lines that are not settings, comments or blank; every one of them.
    #[error("{}", bad_lines(.path, .lines))]
    Lines { path: PathBuf, lines: Vec<LineError> },
}

/// `FILE:LINE: problem`, one line per bad line.
fn bad_lines(path: &Path, lines: &[LineError]) -> String {
    let each: Vec<String> = lines
        .iter()
        .map(|l| format!("{}:{}: {}", path.display(), l.line, l.problem))
        .collect();
    each.join("\n")
}

/// Parses a profile in `sysctl.conf(5)` syntax: `key = value` lines; blank lines and lines
/// starting with `#` or `;` are ignored; a leading `-` means errors on that key are ignored.
/// A key set twice keeps the last value, as `sysctl -p` would leave it.
///
/// Returns every bad line, not just the first.
pub fn parse_profile(text: &str) -> Result<Vec<Setting>, Vec<LineError>> {
    let mut settings: Vec<Setting> = Vec::new();
    let mut seen: HashMap<PathBuf, usize> = HashMap::new();
    let mut errors = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        match parse_line(raw) {
            Ok(None) => {}
            Ok(Some((key, value, ignore_errors))) => {
                let s = Setting {
                    key: key.to_string(),
                    value: value.to_string(),
                    ignore_errors,
                    line,
                };
                match seen.get(&s.rel_path()) {
                    Some(&at) => settings[at] = s,
                    None => {
                        seen.insert(s.rel_path(), settings.len());
                        settings.push(s);
                    }
                }
            }
            Err(problem) => errors.push(LineError { line, problem }),
        }
    }
    if errors.is_empty() {
        Ok(settings)
    } else {
        Err(errors)
    }
}

/// One line: `None` for blanks and comments, else (key, value, ignore_errors).
fn parse_line(raw: &str) -> Result<Option<(&str, &str, bool)>, String> {
    let line = raw.trim();
    if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
        return Ok(None);
    }
    let (ignore_errors, rest) = match line.strip_prefix('-') {
        Some(rest) => (true, rest.trim_start()),
        None => (false, line),
    };
    let Some((key, value)) = rest.split_once('=') else {
        return Err(format!("expected `key = value`, found `{}`", shorten(line)));
    };
    let (key, value) = (key.trim(), value.trim());
    check_key(key)?;
    if value.is_empty() {
        return Err(format!("`{key}` has no value"));
    }
    if value.chars().any(|c| c.is_control() && c != '\t') {
        return Err(format!("the value of `{key}` contains a control character"));
    }
    Ok(Some((key, value, ignore_errors)))
}

/// Longest piece of a bad line quoted in a message.
const QUOTE_MAX: usize = 60;

/// `text`, cut to [`QUOTE_MAX`] characters for a message.
fn shorten(text: &str) -> String {
    match text.char_indices().nth(QUOTE_MAX) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

/// A key must name one file under `/proc/sys`: no blanks, globs or `..`.
fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("a key is missing before `=`".to_string());
    }
    if key.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("the key `{}` contains a blank", shorten(key)));
    }
    if key.contains(['*', '?', '[']) {
        return Err(format!("the key `{key}` is a pattern; name each key instead"));
    }
    let bad_part = key_path(key)
        .to_str()
        .is_none_or(|p| p.split('/').any(|part| part.is_empty() || part == "." || part == ".."));
    if bad_part || key.starts_with('/') || key.starts_with('.') {
        return Err(format!("`{key}` is not a parameter name"));
    }
    Ok(())
}

/// The file of a key relative to `/proc/sys`. As in `sysctl(8)`, a key written with `/`
/// keeps its dots (`net/ipv4/conf/eth0.100/rp_filter`); otherwise dots separate.
pub fn key_path(key: &str) -> PathBuf {
    if key.contains('/') {
        PathBuf::from(key)
    } else {
        PathBuf::from(key.replace('.', "/"))
    }
}

/// A value with runs of blanks made one space: `4096\t131072  6291456` → `4096 131072 6291456`.
pub fn normalize(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The shell command that sets `setting` on a running system.
pub fn fix_command(setting: &Setting) -> String {
    let mut quoted = String::with_capacity(setting.value.len() + 2);
    for c in normalize(&setting.value).chars() {
        if matches!(c, '"' | '\\' | '$' | '`') {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    format!("sysctl -w {}=\"{}\"", setting.key, quoted)
}

/// What the kernel has for a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Live {
    /// The current value (as read, trailing newline removed).
    Value(String),
    /// No such parameter: another kernel version, a module not loaded, or a namespace
    /// that does not have it.
    Absent,
    /// It exists but cannot be read (permissions, a write-only key).
    Unreadable(String),
}

/// How a profile's value compares with the kernel's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// Equal once blanks are normalised.
    Match,
    /// The kernel has another value (normalised).
    Differs { live: String },
    /// The kernel has no such key.
    Absent,
    /// The key exists but cannot be read; why.
    Unreadable(String),
}

/// Compares a wanted value with the live one, blanks normalised.
pub fn compare(wanted: &str, live: &Live) -> Finding {
    match live {
        Live::Value(v) if normalize(v) == normalize(wanted) => Finding::Match,
        Live::Value(v) => Finding::Differs { live: normalize(v) },
        Live::Absent => Finding::Absent,
        Live::Unreadable(e) => Finding::Unreadable(e.clone()),
    }
}

/// Whether a finding leaves the profile satisfied: a match, or a missing or unreadable key
/// the profile marked with `-`.
pub fn satisfied(setting: &Setting, finding: &Finding) -> bool {
    match finding {
        Finding::Match => true,
        Finding::Absent | Finding::Unreadable(_) => setting.ignore_errors,
        Finding::Differs { .. } => false,
    }
}

/// Reads a key's live value under `root`.
pub fn read_live(root: &Path, setting: &Setting) -> Live {
    match std::fs::read_to_string(root.join(setting.rel_path())) {
        Ok(v) => Live::Value(v.trim_end_matches('\n').to_string()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Live::Absent,
        Err(e) => Live::Unreadable(describe(&e)),
    }
}

/// Whether the key could be written from here, found by opening it for writing without
/// writing anything (the kernel checks permissions, read-only mounts and namespace rules
/// at open).
pub fn probe_writable(root: &Path, setting: &Setting) -> Result<(), String> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(root.join(setting.rel_path()))
        .map(drop)
        .map_err(|e| describe(&e))
}

/// Writes the profile's value to the key, in one `write`, as `sysctl -w` does (truncating,
/// which /proc/sys ignores and a stand-in directory needs).
pub fn write_live(root: &Path, setting: &Setting) -> Result<(), String> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(root.join(setting.rel_path()))
        .map_err(|e| describe(&e))?;
    f.write_all(normalize(&setting.value).as_bytes())
        .map_err(|e| match e.kind() {
            // The file exists, so ENOENT here means the kernel does not know the value.
            io::ErrorKind::NotFound => {
                "the kernel does not know this value (is the module that provides it loaded?)".to_string()
            }
            _ => describe(&e),
        })
}

/// An I/O error in words, without the `(os error N)` suffix.
fn describe(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(13) => "permission denied".to_string(),
        Some(30) => "read-only file system".to_string(),
        Some(22) => "invalid value (the kernel refused it)".to_string(),
        Some(1) => "operation not permitted".to_string(),
        _ => {
            let s = e.to_string();
            match s.find(" (os error") {
                Some(at) => s[..at].to_string(),
                None => s,
            }
        }
    }
}

/// Reads and parses a profile file.
pub fn load_profile(path: &Path) -> Result<Vec<Setting>, ProfileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_profile(&text).map_err(|lines| ProfileError::Lines {
        path: path.to_path_buf(),
        lines,
    })
}

/// Runs `strata-proxy tune`. Output goes to stdout, bad profiles to stderr.
pub fn run(args: &TuneArgs) -> ExitCode {
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let code = match &args.action {
        Action::Check(p) => execute(p, Mode::Check, &mut out),
        Action::Apply { profiles, yes } => {
            let mode = if *yes { Mode::Apply } else { Mode::DryRun };
            execute(profiles, mode, &mut out)
        }
    };
    let _ = out.flush();
    ExitCode::from(code)
}

/// What to do with differences.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Report them.
    Check,
    /// Say what `apply --yes` would write.
    DryRun,
    /// Write them.
    Apply,
}

/// Loads every profile first (so a bad one changes nothing), then checks or applies each in
/// turn. Returns the exit code.
pub fn execute(p: &Profiles, mode: Mode, out: &mut dyn Write) -> u8 {
    let mut loaded = Vec::new();
    let mut bad = false;
    for path in &p.profile {
        match load_profile(path) {
            Ok(settings) => loaded.push((path, settings)),
            Err(e) => {
                eprintln!("{e}");
                bad = true;
            }
        }
    }
    if bad {
        return EXIT_BAD_PROFILE;
    }
    let mut code = EXIT_MATCH;
    for (path, settings) in loaded {
        let report = process(&p.root, &settings, mode);
        // Output errors (a closed pipe) must not change the verdict.
        let _ = print_report(out, path, mode, &report);
        if !report.ok() {
            code = EXIT_DIFFER;
        }
    }
    code
}

/// What happened to one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// The profile's line.
    pub setting: Setting,
    /// The comparison before any write.
    pub before: Finding,
    /// For a differing key: can it be written from here.
    pub writable: Option<Result<(), String>>,
    /// For `apply --yes`: the write's result and the comparison after it.
    pub applied: Option<Result<Finding, String>>,
}

impl Row {
    /// Whether this key ends up as the profile wants, or is excused by `-` (absent,
    /// unreadable, or not writable from here: what `sysctl -p` would skip as well).
    pub fn ok(&self) -> bool {
        match &self.applied {
            Some(Ok(after)) => satisfied(&self.setting, after),
            Some(Err(_)) => self.setting.ignore_errors,
            None => {
                satisfied(&self.setting, &self.before)
                    || (self.setting.ignore_errors && matches!(self.writable, Some(Err(_))))
            }
        }
    }
}

/// The rows of one profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// One per setting, in the profile's order.
    pub rows: Vec<Row>,
}

impl Report {
    /// Whether every key ends up as the profile wants.
    pub fn ok(&self) -> bool {
        self.rows.iter().all(Row::ok)
    }
}

/// Compares (and in [`Mode::Apply`] writes) every setting under `root`.
pub fn process(root: &Path, settings: &[Setting], mode: Mode) -> Report {
    let rows = settings
        .iter()
        .map(|s| {
            let before = compare(&s.value, &read_live(root, s));
            let (writable, applied) = match &before {
                Finding::Differs { .. } => {
                    let writable = probe_writable(root, s);
                    let applied = (mode == Mode::Apply)
                        .then(|| write_live(root, s).map(|()| compare(&s.value, &read_live(root, s))));
                    (Some(writable), applied)
                }
                _ => (None, None),
            };
            Row {
                setting: s.clone(),
                before,
                writable,
                applied,
            }
        })
        .collect();
    Report { rows }
}

/// Width of the status column.
const STATUS_WIDTH: usize = 10;

fn print_report(out: &mut dyn Write, path: &Path, mode: Mode, report: &Report) -> io::Result<()> {
    let verb = match mode {
        Mode::Check => "check",
        Mode::DryRun => "apply (dry run: nothing is written without --yes)",
        Mode::Apply => "apply",
    };
    writeln!(out, "{} — {verb}, {} keys", path.display(), report.rows.len())?;
    let pad = " ".repeat(STATUS_WIDTH + 2);
    for row in &report.rows {
        let s = &row.setting;
        let ignored = if s.ignore_errors {
            " (ignored: \"-\" prefix)"
        } else {
            ""
        };
        match (&row.before, &row.applied) {
            (Finding::Match, _) => writeln!(out, "  {:<STATUS_WIDTH$}{} = {}", "ok", s.key, normalize(&s.value))?,
            (Finding::Absent, _) => writeln!(
                out,
                "  {:<STATUS_WIDTH$}{}: no such key on this kernel (module not loaded, or not in this namespace){ignored}",
                "absent", s.key
            )?,
            (Finding::Unreadable(e), _) => {
                writeln!(out, "  {:<STATUS_WIDTH$}{}: cannot read it: {e}{ignored}", "unreadable", s.key)?
            }
            (Finding::Differs { live }, applied) => {
                let read_only = match &row.writable {
                    Some(Err(e)) => Some(e.as_str()),
                    _ => None,
                };
                let status = if read_only.is_some() { "read-only" } else { "differs" };
                writeln!(
                    out,
                    "  {status:<STATUS_WIDTH$}{} = {} (live: {live})",
                    s.key,
                    normalize(&s.value)
                )?;
                match applied {
                    None => {
                        if let Some(e) = read_only {
                            writeln!(
                                out,
                                "{pad}not writable here ({e}): set it where it is (the host, the initial network namespace){ignored}"
                            )?;
                        }
                        let lead = if mode == Mode::DryRun { "would run" } else { "fix" };
                        writeln!(out, "{pad}{lead}: {}", fix_command(s))?;
                    }
                    Some(Ok(Finding::Match)) => writeln!(out, "{pad}written: now {}", normalize(&s.value))?,
                    Some(Ok(Finding::Differs { live })) => {
                        writeln!(out, "{pad}written, but the kernel now reports {live}")?
                    }
                    Some(Ok(_)) => writeln!(out, "{pad}written, but the key cannot be read back")?,
                    Some(Err(e)) => writeln!(out, "{pad}FAILED: {e}{ignored}")?,
                }
            }
        }
    }
    let count = |f: &dyn Fn(&Row) -> bool| report.rows.iter().filter(|r| f(r)).count();
    let matching = count(&|r| r.before == Finding::Match);
    let differing = count(&|r| matches!(r.before, Finding::Differs { .. }));
    let read_only = count(&|r| matches!(r.writable, Some(Err(_))));
    let absent = count(&|r| r.before == Finding::Absent);
    let unreadable = count(&|r| matches!(r.before, Finding::Unreadable(_)));
    let mut summary = format!("{matching} match, {differing} differ");
    if read_only > 0 {
        summary.push_str(&format!(" ({read_only} read-only here)"));
    }
    summary.push_str(&format!(", {absent} absent, {unreadable} unreadable"));
    if mode == Mode::Apply {
        let written = count(&|r| matches!(r.applied, Some(Ok(Finding::Match))));
        let failed = count(&|r| matches!(r.applied, Some(Err(_))));
        summary.push_str(&format!("; {written} written, {failed} failed"));
    }
    let verdict = if report.ok() {
        "OK"
    } else if mode == Mode::Apply {
        "NOT APPLIED"
    } else {
        "DIFFERENT"
    };
    writeln!(out, "{}: {summary} → {verdict}", path.display())?;
    writeln!(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Setting {
        let mut v = parse_profile(text).expect("valid profile");
        assert_eq!(v.len(), 1, "{v:?}");
        v.remove(0)
    }

    #[test]
    fn parses_keys_values_comments_and_the_dash_prefix() {
        let text = "# comment\n; also a comment\n\n  net.core.somaxconn =  8192  \n\
                    -net.netfilter.nf_conntrack_max=524288\nnet.ipv4.tcp_rmem = 4096\t131072 16777216\n";
        let v = parse_profile(text).expect("valid");
        assert_eq!(v.len(), 3);
        assert_eq!(
            v[0],
            Setting {
                key: "net.core.somaxconn".into(),
                value: "8192".into(),
                ignore_errors: false,
                line: 4
            }
        );
        assert!(v[1].ignore_errors);
        assert_eq!(v[1].key, "net.netfilter.nf_conntrack_max");
        assert_eq!(v[2].value, "4096\t131072 16777216");
        assert_eq!(v[2].line, 6);
    }

    #[test]
    fn dash_with_blank_and_later_duplicates() {
        assert!(one("- net.core.somaxconn = 1").ignore_errors);
        let v = parse_profile("a.b = 1\nc.d = 2\na/b = 3\n").expect("valid");
        assert_eq!(v.len(), 2);
        assert_eq!((v[0].key.as_str(), v[0].value.as_str(), v[0].line), ("a/b", "3", 3));
    }

    #[test]
    fn reports_every_bad_line_with_its_number() {
        let text = "net.core.somaxconn = 8192\nthis is not a setting\n= 5\nnet.x =\nnet.*.y = 1\nnet..z = 1\nnet.core.a b = 1\n";
        let errors = parse_profile(text).expect_err("invalid");
        let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, [2, 3, 4, 5, 6, 7]);
        assert!(errors[0].problem.contains("expected `key = value`"), "{errors:?}");
        assert!(errors[2].problem.contains("no value"), "{errors:?}");
        assert!(errors[3].problem.contains("pattern"), "{errors:?}");
    }

    #[test]
    fn key_paths_follow_sysctl() {
        assert_eq!(key_path("net.ipv4.tcp_rmem"), PathBuf::from("net/ipv4/tcp_rmem"));
        assert_eq!(
            key_path("net/ipv4/conf/eth0.100/rp_filter"),
            PathBuf::from("net/ipv4/conf/eth0.100/rp_filter")
        );
        assert!(parse_profile("../../etc/passwd = 1").is_err());
        assert!(parse_profile("/etc/passwd = 1").is_err());
    }

    #[test]
    fn compares_multi_value_keys_with_blanks_normalised() {
        assert_eq!(
            compare("4096 131072 6291456", &Live::Value("4096\t131072\t6291456".into())),
            Finding::Match
        );
        assert_eq!(
            compare("4096 131072 16777216", &Live::Value("4096\t131072\t6291456".into())),
            Finding::Differs {
                live: "4096 131072 6291456".into()
            }
        );
        assert_eq!(compare("1", &Live::Absent), Finding::Absent);
        assert_eq!(compare("fq", &Live::Value("fq".into())), Finding::Match);
    }

    #[test]
    fn dash_excuses_absent_keys_but_not_differences() {
        let dash = one("-a.b = 1");
        let plain = one("a.b = 1");
        assert!(satisfied(&dash, &Finding::Absent));
        assert!(!satisfied(&plain, &Finding::Absent));
        assert!(!satisfied(&dash, &Finding::Differs { live: "2".into() }));
        assert!(satisfied(&plain, &Finding::Match));
    }

    #[test]
    fn dash_excuses_a_key_not_writable_here() {
        let row = |text: &str, writable: Result<(), String>| Row {
            setting: one(text),
            before: Finding::Differs { live: "2".into() },
            writable: Some(writable),
            applied: None,
        };
        assert!(row("-a.b = 1", Err("permission denied".into())).ok());
        assert!(!row("a.b = 1", Err("permission denied".into())).ok());
        assert!(!row("-a.b = 1", Ok(())).ok());
    }

    #[test]
    fn fix_commands_are_quoted_for_the_shell() {
        assert_eq!(
            fix_command(&one("net.ipv4.tcp_rmem = 4096  131072 16777216")),
            "sysctl -w net.ipv4.tcp_rmem=\"4096 131072 16777216\""
        );
        assert_eq!(
            fix_command(&one("k.v = a\"$`\\b")),
            "sysctl -w k.v=\"a\\\"\\$\\`\\\\b\""
        );
    }

    /// A directory standing in for /proc/sys.
    struct FakeRoot(PathBuf);

    impl FakeRoot {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("strata-tune-unit-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(dir.join("net/core")).expect("temp dir");
            std::fs::write(dir.join("net/core/somaxconn"), "4096\n").expect("write");
            std::fs::write(dir.join("net/core/tcp_rmem"), "4096\t131072\t6291456\n").expect("write");
            FakeRoot(dir)
        }
    }

    impl Drop for FakeRoot {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn check_reports_and_apply_writes() {
        let root = FakeRoot::new("apply");
        let settings = parse_profile(
            "net.core.somaxconn = 8192\nnet.core.tcp_rmem = 4096 131072 6291456\n-net.core.gone = 1\nnet.core.missing = 1\n",
        )
        .expect("valid");
        let report = process(&root.0, &settings, Mode::Check);
        let before: Vec<&Finding> = report.rows.iter().map(|r| &r.before).collect();
        assert_eq!(
            before,
            [
                &Finding::Differs { live: "4096".into() },
                &Finding::Match,
                &Finding::Absent,
                &Finding::Absent
            ]
        );
        assert!(!report.ok());
        assert_eq!(
            std::fs::read_to_string(root.0.join("net/core/somaxconn"))
                .ok()
                .as_deref(),
            Some("4096\n")
        );

        let dry = process(&root.0, &settings, Mode::DryRun);
        assert!(dry.rows.iter().all(|r| r.applied.is_none()));
        assert_eq!(
            std::fs::read_to_string(root.0.join("net/core/somaxconn"))
                .ok()
                .as_deref(),
            Some("4096\n")
        );

        let applied = process(&root.0, &settings, Mode::Apply);
        assert_eq!(applied.rows[0].applied, Some(Ok(Finding::Match)));
        assert_eq!(
            std::fs::read_to_string(root.0.join("net/core/somaxconn"))
                .ok()
                .as_deref(),
            Some("8192")
        );
        // Only the plain missing key keeps the profile from being satisfied.
        let failing: Vec<&str> = applied
            .rows
            .iter()
            .filter(|r| !r.ok())
            .map(|r| r.setting.key.as_str())
            .collect();
        assert_eq!(failing, ["net.core.missing"]);

        let mut out = Vec::new();
        print_report(&mut out, Path::new("p.conf"), Mode::Apply, &applied).expect("print");
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("written: now 8192"), "{text}");
        assert!(text.contains("absent    net.core.gone"), "{text}");
        assert!(text.contains("→ NOT APPLIED"), "{text}");
    }

    #[test]
    fn check_output_names_the_fix() {
        let root = FakeRoot::new("print");
        let settings = parse_profile("net.core.somaxconn = 8192\n").expect("valid");
        let report = process(&root.0, &settings, Mode::Check);
        let mut out = Vec::new();
        print_report(&mut out, Path::new("p.conf"), Mode::Check, &report).expect("print");
        let text = String::from_utf8_lossy(&out);
        assert!(
            text.contains("differs   net.core.somaxconn = 8192 (live: 4096)"),
            "{text}"
        );
        assert!(text.contains("fix: sysctl -w net.core.somaxconn=\"8192\""), "{text}");
        assert!(
            text.contains("0 match, 1 differ, 0 absent, 0 unreadable → DIFFERENT"),
            "{text}"
        );
    }
}
