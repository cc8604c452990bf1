"""The README's promises, executed: its Python example against the shipped pipeline, its main command, and
every ``python train.py`` / ``tessera`` command line it shows parses."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

import train
from tessera.models import resolve_pipeline_folder
from tessera.pipelines.cli import command as cli

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
SHIPPED = ROOT / "models" / "tessera-shapes"


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.DOTALL)


def command_lines(program: str) -> list[list[str]]:
    """Each ``program ...`` command in the README's bash blocks (continuation lines joined, comments cut)."""
    commands = []
    for block in code_blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            for part in line.split("&&"):
                words = shlex.split(part, comments=True)
                if words[:len(program.split())] == program.split():
                    commands.append(words[len(program.split()):])
    return commands


def test_the_public_import_line_in_the_readme_works():
    lines = [line for block in code_blocks("python") for line in block.splitlines() if line.startswith("from tessera import")]
    assert lines
    for line in lines:
        exec(line, {})


def test_the_python_example_runs_against_the_shipped_pipeline(tmp_path, monkeypatch):
    examples = [block for block in code_blocks("python") if 'from_pretrained("tessera-shapes")' in block]
    assert examples, "the README has no Python example using the shipped pipeline"
    monkeypatch.chdir(tmp_path)  # the shipped name works from any directory
    for example in examples:
        exec(compile(example, "README.md", "exec"), {})
    from PIL import Image

    with Image.open(tmp_path / "circle.png") as image:
        assert image.size == (32, 32)


def test_the_main_command_writes_an_image_with_the_shipped_pipeline(tmp_path, capsys):
    main_command = next(words for words in command_lines("tessera") if "-o" in words)
    assert main_command[:2] == ["generate", "a small red circle on the left"]
    output = tmp_path / "out.png"
    assert cli.main([*main_command[:-1], str(output)]) == 0
    assert output.is_file() and str(output) in capsys.readouterr().out
    assert resolve_pipeline_folder(cli.DEFAULT_PIPELINE) == SHIPPED and (SHIPPED / "pipeline.json").is_file()


def test_the_shipped_pipeline_is_small():
    size = sum(path.stat().st_size for path in SHIPPED.rglob("*") if path.is_file())
    assert size < 20 * 2**20, f"models/tessera-shapes is {size / 2**20:.1f} MiB"


@pytest.mark.parametrize("program", ["python train.py", "tessera"])
def test_every_command_line_in_the_readme_parses(program):
    commands = command_lines(program)
    assert commands
    parser = train.build_parser() if program == "python train.py" else cli.build_parser()
    for words in commands:
        if "..." not in words:  # "python train.py prior ... --text_encoder DIR" abbreviates the other flags
            parser.parse_args(words)
