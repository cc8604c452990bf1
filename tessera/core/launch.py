"""How this process was launched: alone, or as one of several (``torchrun``, ``accelerate launch``).

On machines without a GPU, ``accelerate`` only detects several launched processes (``torchrun
--nproc_per_node N``; its multi-CPU mode uses gloo) when told to use the CPU; otherwise every process would
believe it is alone and train, or export, by itself. ``launched_on_cpu`` says when to tell it.
"""

from __future__ import annotations

import os

import torch
import torch.distributed


def launched_processes() -> int:
    """The number of processes launched together (``WORLD_SIZE``), 1 when started alone."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def launched_on_cpu() -> bool:
    """Several processes were launched and they are to run on the CPU (asked for, or no GPU here)."""
    asked = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true")
    return launched_processes() > 1 and (asked or not torch.cuda.is_available())


def end_processes() -> None:
    """Leave a launched run's process group before the interpreter exits: a group left to the exit tears its
    communication threads down in a race that sometimes aborts a finished process ("terminate called without
    an active exception")."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
