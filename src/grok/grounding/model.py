"""The model side of grounding: value embeddings of quantity tokens, the read-out head, and source resolution.

- A quantity token's input embedding is its own row plus `ValueEmbedding(value)` (xVal-style, Golkar et al. 2023):
  the value standardised with training statistics and placed in the person's reference range; a learned vector when
  the value is unknown. Every `<q:k>` of a conversation refers to the same eye, so its value is looked up in the
  sample's table by key, in the prompt, in the answer and in generated text alike.
- `ReadoutHead` estimates each image-derived quantity from an image's fused visual tokens (masked regression on the
  table's values beside the LM loss).
- The preamble: after each image's visual tokens come the quantity tokens of what that image measures, carrying the
  values in force (the table's in training; at inference the inputs' or the read-out's, as `source` says), so the
  language model knows every value before it chooses which to cite.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from grok.grounding.findings import (
    Decision,
    FindingDecider,
    FindingReadout,
    decided_assessments,
    standardised_inputs,
)
from grok.grounding.readout import RidgeReadout
from grok.grounding.symbols import KINDS, QuantityTokens
from grok.grounding.values import SOURCE_CODES, SOURCES, QuantityStatistics, stated_values
from grok.knowledge.base import KnowledgeBase

GROUNDING_SOURCES = ("auto", "input", "readout")
READOUTS = ("attention", "ridge")  # attention pooling over fused tokens, trained; ridge on encoder tokens, fitted
VALUE_FEATURES = 5  # z-score, position in the reference range, distance below it, distance above it, has a range
THRESHOLD_FEATURES = 3  # standardised distance to a knowledge-base threshold, at or above it, known
Z_CLIP = 8.0
NO_VALUE = 10**9  # "tokens since the last value token" where there was none


class ValueEmbedding(nn.Module):
    """Scalar value features -> an embedding added to the quantity token's row; a learned vector for unknown values."""

    def __init__(self, llm_dim: int, hidden_dim: int = 64) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(VALUE_FEATURES, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, llm_dim))
        self.missing = nn.Parameter(torch.zeros(llm_dim))
        nn.init.normal_(self.mlp[-1].weight, std=0.02)
        nn.init.zeros_(self.mlp[-1].bias)

    @staticmethod
    def features(values: Tensor, mean: Tensor, std: Tensor, low: Tensor, high: Tensor) -> Tensor:
        """[..., 5] features of values (NaN-free where values are known): z-score, range position and distances."""
        z = ((values - mean) / std).clamp(-Z_CLIP, Z_CLIP)
        has_range = ~(torch.isnan(low) | torch.isnan(high))
        width = torch.where(has_range, (high - low).abs().clamp(min=1e-6), torch.ones_like(values))
        position = torch.where(has_range, (values - torch.nan_to_num(low)) / width, torch.zeros_like(values))
        position = position.clamp(-Z_CLIP, Z_CLIP)
        below, above = F.relu(-position), F.relu(position - 1.0)
        return torch.stack([z, position - 0.5, below, above, has_range.to(values.dtype)], dim=-1)

    def forward(self, features: Tensor, known: Tensor) -> Tensor:
        """Embeddings [..., llm_dim]: the MLP of the features where `known`, the missing vector elsewhere."""
        embedded = self.mlp(torch.nan_to_num(features))
        return torch.where(known.unsqueeze(-1), embedded, self.missing.to(embedded.dtype).expand_as(embedded))


class ValueContext(nn.Module):
    """Every value in force at once -> one vector added to every text token of the sample.

    A value token gives its value to the positions that attend to it; a small language model trained for minutes
    does not learn to attend back over hundreds of tokens to the right one (measured: its status words and
    conclusions ignored the values). The context vector puts which quantities lie below or above their ranges at
    every position, so the qualitative step and the conclusion can be read from it directly. Besides each value's
    features it sees where the value lies against each threshold the knowledge base defines (`<t:...>`).

    With `num_judgements`, a judgement head on the hidden layer predicts the knowledge base's findings and diagnoses
    (multi-label, supervised with the ones stage one derived from the same values), and the embeddings of the
    predicted judgements (probability-weighted) join the vector: the language model is told what the values mean,
    and only has to say it.
    """

    def __init__(
        self, num_quantities: int, num_thresholds: int, llm_dim: int, hidden_dim: int = 128, num_judgements: int = 0
    ) -> None:
        super().__init__()
        width = num_quantities * (VALUE_FEATURES + 1) + num_thresholds * THRESHOLD_FEATURES
        self.mlp = nn.Sequential(nn.Linear(width, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, llm_dim))
        nn.init.normal_(self.mlp[-1].weight, std=0.02)
        nn.init.zeros_(self.mlp[-1].bias)
        self.judgement_head = nn.Linear(hidden_dim, num_judgements) if num_judgements else None
        self.judgement_embedding = nn.Linear(num_judgements, llm_dim, bias=False) if num_judgements else None

    def hidden(self, features: Tensor, known: Tensor, thresholds: Tensor) -> Tensor:
        """[B, K, 5] value features, [B, K] known mask, [B, n, 3] threshold features -> [B, hidden_dim]."""
        inputs = torch.cat([torch.nan_to_num(features) * known.unsqueeze(-1), known.unsqueeze(-1).float()], dim=-1)
        inputs = torch.cat([inputs.flatten(1), thresholds.flatten(1)], dim=-1)
        return self.mlp[1](self.mlp[0](inputs.to(self.mlp[0].weight.dtype)))

    def judgement_logits(self, hidden: Tensor) -> Tensor | None:
        """[B, J] logits of the findings and diagnoses (None without a judgement head)."""
        return None if self.judgement_head is None else self.judgement_head(hidden)

    def forward(self, features: Tensor, known: Tensor, thresholds: Tensor) -> Tensor:
        """[B, llm_dim]: the values' vector, plus the predicted judgements' embeddings with a judgement head."""
        hidden = self.hidden(features, known, thresholds)
        context = self.mlp[2](hidden)
        logits = self.judgement_logits(hidden)
        if logits is not None:
            context = context + self.judgement_embedding(torch.sigmoid(logits))
        return context


class ReadoutHead(nn.Module):
    """Per-quantity attention pooling over an image's visual tokens, then a small MLP to a standardised estimate."""

    def __init__(self, llm_dim: int, num_quantities: int, hidden_dim: int = 64) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(llm_dim)
        self.queries = nn.Parameter(torch.randn(num_quantities, llm_dim) / math.sqrt(llm_dim))
        self.hidden = nn.Linear(llm_dim, hidden_dim)
        self.out_weight = nn.Parameter(torch.zeros(num_quantities, hidden_dim))
        self.out_bias = nn.Parameter(torch.zeros(num_quantities))

    def forward(self, tokens: Tensor) -> Tensor:
        """[n, N, llm_dim] visual tokens -> [n, K] standardised estimates."""
        normed = self.norm(tokens)
        scores = torch.einsum("nth,kh->nkt", normed, self.queries.to(normed.dtype)) / math.sqrt(normed.shape[-1])
        pooled = torch.einsum("nkt,nth->nkh", scores.softmax(dim=-1), normed)
        hidden = F.gelu(self.hidden(pooled))
        return (hidden * self.out_weight.to(hidden.dtype)).sum(-1) + self.out_bias.to(hidden.dtype)


@dataclass
class ResolvedQuantities:
    """A batch's values in force ([B, K]) with their sources, and the read-out's estimates (NaN where none)."""

    values: Tensor
    source: Tensor  # long: SOURCE_CODES (missing / input / readout)
    low: Tensor
    high: Tensor
    estimates: Tensor
    decisions: list[Decision] | None = None  # per sample, with a finding read-out (values withheld are NaN)


class QuantityGrounding(nn.Module):
    """Value embeddings, read-out heads and the token maps of one QuantityTokens list, inside a GrokMLLM."""

    def __init__(
        self,
        tokens: QuantityTokens,
        statistics: QuantityStatistics,
        token_rows: Tensor,
        llm_dim: int,
        modalities: tuple[str, ...] = ("oct", "cfp"),
        value_hidden_dim: int = 64,
        readout_hidden_dim: int = 64,
        readout_loss_weight: float = 1.0,
        judgement_weight: float = 1.0,
        judgement_window: int = 4,
        judgement_rows: Tensor | None = None,
        value_context: bool = False,
        context_hidden_dim: int = 128,
        num_judgements: int = 0,
        judgement_loss_weight: float = 1.0,
        carry_window: int = 0,
        readout: str = "attention",
        token_shapes: Mapping[str, tuple[int, int]] | None = None,
        preamble: bool = True,
        decimals: Tensor | None = None,
        valid_range: Tensor | None = None,
        findings_kb: KnowledgeBase | None = None,
    ) -> None:
        super().__init__()
        self.tokens = tokens
        # with `findings_kb`, a finding read-out decides the findings at inference (grok.grounding.findings)
        self.decider = FindingDecider(findings_kb) if findings_kb is not None else None
        self.finding_readout = (
            FindingReadout(len(tokens.keys), len(findings_kb.findings)) if findings_kb is not None else None
        )
        self.readout_loss_weight = float(readout_loss_weight)
        if judgement_weight <= 0 or judgement_window < 0:
            raise ValueError(
                f"grounding.judgement_weight must be > 0 and judgement_window >= 0, got {judgement_weight} and "
                f"{judgement_window}"
            )
        self.judgement_weight = float(judgement_weight)
        self.judgement_window = int(judgement_window)
        judged_rows = judgement_rows.long() if judgement_rows is not None else torch.zeros(0, dtype=torch.long)
        judged = torch.zeros(int(torch.cat([token_rows.long(), judged_rows]).max()) + 1, dtype=torch.bool)
        judged[judged_rows] = True
        self.register_buffer("judged_row", judged, persistent=False)
        self.preamble = preamble
        self.value_embedding = ValueEmbedding(llm_dim, value_hidden_dim)
        thresholds = [s for s in tokens.symbols if s.kind == "threshold"]
        self.value_context = (
            ValueContext(len(tokens.keys), len(thresholds), llm_dim, context_hidden_dim, num_judgements)
            if value_context
            else None
        )
        self.judgement_loss_weight = float(judgement_loss_weight)
        self.register_buffer(
            "threshold_keys", torch.tensor([tokens.key_index[s.key] for s in thresholds], dtype=torch.long), False
        )
        self.register_buffer(
            "threshold_values", torch.tensor([float(s.threshold) for s in thresholds], dtype=torch.float32), False
        )
        self.carry_window = int(carry_window)
        self.carry = nn.Linear(llm_dim, llm_dim)
        self.image_keys = {m: tokens.image_keys.get(m, ()) for m in modalities if tokens.image_keys.get(m)}
        if readout not in READOUTS:
            raise ValueError(f"grounding.readout={readout!r} is not one of {list(READOUTS)}")
        if readout == "ridge" and not all(m in (token_shapes or {}) for m in self.image_keys):
            raise ValueError("grounding.readout=ridge needs the encoders' token shapes (num_tokens, dim) per modality")
        # the attention heads train beside the LM in every setting (their regression loss also teaches the fusion to
        # carry the quantities); with `readout=ridge` the estimates come from a ridge fit on the encoder tokens
        self.attention_readout = nn.ModuleDict(
            {m: ReadoutHead(llm_dim, len(keys), readout_hidden_dim) for m, keys in self.image_keys.items()}
        )
        self.ridge_readout = nn.ModuleDict(
            {m: RidgeReadout(*token_shapes[m], len(keys)) for m, keys in self.image_keys.items()}
            if readout == "ridge"
            else {}
        )
        symbols = tokens.symbols
        self.register_buffer("mean", torch.tensor(statistics.mean, dtype=torch.float32), persistent=False)
        self.register_buffer("std", torch.tensor(statistics.std, dtype=torch.float32), persistent=False)
        # estimates are rounded to the decimals a report writes and kept inside the schema's valid range, so the value
        # in force is the one the text states (a count of 0.3 would fire "count > 0" yet be written "0")
        count = len(tokens.keys)
        self.register_buffer(
            "decimals", decimals if decimals is not None else torch.full((count,), 6), persistent=False
        )
        bounds = valid_range if valid_range is not None else torch.tensor([[-math.inf, math.inf]] * count)
        self.register_buffer("valid_range", bounds.float(), persistent=False)
        # embedding row of each symbol, and per symbol: kind code, key column, threshold value
        self.register_buffer("token_rows", token_rows.long(), persistent=False)
        row_symbol = torch.full((int(token_rows.max()) + 1,), -1, dtype=torch.long)
        row_symbol[token_rows.long()] = torch.arange(len(token_rows))
        self.register_buffer("row_symbol", row_symbol, persistent=False)
        self.register_buffer("symbol_kind", torch.tensor([KINDS.index(s.kind) for s in symbols]), persistent=False)
        self.register_buffer("symbol_key", torch.tensor([tokens.key_index[s.key] for s in symbols]), persistent=False)
        thresholds = [s.threshold if s.threshold is not None else math.nan for s in symbols]
        self.register_buffer("symbol_threshold", torch.tensor(thresholds, dtype=torch.float32), persistent=False)
        value_symbols = {s.key: i for i, s in enumerate(symbols) if s.kind == "value"}
        for modality, keys in self.image_keys.items():
            self.register_buffer(f"{modality}_keys", torch.tensor([tokens.key_index[k] for k in keys]), False)
            rows = token_rows[[value_symbols[k] for k in keys]]
            self.register_buffer(f"{modality}_rows", rows.long(), persistent=False)
        self._context: ResolvedQuantities | None = None
        self._bypass = False
        self._carry_state: tuple[Tensor, Tensor] | None = None  # generation: (last value symbol, tokens since)

    # ---- which embedding rows are quantity tokens -------------------------------------------------------------------
    def symbol_of_row(self, rows: Tensor) -> Tensor:
        """For each embedding row id of `rows`, its symbol index (-1 for every other token)."""
        inside = (rows >= 0) & (rows < self.row_symbol.numel())
        return torch.where(inside, self.row_symbol[rows.clamp(0, self.row_symbol.numel() - 1)], -1)

    # ---- where the text judges a value: loss weights ----------------------------------------------------------------
    def judgement_weights(self, rows: Tensor) -> Tensor | None:
        """Per-position LM-loss weights [B, T] of target rows `rows` [B, T]: `judgement_weight` on the
        `judgement_window` tokens after each value token (where the text says what the value means: "within normal
        limits", "under the lower limit of") and on the knowledge base's judgement words (`judgement_rows`: finding
        and diagnosis names, severities, status words), 1 elsewhere; None when the weight is 1 (plain mean)."""
        if self.judgement_weight == 1.0 or (self.judgement_window == 0 and not self.judged_row.any()):
            return None
        symbol = self.symbol_of_row(rows)
        since, _ = self._since_value(symbol)
        judging = (since >= 1) & (since <= self.judgement_window) & (symbol < 0)
        inside = rows < self.judged_row.numel()
        judging |= inside & self.judged_row[rows.clamp(0, self.judged_row.numel() - 1)]
        return torch.where(judging, self.judgement_weight, 1.0)

    # ---- value embeddings -------------------------------------------------------------------------------------------
    def _embed(self, symbol: Tensor, quantities: ResolvedQuantities, sample: Tensor, dtype: torch.dtype) -> Tensor:
        """Value embeddings of the symbols `symbol` [n] of samples `sample` [n]."""
        key = self.symbol_key[symbol]
        kind = self.symbol_kind[symbol]
        value = quantities.values[sample, key]
        low, high = quantities.low[sample, key], quantities.high[sample, key]
        value = torch.where(kind == KINDS.index("low"), low, value)
        value = torch.where(kind == KINDS.index("high"), high, value)
        value = torch.where(kind == KINDS.index("threshold"), self.symbol_threshold[symbol], value)
        features = ValueEmbedding.features(value, self.mean[key], self.std[key], low, high)
        return self.value_embedding(features, ~torch.isnan(value)).to(dtype)

    def _context_inputs(self, quantities: ResolvedQuantities) -> tuple[Tensor, Tensor, Tensor]:
        values = quantities.values
        features = ValueEmbedding.features(values, self.mean, self.std, quantities.low, quantities.high)
        at = values[:, self.threshold_keys]
        known = ~torch.isnan(at)
        distance = ((at - self.threshold_values) / self.std[self.threshold_keys]).clamp(-Z_CLIP, Z_CLIP)
        reached = (at >= self.threshold_values) & known
        thresholds = torch.stack([torch.nan_to_num(distance) * known, reached.float(), known.float()], dim=-1)
        return features, ~torch.isnan(values), thresholds

    def context(self, quantities: ResolvedQuantities) -> Tensor | None:
        """[B, H] value-context vectors of a batch's values in force (None without `value_context`)."""
        if self.value_context is None:
            return None
        return self.value_context(*self._context_inputs(quantities))

    def judgement_loss(self, quantities: ResolvedQuantities, targets: Tensor) -> Tensor | None:
        """Binary cross-entropy of the value context's judgement head against the records' findings and diagnoses
        ([B, J] 0/1); None without a judgement head."""
        if self.value_context is None or self.value_context.judgement_head is None:
            return None
        logits = self.value_context.judgement_logits(self.value_context.hidden(*self._context_inputs(quantities)))
        return F.binary_cross_entropy_with_logits(logits.float(), targets.float())

    def add_value_embeddings(self, rows: Tensor, embeds: Tensor, quantities: ResolvedQuantities) -> Tensor:
        """`embeds` ([B, T, H] of embedding rows `rows`) plus the value embedding at every quantity token (and the
        value context at every token, with `value_context`)."""
        context = self.context(quantities)
        if context is not None:
            embeds = embeds + context.to(embeds.dtype).unsqueeze(1)
        symbol = self.symbol_of_row(rows)
        positions = (symbol >= 0).nonzero(as_tuple=True)
        if positions[0].numel():
            added = self._embed(symbol[positions], quantities, positions[0], embeds.dtype)
            embeds = embeds.index_put(positions, embeds[positions] + added)
        if self.carry_window:
            since, carried_symbol = self._since_value(symbol) if rows.shape[-1] > 1 else self._since_value_step(symbol)
            where = ((since >= 1) & (since <= self.carry_window) & (symbol < 0)).nonzero(as_tuple=True)
            if where[0].numel():
                values = self._embed(carried_symbol[where], quantities, where[0], embeds.dtype)
                embeds = embeds.index_put(where, embeds[where] + self.carry(values))
        return embeds

    def _is_value(self, symbol: Tensor) -> Tensor:
        return (symbol >= 0) & (self.symbol_kind[symbol.clamp(min=0)] == KINDS.index("value"))

    def _since_value(self, symbol: Tensor) -> tuple[Tensor, Tensor]:
        """For each position of `symbol` [B, T]: tokens since the last value token at or before it (huge where there is
        none) and that token's symbol (0 where none; the distance masks it)."""
        index = torch.arange(symbol.shape[-1], device=symbol.device).expand_as(symbol)
        last = torch.where(self._is_value(symbol), index, torch.full_like(index, -NO_VALUE)).cummax(dim=-1).values
        return index - last, symbol.gather(-1, last.clamp(min=0)).clamp(min=0)

    def _since_value_step(self, symbol: Tensor) -> tuple[Tensor, Tensor]:
        """`_since_value` for one generated token per sample ([B, 1]), continuing from the tokens generated before
        (the state lasts while `values_in_context` does; generation starts after the prompt's last value token)."""
        if self._carry_state is None:
            self._carry_state = (torch.zeros_like(symbol), torch.full_like(symbol, NO_VALUE))
        last, since = self._carry_state
        is_value = self._is_value(symbol)
        self._carry_state = (torch.where(is_value, symbol, last), torch.where(is_value, 0, since + 1))
        return self._carry_state[1], self._carry_state[0]

    @contextmanager
    def values_in_context(self, quantities: ResolvedQuantities) -> Iterator[None]:
        """Within the block, the language model's input embedding adds these values (generation's new tokens)."""
        self._context = quantities
        self._carry_state = None
        try:
            yield
        finally:
            self._context = None
            self._carry_state = None

    def embedding_hook(self, module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> Tensor:
        """Forward hook on the LM's input embedding: add values of quantity tokens (needs `values_in_context`)."""
        rows = inputs[0]
        if self._bypass:
            return output
        if self._context is None:
            if (self.symbol_of_row(rows) >= 0).any():
                raise RuntimeError(
                    "quantity tokens embedded without their values: use QuantityGrounding.values_in_context"
                )
            return output
        return self.add_value_embeddings(rows, output, self._context)

    # ---- read-out and resolution ------------------------------------------------------------------------------------
    @property
    def readout(self) -> nn.ModuleDict:
        """The heads whose estimates are quoted: the ridge fit (`readout=ridge`) or the attention heads."""
        return self.ridge_readout if len(self.ridge_readout) else self.attention_readout

    def _head_inputs(
        self, fused: Mapping[str, tuple[Tensor, Tensor]], encoded: Mapping[str, tuple[Tensor, Tensor]] | None
    ) -> Iterator[tuple[str, Tensor, Tensor]]:
        """(modality, tokens, owners) each read-out head reads: the fused tokens, or the encoder's for ridge."""
        for modality, head in self.readout.items():
            inputs = (encoded or {}) if isinstance(head, RidgeReadout) else fused
            if modality in inputs and inputs[modality][0] is not None and inputs[modality][0].shape[0]:
                yield modality, inputs[modality][0], inputs[modality][1]

    def estimate(
        self,
        fused: Mapping[str, tuple[Tensor, Tensor]],
        batch_size: int,
        device: torch.device,
        encoded: Mapping[str, tuple[Tensor | None, Tensor]] | None = None,
    ) -> Tensor:
        """[B, K] read-out estimates (NaN where no image measures the quantity) from each image's fused tokens
        (`fused[modality] = (tokens [n, N, H], sample_index [n])`; a ridge head reads `encoded`, the encoder's
        tokens); the mean where a sample has several images."""
        total = torch.zeros(batch_size, len(self.tokens.keys), device=device)
        count = torch.zeros_like(total)
        for modality, tokens, owners in self._head_inputs(fused, encoded):
            keys = getattr(self, f"{modality}_keys")
            z = self.readout[modality](tokens).float()
            value = z * self.std[keys] + self.mean[keys]
            index = owners.to(device)[:, None].expand_as(value)
            columns = keys[None, :].expand_as(value)
            total.index_put_((index, columns), value, accumulate=True)
            count.index_put_((index, columns), torch.ones_like(value), accumulate=True)
        mean = torch.where(count > 0, total / count.clamp(min=1), torch.full_like(total, math.nan))
        return self.bounded(mean)

    def bounded(self, values: Tensor, keys: Tensor | None = None) -> Tensor:
        """Estimates [..., K] (or of the columns `keys`) kept inside the schema's valid range and rounded to the
        decimals a report writes."""
        bounds = self.valid_range if keys is None else self.valid_range[keys.to(self.valid_range.device)]
        decimals = self.decimals if keys is None else self.decimals[keys.to(self.decimals.device)]
        bounds, decimals = bounds.to(values.device), decimals.to(values.device)
        values = torch.maximum(torch.minimum(values, bounds[:, 1]), bounds[:, 0])
        scale = 10.0 ** decimals.float()
        return torch.round(values * scale) / scale

    def readout_loss(self, fused: Mapping[str, tuple[Tensor, Tensor]], values: Tensor) -> Tensor:
        """Mean squared error of the attention heads' standardised estimates against the table's known values
        (masked)."""
        losses = []
        for modality, (tokens, owners) in fused.items():
            if modality not in self.attention_readout or tokens is None or not tokens.shape[0]:
                continue
            keys = getattr(self, f"{modality}_keys")
            target = (values[owners][:, keys] - self.mean[keys]) / self.std[keys]
            known = ~torch.isnan(target)
            if known.any():
                z = self.attention_readout[modality](tokens).float()
                losses.append(F.mse_loss(z[known], target[known], reduction="sum") / known.sum())
        if not losses:
            return values.new_zeros(())
        return torch.stack(losses).mean()

    def fit_ridge_readouts(self, encoded: Mapping[str, tuple[Tensor, Tensor]], values: Tensor, alphas) -> list[str]:
        """Fit every ridge head on training images: `encoded[modality] = (tokens [n, N, D], row of `values` [n])`,
        `values` [R, K] the eyes' own table values; returns the modalities fitted."""
        fitted = []
        for modality, head in self.ridge_readout.items():
            if modality not in encoded:
                continue
            tokens, rows = encoded[modality]
            keys = getattr(self, f"{modality}_keys")
            targets = (values[rows][:, keys].float() - self.mean[keys]) / self.std[keys]
            head.fit(tokens.float().cpu(), targets.cpu(), alphas)
            fitted.append(modality)
        return fitted

    def fit_finding_readout(
        self,
        values: Tensor,
        sexes: Sequence[str | None],
        targets: Tensor,
        cs: Sequence[float],
        folds: int,
        select: bool = True,
        groups: Sequence[str] | None = None,
        modality_dropout: bool = False,
    ) -> int:
        """Fit the finding read-out on training eyes' values in force [n, K] (out-of-fold estimates, stated values;
        the persons' sexes) and their findings [n, F], each finding's classifier kept where it beats the rules on
        the same values (`select`; else wherever it is fitted), folds keeping each of `groups` (subjects) whole;
        with `modality_dropout`, also on a copy of every eye per image with that image's estimates missing (as
        when it is absent at inference). Returns how many findings it decides (0 without a finding read-out)."""
        if self.finding_readout is None:
            return 0
        if modality_dropout:
            copies, group_ids = [values], list(groups) if groups is not None else [str(i) for i in range(len(values))]
            for modality in self.image_keys:
                absent = values.clone()
                absent[:, getattr(self, f"{modality}_keys").cpu()] = math.nan
                copies.append(absent)
            repeat = len(copies)
            values, targets = torch.cat(copies), targets.repeat(repeat, 1)
            sexes, groups = list(sexes) * repeat, group_ids * repeat  # a subject's copies share its folds
        keys = self.tokens.keys
        rows = [
            {**{k: v for k, v in zip(keys, stated_values(row), strict=True) if not math.isnan(v)}, "sex": sex}
            for row, sex in zip(values.tolist(), sexes, strict=True)
        ]
        inputs = standardised_inputs(values, self.mean.cpu(), self.std.cpu())
        rules = self.decider.rules_calls(rows)
        estimated = {key for keys in self.image_keys.values() for key in keys}
        candidates = [any(b in estimated for b in rule.biomarkers) for rule in self.decider.kb.findings.values()]
        fitted = self.finding_readout.fit(inputs.cpu(), targets.cpu(), cs, folds, rules, candidates, groups)
        if not select:  # every classifier decides, better than the rules or not
            self.finding_readout.fitted.copy_(~torch.isnan(self.finding_readout.cv_f1[:, 0]))
            fitted = int(self.finding_readout.fitted.sum())
        return fitted

    def decide(self, quantities: ResolvedQuantities, sexes: Sequence[str | None]) -> ResolvedQuantities:
        """The values in force with each sample's Decision attached and its withheld estimates set to NaN."""
        codes = quantities.source.tolist()
        sources = [[SOURCES[c] for c in row] for row in codes]
        decisions = decided_assessments(
            self.decider,
            self.finding_readout,
            self.tokens.keys,
            quantities.values,
            sources,
            sexes,
            self.mean,
            self.std,
        )
        withheld = torch.tensor(
            [[key in d.withheld for key in self.tokens.keys] for d in decisions],
            dtype=torch.bool,
            device=quantities.values.device,
        ).reshape(quantities.values.shape)
        values = torch.where(withheld, torch.full_like(quantities.values, math.nan), quantities.values)
        source = torch.where(withheld, SOURCE_CODES["withheld"], quantities.source)
        return ResolvedQuantities(values, source, quantities.low, quantities.high, quantities.estimates, decisions)

    def absent_columns(self, batch: Mapping[str, Tensor]) -> Tensor:
        """[B, K] True where a quantity is measured by an image the sample does not have (no `<m>_sample_index`
        entry for it: an OCT-only eye's CFP quantities)."""
        values = batch["quantity_values"]
        absent = torch.zeros(values.shape, dtype=torch.bool, device=values.device)
        for modality in self.image_keys:
            has_image = torch.zeros(values.shape[0], dtype=torch.bool, device=values.device)
            owners = batch.get(f"{modality}_sample_index")
            if owners is not None and owners.numel():
                has_image[owners.to(values.device)] = True
            columns = getattr(self, f"{modality}_keys").to(values.device)
            absent[:, columns] = ~has_image[:, None]
        return absent

    def resolve(self, batch: Mapping[str, Tensor], estimates: Tensor | None, source: str | None) -> ResolvedQuantities:
        """The values in force: `source=None` keeps the table as it is (teacher forcing); `input` uses only what is
        stated; `readout` the estimates for every image-derived quantity; `auto` stated values, else estimates;
        an image-derived quantity neither stated nor estimated because its image is absent is `absent`.
        With a finding read-out, an inference source also decides each eye's findings (`decide`)."""
        values = batch["quantity_values"].float()
        stated = batch["quantity_stated"].bool()
        low, high = batch["quantity_low"].float(), batch["quantity_high"].float()
        estimates = estimates if estimates is not None else torch.full_like(values, math.nan)
        if source is None:
            code = torch.where(torch.isnan(values), SOURCE_CODES["missing"], SOURCE_CODES["input"])
            return ResolvedQuantities(values, code, low, high, estimates)
        if source not in GROUNDING_SOURCES:
            raise ValueError(f"grounding.source={source!r} is not one of {list(GROUNDING_SOURCES)}")
        stated_values = torch.where(stated, values, torch.full_like(values, math.nan))
        has_estimate = ~torch.isnan(estimates)
        if source == "input":
            use_estimate = torch.zeros_like(stated)
        elif source == "readout":
            use_estimate = has_estimate
        else:
            use_estimate = has_estimate & torch.isnan(stated_values)
        resolved = torch.where(use_estimate, estimates, stated_values)
        code = torch.full_like(stated, SOURCE_CODES["missing"], dtype=torch.long)
        code = torch.where(~torch.isnan(stated_values), SOURCE_CODES["input"], code)
        code = torch.where(use_estimate, SOURCE_CODES["readout"], code)
        code = torch.where((code == SOURCE_CODES["missing"]) & self.absent_columns(batch), SOURCE_CODES["absent"], code)
        resolved_quantities = ResolvedQuantities(resolved, code, low, high, estimates)
        if self.decider is None:
            return resolved_quantities
        return self.decide(resolved_quantities, batch.get("quantity_sex") or [None] * values.shape[0])

    # ---- the preamble -----------------------------------------------------------------------------------------------
    def preamble_tokens(
        self, modality: str, owners: Tensor, quantities: ResolvedQuantities, embedding: nn.Module
    ) -> Tensor | None:
        """[n, K_m, H] quantity tokens (row + value embedding) of what each image of `modality` measures."""
        if not self.preamble or modality not in self.image_keys or not owners.numel():
            return None
        rows = getattr(self, f"{modality}_rows")
        self._bypass = True  # the rows alone: their values are added here, per image
        try:
            base = embedding(rows)  # [K_m, H]
        finally:
            self._bypass = False
        symbols = self.symbol_of_row(rows)
        n, k = owners.numel(), rows.numel()
        sample = owners.repeat_interleave(k)
        added = self._embed(symbols.repeat(n), quantities, sample, base.dtype).view(n, k, -1)
        return base.unsqueeze(0) + added
