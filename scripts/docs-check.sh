#!/usr/bin/env bash
# Checks the documentation, offline and without root:
#
# - every relative link in README.md and docs/*.md (`[text](path)`, `[text](path#anchor)`,
#   `[text](#anchor)`, images, reference definitions) names a file or folder of the
#   repository, and every anchor names a heading of the page it points to (GitHub's slugs:
#   lower case, inline markup dropped, punctuation but `-` and `_` dropped, each space a
#   `-`, a repeated heading suffixed `-1`, `-2`, …); links inside code are not links;
# - every mention of a page of docs/ elsewhere in the repository (`docs/proxy.md#command-line`
#   in a comment of config/proxy.toml, a systemd unit's Documentation=, a source file)
#   names a page that exists and, with an anchor, a heading of it;
# - docs/configuration.md documents exactly the keys the programs accept: the keys of the
#   raw configuration structs of proxy/src/config.rs, syncer/src/config.rs and
#   director/src/config.rs against the first column of the tables of the page's
#   "strata-proxy", "strata-syncer" and "strata-director" sections.
#
# Usage: scripts/docs-check.sh        (exit 0: all good; 1: every problem printed)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
command -v python3 >/dev/null 2>&1 || { echo "docs-check: python3 is needed" >&2; exit 1; }
exec python3 - "$@" <<'PY'
import glob
import os
import re
import sys

problems = []


def problem(where, message):
    problems.append(f"{where}: {message}")


def slug(heading):
    """GitHub's anchor for a heading's text."""
    t = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links and images: their text
    t = re.sub(r"`([^`]*)`", r"\1", t)  # code spans: their text
    t = re.sub(r"<[^>]+>", "", t)  # inline HTML
    t = t.strip().lower()
    t = re.sub(r"[^\w\- ]", "", t)  # punctuation and symbols (\w keeps letters, digits, _)
    return t.replace(" ", "-")


def prose_lines(path):
    """(line number, text) of every line outside fenced code blocks."""
    fence = None
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            m = re.match(r"^ {0,3}(```+|~~~+)", line)
            if m:
                if fence is None:
                    fence = m.group(1)[0] * 3
                elif line.strip().startswith(fence):
                    fence = None
                continue
            if fence is None:
                yield n, line


anchor_cache = {}


def anchors(path):
    if path not in anchor_cache:
        found, seen = set(), {}
        for _, line in prose_lines(path):
            m = re.match(r"^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$", line)
            if m:
                s = slug(m.group(1))
                n = seen.get(s, 0)
                seen[s] = n + 1
                found.add(s if n == 0 else f"{s}-{n}")
            for a in re.findall(r"<a\s+(?:id|name)=\"([^\"]+)\"", line):
                found.add(a)
        anchor_cache[path] = found
    return anchor_cache[path]


def links(line):
    """Link targets of one line of prose (code spans are not links)."""
    text = re.sub(r"(`+)(.+?)\1", "", line)
    for m in re.finditer(r"\]\(\s*(<[^>]*>|[^)\s]*)(?:\s+\"[^\"]*\")?\s*\)", text):
        yield m.group(1).strip("<>")
    m = re.match(r"^ {0,3}\[[^\]]+\]:\s*(\S+)", text)
    if m:
        yield m.group(1)


files = ["README.md"] + sorted(glob.glob("docs/*.md"))
for path in files:
    for n, line in prose_lines(path):
        for target in links(line):
            where = f"{path}:{n}"
            if not target or re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target):
                continue  # an absolute URL (http:, https:, mailto:, …)
            file_part, _, anchor = target.partition("#")
            dest = os.path.normpath(os.path.join(os.path.dirname(path), file_part)) if file_part else path
            if file_part.startswith("/") or dest.startswith(".."):
                problem(where, f"{target}: not a path inside the repository")
                continue
            if not os.path.exists(dest):
                problem(where, f"{target}: no such file or folder")
                continue
            if anchor:
                if not dest.endswith(".md") or os.path.isdir(dest):
                    problem(where, f"{target}: an anchor into a file that is not markdown")
                elif anchor not in anchors(dest):
                    problem(where, f"{target}: {dest} has no heading with the anchor #{anchor}")


# Mentions of docs/ pages in the repository's other files (comments, units, scripts).
for root, dirs, names in os.walk("."):
    dirs[:] = [d for d in dirs if d not in (".git", "target", "docs")]
    for fname in names:
        path = os.path.normpath(os.path.join(root, fname))
        if path == "README.md":
            continue
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except (UnicodeDecodeError, OSError):
            continue  # binary or unreadable: nothing to check
        for n, line in enumerate(text.split("\n"), 1):
            for m in re.finditer(r"(?<![\w.-])docs/([\w.-]+\.md)(?:#([\w-]+))?", line):
                dest = os.path.join("docs", m.group(1))
                where = f"{path}:{n}"
                if not os.path.exists(dest):
                    problem(where, f"{m.group(0)}: no such page")
                elif m.group(2) and m.group(2) not in anchors(dest):
                    problem(where, f"{m.group(0)}: {dest} has no heading with the anchor #{m.group(2)}")


# The configuration reference against the code.
def code_keys(rs_path):
    """{(section, key)} of the raw (serde) structs: top-level keys have section ""."""
    text = open(rs_path, encoding="utf-8").read()
    structs = {}
    for m in re.finditer(r"struct (Raw\w+) \{(.*?)\n\}", text, re.S):
        fields = []
        for f in re.finditer(r"^\s*(?:pub\s+)?(\w+):\s*([^\n]+?),?\s*$", m.group(2), re.M):
            nested = re.search(r"\b(Raw\w+)\b", f.group(2))
            fields.append((f.group(1), nested.group(1) if nested else None))
        structs[m.group(1)] = fields
    keys = set()

    def walk(struct, section):
        for name, nested in structs[struct]:
            if nested:
                walk(nested, f"{section}.{name}" if section else name)
            else:
                keys.add((section, name))

    walk("RawConfig", "")
    return keys


def documented_keys(lines):
    """{(section, key)} named in the first column of the tables: `[section] key` sets the
    section for the rows below (a dotted `[[a.b]] key` only for its own row); a bare `key`
    belongs to the current section."""
    keys, section = set(), ""
    for line in lines:
        if not line.startswith("|") or re.match(r"^\|\s*:?-", line):
            continue
        first = line.split("|")[1]
        if first.strip() == "key":
            section = ""
            continue
        row_section = section
        for token in re.findall(r"`([^`]+)`", first):
            m = re.match(r"^\[\[?([\w.]+)\]\]?\s+(\w+)$", token)
            if m:
                row_section = m.group(1)
                if "." not in row_section:
                    section = row_section
                keys.add((row_section, m.group(2)))
            elif re.match(r"^\w+$", token):
                keys.add((row_section, token))
    return keys


reference = "docs/configuration.md"
sections, current = {}, None
for _, line in prose_lines(reference):
    m = re.match(r"^## (.*)$", line)
    if m:
        current = m.group(1).strip()
        sections.setdefault(current, [])
    elif current:
        sections[current].append(line)
for program, rs in [
    ("strata-proxy", "proxy/src/config.rs"),
    ("strata-syncer", "syncer/src/config.rs"),
    ("strata-director", "director/src/config.rs"),
]:
    if program not in sections:
        problem(reference, f'no "## {program}" section')
        continue
    code, doc = code_keys(rs), documented_keys(sections[program])
    name = lambda k: f"{k[0]}.{k[1]}" if k[0] else k[1]
    for k in sorted(code - doc):
        problem(reference, f"{program}: {name(k)} is accepted by {rs} but not in the table")
    for k in sorted(doc - code):
        problem(reference, f"{program}: {name(k)} is in the table but {rs} does not accept it")

for p in problems:
    print(p)
if problems:
    print(f"docs-check: {len(problems)} problem(s)", file=sys.stderr)
    sys.exit(1)
print(f"docs-check: the links and anchors of {len(files)} pages and the mentions of docs/ elsewhere resolve; the configuration reference matches the code")
PY
