"""ConText (Harkema et al. 2009): whether a term in a sentence is negated, hedged, historical or hypothetical.

The algorithm: trigger phrases (rules in `grok/knowledge/context.yaml`) open a scope forward or backward from
themselves; the scope ends at the clause end (sentence end, `;`, `:`), at a termination phrase ("but", "points to",
"is", ...), at another trigger, at a comma that does not continue a list of terms, or after the rule's word window.
A term inside a scope takes the trigger's category. A term that contains the trigger ("no disease") is not modified
by it. medspacy's ConText and negspacy were measured and not used; docs/benchmark.md says why.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from grok.utils.errors import InputError

CATEGORIES = ("negated", "possible", "historical", "hypothetical", "pseudo")
DIRECTIONS = ("forward", "backward", "both")
_CLAUSE_END = re.compile(r"[;:]")
_COMMA = re.compile(r",")
_LIST_CONTINUATION = re.compile(r"\s*(?:or|and|nor|and/or)\b", re.IGNORECASE)
_WORD = re.compile(r"\S+")
_LIST_ITEM = re.compile(
    r"\s*(?:(?:and|or|nor)\s+)?(?:[\w\-']+\s+){0,2}[\w\-']+\s*(?:,|\s(?:and|or|nor)\b)", re.IGNORECASE
)


class ContextRulesError(InputError):
    """The ConText rules file is invalid; the message names the file and the entry."""


@dataclass(frozen=True)
class Trigger:
    """One trigger rule: its category, the direction of its scope and an optional word window."""

    category: str
    direction: str
    window: int | None


@dataclass(frozen=True)
class SentenceContext:
    """The triggers and scope boundaries of one sentence (computed once, shared by every kind of term)."""

    triggers: tuple[tuple[int, int, Trigger], ...]  # (start, end, rule), left to right
    boundaries: tuple[int, ...]  # clause ends and termination phrases (start offsets)
    commas: tuple[int, ...]


class ConText:
    """Compiled ConText rules: `sentence(text)` finds triggers once, `modifiers(...)` classifies terms."""

    def __init__(self, triggers: Sequence[tuple[str, Trigger]], terminate: Sequence[str], conclusion: Sequence[str]):
        # one alternation, longest pattern first so "less likely" wins over "likely" at the same position. For speed
        # the alternatives sit in one branch per first character behind a lookahead ("(?=n)(?:no...|not...)"); a
        # pattern that can start with several characters is in each of their branches, so the order within every
        # branch is the global longest-first order
        ordered = sorted(enumerate(triggers), key=lambda item: -len(item[1][0]))
        self._rules: dict[str, Trigger] = {}
        branches: dict[str, list[str]] = defaultdict(list)
        for index, (pattern, rule) in ordered:
            for char in sorted(first_characters(pattern) or {""}):
                name = f"c{index}_{ord(char) if char else 0}"
                self._rules[name] = rule
                branches[char].append(f"(?P<{name}>{pattern})")
        alternatives = [
            (f"(?={re.escape(char)})" if char else "") + "(?:" + "|".join(group) + ")"
            for char, group in sorted(branches.items(), key=lambda item: not item[0])
        ]
        self._triggers = re.compile(r"\b(?:" + "|".join(alternatives) + r")\b", re.IGNORECASE)
        self._terminate = re.compile(r"\b(?:" + "|".join(terminate) + r")\b", re.IGNORECASE)
        self.conclusion = re.compile(r"\b(?:" + "|".join(conclusion) + r")\b", re.IGNORECASE)

    def sentence(self, text: str) -> SentenceContext:
        """Triggers, boundaries and commas of one sentence."""
        triggers = tuple((m.start(), m.end(), self._rules[m.lastgroup]) for m in self._triggers.finditer(text))
        if not triggers:
            return SentenceContext((), (), ())
        inside = [(s, e) for s, e, _ in triggers]
        ends = [m.start() for m in _CLAUSE_END.finditer(text)]
        ends += [m.start() for m in self._terminate.finditer(text) if not any(s <= m.start() < e for s, e in inside)]
        return SentenceContext(triggers, tuple(sorted(ends)), tuple(m.start() for m in _COMMA.finditer(text)))

    def modifiers(
        self, text: str, terms: Sequence[tuple[int, int]], context: SentenceContext | None = None
    ) -> list[frozenset[str]]:
        """The categories (negated, possible, historical, hypothetical) of each (start, end) term of `text`."""
        context = context or self.sentence(text)
        found: list[set[str]] = [set() for _ in terms]
        if not context.triggers:
            return [frozenset()] * len(terms)
        starts = {s for s, _ in terms}
        for index, (start, end, rule) in enumerate(context.triggers):
            if rule.category == "pseudo":
                continue
            others = [t for j, t in enumerate(context.triggers) if j != index]
            scopes = []
            if rule.direction in ("forward", "both"):
                scopes.append(self._forward(text, start, end, rule, context, others, starts))
            if rule.direction in ("backward", "both"):
                scopes.append(self._backward(text, start, rule, context, others, starts))
            for k, (s, e) in enumerate(terms):
                if s <= start < e or start <= s < end:  # the trigger is part of the term, or the term of it
                    continue
                if any(a <= s and e <= b for a, b in scopes):
                    found[k].add(rule.category)
        return [frozenset(f) for f in found]

    @staticmethod
    def _continues_list(text: str, comma: int, starts: set[int]) -> bool:
        """Whether the text after a comma continues a list: it starts with a term (after an optional and/or/nor),
        or with a short item followed by another comma or conjunction ("no microaneurysms, haemorrhages or
        drusen")."""
        rest = text[comma + 1 :]
        offset = len(rest) - len(rest.lstrip())
        conjunction = _LIST_CONTINUATION.match(rest)
        if conjunction:
            tail = rest[conjunction.end() :]
            offset = conjunction.end() + len(tail) - len(tail.lstrip())
        return (comma + 1 + offset) in starts or bool(_LIST_ITEM.match(rest))

    def _forward(self, text, start, end, rule, context, others, starts) -> tuple[int, int]:
        stop = min([b for b in context.boundaries if b >= end] + [s for s, _, _ in others if s >= end] + [len(text)])
        for comma in context.commas:
            if end <= comma < stop and not self._continues_list(text, comma, starts):
                stop = comma
                break
        if rule.window is not None:
            words = list(_WORD.finditer(text, end, stop))
            if len(words) > rule.window:
                stop = words[rule.window - 1].end()
        return start, stop

    def _backward(self, text, start, rule, context, others, starts) -> tuple[int, int]:
        begin = max([b + 1 for b in context.boundaries if b < start] + [e for _, e, _ in others if e <= start] + [0])
        for comma in sorted((c for c in context.commas if begin <= c < start), reverse=True):
            if not self._continues_list(text, comma, starts):
                begin = comma + 1
                break
        if rule.window is not None:
            words = list(_WORD.finditer(text, begin, start))
            if len(words) > rule.window:
                begin = words[-rule.window].start()
        return begin, start


def first_characters(pattern: str) -> set[str] | None:
    """The lower-case characters a trigger pattern can start with (None when it cannot be told)."""
    try:
        from re import _constants as sre  # the stdlib's own regex parser (Python 3.11+)
        from re import _parser

        parsed = _parser.parse(pattern, re.IGNORECASE)
    except (ImportError, re.error):
        return None

    def first(items) -> set[str] | None:
        chars: set[str] = set()
        for op, arg in items:
            if op is sre.AT:
                continue
            if op is sre.LITERAL:
                return chars | {chr(arg).lower()}
            if op is sre.IN and all(kind is sre.LITERAL for kind, _ in arg):
                return chars | {chr(value).lower() for _, value in arg}
            if op is sre.BRANCH:
                branches = [first(branch) for branch in arg[1]]
                return None if any(b is None for b in branches) else chars.union(*branches)
            if op is sre.SUBPATTERN:
                inner = first(arg[-1])
                return None if inner is None else chars | inner
            if op in (sre.MAX_REPEAT, sre.MIN_REPEAT):
                inner = first(arg[2])
                if inner is None:
                    return None
                chars |= inner
                if arg[0] > 0:
                    return chars
                continue  # optional: what follows may start the match
            return None
        return None  # can match the empty string

    return first(list(parsed))


def _check_pattern(pattern: Any, where: str) -> str:
    if not isinstance(pattern, str) or not pattern.strip():
        raise ContextRulesError(f"{where}: expected a non-empty regular expression, got {pattern!r}")
    try:
        re.compile(pattern)
    except re.error as error:
        raise ContextRulesError(f"{where}: invalid regular expression {pattern!r} ({error})") from error
    return pattern


def parse_rules(raw: Mapping[str, Any], file: str) -> ConText:
    """Validate a rules mapping (the YAML format of `grok/knowledge/context.yaml`) into a ConText."""
    if not isinstance(raw, Mapping):
        raise ContextRulesError(f"{file}: expected a mapping with 'triggers', 'terminate' and 'conclusion'")
    triggers: list[tuple[str, Trigger]] = []
    for i, entry in enumerate(raw.get("triggers") or []):
        where = f"{file}: triggers[{i}]"
        category, direction = entry.get("category"), entry.get("direction", "forward")
        if category not in CATEGORIES:
            raise ContextRulesError(f"{where}.category: expected one of {list(CATEGORIES)}, got {category!r}")
        if direction not in DIRECTIONS:
            raise ContextRulesError(f"{where}.direction: expected one of {list(DIRECTIONS)}, got {direction!r}")
        window = entry.get("window")
        if window is not None and (not isinstance(window, int) or window < 1):
            raise ContextRulesError(f"{where}.window: expected a positive integer, got {window!r}")
        rule = Trigger(category, direction, window)
        for j, pattern in enumerate(entry.get("phrases") or []):
            triggers.append((_check_pattern(pattern, f"{where}.phrases[{j}]"), rule))
    if not triggers:
        raise ContextRulesError(f"{file}: no trigger phrases")
    terminate = [_check_pattern(p, f"{file}: terminate[{i}]") for i, p in enumerate(raw.get("terminate") or [])]
    conclusion = [_check_pattern(p, f"{file}: conclusion[{i}]") for i, p in enumerate(raw.get("conclusion") or [])]
    if not conclusion:
        raise ContextRulesError(f"{file}: 'conclusion' needs at least one phrase")
    return ConText(triggers, terminate or [r"(?!x)x"], conclusion)


@lru_cache(maxsize=8)
def load_context_rules(path: str | None = None) -> ConText:
    """The ConText rules of `path`, or the shipped `grok/knowledge/context.yaml` (cached per path)."""
    file = path or str(resources.files("grok.knowledge").joinpath("context.yaml"))
    if not Path(file).is_file():
        raise ContextRulesError(f"{file}: ConText rules file not found")
    try:
        raw = yaml.safe_load(Path(file).read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ContextRulesError(f"{file}: not valid YAML ({error})") from error
    return parse_rules(raw, file)
