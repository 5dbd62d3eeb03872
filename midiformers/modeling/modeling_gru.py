"""MidiGRU: a GRU over MIDI tokens with masked pooling and a classification head.

It is the composer classifier that scores how well conditioned generation hits its composer.
Padding may be on either side: each row's real tokens are moved to the front and packed, so
the recurrence never reads a pad token.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPooling, SequenceClassifierOutput
from transformers.utils import can_return_tuple
from transformers.utils.output_capturing import OutputRecorder, capture_outputs

from ._layers import embed_inputs, mask_min
from .configuration_gru import MidiGRUConfig


class MidiGRULayer(GradientCheckpointingLayer):
    """One GRU layer over packed sequences; returns padded outputs and the final states."""

    def __init__(self, input_size: int, hidden_size: int, bidirectional: bool):
        super().__init__()
        self.gru = nn.GRU(input_size, hidden_size, batch_first=True, bidirectional=bidirectional)

    def forward(
        self, hidden_states: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        packed = pack_padded_sequence(
            hidden_states, lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        output, final = self.gru(packed)
        output, _ = pad_packed_sequence(
            output, batch_first=True, total_length=hidden_states.shape[1]
        )
        # final: (directions, batch, hidden) -> (batch, directions * hidden)
        return output, final.transpose(0, 1).reshape(final.shape[1], -1)


class MidiGRUPreTrainedModel(PreTrainedModel):
    config_class = MidiGRUConfig
    config: MidiGRUConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["MidiGRULayer"]
    _can_record_outputs = {"hidden_states": OutputRecorder(MidiGRULayer, index=0)}

    def _init_weights(self, module: nn.Module) -> None:
        """Default init, plus GRUs: Xavier input weights, orthogonal recurrent weights."""
        super()._init_weights(module)
        if isinstance(module, nn.GRU):
            for name, param in module.named_parameters():
                if name.startswith("weight_ih"):
                    init.xavier_uniform_(param)
                elif name.startswith("weight_hh"):
                    init.orthogonal_(param)
                else:
                    init.zeros_(param)


class MidiGRUModel(MidiGRUPreTrainedModel):
    """Embedding + stacked GRU layers + pooling over the real tokens."""

    def __init__(self, config: MidiGRUConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(
            config.vocab_size, config.embedding_size, config.pad_token_id
        )
        directions = 2 if config.bidirectional else 1
        sizes = [config.embedding_size] + [directions * config.hidden_size] * (
            config.num_hidden_layers - 1
        )
        self.layers = nn.ModuleList(
            [MidiGRULayer(size, config.hidden_size, config.bidirectional) for size in sizes]
        )
        self.dropout = nn.Dropout(config.hidden_dropout)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    @capture_outputs
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling:
        """GRU states per token and the pooled vector per sequence.

        Each row's real tokens are moved to the front (stable) before the GRU, so the states,
        like ``hidden_states`` when requested, hold row ``b``'s real tokens first, then zeros.
        """
        inputs_embeds = embed_inputs(self, input_ids, inputs_embeds)
        batch, length, _ = inputs_embeds.shape
        if attention_mask is None:
            mask = torch.ones((batch, length), dtype=torch.bool, device=inputs_embeds.device)
        elif attention_mask.shape != (batch, length):
            raise ValueError(
                f"attention_mask has shape {tuple(attention_mask.shape)}, expected "
                f"{(batch, length)} like the input"
            )
        else:
            mask = attention_mask.bool()
        # Move each row's real tokens to the front (stable), so left padding packs like right.
        order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)
        hidden_states = inputs_embeds.gather(1, order.unsqueeze(-1).expand_as(inputs_embeds))
        lengths = mask.sum(1).clamp(min=1)
        front_mask = torch.arange(length, device=mask.device) < lengths.unsqueeze(1)

        hidden_states = self.dropout(hidden_states)
        final = None
        for index, layer in enumerate(self.layers):
            if index:
                hidden_states = self.dropout(hidden_states)
            hidden_states, final = layer(hidden_states, lengths)
        return BaseModelOutputWithPooling(
            last_hidden_state=hidden_states,
            pooler_output=self.pool(hidden_states, front_mask, final),
        )

    def pool(self, states: torch.Tensor, mask: torch.Tensor, final: torch.Tensor) -> torch.Tensor:
        """Mean or max over the real tokens, or the final GRU states."""
        if self.config.pooling == "last":
            return final
        weights = mask.unsqueeze(-1).to(states.dtype)
        if self.config.pooling == "max":
            return states.masked_fill(weights == 0, mask_min(states.dtype)).max(1).values
        return (states * weights).sum(1) / weights.sum(1).clamp(min=1.0)


class MidiGRUForSequenceClassification(MidiGRUPreTrainedModel):
    """Composer (or any sequence-level label) classifier: `MidiGRUModel` + dropout + linear."""

    def __init__(self, config: MidiGRUConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.model = MidiGRUModel(config)
        directions = 2 if config.bidirectional else 1
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(directions * config.hidden_size, config.num_labels)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed_tokens = value

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput:
        r"""
        labels (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
            class ids (cross-entropy), or floats for regression / multi-label (see
            `config.problem_type`).
        """
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            output_hidden_states=kwargs.pop("output_hidden_states", None),
        )
        logits = self.classifier(self.dropout(outputs.pooler_output))
        loss = None
        if labels is not None:
            if labels.dtype == torch.long and bool((labels >= self.num_labels).any()):
                raise ValueError(
                    f"labels must be below num_labels ({self.num_labels}), got {labels.tolist()}"
                )
            loss = self.loss_function(
                labels=labels, pooled_logits=logits, config=self.config, **kwargs
            )
        return SequenceClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states
        )


__all__ = ["MidiGRUForSequenceClassification", "MidiGRUModel", "MidiGRUPreTrainedModel"]
