"""Field ranges and cross-field rules shared by every midiformers configuration.

A range is declared on its field, as transformers' own configurations do
(``hidden_size: int = positive_int(default=512)``); ``@strict`` checks it whenever the field is
set, at construction, on ``from_pretrained`` and on later assignments, and its error names the
field. Rules that relate several fields are the ``check_*`` functions, called from each
configuration's ``validate_architecture``.

Configuration files are copied next to the modeling file for ``trust_remote_code``: this file
imports only transformers and huggingface_hub.
"""

from huggingface_hub.dataclasses import as_validated_field
from transformers.utils.type_validators import activation_fn_key, interval

positive_int = interval(min=1)
"""Sizes and counts: an integer >= 1."""

non_negative_int = interval(min=0)
"""Step counts that may be 0 when unused (e.g. the warm-up of a constant schedule)."""

positive_number = interval(min=0, exclude_min=True)
"""Scales such as ``rope_theta``, ``initializer_range`` or ``layer_norm_eps``: > 0."""

non_negative_number = interval(min=0)
"""Weights such as the KL ``beta`` or ``free_bits``: >= 0."""

dropout_probability = interval(min=0.0, max=1.0, exclude_max=True)
"""Dropout probabilities: in [0, 1) (1 would zero every activation)."""

activation = activation_fn_key
"""An activation function name (a key of transformers' ``ACT2FN``)."""


@as_validated_field
def token_id(value: int | list[int] | None) -> None:
    """A special token id: ``None`` or an index >= 0 (a list of them for ``eos_token_id``).
    That it lies below ``vocab_size`` is a cross-field rule: :func:`check_token_ids`."""
    for token in value if isinstance(value, list) else [value]:
        if token is not None and token < 0:
            raise ValueError(f"Value must be None or a token id >= 0, got {value}")


@as_validated_field
def eos_token_id(value: int | list[int] | None) -> None:
    """The end-of-sequence id(s): like :func:`token_id`, except that a negative id is
    transformers' "no end-of-sequence token" (``generate`` then never stops early)."""
    for token in value if isinstance(value, list) else [value]:
        if token is not None and not isinstance(token, int):
            raise ValueError(f"Value must be None or an integer token id, got {value}")


SPECIAL_TOKEN_FIELDS = ("pad_token_id", "bos_token_id", "eos_token_id")


def check_token_ids(config) -> None:
    """Special ids index the embedding table, so they must lie inside the vocabulary."""
    for name in SPECIAL_TOKEN_FIELDS:
        value = getattr(config, name, None)
        for token in value if isinstance(value, list) else [value]:
            if name == "eos_token_id" and token is not None and token < 0:
                continue  # no end-of-sequence token
            if token is not None and not 0 <= token < config.vocab_size:
                raise ValueError(
                    f"{name} ({value}) must lie in [0, vocab_size ({config.vocab_size}))"
                )


def check_heads(config, rotary: bool = False) -> None:
    """``num_attention_heads`` must divide ``hidden_size``; rotary positions rotate pairs of
    channels, so they also need an even head dimension."""
    if config.hidden_size % config.num_attention_heads:
        raise ValueError(
            f"hidden_size ({config.hidden_size}) must be divisible by num_attention_heads "
            f"({config.num_attention_heads})"
        )
    head_dim = config.hidden_size // config.num_attention_heads
    if rotary and head_dim % 2:
        raise ValueError(
            f"rotary positions need an even head dimension: hidden_size ({config.hidden_size}) "
            f"/ num_attention_heads ({config.num_attention_heads}) = {head_dim}"
        )
