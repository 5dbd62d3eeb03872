"""One process of the tensor- and pipeline-parallel check (run by ``torch.distributed.run``).

``tests/model_tester.py`` saves tiny models and their inputs in a folder and launches this file
on two CPU processes (gloo). Each process loads every model three times with transformers' own
machinery: whole, split by the config's tensor-parallel plan
(``distributed_config=DistributedConfig(tp_size=2)``) and, where the model declares a pipeline
plan, split in two stages (``pp_size=2``). It compares logits, gradients and greedy tokens with
the whole model and writes what it found to ``result_<rank>.json`` in the folder.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import transformers
from torch.distributed.tensor import DTensor, Shard
from transformers.distributed import DistributedConfig

import midiformers  # noqa: F401  (registers the Auto classes)

TOLERANCE = {"rtol": 1e-4, "atol": 1e-5}
"""fp32: the split sums the same products in another order."""


def full_gradient(parameter: torch.nn.Parameter) -> torch.Tensor:
    gradient = parameter.grad
    return gradient.full_tensor() if isinstance(gradient, DTensor) else gradient


def check_sharding(model: torch.nn.Module) -> list[str]:
    """Every weight the plan splits is a DTensor sharded across both processes; the rest whole."""
    problems = []
    sharded = 0
    for name, parameter in model.named_parameters():
        if isinstance(parameter, DTensor):
            if not any(isinstance(p, Shard) for p in parameter.placements):
                continue  # replicated DTensor (a rowwise bias)
            dim = next(p.dim for p in parameter.placements if isinstance(p, Shard))
            local, total = parameter.to_local().shape[dim], parameter.shape[dim]
            if local not in (total // 2, (total + 1) // 2):  # an odd vocabulary splits unevenly
                problems.append(f"{name}: {local} of {total} rows/columns held locally")
            sharded += 1
    if not sharded:
        problems.append("no weight was split")
    return problems


def greedy(model, prompt: dict, new_tokens: int, **kwargs) -> torch.Tensor:
    with torch.no_grad():
        return model.generate(
            **prompt,
            do_sample=False,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            pad_token_id=0,
            **kwargs,
        )


def compare(label: str, got: torch.Tensor, expected: torch.Tensor, problems: list[str]) -> None:
    try:
        torch.testing.assert_close(got, expected, **TOLERANCE)
    except AssertionError as error:
        problems.append(f"{label}: {str(error).splitlines()[0]} {str(error).splitlines()[-1]}")


def check_model(auto_class, path: Path, inputs: dict, new_tokens: int) -> dict:
    """Whole vs tensor-parallel (and pipeline-parallel) copies of the model saved at ``path``."""
    problems: list[str] = []
    whole = auto_class.from_pretrained(path).eval()
    split = auto_class.from_pretrained(path, distributed_config=DistributedConfig(tp_size=2)).eval()
    problems += [f"tensor parallel: {p}" for p in check_sharding(split)]

    forward, prompt, real = inputs["forward"], inputs["prompt"], inputs["prompt"]["attention_mask"]
    with torch.no_grad():
        compare(
            "tensor parallel logits (left-padded)",
            split(**prompt).logits[real.bool()],
            whole(**prompt).logits[real.bool()],
            problems,
        )
    whole(**forward).loss.backward()
    split(**forward).loss.backward()
    split_parameters = dict(split.named_parameters())
    for name, parameter in whole.named_parameters():
        compare(
            f"tensor parallel gradient of {name}",
            full_gradient(split_parameters[name]),
            parameter.grad,
            problems,
        )
    expected = greedy(whole, prompt, new_tokens)
    for cache in (None, "static"):
        extra = {"cache_implementation": cache} if cache else {}
        tokens = greedy(split, prompt, new_tokens, **extra)
        if not torch.equal(tokens, expected):
            problems.append(f"tensor parallel greedy tokens ({cache or 'dynamic'} cache) differ")

    pipelined = bool(whole.pp_plan)
    if pipelined:
        stages = auto_class.from_pretrained(
            path, distributed_config=DistributedConfig(pp_size=2)
        ).eval()
        with torch.no_grad():
            compare(
                "pipeline parallel logits (left-padded)",
                stages(**prompt).logits[real.bool()],
                whole(**prompt).logits[real.bool()],
                problems,
            )
        if not torch.equal(greedy(stages, prompt, new_tokens), expected):
            problems.append("pipeline parallel greedy tokens differ")
    return {"model": path.name, "pipeline": pipelined, "problems": problems}


def main(folder: Path) -> None:
    torch.manual_seed(0)
    spec = json.loads((folder / "spec.json").read_text())
    auto_class = getattr(transformers, spec["auto_class"])
    inputs = torch.load(folder / "inputs.pt")
    results = [
        check_model(auto_class, folder / name, inputs, spec["new_tokens"])
        for name in spec["models"]
    ]
    rank = int(os.environ["RANK"])
    (folder / f"result_{rank}.json").write_text(json.dumps(results, indent=1))
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
