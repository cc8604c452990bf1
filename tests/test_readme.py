"""The README's and the docs' promises, executed: their Python examples (against the shipped pipelines), the
README's main command, every ``train.py`` / ``tessera`` command line they show parses, every ``python -m`` module
they name exists, and every link to a file or a heading resolves inside the repository.

A Python block that needs what the tests do not build (a trained run, your own images, a long run) is marked in
its page by the line ``<!-- needs: what it needs -->`` just above the block: it is compiled, not run. Every other
Python block of the README and ``docs/`` runs, in an empty working directory."""

from __future__ import annotations

import importlib.util
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

import train
from tessera.models import resolve_pipeline_folder
from tessera.pipelines.cli import command as cli

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOC_PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]  # their code blocks run / parse
LINKED_PAGES = [*DOC_PAGES, ROOT / "ARCHITECTURE.md", ROOT / "BENCHMARKS.md", ROOT / "CHANGELOG.md"]
SHIPPED = ROOT / "models" / "tessera-shapes"

FENCE = re.compile(r"(?:^<!-- needs: (?P<needs>[^\n]+?) -->\n)?^```(?P<language>[\w-]*)\n(?P<body>.*?)^```",
                   flags=re.DOTALL | re.MULTILINE)


@dataclass(frozen=True)
class CodeBlock:
    page: Path
    line: int
    language: str
    body: str
    needs: str | None  # what the block needs that the tests do not build; None: it runs

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def code_blocks(page: Path, language: str) -> list[CodeBlock]:
    text = page.read_text(encoding="utf-8")
    return [CodeBlock(page, text.count("\n", 0, match.start("body")) + 1, match["language"], match["body"], match["needs"])
            for match in FENCE.finditer(text) if match["language"] == language]


def all_code_blocks(language: str) -> list[CodeBlock]:
    return [block for page in DOC_PAGES for block in code_blocks(page, language)]


def command_lines(blocks: list[CodeBlock]) -> list[list[str]]:
    """Every command in these bash blocks as words (continuation lines joined, comments cut, ``&&`` chains split)."""
    commands = []
    for block in blocks:
        for line in block.body.replace("\\\n", " ").splitlines():
            for part in line.split("&&"):
                if words := shlex.split(part, comments=True):
                    commands.append(words)
    return commands


def program_arguments(words: list[str]) -> tuple[str, list[str]] | None:
    """("train", args) for ``python train.py`` (also under ``accelerate launch`` / ``torchrun``), ("tessera", args)
    for ``tessera`` / ``python -m tessera``, ("module", [name]) for any other ``python -m name``; else None."""
    if words[0] == "tessera":
        return "tessera", words[1:]
    if words[0] in ("python", "python3") and words[1:2] == ["-m"]:
        return ("tessera", words[3:]) if words[2] == "tessera" else ("module", [words[2]])
    if words[0] in ("python", "python3", "accelerate", "torchrun") and "train.py" in words:
        return "train", words[words.index("train.py") + 1:]
    return None


def commands_of(program: str, blocks: list[CodeBlock]) -> list[list[str]]:
    found = (program_arguments(words) for words in command_lines(blocks))
    return [arguments for kind, arguments in filter(None, found) if kind == program]


# Python examples -------------------------------------------------------------------------------------------------

def test_the_public_import_line_in_the_readme_works():
    lines = [line for block in code_blocks(README, "python") for line in block.body.splitlines()
             if line.startswith("from tessera import")]
    assert lines
    for line in lines:
        exec(line, {})


def test_the_readme_shows_a_python_example_that_runs_against_the_shipped_pipeline():
    assert any('from_pretrained("tessera-shapes")' in block.body and 'save("circle.png")' in block.body
               and block.needs is None for block in code_blocks(README, "python"))


@pytest.mark.parametrize("block", [block for block in all_code_blocks("python") if block.needs is None],
                         ids=lambda block: block.name)
def test_every_python_example_runs(block, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the shipped names work from any directory; nothing is written into the checkout
    exec(compile(block.body, block.name, "exec"), {"__name__": "__doc_example__"})
    from PIL import Image

    for saved in re.findall(r"\.save\(\"([^\"]+\.png)\"\)", block.body):  # every image it says it saves, it saved
        with Image.open(tmp_path / saved) as image:
            assert image.size == (32, 32)


@pytest.mark.parametrize("block", [block for block in all_code_blocks("python") if block.needs is not None],
                         ids=lambda block: block.name)
def test_python_examples_that_need_built_data_still_compile(block):
    compile(block.body, block.name, "exec")


def test_only_python_blocks_carry_a_needs_mark():
    for page in DOC_PAGES:
        for match in FENCE.finditer(page.read_text(encoding="utf-8")):
            assert match["needs"] is None or match["language"] == "python", f"{page.name}: {match['needs']}"


# Commands --------------------------------------------------------------------------------------------------------

def test_the_main_command_writes_an_image_with_the_shipped_pipeline(tmp_path, capsys):
    main_command = next(words for words in commands_of("tessera", code_blocks(README, "bash")) if "-o" in words)
    assert main_command[:2] == ["generate", "a small red circle on the left"]
    output = tmp_path / "out.png"
    assert cli.main([*main_command[:-1], str(output)]) == 0
    assert output.is_file() and str(output) in capsys.readouterr().out
    assert resolve_pipeline_folder(cli.DEFAULT_PIPELINE) == SHIPPED and (SHIPPED / "pipeline.json").is_file()


def test_the_shipped_pipeline_is_small():
    size = sum(path.stat().st_size for path in SHIPPED.rglob("*") if path.is_file())
    assert size < 20 * 2**20, f"models/tessera-shapes is {size / 2**20:.1f} MiB"


@pytest.mark.parametrize("page", DOC_PAGES, ids=lambda page: str(page.relative_to(ROOT)))
@pytest.mark.parametrize("program", ["train", "tessera"])
def test_every_command_line_in_the_docs_parses(page, program):
    parser = train.build_parser() if program == "train" else cli.build_parser()
    for words in commands_of(program, code_blocks(page, "bash")):
        if "..." not in words:  # "python train.py prior ... --text_encoder DIR" abbreviates the other flags
            parser.parse_args(words)


def test_the_readme_shows_both_programs():
    assert commands_of("train", code_blocks(README, "bash")) and commands_of("tessera", code_blocks(README, "bash"))


@pytest.mark.parametrize("page", DOC_PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_python_module_the_docs_run_exists(page):
    for (name,) in commands_of("module", code_blocks(page, "bash")):
        assert importlib.util.find_spec(name) is not None, f"{page.name}: python -m {name}: no such module"


# Links -----------------------------------------------------------------------------------------------------------

LINK = re.compile(r"\[[^\]]*\]\((?P<markdown>[^)\s]+)(?:\s+\"[^\"]*\")?\)|(?:src|href)=\"(?P<html>[^\"]+)\"")


def prose(text: str) -> str:
    """The text outside fenced code blocks and inline code spans, where a link is a link."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.DOTALL | re.MULTILINE)
    return re.sub(r"`[^`\n]*`", "", text)


def heading_anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces to hyphens, -1, -2 on repeats."""
    anchors: set[str] = set()
    text = re.sub(r"^```.*?^```", "", page.read_text(encoding="utf-8"), flags=re.DOTALL | re.MULTILINE)
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*$", text, flags=re.MULTILINE):
        heading = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link shows its text
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        anchor, repeat = slug, 0
        while anchor in anchors:
            repeat += 1
            anchor = f"{slug}-{repeat}"
        anchors.add(anchor)
    return anchors


def broken_links(page: Path, text: str | None = None) -> list[str]:
    """What is wrong with each link of a page (its text as on disk unless given)."""
    broken = []
    for match in LINK.finditer(prose(page.read_text(encoding="utf-8") if text is None else text)):
        target = match["markdown"] or match["html"]
        if re.match(r"[a-z][a-z+.-]*:", target):  # https:, mailto: ... are not checked (nothing downloads)
            continue
        path_part, _, anchor = target.partition("#")
        path = (page.parent / path_part).resolve() if path_part else page
        if not path.is_relative_to(ROOT):
            broken.append(f"{target}: outside the repository")
        elif not path.exists():
            broken.append(f"{target}: no such file")
        elif anchor and (path.suffix != ".md" or anchor not in heading_anchors(path)):
            broken.append(f"{target}: no heading #{anchor} in {path.relative_to(ROOT)}")
    return broken


@pytest.mark.parametrize("page", LINKED_PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_link_leads_to_a_file_and_heading_in_the_repository(page):
    assert page.is_file()
    assert broken_links(page) == []


def test_the_link_check_finds_a_broken_file_a_broken_heading_and_a_path_outside():
    page = ROOT / "docs" / "training.md"
    text = page.read_text(encoding="utf-8") + (
        "\n[gone](no-such-page.md) [lost](generation.md#no-such-heading) [out](../../shared/DESIGN.md) "
        "[fine](generation.md#the-shipped-shapes-pipeline) [web](https://example.org/x.md) `[code](not-a-link.md)`\n")
    assert [message.split(":")[0] for message in broken_links(page, text)] == [
        "no-such-page.md", "generation.md#no-such-heading", "../../shared/DESIGN.md"]


def test_heading_anchors_follow_github():
    page = ROOT / "BENCHMARKS.md"
    assert {"vq-gan-image-tokenizer-3232-shapes--88-codes-2-core-cpu",
            "the-seed-claim-are-vq-gan-reconstructions-better-than-vq-vaes"} <= heading_anchors(page)
