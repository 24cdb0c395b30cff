"""Run under torchrun by tests/test_distributed.py: evaluate a checkpoint's test split with every
rank taking its share, and write rank 0's metrics as JSON.

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/ddp_eval.py \\
        CHECKPOINT ROOT MAX_SAMPLES OUT.json
"""

import json
import sys

import torch

from lab2.ops import distributed
from lab2.ops.evaluation import load_trained_model
from lab2.ops.loaders import build_datasets, make_loader
from lab2.ops.machine import plan_for
from lab2.train import evaluate


def main(checkpoint: str, root: str, max_samples: str, out: str) -> None:
    model, config, _ = load_trained_model(checkpoint)
    config = config.replace(device="cpu", max_eval_samples=int(max_samples))
    with distributed.process_group(torch.device("cpu")) as world:
        step = plan_for(config)[0]
        dataset = build_datasets(config, root, splits=("test",), progress=False)["test"]
        loader = make_loader(dataset, config, train=False, rank=world.rank,
                             world_size=world.size)
        result = evaluate(model, loader, step, original=dataset, progress=False,
                          combine=distributed.combine_evaluations if world.distributed else None)
        if world.main:
            with open(out, "w", encoding="utf-8") as f:
                json.dump(result, f)


if __name__ == "__main__":
    main(*sys.argv[1:])
