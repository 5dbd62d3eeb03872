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


def check_rope_theta(config) -> None:
    """The base of the rotary frequencies (``rope_parameters["rope_theta"]``, or one per layer type
    when nested) must be > 0; transformers' own ``validate_rope`` checks the other keys each
    ``rope_type`` needs."""
    parameters = getattr(config, "rope_parameters", None) or {}
    nested = [value for value in parameters.values() if isinstance(value, dict)]
    for entry in nested or [parameters]:
        theta = entry.get("rope_theta")
        if theta is not None and not theta > 0:
            raise ValueError(f"rope_parameters['rope_theta'] (rope_theta) must be > 0, got {theta}")


def check_rope_scaling_needs_rotary(config, rotary: bool, field: str) -> None:
    """A RoPE type other than ``"default"`` changes nothing without rotary positions: refuse it
    rather than silently ignore it."""
    parameters = getattr(config, "rope_parameters", None) or {}
    rope_type = parameters.get("rope_type", parameters.get("type", "default"))
    if not rotary and rope_type != "default":
        raise ValueError(
            f"rope_parameters with rope_type {rope_type!r} only apply to rotary positions, but "
            f"{field} is {getattr(config, field)!r}"
        )


class RopeParametersMixin:
    """``rope_theta`` as a read-write view of ``rope_parameters["rope_theta"]``.

    Configurations with rotary positions declare ``rope_parameters`` as transformers' Llama does
    (``rope_type``, ``rope_theta``, ``factor`` ...), and transformers folds a ``rope_theta`` given
    to the constructor or found in an older ``config.json`` into it. This property keeps
    ``config.rope_theta`` readable and assignable, so code written before stays right.
    """

    @property
    def rope_theta(self) -> float:
        parameters = getattr(self, "rope_parameters", None) or {}
        return parameters.get("rope_theta", self.default_theta)

    @rope_theta.setter
    def rope_theta(self, value: float) -> None:
        self.rope_parameters = {
            **(getattr(self, "rope_parameters", None) or {}),
            "rope_theta": value,
        }
        check_rope_theta(self)


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
