"""Stage 1: ask an LLM for semantic neighbors of every class.

For each class, `settings.samples` replies are collected. Each reply comes from the response
cache when it holds one; otherwise from the backend, under three rules:

- at most `settings.concurrency` requests are in flight across all classes;
- a request that fails in passing (429, 5xx, timeout, connection) is sent again after an
  exponential backoff with jitter, or after the server's Retry-After when it gave one;
- a reply that is not valid for the schema (see `pipeline.llm.schema.parse_reply`) is asked
  again, up to `settings.max_attempts` times per sample; then the class fails with the reason.

Every reply received, valid or not, is kept in `ClassResult.raw` for review; only valid ones
are cached. Items of a valid reply that are unusable (empty text, ...) are not dropped but
returned in `ClassResult.invalid` with reason `invalid:<why>`. A class yields more candidates
than `n_per_class` on purpose (LLMs return short lists, so more are asked for); the dedup
stage trims.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
import math
import random
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Awaitable, Callable

from sept.errors import SeptError
from sept.neighbor_store.records import NeighborRecord, normalize_text
from sept.pipeline.llm.backend import BackendError, ChatRequest, LLMBackend, Sample, TransientError, scrub
from sept.pipeline.llm.cache import ResponseCache, cache_key
from sept.pipeline.llm.schema import SCHEMA_VERSION, InvalidReply, NeighborReply, parse_reply
from sept.prompts import Prompt

MAX_TEXT_CHARS = 200

log = logging.getLogger("sept.generate")


@dataclass
class GenerationSettings:
    """Parameters of neighbor generation. Those that change the answer (n and n_ask through the
    rendered prompt, temperature, max_tokens, seed, the sample index) are in every cache key;
    `to_params()` lists them for manifests. Concurrency and retry timings change nothing.

    n_per_class: neighbors wanted per class; the prompt asks for `n_ask` = ceil(n * (1 + extra)).
    samples: independent replies per class (one request with `n` where the backend allows it).
    max_attempts: tries per sample when replies are invalid for the schema.
    transport_retries: extra tries of one request after 429/5xx/timeouts/connection errors.
    dataset_description: what the prompt says in place of the dataset's name; None: the name
    (see `prompt_dataset`).
    """

    dataset: str
    dataset_description: str | None = None
    n_per_class: int = 10
    samples: int = 1
    temperature: float = 0.8
    max_tokens: int = 512
    max_attempts: int = 4
    concurrency: int = 8
    seed: int | None = 0
    extra: float = 0.5
    transport_retries: int = 8
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    retry_after_max: float = 300.0

    def __post_init__(self):
        checks = {
            "dataset": bool(self.dataset),
            "dataset_description": self.dataset_description is None or bool(self.dataset_description.strip()),
            "n_per_class": self.n_per_class >= 1,
            "samples": self.samples >= 1,
            "temperature": 0.0 <= self.temperature <= 2.0,
            "max_tokens": self.max_tokens >= 1,
            "max_attempts": self.max_attempts >= 1,
            "concurrency": self.concurrency >= 1,
            "extra": self.extra >= 0.0,
            "transport_retries": self.transport_retries >= 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"GenerationSettings: invalid value for parameter {name!r}: {getattr(self, name)!r}")

    @property
    def n_ask(self) -> int:
        return math.ceil(self.n_per_class * (1.0 + self.extra))

    def to_params(self) -> dict[str, Any]:
        """The answer-changing parameters, for manifests."""
        d = asdict(self)
        for timing in ("concurrency", "transport_retries", "backoff_base", "backoff_max", "retry_after_max"):
            d.pop(timing)
        d["n_ask"] = self.n_ask
        d["schema"] = SCHEMA_VERSION
        return d


# What a prompt calls the task when the run sees only part of a dataset's classes: no name an
# LLM could recall the dataset's other (held-out) classes from, and no claim that the list is
# the dataset's whole class list.
NEUTRAL_DESCRIPTION = "an audio classification task"


def prompt_dataset(dataset: str, choice: str | None, partial: bool) -> str | None:
    """The `dataset_description` of GenerationSettings for a run of `dataset`.

    choice: None -> the dataset's name (None) when the run sees all its classes, else
    NEUTRAL_DESCRIPTION; "name" -> always the name; any other text -> that text, used as
    the description. partial: the run sees a strict subset of the dataset's classes
    (a split part, a visible-classes file).
    """
    if choice is None:
        return NEUTRAL_DESCRIPTION if partial else None
    if choice.strip() == "name":
        return None
    if not choice.strip():
        raise ValueError("dataset_description: must not be empty (unset it for the automatic choice)")
    return " ".join(choice.split())


@dataclass
class ClassResult:
    """What generation produced for one class.

    candidates: accepted-status records, in sample order then reply order (may exceed n).
    invalid: unusable items of valid replies, status rejected, reason "invalid:<why>".
    requests: requests sent (retries included); cache_hits: samples served from the cache.
    retries: requests that repeated a request after a passing failure (429, 5xx, timeout, ...).
    prompt_tokens / completion_tokens: summed from the API's usage fields; usage_unreported:
    requests answered without them. seconds: wall time of the class, first lookup to last reply.
    failures: one line per failed request or invalid reply ("sample 0 attempt 1: not_json: ...").
    raw: every reply received: {"sample", "attempt", "text", "finish_reason", "valid", "reason", "cached"}.
    """

    class_name: str
    candidates: list[NeighborRecord] = field(default_factory=list)
    invalid: list[NeighborRecord] = field(default_factory=list)
    requests: int = 0
    cache_hits: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usage_unreported: int = 0
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)
    raw: list[dict[str, Any]] = field(default_factory=list)


class GenerationError(SeptError):
    """A class got no valid reply; the message names the class and the reason.

    `failed` maps every failed class to its reason (generate_all waits for all classes).
    `result` is the failing class's partial ClassResult (failures and raw replies for review).
    """

    def __init__(self, class_name: str, reason: str, result: ClassResult | None = None,
                 failed: dict[str, str] | None = None):
        self.class_name = class_name
        self.reason = scrub(reason)
        self.result = result
        self.failed = failed or {class_name: self.reason}
        msg = f"generation failed for class {class_name!r}: {self.reason}"
        if len(self.failed) > 1:
            others = [c for c in self.failed if c != class_name]
            msg += f" (and {len(others)} more failed class(es): {', '.join(repr(c) for c in others)})"
        super().__init__(msg)

    def __reduce__(self):
        # picklable with all its fields (process pools, task result storage)
        return (type(self), (self.class_name, self.reason, self.result, self.failed))


class _Limiter:
    """The concurrency bound plus a shared pause: after a 429 with Retry-After, no request of
    the run is sent before the server said so (the others would only be refused too)."""

    def __init__(self, concurrency: int):
        self.semaphore = asyncio.Semaphore(concurrency)
        self.not_before = 0.0

    def pause_until(self, t: float) -> None:
        self.not_before = max(self.not_before, t)

    async def wait_turn(self) -> None:
        while (delay := self.not_before - time.monotonic()) > 0:
            await asyncio.sleep(delay)


def _seed(seed: int | None, sample: int, attempt: int) -> int | None:
    # Separate requests with one seed would return the same reply; a fixed derivation keeps
    # runs reproducible while every sample and every new attempt samples afresh.
    return None if seed is None else seed + 1000 * sample + attempt


def _backoff(settings: GenerationSettings, tries: int, retry_after: float | None) -> float:
    if retry_after is not None:
        # honour the server, plus a little jitter so waiting clients do not return in lockstep
        wait = min(retry_after, settings.retry_after_max)
        return wait + random.uniform(0.0, min(1.0, 0.1 * wait + 0.05))
    step = min(settings.backoff_max, settings.backoff_base * 2 ** (tries - 1))
    return step / 2 + random.uniform(0.0, step / 2)


async def _send(backend: LLMBackend, request: ChatRequest, settings: GenerationSettings, limiter: _Limiter,
                result: ClassResult, label: str) -> list[Sample]:
    """One request with transport retries; counts every try in `result.requests`."""
    tries = 0
    while True:
        tries += 1
        await limiter.wait_turn()
        async with limiter.semaphore:
            await limiter.wait_turn()
            result.requests += 1
            if tries > 1:
                result.retries += 1
            try:
                samples, usage = await backend.complete_with_usage(request)
                if usage.reported:
                    result.prompt_tokens += usage.prompt_tokens or 0
                    result.completion_tokens += usage.completion_tokens or 0
                else:
                    result.usage_unreported += 1
                return samples
            except TransientError as e:
                error = e
            except BackendError as e:
                result.failures.append(f"{label}: {scrub(str(e))}")
                raise GenerationError(result.class_name, scrub(str(e)), result) from None
        result.failures.append(f"{label} try {tries}: {error.reason}")
        if tries > settings.transport_retries:
            raise GenerationError(result.class_name, f"{error.reason} (gave up after {tries} tries)", result)
        delay = _backoff(settings, tries, error.retry_after)
        log.info("class %r, %s: %s; retrying in %.1f s", result.class_name, label, error.reason, delay)
        if error.retry_after is not None:
            limiter.pause_until(time.monotonic() + delay)
        await asyncio.sleep(delay)


def _records(class_name: str, classes: list[str], reply: NeighborReply, source: dict[str, Any]
             ) -> tuple[list[NeighborRecord], list[NeighborRecord]]:
    own = normalize_text(class_name)
    others = {normalize_text(c) for c in classes if c != class_name}
    kept, invalid = [], []
    for item in reply.neighbors:
        text = " ".join(item.text.split())
        why = None
        if not text:
            why = "empty_text"
        elif len(text) > MAX_TEXT_CHARS:
            why = "too_long"
        elif normalize_text(text) == own:
            why = "class_name_only"
        elif normalize_text(text) in others:
            why = "other_class_name"
        if why is None:
            kept.append(NeighborRecord(class_=class_name, text=text, kind=item.kind, source=dict(source)))
        else:
            invalid.append(NeighborRecord(class_=class_name, text=text or item.text, kind=item.kind,
                                          source=dict(source), status="rejected", reason=f"invalid:{why}"))
    return kept, invalid


async def generate_class(backend: LLMBackend, class_name: str, classes: list[str], prompt: Prompt,
                         settings: GenerationSettings, cache: ResponseCache | None = None, *,
                         limiter: _Limiter | None = None) -> ClassResult:
    """Neighbors for one class. Raises GenerationError naming the class when a sample gets no
    valid reply within `settings.max_attempts`, or the backend refuses the request for good."""
    if class_name not in classes:
        raise ValueError(f"class {class_name!r} is not in the class list of dataset {settings.dataset!r}")
    if limiter is None:  # a run of its own (e.g. one flow task per class): clean up after it
        try:
            return await generate_class(backend, class_name, classes, prompt, settings, cache,
                                        limiter=_Limiter(settings.concurrency))
        finally:
            await backend.aclose()
    result = ClassResult(class_name=class_name)
    started = time.monotonic()
    try:
        return await _generate_class(backend, class_name, classes, prompt, settings, cache, limiter, result)
    finally:
        result.seconds = time.monotonic() - started


async def _generate_class(backend: LLMBackend, class_name: str, classes: list[str], prompt: Prompt,
                          settings: GenerationSettings, cache: ResponseCache | None, limiter: _Limiter,
                          result: ClassResult) -> ClassResult:
    described = settings.dataset_description
    user = prompt.render(dataset=described or settings.dataset, named=described is None, class_name=class_name,
                         classes=list(classes), n=settings.n_per_class, n_ask=settings.n_ask)
    provenance = backend.describe()
    key_base = {
        **provenance,
        "schema": SCHEMA_VERSION,
        "prompt": prompt.ref,
        "system": prompt.system,
        "user": user,
        "dataset": settings.dataset,
        "class": class_name,
        "temperature": settings.temperature,
        "max_tokens": settings.max_tokens,
        "seed": settings.seed,
    }
    keys = [cache_key({**key_base, "sample": s}) for s in range(settings.samples)]
    replies: dict[int, NeighborReply] = {}

    for s, key in enumerate(keys):
        entry = cache.get(key) if cache is not None else None
        if entry is None:
            continue
        try:
            replies[s] = parse_reply(entry.get("text"), entry.get("finish_reason"))
        except InvalidReply:
            continue  # stored by an older, laxer parser: ask again
        result.cache_hits += 1
        result.raw.append({"sample": s, "attempt": 0, "text": entry.get("text"),
                           "finish_reason": entry.get("finish_reason"), "valid": True, "reason": None, "cached": True})

    def judge(s: int, attempt: int, sample: Sample | None) -> None:
        if sample is None:
            reason, text, finish = "missing_choice: fewer samples than asked", None, None
        else:
            text, finish = sample.text, sample.finish_reason
            try:
                replies[s] = parse_reply(sample.text, sample.finish_reason, sample.refusal)
                reason = None
            except InvalidReply as e:
                reason = str(e)
        result.raw.append({"sample": s, "attempt": attempt, "text": text, "finish_reason": finish,
                           "valid": reason is None, "reason": reason, "cached": False})
        if reason is not None:
            result.failures.append(f"sample {s} attempt {attempt}: {scrub(reason)}")
            log.info("class %r, sample %d attempt %d: invalid reply (%s)", class_name, s, attempt, reason)
        elif cache is not None:
            cache.put(keys[s], {"fields": {**key_base, "sample": s}, "text": text, "finish_reason": finish,
                                "reply": replies[s].model_dump(), "created_at": time.time()})

    for attempt in range(1, settings.max_attempts + 1):
        pending = [s for s in range(settings.samples) if s not in replies]
        if not pending:
            break
        # Greedy decoding gives one answer however many are asked (vLLM refuses n > 1 then).
        if backend.supports_n and settings.temperature > 0:
            request = ChatRequest(prompt.system, user, settings.temperature, settings.max_tokens,
                                  n=len(pending), seed=_seed(settings.seed, pending[0], attempt - 1))
            samples = await _send(backend, request, settings, limiter, result, f"attempt {attempt}")
            for i, s in enumerate(pending):
                judge(s, attempt, samples[i] if i < len(samples) else None)
        else:
            async def one(s: int) -> None:
                request = ChatRequest(prompt.system, user, settings.temperature, settings.max_tokens,
                                      n=1, seed=_seed(settings.seed, s, attempt - 1))
                samples = await _send(backend, request, settings, limiter, result, f"sample {s} attempt {attempt}")
                judge(s, attempt, samples[0] if samples else None)

            outcomes = await asyncio.gather(*(one(s) for s in pending), return_exceptions=True)
            for outcome in outcomes:  # every sample finished first: none is left running unwatched
                if isinstance(outcome, BaseException):
                    raise outcome

    missing = [s for s in range(settings.samples) if s not in replies]
    if missing:
        last = next((f for f in reversed(result.failures) if f.startswith(f"sample {missing[0]} ")), "")
        reason = last.split(": ", 1)[1] if ": " in last else "no valid reply"
        raise GenerationError(
            class_name,
            f"no valid reply for sample(s) {missing} after {settings.max_attempts} attempt(s); last: {reason}",
            result,
        )

    for s in range(settings.samples):
        kept, invalid = _records(class_name, classes, replies[s], {**provenance, "prompt": prompt.ref, "sample": s})
        result.candidates.extend(kept)
        result.invalid.extend(invalid)
    return result


def generation_cost(backend: dict[str, Any], results: dict[str, ClassResult], wall_seconds: float | None,
                    not_run: set[str] = frozenset()) -> dict[str, Any]:
    """What one backend's generation cost in this run, for the manifest and the logs.

    `not_run`: classes whose result came from elsewhere (a task cache) and cost nothing now.
    """
    ran = [r for c, r in results.items() if c not in not_run]
    cost: dict[str, Any] = {
        "backend": backend.get("backend"),
        "model": backend.get("model"),
        "requests": sum(r.requests for r in ran),
        "retries": sum(r.retries for r in ran),
        "response_cache_hits": sum(r.cache_hits for r in ran),
        "prompt_tokens": sum(r.prompt_tokens for r in ran),
        "completion_tokens": sum(r.completion_tokens for r in ran),
        "usage_unreported": sum(r.usage_unreported for r in ran),
        "wall_seconds": round(wall_seconds, 3) if wall_seconds is not None else None,
    }
    if not_run:
        cost["classes_not_run"] = len(not_run & set(results))
    return cost


OnClassDone = Callable[[str, ClassResult], Any | Awaitable[Any]]


async def generate_all(backend: LLMBackend, classes: list[str], prompt: Prompt, settings: GenerationSettings,
                       cache: ResponseCache | None = None, on_class_done: OnClassDone | None = None
                       ) -> dict[str, ClassResult]:
    """Neighbors for every class, concurrently, at most `settings.concurrency` requests in flight.

    Returns results in class order. If any class fails, every other class still runs to the
    end (its replies land in the cache), then GenerationError names the first failed class in
    class order and lists the others in `.failed`.
    """
    classes = list(classes)
    seen: set[str] = set()
    for c in classes:
        if c in seen:
            raise ValueError(f"class {c!r} appears twice in the class list of dataset {settings.dataset!r}")
        seen.add(c)
    limiter = _Limiter(settings.concurrency)

    async def run(class_name: str) -> ClassResult:
        result = await generate_class(backend, class_name, classes, prompt, settings, cache, limiter=limiter)
        if on_class_done is not None:
            done = on_class_done(class_name, result)
            if inspect.isawaitable(done):
                await done
        return result

    try:
        outcomes = await asyncio.gather(*(run(c) for c in classes), return_exceptions=True)
    finally:
        await backend.aclose()
    failed: dict[str, str] = {}
    first: GenerationError | None = None
    for c, outcome in zip(classes, outcomes):
        if isinstance(outcome, GenerationError):
            failed[c] = outcome.reason
            first = first or outcome
        elif isinstance(outcome, BaseException):
            raise outcome
    if first is not None:
        raise GenerationError(first.class_name, first.reason, first.result, failed)
    return dict(zip(classes, outcomes))
