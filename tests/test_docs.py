"""The documentation cannot drift from the command line: every command has its page under docs/commands/, each
page names every option its ``--help`` lists, and every picture and relative link in the README and docs/
exists. The commands are introspected through the lazy click group, so no network or torch is imported."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from geoseg.cli.main import cli

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
COMMAND_PAGES = REPO / "docs" / "commands"
MARKDOWN = [README, *sorted((REPO / "docs").rglob("*.md"))]
README_MAX_LINES = 130  # the front door: reference goes to docs/

# [text](target) and ![alt](target); the target ends at whitespace or the closing parenthesis
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def _commands() -> dict[str, click.Command]:
    ctx = click.Context(cli)
    return {name: cli.get_command(ctx, name) for name in cli.list_commands(ctx)}


def _documented_flags(command: click.Command) -> list[str]:
    """Every long flag ``--help`` shows (both halves of an on/off switch; the short one where an option has no
    long one), ``--help`` itself aside."""
    ctx = click.Context(command)
    flags = []
    for param in command.get_params(ctx):
        if not isinstance(param, click.Option) or param.hidden:
            continue
        names = (*param.opts, *param.secondary_opts)
        flags += [flag for flag in names if flag.startswith("--")] or list(names)  # `-n` has no long form
    return [flag for flag in flags if flag != "--help"]


LONG_FLAG = re.compile(r"(?<![\w-])--[a-z][\w-]*")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z`(])|\n\s*\n")  # and paragraph ends


def _accepted_flags(command: click.Command) -> set[str]:
    """Every flag the command's parser takes, hidden ones and ``--help`` included."""
    return {
        flag
        for param in command.get_params(click.Context(command))
        if isinstance(param, click.Option)
        for flag in (*param.opts, *param.secondary_opts)
    }


def _written_flags(text: str, page_command: str) -> list[tuple[str, str]]:
    """``(command, --flag)`` for every long flag a page writes, each given to the command it is written for.

    In a code block, a line (with its backslash continuations) runs ``geoseg NAME`` (``""``: the group
    itself); lines that run no geoseg command are skipped. In prose and tables, a code span that runs a
    command (``predict --resume``, ``geoseg predict IN -o OUT --resume``) owns its own flags; a span that
    only names a command (``evaluate``, ``geoseg sample``), not as a link to its page, makes it the subject
    of the rest of its sentence; every other flag is the page's command's."""
    written = []
    blocks = re.findall(r"```[^\n]*\n(.*?)```", text, flags=re.DOTALL)
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            run = re.search(rf"\bgeoseg(?:\s+({'|'.join(COMMANDS)})\b)?(.*)", line)
            if run:
                written += [(run.group(1) or "", flag) for flag in LONG_FLAG.findall(run.group(2))]
    prose = re.sub(r"```.*?```", "", text, flags=re.DOTALL)
    for sentence in SENTENCE_END.split(prose.replace("|", "\n\n")):
        subject = page_command
        for link, span in re.findall(r"(\[?)`([^`]+)`", sentence):
            named = re.match(rf"(?:geoseg\s+)?({'|'.join(COMMANDS)})(?![\w-])(.*)", span, flags=re.DOTALL)
            if named and not named.group(2).strip():
                subject = subject if link else named.group(1)  # a link to a command's page names no subject
            elif named:
                written += [(named.group(1), flag) for flag in LONG_FLAG.findall(named.group(2))]
            else:
                written += [(subject, flag) for flag in LONG_FLAG.findall(span)]
    return written


def _relative_links(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    text = re.sub(r"```.*?```", "", text, flags=re.DOTALL)  # code blocks hold no links
    targets = [match.group(1) for match in LINK.finditer(text)]
    return [target for target in targets if not re.match(r"^[a-z][a-z0-9+.-]*:|^#", target)]


COMMANDS = _commands()


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_a_page_naming_every_option(name: str) -> None:
    page = COMMAND_PAGES / f"{name}.md"
    assert page.is_file(), f"geoseg {name} has no page: write docs/commands/{name}.md"
    text = page.read_text(encoding="utf-8")
    missing = [flag for flag in _documented_flags(COMMANDS[name]) if not re.search(rf"{flag}(?![\w-])", text)]
    assert not missing, f"docs/commands/{name}.md does not mention {', '.join(missing)}"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_option_a_page_writes_is_one_its_command_takes(name: str) -> None:
    """The reverse of the test above: a page cannot document an option its command lacks (a paragraph copied
    from another page), nor show another command with a flag that command lacks."""
    text = (COMMAND_PAGES / f"{name}.md").read_text(encoding="utf-8")
    accepted = {"": _accepted_flags(cli)} | {
        other: _accepted_flags(command) for other, command in COMMANDS.items()
    }
    wrong = sorted(
        {
            f"{command or 'geoseg'} {flag}"
            for command, flag in _written_flags(text, name)
            if flag not in accepted[command]
        }
    )
    assert not wrong, f"docs/commands/{name}.md writes options these commands do not take: {', '.join(wrong)}"


def test_every_page_under_commands_is_a_command() -> None:
    pages = {page.stem for page in COMMAND_PAGES.glob("*.md")}
    assert pages - set(COMMANDS) == set(), "a page documents a command that geoseg no longer has"


def test_the_readme_links_every_command_page() -> None:
    links = set(_relative_links(README))
    assert {f"docs/commands/{name}.md" for name in COMMANDS} <= links


def _anchors(path: Path) -> set[str]:
    """The heading anchors a code host gives a Markdown page (GitHub's rule: lower case, punctuation dropped,
    spaces to hyphens)."""
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.DOTALL)
    headings = re.findall(r"^#+\s+(.+?)\s*$", text, flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


@pytest.mark.parametrize("path", MARKDOWN, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_picture_and_anchor_exists(path: Path) -> None:
    broken = []
    for target in _relative_links(path):
        file, _, anchor = target.partition("#")
        linked = path.parent / file
        if not linked.exists() or (anchor and linked.suffix == ".md" and anchor not in _anchors(linked)):
            broken.append(target)
    assert not broken, f"{path.relative_to(REPO)} links to missing files or headings: {broken}"


def test_the_readme_shows_pictures_and_stays_short() -> None:
    text = README.read_text(encoding="utf-8")
    pictures = [target for target in _relative_links(README) if target.endswith(".png")]
    assert len(pictures) >= 3
    assert "make demo" in text and "make test" in text
    lines = len(text.splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines: move reference into docs/"


def test_every_module_the_architecture_page_names_exists() -> None:
    """docs/architecture.md says where each job lives: a module moved or renamed must move there too."""
    page = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    text = re.sub(r"```.*?```", "", page, flags=re.DOTALL)
    named = set(re.findall(r"`([\w/]+(?:\.py|/))`", text))
    assert named, "the architecture page names no module"
    missing = sorted(name for name in named if not (REPO / "geoseg" / name).exists())
    assert not missing, f"docs/architecture.md names modules that do not exist under geoseg/: {missing}"
