"""The in-process engine: one base model in memory, adapters swapped in place.

The base model is loaded once. Switching runs first strips every LoRA/DoRA
wrapper (putting the original layers back) and reloads the base parameters
kept from load time, so the baseline is exactly the base model whatever ran
before it (also after a full fine-tune "adapter" replaced weights); then the
next adapter is applied with mlx-lm's own ``load_adapters``. Generation is
batched with mlx-lm's ``BatchGenerator`` (continuous batching); it is greedy
unless the options ask for a temperature, when it samples with mlx-lm's sampler
from a seeded RNG (``punie improve`` draws several drafts per case this way).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from punie.errors import ModelError
from punie.eval.engines import EngineOptions, Generation, OnResult, TurnSource
from punie.eval.outputs import ModelOutput
from punie.eval.suite import EvalCase
from punie.traces.agent import Completion, Request

ADAPTER_LEAVES = ("lora_a", "lora_b")


def strip_adapter_layers(model: Any) -> None:
    """Replace every LoRA/DoRA wrapper by the layer it wraps; fail if any adapter weight remains."""
    from mlx.utils import tree_unflatten
    from mlx_lm.tuner.dora import DoRAEmbedding, DoRALinear
    from mlx_lm.tuner.lora import LoRAEmbedding, LoRALinear, LoRASwitchLinear

    originals = []
    for name, module in model.named_modules():
        if isinstance(module, LoRALinear | DoRALinear | LoRASwitchLinear):
            originals.append((name, module.linear))
        elif isinstance(module, LoRAEmbedding | DoRAEmbedding):
            originals.append((name, module.embedding))
    if originals:
        model.update_modules(tree_unflatten(originals))
    left = adapter_parameter_names(model)
    if left:
        raise ModelError(f"could not remove adapter layers {left[:3]} from the model; the baseline would not be "
                         "the base model. Please report this with the adapter's adapter_config.json.")


def adapter_parameter_names(model: Any) -> list[str]:
    from mlx.utils import tree_flatten

    flat: list[tuple[str, Any]] = tree_flatten(model.parameters())  # type: ignore[assignment]
    return [name for name, _ in flat if name.rsplit(".", 1)[-1] in ADAPTER_LEAVES]


class InProcessEngine:
    name = "inprocess"
    per_case_latency = False

    def __init__(self, options: EngineOptions):
        self.options = options
        self.model: Any = None
        self.tokenizer: Any = None
        self._base_params: list[tuple[str, Any]] = []
        self._active: Path | None = None
        self._turn_sampler: Any = None

    def prepare(self, adapters: list[Path]) -> None:
        from mlx.utils import tree_flatten

        from punie.models.loading import load

        self.model, self.tokenizer = load(self.options.model)
        # References to the loaded arrays: reloading them restores the base exactly, at no copy cost.
        self._base_params = tree_flatten(self.model.parameters())  # type: ignore[assignment]
        for adapter in adapters:  # every adapter must load before any case runs
            self.use_adapter(adapter)
        self.use_adapter(None)

    def use_adapter(self, adapter: Path | None) -> None:
        """Make the model the base (``None``) or the base plus ``adapter``."""
        from punie.models.loading import apply_adapter

        strip_adapter_layers(self.model)
        self.model.load_weights(self._base_params, strict=True)
        self._active = None
        if adapter is not None:
            try:
                apply_adapter(self.model, adapter, base_name=self.options.model or "default")
            except ModelError:
                strip_adapter_layers(self.model)
                self.model.load_weights(self._base_params, strict=True)
                raise
            self._active = adapter
        # New LoRA modules start in training mode, where their dropout is active: evaluation is greedy.
        self.model.eval()

    def encode(self, case: EvalCase) -> list[int]:
        return self.encode_messages(case.messages, case.tools)

    def encode_messages(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> list[int]:
        from punie.chat.template import render

        text = render(self.tokenizer, messages, tools, add_generation_prompt=True)
        tokens: list[int] = self.tokenizer.encode(text, add_special_tokens=False)
        return tokens

    def _sampler(self) -> Any:
        """mlx-lm's sampler for the options, freshly seeded; None (greedy) at temperature 0."""
        import mlx.core as mx
        from mlx_lm.sample_utils import make_sampler

        if self.options.temperature <= 0:
            return None
        mx.random.seed(self.options.seed)
        return make_sampler(temp=self.options.temperature, top_p=self.options.top_p)

    def generate(self, adapter: Path | None, cases: list[EvalCase], on_result: OnResult) -> None:
        self.use_adapter(adapter)
        prompts = [self.encode(case) for case in cases]
        for index, text, tokens in generate_batched(self.model, self.tokenizer, prompts,
                                                    max_tokens=self.options.max_tokens,
                                                    batch_size=self.options.batch_size, sampler=self._sampler()):
            # No latency: batched cases share every step, so one case's wall time is not its own.
            on_result(index, Generation(ModelOutput.from_text(text), None, tokens=tokens))

    @contextmanager
    def agent_turns(self, adapter: Path | None, *, batched: bool = True) -> Iterator[TurnSource]:
        """Turns for agent episodes on the base or ``adapter``: every request of a step in one batched
        generation (``batched``), or each alone with ``mlx_lm.stream_generate``, as ``punie agent run`` does."""
        self.use_adapter(adapter)
        self._turn_sampler = self._sampler()
        yield TurnSource(self.complete_batched if batched else self.complete_each, batched=batched)

    def complete_batched(self, requests: list[Request]) -> list[Completion]:
        """The next assistant turn of every request, generated together (continuous batching, shared prefixes)."""
        from punie.chat.toolcalls import parse_text

        prompts = [self.encode_messages(messages, tools) for messages, tools in requests]
        turns: dict[int, Completion] = {}
        for index, text, tokens in generate_batched(self.model, self.tokenizer, prompts,
                                                    max_tokens=self.options.max_tokens,
                                                    batch_size=self.options.batch_size,
                                                    sampler=self._turn_sampler):
            turns[index] = Completion(parse_text(text), text, tokens=tokens)
        return [turns[i] for i in range(len(prompts))]

    def complete_each(self, requests: list[Request]) -> list[Completion]:
        """The next assistant turn of each request, one generation after another."""
        from mlx_lm import stream_generate

        from punie.chat.toolcalls import parse_text

        turns = []
        for messages, tools in requests:
            text, tokens = "", 0
            for response in stream_generate(self.model, self.tokenizer, self.encode_messages(messages, tools),
                                            max_tokens=self.options.max_tokens,
                                            sampler=self._turn_sampler):
                text += response.text
                tokens = response.generation_tokens  # counts the stop token, as generate_batched does
            turns.append(Completion(parse_text(text), text, tokens=tokens))
        return turns

    def close(self) -> None:
        self.model = None
        self.tokenizer = None
        self._base_params = []


def generate_batched(model: Any, tokenizer: Any, prompts: list[list[int]], *, max_tokens: int,
                     batch_size: int, share_prefixes: bool = True, sampler: Any = None) -> Any:
    """Yield ``(index, text, generated_tokens)`` for each prompt as it finishes (continuous batching).

    ``sampler`` is mlx-lm's (``make_sampler``); None is greedy.

    With ``share_prefixes`` a beginning common to several prompts (system
    prompt, tool schemas) is prefilled once (:mod:`punie.eval.prefix`).
    The token count includes a final stop token, as each one costs a decoding step.
    """
    from mlx_lm.generate import BatchGenerator

    gen = BatchGenerator(model, max_tokens=max_tokens, stop_tokens=[[t] for t in tokenizer.eos_token_ids],
                         completion_batch_size=batch_size, prefill_batch_size=batch_size, sampler=sampler)
    try:
        order, inputs, caches = _plan_prefill(model, prompts, share_prefixes)
        uids = gen.insert(inputs, caches=caches if any(c is not None for c in caches) else None)
        index = {uid: order[k] for k, uid in enumerate(uids)}
        tokens: dict[int, list[int]] = {uid: [] for uid in uids}
        steps: dict[int, int] = dict.fromkeys(uids, 0)
        remaining = len(uids)
        while remaining:
            prompt_responses, responses = gen.next()
            for r in responses:
                steps[r.uid] += 1
                if r.finish_reason != "stop":
                    tokens[r.uid].append(r.token)
                if r.finish_reason is not None:
                    remaining -= 1
                    yield index[r.uid], detokenize(tokenizer, tokens.pop(r.uid)), steps.pop(r.uid)
            if not prompt_responses and not responses:
                raise ModelError(f"generation stopped with {remaining} prompt(s) unanswered (mlx-lm BatchGenerator "
                                 "returned nothing); please report this.")
    finally:
        gen.close()


def _plan_prefill(model: Any, prompts: list[list[int]], share_prefixes: bool
                  ) -> tuple[list[int], list[list[int]], list[Any]]:
    """(prompt order, tokens left to prefill, starting cache or None) for each prompt."""
    from punie.eval.prefix import PrefixGroup, can_share, prefill, prefix_groups

    groups = prefix_groups(prompts) if share_prefixes and can_share(model) else []
    groups = [g for g in groups if g.length]
    grouped = {i for g in groups for i in g.members}
    groups.append(PrefixGroup([i for i in range(len(prompts)) if i not in grouped], 0))
    order: list[int] = []
    inputs: list[list[int]] = []
    caches: list[Any] = []
    for group in groups:
        cache = prefill(model, prompts[group.members[0]][:group.length]) if group.length else None
        # Prompts of similar length share a prefill batch, so little compute goes to padding.
        for i in sorted(group.members, key=lambda i: len(prompts[i])):
            order.append(i)
            inputs.append(prompts[i][group.length:])
            caches.append(cache)
    return order, inputs, caches


def detokenize(tokenizer: Any, tokens: list[int]) -> str:
    """Text of generated tokens, by mlx-lm's streaming detokenizer (as mlx_lm.generate and the server do)."""
    detokenizer = tokenizer.detokenizer
    for token in tokens:
        detokenizer.add_token(token)
    detokenizer.finalize()
    text: str = detokenizer.text
    return text
