"""``TrainingConfig``: the settings every training stage shares, one diffusers-style flag per field; and the
flags of any config dataclass, generated from its fields (type, default, and help from the field's comment), so
that a setting's default is written once, in its config class."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import inspect
import json
import re
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from tessera.core.config import JSONConfig, dataclass_from_dict


@dataclass
class TrainingConfig(JSONConfig):
    output_dir: str = "outputs/run"  # the run's folder: checkpoints, samples, metrics.jsonl, the result
    seed: int = 0  # seeds the model's initialisation and the batches (a function of seed and step)
    train_batch_size: int = 32  # rows per micro-batch per process
    learning_rate: float = 2e-4  # AdamW's peak learning rate
    adam_beta1: float = 0.5
    adam_beta2: float = 0.9
    adam_weight_decay: float = 0.0
    max_grad_norm: float = 1.0  # gradient clipping (0: none)
    lr_warmup_steps: int = 100  # linear warm-up, then cosine decay to 10% of the peak
    max_train_steps: int = 2000  # optimizer steps of the run
    # 0: the cosine decay ends at max_train_steps; else at this step (a run may stop before it: its learning rates
    # are those of the longer run's first max_train_steps, so a run continued with more steps changes none of them)
    lr_decay_steps: int = 0
    # 0: none; else a wall-clock budget: the run stops at the first 10-step boundary past this many seconds since
    # the loop began (setup included), saving as at its last step (checkpoint, snapshot, validation, final
    # weights). The learning-rate schedule still runs to max_train_steps (or lr_decay_steps), so size the steps to
    # fit the budget.
    max_train_seconds: float = 0.0
    mixed_precision: str = "no"  # "no" | "fp16" | "bf16" (accelerate)
    checkpointing_steps: int = 500  # a resumable checkpoint every N steps
    checkpoints_total_limit: int = 2  # checkpoints kept (the oldest are deleted; 0: keep every checkpoint)
    resume_from_checkpoint: str | None = None  # a checkpoint folder, or "latest" to continue the newest in output_dir
    # start a new run in an output_dir that holds an earlier run's checkpoints (the new run's replace them); without
    # it such a run is refused unless it resumes
    overwrite_output_dir: bool = False
    validation_steps: int = 500  # validation every N steps (and at the end)
    # 0: none; else every N steps and at the last step the EMA weights are saved as a loadable folder (the stage's
    # final save) in output_dir/snapshots/step-<N>, with the run's CPU and wall-clock time, for learning curves
    # (benchmarks.learning_curve)
    snapshot_steps: int = 0
    num_validation_images: int = 256  # held-out rows of the validation
    ema_decay: float = 0.99  # the weights validated and saved are this exponential moving average
    report_to: str = "auto"  # "auto" = tensorboard when installed, else metrics.jsonl only
    dataloader_num_workers: int = 1
    gradient_accumulation_steps: int = 1  # micro-batches per optimizer step (effective batch: batch x this x processes)

    def __post_init__(self) -> None:
        if self.gradient_accumulation_steps < 1:
            raise ValueError(f"gradient_accumulation_steps must be >= 1, got {self.gradient_accumulation_steps}")
        if self.snapshot_steps < 0:
            raise ValueError(f"snapshot_steps must be >= 0 (0: no snapshots), got {self.snapshot_steps}")
        if self.lr_decay_steps < 0:
            raise ValueError(f"lr_decay_steps must be >= 0 (0: max_train_steps), got {self.lr_decay_steps}")
        if self.max_train_seconds < 0:
            raise ValueError(f"max_train_seconds must be >= 0 (0: no limit), got {self.max_train_seconds}")
        if self.train_batch_size < 1 or self.max_train_steps < 1:
            raise ValueError("train_batch_size and max_train_steps must be >= 1")


_FIELD_LINE = re.compile(r"^(\w+)\s*:")


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """Each field's documentation: the comment lines right above it and the comment at the end of its line, as
    written in the class body (``{}`` where the source cannot be read)."""
    docs: dict[str, str] = {}
    names = {field.name for field in dataclasses.fields(cls)}
    for owner in reversed(cls.__mro__):
        try:
            lines = inspect.getsourcelines(owner)[0]
        except (OSError, TypeError):
            continue
        above: list[str] = []
        for line in lines:
            text = line.strip()
            if text.startswith("#"):
                above.append(text.lstrip("#").strip())
                continue
            match = _FIELD_LINE.match(text)
            if match and match.group(1) in names:
                _, _, trailing = text.partition("  # ")
                docs[match.group(1)] = " ".join([*above, trailing.strip()]).strip()
            above = []
    return docs


def _flag_type(hint: Any) -> tuple[type, bool]:
    """(the value type, whether the field holds a tuple of them) of a field's type hint (``X | None`` -> X)."""
    args = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = args[0]
    if typing.get_origin(hint) is tuple:
        return typing.get_args(hint)[0], True
    return hint, False


def add_config_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup, cls: type, defaults: Any = None, *,
                     only: Iterable[str] | None = None, skip: Iterable[str] = (), names: dict[str, str] | None = None,
                     choices: dict[str, Iterable[str]] | None = None, aliases: dict[str, str] | None = None,
                     required: Iterable[str] = (), dest_prefix: str = "") -> None:
    """One ``--<field>`` flag per (non-nested) field of config dataclass ``cls``: the field's type (a tuple field
    takes several values, a bool field is ``--x`` / ``--no-x``), help from its comment (``field_docs``), and as
    default the field's value in ``defaults`` (None: no default, i.e. the config's own value is kept).

    ``names``: flag names other than the field's (also the namespace attribute); ``aliases``: an old flag name
    also accepted, by field; ``dest_prefix``: the namespace attribute is ``dest_prefix + name`` (for
    ``config_from_flags``)."""
    hints, docs = typing.get_type_hints(cls), field_docs(cls)
    names, choices, aliases = names or {}, choices or {}, aliases or {}
    wanted = None if only is None else set(only)
    for field in dataclasses.fields(cls):
        kind, several = _flag_type(hints[field.name])
        if field.name in skip or (wanted is not None and field.name not in wanted) or dataclasses.is_dataclass(kind):
            continue
        name, doc = names.get(field.name, field.name), docs.get(field.name, "")
        flags = [f"--{name}"]
        if field.name in aliases:
            flags.append(f"--{aliases[field.name]}")
            doc = f"{doc} (--{aliases[field.name]}: the old spelling of --{name})".strip()
        options: dict[str, Any] = {"dest": dest_prefix + name, "help": doc.replace("%", "%%") or None,
                                   "default": None if defaults is None else getattr(defaults, field.name)}
        if field.name in required:
            options.update(required=True, default=None)
        if kind is bool:
            options["action"] = argparse.BooleanOptionalAction
        else:
            options["type"] = kind if kind in (int, float) else str
        if several:
            options["nargs"] = "*"
            options["default"] = None if options["default"] is None else list(options["default"])
        if field.name in choices:
            options["choices"] = list(choices[field.name])
        parser.add_argument(*flags, **options)


def config_from_flags(args: argparse.Namespace, config: Any, *, dest_prefix: str = "",
                      skip: Iterable[str] = ()) -> Any:
    """``config`` (a dataclass) with each field whose flag (see ``add_config_flags``) was given a value other than
    None replaced by it (tuples for several values); fields without a flag are kept."""
    changes = {}
    for field in dataclasses.fields(config):
        value = getattr(args, dest_prefix + field.name, None)
        if dataclasses.is_dataclass(value):
            continue
        if value is not None and field.name not in skip:
            changes[field.name] = tuple(value) if isinstance(value, list) else value
    return dataclasses.replace(config, **changes)


def add_training_arguments(parser: argparse.ArgumentParser, defaults: TrainingConfig) -> None:
    """One flag per ``TrainingConfig`` field, named as in diffusers' example scripts."""
    add_config_flags(parser.add_argument_group("training"), TrainingConfig, defaults,
                     choices={"mixed_precision": ("no", "fp16", "bf16")})


def training_config_from_args(args: argparse.Namespace, defaults: TrainingConfig | None = None) -> TrainingConfig:
    """The flags' ``TrainingConfig``; a command's ``--overwrite`` (write over a pipeline) also starts over in a
    folder holding an earlier run's checkpoints."""
    config = config_from_flags(args, defaults or TrainingConfig())
    return dataclasses.replace(config, overwrite_output_dir=True) if getattr(args, "overwrite", False) else config


def apply_overrides(config: dict, assignments: list[str], derived: dict[str, str] | None = None) -> dict:
    """``a.b.c=value`` assignments on a nested config dict; values parse as JSON, else stay strings.
    ``derived``: fields a run sets from its components (``"prior.codebook_size"``: why), refused here."""
    for assignment in assignments:
        key, sep, raw = assignment.partition("=")
        if not sep:
            raise SystemExit(f"--set expects key=value, got {assignment!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        try:
            assign(config, key, value, derived)
        except ValueError as error:
            raise SystemExit(f"--set {error}") from error
    return config


def assign(config: dict, key: str, value: Any, derived: dict[str, str] | None = None) -> None:
    """``config[a][b][c] = value`` for ``key`` "a.b.c", strictly: every part must exist; a ``derived`` field
    (one the run takes from its components) is an error."""
    if derived and key in derived:
        raise ValueError(f"{key}: this run sets it from {derived[key]}; it cannot be chosen")
    *parents, leaf = key.split(".")
    node = config
    for part in parents:
        if not isinstance(node.get(part), dict):
            raise ValueError(f"{key}: {part!r} is not a config section (sections: "
                             f"{sorted(name for name, value in node.items() if isinstance(value, dict))})")
        node = node[part]
    if leaf not in node:
        raise ValueError(f"{key}: unknown field {leaf!r}; fields here: {sorted(node)}")
    node[leaf] = value


def flatten_settings(settings: dict, prefix: str = "") -> dict[str, Any]:
    """Nested settings ``{"a": {"b": 1}}`` as ``{"a.b": 1}`` (a recipe's stage settings as assignments)."""
    flat: dict[str, Any] = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            flat.update(flatten_settings(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def with_overrides(config: JSONConfig, assignments: list[str], derived: dict[str, str] | None = None) -> JSONConfig:
    """A copy of ``config`` (a run config) with ``--set a.b.c=value`` ``assignments`` applied."""
    return dataclass_from_dict(type(config), apply_overrides(config.to_dict(), assignments, derived))


def with_settings(config: JSONConfig, settings: dict, derived: dict[str, str] | None = None) -> JSONConfig:
    """A copy of ``config`` with nested ``settings`` (a recipe's, as in ``run_config.json``) applied; an unknown
    or derived field is a ``ValueError``."""
    data = config.to_dict()
    for key, value in flatten_settings(settings).items():
        assign(data, key, value, derived)
    return dataclass_from_dict(type(config), data)
