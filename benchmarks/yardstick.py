"""transformers' own model test mixin, run against every midiformers causal LM and Llama.

The yardstick of issue 14: transformers' ``ModelTesterMixin`` (``tests/test_modeling_common.py``)
and ``ConfigTester`` (``tests/test_configuration_common.py``) of the *installed* transformers
version, taken from its source distribution, run on tiny configurations of our causal models and
of transformers' ``Llama`` built by the same generated tester, in one run. It prints the passed /
failed / skipped counts per model and writes them to ``--output`` (``.md`` and ``.json``).

What it does, in a temporary folder (``--workdir`` to keep it), nothing inside the repository:

1. ``pip download --no-deps --no-binary :all: transformers==<installed>``: the sdist (10 MB).
2. Unpacks its ``tests/*.py``. The sdist lacks three modules those files import; they are
   replaced by stand-ins written here: ``generation/test_utils.py`` (an empty
   ``GenerationTesterMixin``: the generation mixin is not in the sdist, so generation is not part
   of this count), ``exporters/test_export.py`` (an empty ``ExportTesterMixin``: no
   ``torch.export`` tests) and ``utils/test_configuration_utils.py`` (``config_common_kwargs``:
   non-default values of generic ``PreTrainedConfig`` fields). ``test_generation_tester_mixin_
   inheritance`` only checks for the first stand-in, so it is deselected for every model.
3. Writes one test module per model: a ``unittest.TestCase`` with the mixin, a model tester
   written here (batch 13 x 7 tokens, left padding in some rows, vocabulary 99, hidden 32, 2 layers,
   2 heads) and ``ConfigTester.run_common_tests`` as ``test_config``.
4. Runs pytest on each module in its own process (``-p no:cacheprovider``), reads the JUnit XML.

    python benchmarks/yardstick.py                          # every model, about 10 min on 2 cores
    python benchmarks/yardstick.py --models gpt,llama -k "save or load"
    python benchmarks/yardstick.py --workdir /tmp/yardstick --keep   # keep the generated tests

This is a benchmark, not a test: it downloads the sdist and runs for minutes. The repository's own
tests (``tests/model_tester.py``) check the same capabilities without transformers' test code.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import time
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path

import transformers

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import machine_description

logger = logging.getLogger("yardstick")

MODELS = (
    "gpt",
    "gpt_rotary",
    "music_transformer",
    "conformer",
    "conformer_relative",
    "lstm",
    "llama",
)
"""Every model the yardstick can run: registry names, variants, and transformers' Llama."""

DESELECTED = ("test_generation_tester_mixin_inheritance",)
"""Tests that only check for a stand-in module (see the module docstring)."""

NOT_APPLICABLE = {
    "gpt": ("test_model_rope_scaling_from_config",),
    "conformer_relative": ("test_model_rope_scaling_from_config",),
}
"""Tests that do not apply to a variant, left out and counted as such: the configuration class
declares ``rope_parameters`` (its rotary variant uses them), which the mixin takes to mean that
every model of the class has RoPE; the absolute-position GPT and the relative-attention
Conformer have none, and refuse RoPE scaling with a clear error."""

STAND_INS = {
    "generation/test_utils.py": '''
        """Stand-in: the generation test mixin is not in transformers' sdist."""


        class GenerationTesterMixin:
            pass
    ''',
    "exporters/test_export.py": '''
        """Stand-in: the torch.export test mixin is not in transformers' sdist."""


        class ExportTesterMixin:
            pass
    ''',
    "utils/test_configuration_utils.py": '''
        """Stand-in: non-default values of generic PreTrainedConfig fields."""

        config_common_kwargs = {
            "return_dict": False,
            "output_hidden_states": True,
            "output_attentions": True,
            "dtype": "float16",
            "chunk_size_feed_forward": 5,
            "architectures": ["SomeModel"],
            "id2label": {0: "label"},
            "label2id": {"label": "0"},
            "problem_type": "regression",
            "tokenizer_class": "SomeTokenizer",
        }
    ''',
}

SUPPORT = '''
"""Model tester and test case factory of the yardstick (written by benchmarks/yardstick.py)."""

import dataclasses
import unittest

import torch
import transformers

import midiformers
from midiformers.modeling import ARCHITECTURES

from ..test_configuration_common import ConfigTester
from ..test_modeling_common import ModelTesterMixin, ids_tensor

SIZES = dict(
    vocab_size=99,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=2,
    intermediate_size=37,
    max_position_embeddings=512,
    hidden_act="gelu",
    initializer_range=0.02,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
)
"""The tiny dimensions every model gets (each config takes the fields it declares)."""

EXTRA = {
    "gpt_rotary": dict(position_embedding_type="rotary"),
    "conformer": dict(conv_kernel_size=3),
    "conformer_relative": dict(conv_kernel_size=3, attention_type="relative", max_relative_position=16),
    "music_transformer": dict(max_relative_position=16),
    "lstm": dict(embedding_size=32),  # the mixin expects the first hidden state hidden_size wide
}


def model_classes(name):
    """(config class, base model, causal LM, heads) of a yardstick model name."""
    if name == "llama":
        prefix = "Llama"
        heads = ("ForSequenceClassification", "ForTokenClassification", "ForQuestionAnswering")
        return (
            transformers.LlamaConfig,
            transformers.LlamaModel,
            transformers.LlamaForCausalLM,
            tuple(getattr(transformers, prefix + head) for head in heads),
        )
    arch = ARCHITECTURES[name.split("_rotary")[0].split("_relative")[0]]
    return arch.config_class, arch.base_model_class, arch.model_class, tuple(arch.extra_heads.values())


def list_like_transformers_models(name):
    """Put our class names where transformers lists its own models by task.

    ModelTesterMixin picks inputs and expectations by class name (labels for a causal LM, no
    training step for a base model) from transformers' built-in ``*_MAPPING_NAMES``, which
    ``Auto*.register`` does not touch. The keys are ours alone, so no Auto lookup changes.
    """
    from transformers.models.auto import modeling_auto

    if name == "llama":
        return
    config_class, base, causal_lm, heads = model_classes(name)
    key = "yardstick_" + config_class.model_type
    modeling_auto.MODEL_MAPPING_NAMES[key] = base.__name__
    modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[key] = causal_lm.__name__
    for head in heads:
        task = head.__name__.split("For")[-1]
        mapping = {
            "SequenceClassification": "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES",
            "TokenClassification": "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES",
            "QuestionAnswering": "MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES",
        }[task]
        getattr(modeling_auto, mapping)[key] = head.__name__


def config_kwargs(name, config_class):
    fields = {f.name for f in dataclasses.fields(config_class)}
    kwargs = {k: v for k, v in SIZES.items() if k in fields}
    kwargs.update(EXTRA.get(name, {}))
    return kwargs


class YardstickModelTester:
    """What transformers' ModelTesterMixin asks of a model tester, for a decoder-only model."""

    batch_size = 13
    seq_length = 7
    is_training = True

    def __init__(self, parent, name):
        self.parent = parent
        self.config_class = model_classes(name)[0]
        self.kwargs = config_kwargs(name, self.config_class)
        self.vocab_size = self.kwargs["vocab_size"]
        self.hidden_size = self.kwargs["hidden_size"]
        self.num_hidden_layers = self.kwargs["num_hidden_layers"]
        self.num_attention_heads = self.kwargs.get("num_attention_heads", 0)

    def get_config(self):
        return self.config_class(**self.kwargs)

    def prepare_config_and_inputs_for_common(self):
        input_ids = ids_tensor([self.batch_size, self.seq_length], self.vocab_size)
        attention_mask = torch.ones_like(input_ids)
        for row in range(self.batch_size):
            attention_mask[row, : row % 3] = 0  # left padding of 0, 1 or 2 tokens
        return self.get_config(), {"input_ids": input_ids, "attention_mask": attention_mask}


def build_test_case(name):
    """A unittest.TestCase running ModelTesterMixin and ConfigTester on model ``name``."""
    config_class, base, causal_lm, heads = model_classes(name)
    list_like_transformers_models(name)

    class YardstickTest(ModelTesterMixin, unittest.TestCase):
        all_model_classes = (base, causal_lm, *heads)
        has_attentions = "attentions" in (causal_lm._can_record_outputs or {})

        def setUp(self):
            self.model_tester = YardstickModelTester(self, name)
            # As transformers' own tests of attention-free models do: no num_attention_heads.
            common = ["hidden_size", "num_hidden_layers"]
            if self.model_tester.num_attention_heads:
                common.append("num_attention_heads")
            self.config_tester = ConfigTester(
                self, config_class=config_class, common_properties=common, **self.model_tester.kwargs
            )

        def test_config(self):
            self.config_tester.run_common_tests()

        def test_model(self):
            config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
            model = base(config).eval()
            with torch.no_grad():
                hidden = model(**inputs).last_hidden_state
            tester = self.model_tester
            self.assertEqual(hidden.shape, (tester.batch_size, tester.seq_length, tester.hidden_size))

    YardstickTest.__name__ = YardstickTest.__qualname__ = name.title().replace("_", "") + "ModelTest"
    return YardstickTest
'''


@dataclass
class Counts:
    """pytest's outcome counts for one model, and which tests failed."""

    model: str
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    errors: int = 0
    not_applicable: int = 0
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)


def download_tests(workdir: Path) -> Path:
    """The sdist's ``tests/`` unpacked under ``workdir``, with the stand-ins; returns it."""
    version = transformers.__version__
    sdist_dir = workdir / "sdist"
    if not any(sdist_dir.glob("transformers-*.tar.gz")):
        logger.info("downloading the transformers %s sdist", version)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
            + ["--quiet", f"transformers=={version}", "-d", str(sdist_dir)],
            check=True,
        )
    archive = next(sdist_dir.glob("transformers-*.tar.gz"))
    tests = workdir / "tests"
    with tarfile.open(archive) as tar:
        members = [
            m
            for m in tar.getmembers()
            if m.isfile() and Path(m.name).parent.name == "tests" and m.name.endswith(".py")
        ]
        if not members:
            raise RuntimeError(f"{archive} has no tests/*.py")
        for member in members:
            target = tests / Path(member.name).name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(tar.extractfile(member).read())
    (tests / "__init__.py").touch()
    for relative, text in STAND_INS.items():
        path = tests / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.parent / "__init__.py").touch()
        path.write_text(textwrap.dedent(text).lstrip())
    models = tests / "models"
    models.mkdir(exist_ok=True)
    (models / "__init__.py").touch()
    (models / "yardstick_support.py").write_text(SUPPORT.lstrip())
    return tests


def write_test_module(tests: Path, name: str) -> Path:
    path = tests / "models" / f"test_yardstick_{name}.py"
    path.write_text(
        f'"""transformers\' ModelTesterMixin on {name} (written by benchmarks/yardstick.py)."""\n\n'
        f"from .yardstick_support import build_test_case\n\n"
        f"{name.title().replace('_', '')}ModelTest = build_test_case({name!r})\n"
    )
    return path


def run_model(workdir: Path, tests: Path, name: str, keyword: str | None) -> Counts:
    """pytest on one model's module in a fresh process; the counts from its JUnit XML."""
    module = write_test_module(tests, name)
    report = workdir / f"junit_{name}.xml"
    selection = " and ".join(f"not {test}" for test in DESELECTED + NOT_APPLICABLE.get(name, ()))
    if keyword:
        selection = f"({keyword}) and {selection}"
    command = [sys.executable, "-m", "pytest", str(module.relative_to(workdir)), "-q"]
    command += ["-p", "no:cacheprovider", "--rootdir", str(workdir), "-k", selection]
    command += [f"--junitxml={report}", "-o", "junit_family=xunit2"]
    started = time.perf_counter()
    subprocess.run(command, cwd=workdir, capture_output=True, text=True, check=False)
    counts = Counts(model=name, seconds=round(time.perf_counter() - started, 1))
    counts.not_applicable = _count_deselected(
        workdir, module, NOT_APPLICABLE.get(name, ()), keyword
    )
    if not report.exists():
        raise RuntimeError(
            f"pytest wrote no report for {name}: run {' '.join(command)} in {workdir}"
        )
    for case in ET.parse(report).getroot().iter("testcase"):
        outcome = {child.tag for child in case}
        if "failure" in outcome:
            counts.failed += 1
            counts.failures.append(case.get("name"))
        elif "error" in outcome:
            counts.errors += 1
            counts.failures.append(case.get("name"))
        elif "skipped" in outcome:
            counts.skipped += 1
        else:
            counts.passed += 1
    return counts


def _count_deselected(
    workdir: Path, module: Path, tests: tuple[str, ...], keyword: str | None = None
) -> int:
    """How many collected tests ``tests`` (-k names) select in ``module``, within ``keyword``."""
    if not tests:
        return 0
    selection = " or ".join(tests)
    if keyword:
        selection = f"({keyword}) and ({selection})"
    command = [sys.executable, "-m", "pytest", str(module.relative_to(workdir)), "--collect-only"]
    command += ["-q", "-p", "no:cacheprovider", "--rootdir", str(workdir), "-k", selection]
    listing = subprocess.run(command, cwd=workdir, capture_output=True, text=True, check=False)
    return sum("::" in line for line in listing.stdout.splitlines())


def markdown(results: list[Counts], command: str) -> str:
    lines = [
        f"transformers {transformers.__version__} `ModelTesterMixin` + `ConfigTester` (its sdist) on "
        "tiny configurations, one pytest process per model.",
        "",
        machine_description(),
        "",
        "| model | passed | failed | errors | skipped | not applicable | seconds |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.model} | {r.passed} | {r.failed} | {r.errors} | {r.skipped} "
            f"| {r.not_applicable} | {r.seconds} |"
        )
    failing = [r for r in results if r.failures]
    if failing:
        lines += ["", "Failures and errors:", ""]
        lines += [f"- {r.model}: {', '.join(sorted(r.failures))}" for r in failing]
    lines += ["", f"Command: `{command}`"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> list[Counts]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated: {MODELS}")
    parser.add_argument("-k", dest="keyword", default=None, help="pytest -k expression")
    parser.add_argument("--workdir", default=None, help="folder for the sdist and generated tests")
    parser.add_argument("--keep", action="store_true", help="keep a temporary --workdir")
    parser.add_argument("--output", default=None, help="write the table to this .md and a .json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    names = [name.strip() for name in args.models.split(",") if name.strip()]
    unknown = sorted(set(names) - set(MODELS))
    if unknown:
        parser.error(f"--models: unknown {unknown}; known: {', '.join(MODELS)}")

    temporary = None if args.workdir else tempfile.TemporaryDirectory(prefix="yardstick_")
    workdir = Path(args.workdir or temporary.name).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        tests = download_tests(workdir)
        results = []
        for name in names:
            logger.info("running %s ...", name)
            results.append(run_model(workdir, tests, name, args.keyword))
            logger.info("  %s", asdict(results[-1]))
    finally:
        if temporary is not None and not args.keep:
            temporary.cleanup()
        elif temporary is not None:
            logger.info("kept %s", workdir)
    command = "python benchmarks/yardstick.py " + " ".join(argv or sys.argv[1:])
    table = markdown(results, command.strip())
    print(table)
    if args.output:
        output = Path(args.output)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.with_suffix(".md").write_text(table)
        payload = {
            "transformers": transformers.__version__,
            "results": [asdict(r) for r in results],
        }
        output.with_suffix(".json").write_text(json.dumps(payload, indent=2) + "\n")
    return results


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
