"""Run under torchrun by tests/test_distributed.py: ``python -m lab2 train ...`` with a fault on
one rank at one training step, to check what the other ranks and the run folder go through.

    LAB2_TEST_FAULT=kill|nan|oom|hang:RANK:STEP python -m torch.distributed.run ... \\
        tests/ddp_train.py train --out RUN ...

STEP counts training steps from 1 over the whole run. ``kill`` SIGKILLs the rank in the middle of
that step's forward pass (a real kill -9, no clean-up), ``nan`` makes its loss NaN, ``oom`` raises
``torch.OutOfMemoryError`` from it, ``hang`` makes it sleep for an hour (alive, but stuck).
"""

import os
import signal
import sys
import time
import types

import torch

import lab2.train
from lab2.ops.cli import main

kind, rank, step = os.environ["LAB2_TEST_FAULT"].split(":")
if os.environ.get("RANK") == rank:
    real = lab2.train.F.cross_entropy
    calls = 0

    def cross_entropy(*args, **kwargs):
        global calls
        if kwargs.get("reduction", "mean") != "mean":     # validation's, not a training step's
            return real(*args, **kwargs)
        calls += 1
        loss = real(*args, **kwargs)
        if calls == int(step):
            if kind == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            if kind == "oom":
                raise torch.OutOfMemoryError("simulated out of memory")
            if kind == "nan":
                return loss * float("nan")
            if kind == "hang":
                time.sleep(3600)
        return loss

    lab2.train.F = types.SimpleNamespace(cross_entropy=cross_entropy,
                                         interpolate=lab2.train.F.interpolate)

sys.exit(main(sys.argv[1:]))
