"""The training run behind ``train.py``: recipe -> tokenizer -> dataset -> model -> Trainer.

Works the same under ``python train.py`` and ``accelerate launch train.py``; only the main
process writes the final artefacts (model, tokenizer, card, metrics, plots, samples).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import torch
import transformers
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    DataCollatorForLanguageModeling,
    DataCollatorWithPadding,
    Trainer,
    default_data_collator,
    set_seed,
)
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

from ..modeling import ARCHITECTURES, architecture_for
from .arguments import (
    STREAMING_EVAL_SAMPLES,
    DataArguments,
    MidiTrainingArguments,
    ModelArguments,
    RecipeError,
    TokenizerArguments,
    parse_recipe,
)
from .callbacks import MidiSampleCallback, plot_history
from .checkpoints import checkpoint_problem, last_complete_checkpoint
from .infilling import DataCollatorForInfilling
from .lora import apply_lora, lora_settings
from .metrics import argmax_logits, causal_lm_metrics, classification_metrics, perplexity
from .streaming import (
    StreamingTrainSet,
    bounded_eval_set,
    data_state_file,
    resume_stream,
    stream_snapshot_interval,
)

logger = logging.getLogger("midiformers.train")


@dataclass(frozen=True)
class Task:
    """How a family of models is fed: example layout, label column, Auto class."""

    name: str
    tokenize_mode: str
    label_column: str | None
    auto_class: type


TASKS = {
    # Chosen by task_for from the architecture registry: "vae" is composer-conditioned generation.
    "causal": Task("causal", "pack", None, AutoModelForCausalLM),
    "vae": Task("vae", "piece", "composer_labels", AutoModelForCausalLM),
    "classification": Task("classification", "piece", "labels", AutoModelForSequenceClassification),
}


CARD_METRICS = (
    "eval_loss",
    "eval_perplexity",
    "eval_accuracy",
    "eval_macro_f1",
    "train_loss",
    "epoch",
)


def task_for(model_type: str) -> Task:
    """How the registry says ``model_type`` learns: classification, conditioned or plain LM."""
    arch = architecture_for(model_type)
    if not arch.generates:
        return TASKS["classification"]
    return TASKS["vae"] if arch.conditioning else TASKS["causal"]


class MidiTrainer(Trainer):
    """``Trainer`` that also reports perplexity (``exp(loss)``) with every evaluation.

    Label smoothing shifts the labels for every causal model: transformers' ``Trainer`` only
    does so for the causal LMs it ships, and would silently score unshifted tokens here.
    """

    def __init__(self, *args, causal: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        if self.label_smoother is not None and causal and self.compute_loss_func is None:
            smoother = self.label_smoother

            def smoothed_causal_loss(outputs, labels, num_items_in_batch=None):
                return smoother(
                    outputs, labels, shift_labels=True, num_items_in_batch=num_items_in_batch
                )

            self.compute_loss_func = smoothed_causal_loss

    def get_train_dataloader(self) -> torch.utils.data.DataLoader:
        """A streamed training set gets its own ``StatefulDataLoader``: each process already
        reads its own part, and accelerate's wrappers would split it again (dropping blocks) or
        read ahead of the trainer (so a checkpoint could not say which blocks were trained on)."""
        if not isinstance(self.train_dataset, StreamingTrainSet):
            return super().get_train_dataloader()
        args, workers = self.args, self.args.dataloader_num_workers
        return self.train_dataset.dataloader(
            batch_size=self._train_batch_size,
            collate_fn=self._get_collator_with_removed_columns(self.data_collator, "training"),
            num_workers=workers,
            snapshot_every=stream_snapshot_interval(args),
            pin_memory=args.dataloader_pin_memory,
            persistent_workers=bool(workers) and args.dataloader_persistent_workers,
            prefetch_factor=args.dataloader_prefetch_factor if workers else None,
        )

    def _save_rng_state(self, output_dir: str) -> None:
        """Also save where this process' training stream stands (before ``trainer_state.json``,
        the file that marks a checkpoint complete)."""
        super()._save_rng_state(output_dir)
        if isinstance(self.train_dataset, StreamingTrainSet):
            os.makedirs(output_dir, exist_ok=True)
            self.train_dataset.save(data_state_file(output_dir, self.args.process_index))

    def evaluation_loop(self, *args, **kwargs):
        output = super().evaluation_loop(*args, **kwargs)
        prefix = kwargs.get("metric_key_prefix", "eval")
        loss = output.metrics.get(f"{prefix}_loss")
        if loss is not None:
            output.metrics[f"{prefix}_perplexity"] = perplexity(loss)
        return output


def resolve_model_type(name: str) -> str:
    """Map a short name (``gpt``) or a full ``midiformers_*`` type to the registered type."""
    arch = architecture_for(name, missing_ok=True)
    if arch is None:
        raise RecipeError(f"Unknown model_type {name!r}; choose one of {', '.join(ARCHITECTURES)}")
    return arch.model_type


def build_tokenizer(tok_args: TokenizerArguments, model_args: ModelArguments, train_split=None):
    from midiformers.tokenization import MidiTokenizer

    source = tok_args.tokenizer_name_or_path or model_args.model_name_or_path
    if source:
        return transformers.AutoTokenizer.from_pretrained(source)
    tokenizer = MidiTokenizer(
        preset=tok_args.tokenizer_preset, **(tok_args.tokenizer_options or {})
    )
    if tok_args.bpe_vocab_size and train_split is not None:
        logger.info("Training a BPE vocabulary of %d tokens", tok_args.bpe_vocab_size)
        tokenizer.train_bpe(list(train_split["midi"]), vocab_size=tok_args.bpe_vocab_size)
    return tokenizer


def load_data(data_args: DataArguments, train_args: MidiTrainingArguments):
    from midiformers.data_scripts import load_midi_dataset

    name = data_args.dataset_name
    with train_args.main_process_first(desc="building the dataset"):
        try:
            dataset = load_midi_dataset(
                name,
                cache_dir=data_args.dataset_cache_dir,
                data_dir=data_args.data_dir,
                num_proc=None if data_args.streaming else data_args.preprocessing_num_workers,
                streaming=data_args.streaming,
                **(data_args.dataset_config or {}),
            )
        except ValueError as error:
            if "corresponds to no data" in str(error):  # datasets' words for an empty split
                raise RecipeError(
                    f"Dataset {name!r} has no usable pieces (every source file was skipped; "
                    "the warnings above name them)"
                ) from error
            raise RecipeError(f"Dataset {name!r} could not be loaded: {error}") from error
    if data_args.streaming:
        if "train" not in dataset:
            raise RecipeError(f"Dataset {name!r} has no training split; it has {sorted(dataset)}")
    elif "train" not in dataset or len(dataset["train"]) == 0:
        raise RecipeError(
            f"Dataset {name!r} has no usable training pieces "
            f"(splits: { {name: len(split) for name, split in dataset.items()} })"
        )
    if data_args.eval_split not in dataset:
        raise RecipeError(
            f"Dataset {name!r} has no split {data_args.eval_split!r}; it has {sorted(dataset)}"
        )
    return dataset


def tokenize(dataset, tokenizer, data_args: DataArguments, task: Task, train_args):
    from midiformers.data_scripts import tokenize_dataset

    kind = type(dataset)
    splits = kind(
        {name: dataset[name] for name in ("train", data_args.eval_split) if name in dataset}
    )
    with train_args.main_process_first(desc="tokenizing"):
        tokenized = tokenize_dataset(
            splits,
            tokenizer,
            data_args.max_length,
            mode=tokenize_mode(task, data_args, tokenizer),
            num_proc=data_args.preprocessing_num_workers,
            # a stream is transposed by StreamingTrainSet, whose draws a checkpoint keeps
            transpose_semitones=0 if data_args.streaming else data_args.transpose_semitones,
            seed=train_args.seed,
            control_ratios=data_args.control_ratios if tokenizer.attribute_controls else None,
        )
    return _select(_label_columns(tokenized, task), data_args, train_args, tokenizer)


def tokenize_mode(task: Task, data_args: DataArguments, tokenizer) -> str:
    """How pieces become examples: the task's way, or (``infilling``) windows of whole bars of
    every track, so that each example keeps its tracks' structure for the collator's holes."""
    if not data_args.infilling:
        return task.tokenize_mode
    from midiformers.generation.infilling import check_infilling_tokenizer

    if task.name != "causal":
        raise RecipeError(f"infilling trains causal language models, not the {task.name} task")
    try:
        check_infilling_tokenizer(tokenizer)
    except ValueError as error:
        raise RecipeError(f"infilling: {error}") from None
    return "bars"


def _label_columns(tokenized, task: Task):
    """Keep the columns the task's model reads, its label under the name the model takes."""
    if not task.label_column:
        return tokenized
    tokenized = tokenized.rename_column("composer", task.label_column)
    return tokenized.remove_columns(
        [c for c in tokenized["train"].column_names if c not in _piece_columns(task)]
    )


def _select(tokenized, data_args: DataArguments, train_args, tokenizer):
    """The training and evaluation sets: a stream becomes a :class:`StreamingTrainSet` (this
    process' part, shuffled, transposed) and a bounded in-memory evaluation set."""
    train, evaluation = tokenized["train"], tokenized[data_args.eval_split]
    if data_args.streaming:
        return _streaming_sets(train, evaluation, data_args, train_args, tokenizer)
    if data_args.max_train_samples:
        train = train.select(range(min(len(train), data_args.max_train_samples)))
    if data_args.max_eval_samples:
        evaluation = evaluation.select(range(min(len(evaluation), data_args.max_eval_samples)))
    if len(train) == 0:
        raise RecipeError(
            f"No training example of {data_args.max_length} tokens could be made from "
            f"{data_args.dataset_name!r}: the pieces are too short or all failed to tokenize; "
            "lower max_length or check the data"
        )
    return train, evaluation


def _streaming_sets(train, evaluation, data_args: DataArguments, train_args, tokenizer):
    from datasets.distributed import split_dataset_by_node

    from midiformers.data_scripts import PitchTranspose

    if data_args.max_train_samples:
        train = train.take(data_args.max_train_samples)
    if data_args.shuffle_buffer_size > 1:  # the file order, anew each pass (set_epoch)
        train = train.shuffle(seed=train_args.seed, buffer_size=1)
    if train_args.world_size > 1:  # disjoint parts that together cover the stream
        # whole files per process when there are enough (each file read once; the parts may
        # differ by a file, harmless in an endless stream), else every process reads all
        # and keeps one block in world_size
        enough = (train.num_shards or 0) >= train_args.world_size
        train = split_dataset_by_node(
            train,
            rank=train_args.process_index,
            world_size=train_args.world_size,
            strategy="shards" if enough else "examples",
        )
    transform = None
    if data_args.transpose_semitones:
        transform = PitchTranspose(tokenizer, data_args.transpose_semitones, seed=train_args.seed)
    stream = StreamingTrainSet(
        train,
        seed=train_args.seed + train_args.process_index,
        buffer_size=data_args.shuffle_buffer_size,
        transform=transform,
        part=(train_args.process_index, train_args.world_size),
    )
    count = data_args.max_eval_samples or STREAMING_EVAL_SAMPLES
    return stream, bounded_eval_set(evaluation, count)


def pretokenized_tokenizer(
    data_args: DataArguments, tok_args: TokenizerArguments, model_args: ModelArguments
):
    """The tokenizer of a ``pretokenized_dir`` run: the one the recipe names (checked against
    the folder's manifest when the data is read), else the one saved with the shards."""
    from midiformers.data_scripts.pretokenization import TOKENIZER_DIR

    if tok_args.bpe_vocab_size:
        raise RecipeError(
            "bpe_vocab_size cannot be used with pretokenized_dir: the shards' ids fix the tokenizer"
        )
    source = tok_args.tokenizer_name_or_path or model_args.model_name_or_path
    if source:
        return transformers.AutoTokenizer.from_pretrained(source)
    saved = os.path.join(data_args.pretokenized_dir, TOKENIZER_DIR)
    if not os.path.isdir(saved):
        raise RecipeError(
            f"pretokenized_dir: {data_args.pretokenized_dir} holds no saved tokenizer "
            f"({saved}); is it a folder written by pretokenize / midiformers-pretokenize?"
        )
    return transformers.AutoTokenizer.from_pretrained(saved)


def load_pretokenized_sets(
    tokenizer, data_args: DataArguments, task: Task, train_args: MidiTrainingArguments
):
    """Training and evaluation sets (and the training features) from ``pretokenized_dir``,
    refusing a tokenizer other than the one that wrote the shards."""
    from midiformers.data_scripts import (
        PretokenizedFolderError,
        TokenizerMismatchError,
        load_pretokenized,
    )

    folder = data_args.pretokenized_dir
    with train_args.main_process_first(desc="reading the pretokenized shards"):
        try:
            loaded = load_pretokenized(
                folder,
                tokenizer,
                data_args.max_length,
                mode=tokenize_mode(task, data_args, tokenizer),
                streaming=data_args.streaming,
                transpose_semitones=0 if data_args.streaming else data_args.transpose_semitones,
                seed=train_args.seed,
                cache_dir=data_args.dataset_cache_dir,
            )
        except (TokenizerMismatchError, PretokenizedFolderError) as error:
            raise RecipeError(f"pretokenized_dir: {error}") from None
    for split in ("train", data_args.eval_split):
        if split not in loaded:
            raise RecipeError(
                f"pretokenized_dir: {folder} has no split {split!r}; it has {sorted(loaded)}"
            )
    features = loaded["train"].features
    loaded = type(loaded)({name: loaded[name] for name in ("train", data_args.eval_split)})
    train, evaluation = _select(_label_columns(loaded, task), data_args, train_args, tokenizer)
    return train, evaluation, features


def _piece_columns(task: Task) -> set[str]:
    return {"input_ids", "attention_mask", task.label_column}


def _check_model_config_keys(model_type: str, overrides: dict[str, Any]) -> None:
    """Refuse ``model_config`` keys the architecture's config does not declare.

    transformers' configs keep unknown keyword arguments as attributes, so a typo
    (``num_layers``) or a key of another architecture would otherwise be ignored silently.
    """
    config_class = CONFIG_MAPPING[model_type]
    known = {field.name for field in dataclasses.fields(config_class)} | {"num_labels"}
    unknown = sorted(set(overrides) - known)
    if unknown:
        close = {key: difflib.get_close_matches(key, sorted(known), n=1) for key in unknown}
        hints = "; ".join(
            f"{key!r} (did you mean {match[0]!r}?)" if match else repr(key)
            for key, match in close.items()
        )
        raise RecipeError(
            f"model_config: unknown key(s) for {model_type}: {hints}; "
            f"valid keys are {sorted(known - {'transformers_version', 'architectures'})}"
        )


def build_model(
    model_args: ModelArguments,
    data_args: DataArguments,
    tokenizer,
    task: Task,
    model_type: str,
    label_names: list[str] | None,
):
    kwargs: dict[str, Any] = {}
    if model_args.attn_implementation:
        kwargs["attn_implementation"] = model_args.attn_implementation
    if model_args.model_name_or_path:
        model = task.auto_class.from_pretrained(model_args.model_name_or_path, **kwargs)
    else:
        overrides = dict(model_args.model_config or {})
        overrides.setdefault("vocab_size", len(tokenizer))
        for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
            overrides.setdefault(name, getattr(tokenizer, name))
        if label_names:
            overrides.setdefault("id2label", dict(enumerate(label_names)))
            overrides.setdefault("label2id", {name: i for i, name in enumerate(label_names)})
        try:
            config = AutoConfig.for_model(model_type, **overrides)
        except Exception as error:  # strict dataclass validation names the field
            reason = " ".join(str(error).split())  # its message spans two lines
            raise RecipeError(f"Invalid model_config for {model_type}: {reason}") from error
        model = task.auto_class.from_config(config, **kwargs)
    positions = getattr(model.config, "max_position_embeddings", None)
    if positions is not None and data_args.max_length > positions:
        raise RecipeError(
            f"max_length ({data_args.max_length}) exceeds the model's max_position_embeddings "
            f"({positions}); lower max_length or raise model_config.max_position_embeddings"
        )
    if model.config.vocab_size < len(tokenizer):
        raise RecipeError(
            f"The model's vocab_size ({model.config.vocab_size}) is smaller than the "
            f"tokenizer's vocabulary ({len(tokenizer)})"
        )
    return model


def sample_function(task: Task, tokenizer, train_args: MidiTrainingArguments):
    """Unconditional (or per-composer) sampling used by the sample callback; the grammar
    processor keeps every sample decodable (no dropped tokens, notes closed at the end)."""
    from midiformers.generation import (
        MidiGrammar,
        MidiGrammarLogitsProcessor,
        UnsupportedGrammarError,
    )

    try:
        grammar = MidiGrammar(tokenizer)
    except UnsupportedGrammarError as error:
        logger.warning("Sampling without the grammar processor: %s", error)
        grammar = None

    def sample(model, count: int) -> list[list[int]]:
        options = dict(
            do_sample=True,
            max_new_tokens=train_args.sample_max_new_tokens,
            top_k=train_args.sample_top_k,
            temperature=train_args.sample_temperature,
            pad_token_id=tokenizer.pad_token_id,
        )
        if grammar is not None:
            options["logits_processor"] = [
                MidiGrammarLogitsProcessor(grammar, max_new_tokens=train_args.sample_max_new_tokens)
            ]
        if task.name == "vae":
            composers = torch.arange(count) % model.config.num_labels
            output = model.generate(composer=composers.to(model.device), **options)
        else:
            prompt = torch.full((count, 1), tokenizer.bos_token_id, device=model.device)
            output = model.generate(prompt, **options)
        return output.tolist()

    return sample


def collator_for(task: Task, tokenizer, data_args: DataArguments | None = None, seed=None):
    if data_args is not None and data_args.infilling:
        return DataCollatorForInfilling(
            tokenizer,
            data_args.max_length,
            infill_probability=data_args.infill_probability,
            track_probability=data_args.infill_track_probability,
            max_bars=data_args.infill_max_bars,
            loss_on=data_args.infill_loss,
            seed=seed,
        )
    if task.name == "causal":
        return default_data_collator
    if task.name == "classification":
        return DataCollatorWithPadding(tokenizer)
    return DataCollatorForLanguageModeling(tokenizer, mlm=False)


def _resume_checkpoint(train_args: MidiTrainingArguments) -> str | None:
    """The checkpoint to resume from: the one asked for (which must be complete), else the
    newest complete one in ``output_dir``; incomplete ones are set aside by the main process."""
    if train_args.resume_from_checkpoint:
        path = train_args.resume_from_checkpoint
        problem = checkpoint_problem(path)
        if problem:
            raise RecipeError(f"resume_from_checkpoint: cannot resume from {path} ({problem})")
        return path
    if train_args.overwrite_output_dir or not os.path.isdir(train_args.output_dir):
        return None
    with train_args.main_process_first(
        local=train_args.save_on_each_node, desc="checking checkpoints"
    ):
        last = last_complete_checkpoint(train_args.output_dir, set_aside=train_args.should_save)
    if last:
        logger.info("Resuming from %s (pass --overwrite_output_dir to start afresh)", last)
    return last


def _check_launch(train_args: MidiTrainingArguments) -> None:
    """Refuse a launch that would silently run as something else: several processes that are
    not a process group (each would train its own copy into the same folder), or FSDP on CPUs.

    accelerate (checked with 1.15) shards with FSDP only on GPU-class devices: with
    ``distributed_type: FSDP`` on CPU processes it runs plain DDP (``use_cpu``) or one
    unsynchronised copy of the whole run per process, all writing the same folder.
    """
    from accelerate.utils import DistributedType

    kind = train_args.distributed_state.distributed_type
    fsdp = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    if fsdp and kind in (DistributedType.NO, DistributedType.MULTI_CPU):
        raise RecipeError(
            f"The accelerate config asks for FSDP, but these processes run as {kind.value}: "
            "accelerate shards with FSDP only on GPUs; on CPU processes launch with "
            "configs/accelerate/cpu_2proc.yaml (DDP)"
        )
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1 and kind == DistributedType.NO:
        raise RecipeError(
            f"{world_size} processes were launched but do not form a process group (no GPU): "
            "set use_cpu: true (DDP over gloo), or launch one process"
        )


def _setup_logging(train_args: MidiTrainingArguments) -> None:
    level = train_args.get_process_log_level()
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    main_process = train_args.process_index == 0
    logging.getLogger("midiformers").setLevel(logging.INFO if main_process else logging.WARNING)
    transformers.utils.logging.set_verbosity(level)
    datasets.utils.logging.set_verbosity(level)


def final_evaluation(trainer: Trainer) -> dict[str, float]:
    """The final model's eval metrics: those logged at the last step when training ended with
    an evaluation of this very model (no second pass, no second set of samples), else a new
    evaluation."""
    state = trainer.state
    last = next((entry for entry in reversed(state.log_history) if "eval_loss" in entry), None)
    if (
        last is not None
        and last.get("step") == state.global_step
        and not trainer.args.load_best_model_at_end
    ):
        return {key: value for key, value in last.items() if key != "step"}
    return trainer.evaluate()


def write_artefacts(trainer, tokenizer, args: tuple, metrics: dict) -> Path:
    """Save model, tokenizer, card, metrics.json and plots into ``output_dir`` (main process)."""
    model_args, data_args, tok_args, train_args, model_type = args
    output_dir = Path(train_args.output_dir)
    trainer.save_model(str(output_dir))
    if not trainer.is_world_process_zero():
        return output_dir
    tokenizer.save_pretrained(output_dir)
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    if train_args.plots:
        plot_history(trainer.state.log_history, output_dir)
    from midiformers.hub import make_model_card

    card = make_model_card(
        model_type,
        # a pretokenized folder is not a dataset id (and its source corpus is not recorded)
        dataset=None if data_args.pretokenized_dir else data_args.dataset_name,
        metrics={k: metrics[k] for k in CARD_METRICS if k in metrics},
        tokenizer_preset=getattr(tokenizer, "preset", None) or tok_args.tokenizer_preset,
        num_parameters=trainer.model.num_parameters(),
        repo_id=train_args.hub_model_id,
        extra_tags=["peft", "lora"] if model_args.lora else None,
    )
    card.save(output_dir / "README.md")
    return output_dir


def _check_streaming(
    data_args: DataArguments, tok_args: TokenizerArguments, train_args: MidiTrainingArguments
) -> None:
    """What a streamed run needs, checked before any data is read."""
    if not data_args.streaming:
        return
    if train_args.max_steps <= 0:
        raise RecipeError(
            "streaming: true needs max_steps (a stream has no length, so num_train_epochs "
            "cannot end the run)"
        )
    if tok_args.bpe_vocab_size and not data_args.pretokenized_dir:
        raise RecipeError(
            "bpe_vocab_size trains on the whole training split, which a stream does not hold: "
            "train the BPE tokenizer first and name it in tokenizer_name_or_path"
        )


def _resume_stream(train_set, resume_from: str | None, train_args: MidiTrainingArguments) -> None:
    """Continue a streamed run where its checkpoint stopped instead of replaying the stream."""
    if resume_from is None or not isinstance(train_set, StreamingTrainSet):
        return
    train_args.ignore_data_skip = True  # the stream continues itself, or replays
    resume_stream(train_set, resume_from, train_args)


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Run one training job; returns the final metrics."""
    import midiformers  # noqa: F401  (registers the Auto classes)

    model_args, data_args, tok_args, train_args, recipe = parse_recipe(argv)
    _setup_logging(train_args)
    _check_launch(train_args)
    if train_args.torch_num_threads:
        torch.set_num_threads(train_args.torch_num_threads)
    model_type = resolve_model_type(model_args.model_type)
    task = task_for(model_type)
    if train_args.push_to_hub and not train_args.hub_model_id:
        raise RecipeError("push_to_hub needs hub_model_id, the repo to create (e.g. you/midi-gpt)")
    if not model_args.model_name_or_path:
        _check_model_config_keys(model_type, model_args.model_config or {})
    lora = lora_settings(model_args)
    _check_streaming(data_args, tok_args, train_args)
    resume_from = _resume_checkpoint(train_args)
    source = data_args.pretokenized_dir or data_args.dataset_name
    logger.info("Recipe %s: %s on %s", recipe, model_type, source)
    set_seed(train_args.seed)

    if data_args.pretokenized_dir:
        tokenizer = pretokenized_tokenizer(data_args, tok_args, model_args)
        train_set, eval_set, features = load_pretokenized_sets(
            tokenizer, data_args, task, train_args
        )
    else:
        dataset = load_data(data_args, train_args)
        tokenizer = build_tokenizer(tok_args, model_args, dataset["train"])
        train_set, eval_set = tokenize(dataset, tokenizer, data_args, task, train_args)
        features = dataset["train"].features
    label_names = None
    if task.label_column:
        if features is None or "composer" not in features:
            raise RecipeError(f"{source} has no composer labels for {model_type}")
        label_names = features["composer"].names
    model = build_model(model_args, data_args, tokenizer, task, model_type, label_names)
    if lora:
        model = apply_lora(model, lora, model_args.model_name_or_path)
    logger.info(
        "%s: %s parameters; %s training and %d evaluation examples",
        type(model).__name__,
        f"{model.num_parameters():,}",
        "streamed" if data_args.streaming else f"{len(train_set):d}",
        len(eval_set),
    )
    _resume_stream(train_set, resume_from, train_args)

    push_to_hub, train_args.push_to_hub = train_args.push_to_hub, False
    if not torch.cuda.is_available():
        train_args.dataloader_pin_memory = False
    if task.name == "vae" and train_args.label_smoothing_factor:
        raise RecipeError(
            "label_smoothing_factor would replace the VAE's loss (and drop its KL term)"
        )
    sampler = (
        sample_function(task, tokenizer, train_args) if task.name != "classification" else None
    )
    callbacks = []
    if sampler is not None and train_args.num_samples > 0:
        callbacks.append(
            MidiSampleCallback(tokenizer, sampler, train_args.num_samples, train_args.output_dir)
        )
    trainer = MidiTrainer(
        model=model,
        args=train_args,
        train_dataset=train_set,
        eval_dataset=eval_set,
        processing_class=tokenizer,
        data_collator=collator_for(task, tokenizer, data_args, train_args.seed),
        compute_metrics=classification_metrics
        if task.name == "classification"
        else causal_lm_metrics,
        preprocess_logits_for_metrics=argmax_logits,
        callbacks=callbacks,
        causal=task.name == "causal",
    )
    result = trainer.train(resume_from_checkpoint=resume_from)
    metrics = {**result.metrics, **final_evaluation(trainer)}
    output_dir = write_artefacts(
        trainer, tokenizer, (model_args, data_args, tok_args, train_args, model_type), metrics
    )
    if trainer.is_world_process_zero():
        if push_to_hub:
            from midiformers.hub import push_folder

            url = push_folder(
                output_dir,
                train_args.hub_model_id,
                token=train_args.hub_token,
                private=bool(train_args.hub_private_repo),
            )
            logger.info("Pushed to %s", url)
        summary = ", ".join(
            f"{key} {metrics[key]:.4g}"
            for key in ("eval_loss", "eval_perplexity", "eval_accuracy", "eval_macro_f1")
            if key in metrics
        )
        logger.info(
            "Done: %d steps in %.0f s; %s. Everything is in %s",
            trainer.state.global_step,
            result.metrics.get("train_runtime", float("nan")),
            summary,
            output_dir,
        )
    return metrics
