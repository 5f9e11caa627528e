"""The documentation says what the code does: the generated CLI reference is current, the
README's synopsis names exactly each command's options, the architecture tree names every
module, and every relative link lands on a file and heading that exist."""

from __future__ import annotations

import difflib
import re
from pathlib import Path

import click

from tests.cli_reference import DOCS_CLI, commands, render, root_command

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PACKAGE = ROOT / "snsq2nats"

_OPTION = re.compile(r"(?<![\w.-])--?[A-Za-z][\w-]*")
_GROUP = re.compile(r"^(\w+) options:\s*(.*)$")
_GROUP_USE = re.compile(r"\b(\w+) options\b")
_LINK = re.compile(r"\]\(([^)\s]+)\)")
_FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def test_cli_reference_is_current() -> None:
    """docs/cli.md is what `make docs` writes from today's `--help`."""
    want = render()
    have = DOCS_CLI.read_text(encoding="utf-8") if DOCS_CLI.exists() else ""
    diff = "".join(
        difflib.unified_diff(
            have.splitlines(keepends=True),
            want.splitlines(keepends=True),
            "docs/cli.md",
            "--help today",
            n=1,
        )
    )
    assert have == want, f"docs/cli.md is stale: run `make docs` and commit it.\n{diff[:4000]}"


def section(text: str, heading: str) -> str:
    """A `## ` section's text, up to the next `## ` heading."""
    start = text.index(f"\n{heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else len(text)]


def synopsis() -> dict[tuple[str, ...], str]:
    """The README's CLI block: each command's text (option groups expanded) by its words after
    `snsq2nats`."""
    cli = section(README.read_text(encoding="utf-8"), "## CLI")
    block = re.search(r"^```\n(.*?)^```", cli, re.MULTILINE | re.DOTALL)
    assert block, "README ## CLI has no ``` block"
    entries: list[tuple[str, str]] = []
    for line in block.group(1).splitlines():
        if line.startswith(" ") and entries:
            head, text = entries[-1]
            entries[-1] = (head, f"{text} {line.strip()}")
        elif line.strip():
            head, _, text = line.partition(" ")
            defined = _GROUP.match(line)
            entries.append(
                (f"{defined.group(1)} options", defined.group(2)) if defined else (head, text)
            )
    groups = {head: text for head, text in entries if head.endswith(" options")}

    def expand(text: str, depth: int = 0) -> str:
        assert depth < 5, f"option groups nest in a loop: {text}"
        uses = set(_GROUP_USE.findall(text))
        for name in uses:
            assert f"{name} options" in groups, f"README CLI block uses undefined '{name} options'"
            text = text.replace(f"{name} options", expand(groups[f"{name} options"], depth + 1))
        return text

    root = root_command()
    found: dict[tuple[str, ...], str] = {}
    for head, text in entries:
        if head.endswith(" options"):
            continue
        assert head == "snsq2nats", f"README CLI block: a line starts with {head!r}"
        path: list[str] = []
        group: click.Command = root
        words = text.split()
        while words and isinstance(group, click.Group) and words[0] in group.commands:
            path.append(words.pop(0))
            group = group.commands[path[-1]]
        assert tuple(path) not in found, (
            f"README CLI block shows `snsq2nats {' '.join(path)}` twice"
        )
        found[tuple(path)] = expand(" ".join(words))
    return found


def option_names(command: click.Command) -> list[list[str]]:
    """Each option of a command as its names (`--help` and hidden ones left out)."""
    return [
        [*param.opts, *param.secondary_opts]
        for param in command.params
        if isinstance(param, click.Option) and param.name != "help" and not param.hidden
    ]


def test_readme_synopsis_names_each_commands_options() -> None:
    """Every command is in the README's CLI block with every one of its options, and nothing
    that is not an option; a repeatable option is marked `…`, and only a repeatable one."""
    shown = synopsis()
    root = root_command()
    tree = {(): root, **{path: cmd for path, cmd in commands(root)}}
    runnable = {path for path, cmd in tree.items() if not isinstance(cmd, click.Group) or not path}
    missing_commands = sorted(" ".join(p) for p in runnable - shown.keys())
    assert not missing_commands, f"README CLI block lacks commands: {missing_commands}"
    problems = []
    for path, text in shown.items():
        assert path in tree, f"README CLI block shows `snsq2nats {' '.join(path)}`: no such command"
        command = tree[path]
        names = option_names(command)
        written = set(_OPTION.findall(text))
        known = {name for option in names for name in option}
        unknown = sorted(written - known)
        left_out = [option[-1] for option in names if not written & set(option)]
        where = f"snsq2nats {' '.join(path)}".strip()
        if unknown:
            problems.append(f"{where}: README names {unknown}, which it does not take")
        if left_out:
            problems.append(f"{where}: README leaves out {left_out}")
        for param in command.params:
            if not isinstance(param, click.Option) or param.name == "help" or param.hidden:
                continue
            marked = any(
                re.search(r"\[(?:[\w-]+\|)*" + re.escape(name) + r"(?: [^\[\]]*)?\]…", text)
                for name in param.opts
            )
            if marked != param.multiple:
                problems.append(
                    f"{where}: {param.opts[-1]} is {'' if param.multiple else 'not '}repeatable"
                    f" but the README {'does not mark' if param.multiple else 'marks'} it `…`"
                )
    assert not problems, "README ## CLI disagrees with --help:\n" + "\n".join(problems)


def tree_entries() -> dict[str, str]:
    """docs/architecture.md's package tree: each entry (`cli.py`, `plan/`) with its text."""
    text = (DOCS / "architecture.md").read_text(encoding="utf-8")
    block = re.search(r"^```\nsnsq2nats/\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
    assert block, "docs/architecture.md has no ``` block starting with snsq2nats/"
    entries: dict[str, str] = {}
    current = ""
    for line in block.group(1).splitlines():
        match = re.match(r"^  (\S+)\s*(.*)$", line)
        if match:
            current = match.group(1)
            entries[current] = match.group(2)
        else:
            entries[current] += " " + line.strip()
    return entries


def test_architecture_tree_names_every_module() -> None:
    """Every module and sub-package of snsq2nats is in the tree, and each sub-package's entry
    names its modules: the tree cannot fall behind the package unnoticed."""
    entries = tree_entries()
    actual = {
        f"{p.name}/" if p.is_dir() else p.name
        for p in PACKAGE.iterdir()
        if (p.is_dir() and (p / "__init__.py").exists())
        or (p.suffix == ".py" and p.stem not in ("__init__", "__main__"))
    }
    problems = []
    if missing := sorted(actual - entries.keys()):
        problems.append(f"missing from the tree: {missing}")
    if gone := sorted(entries.keys() - actual):
        problems.append(f"in the tree but not in the package: {gone}")
    for entry in sorted(actual & entries.keys()):
        if not entry.endswith("/"):
            continue
        words = set(re.findall(r"[\w.]+", entries[entry]))
        modules = sorted(
            p.stem if p.suffix == ".py" else p.name
            for p in (PACKAGE / entry).iterdir()
            if (p.suffix == ".py" and p.stem != "__init__") or p.suffix == ".json"
        )
        if unnamed := [m for m in modules if m not in words]:
            problems.append(f"{entry} does not name {unnamed}")
    assert not problems, "docs/architecture.md's tree is stale:\n" + "\n".join(problems)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_relative_links_land() -> None:
    """Every relative link in the README and docs/ names a file that exists and, with a `#`,
    a heading of that file; every docs page is reachable from the README."""
    pages = [README, *sorted(DOCS.glob("*.md"))]
    problems = []
    for page in pages:
        text = _FENCE.sub("", page.read_text(encoding="utf-8"))
        for target in _LINK.findall(text):
            if re.match(r"^[a-z]+:", target):
                continue
            file, _, anchor = target.partition("#")
            path = (page.parent / file).resolve() if file else page
            if not path.exists():
                problems.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
                continue
            if anchor and path.suffix == ".md":
                headings = re.findall(r"^#+ (.+)$", _FENCE.sub("", path.read_text("utf-8")), re.M)
                if anchor not in {slug(h) for h in headings}:
                    problems.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    readme_links = {
        (ROOT / target.partition("#")[0]).resolve()
        for target in _LINK.findall(_FENCE.sub("", README.read_text(encoding="utf-8")))
        if target.startswith("docs/")
    }
    if unlisted := sorted(p.name for p in DOCS.glob("*.md") if p.resolve() not in readme_links):
        problems.append(f"docs pages the README does not link: {unlisted}")
    assert not problems, "broken documentation links:\n" + "\n".join(problems)
