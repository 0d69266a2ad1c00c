"""lm-evaluation-harness model backend `warmfast` (tested with lm-eval 0.4.13).

    lm_eval --model warmfast --model_args pretrained=DIR,adapters=warm:DIR|cold:DIR,arm=warm ...
    warmfast lm-eval --model warmfast --model_args pretrained=DIR,adapters=...,arm=all ...

Numbers follow lm-eval's `hf` backend (HFLM) exactly, quirks included:
  loglikelihood   lm-eval's own TemplateLM.loglikelihood: trailing context whitespace moves to the
                  continuation, whole = enc(ctx + cont), continuation = whole[len(enc(ctx)):],
                  an empty context becomes the prefix token (BOS, else EOS); each row is
                  left-truncated to max_length + 1 tokens (max_length fed); is_greedy is the
                  full-vocabulary argmax at every continuation position.
  rolling         lm-eval's rolling windows over enc(text) (with the tokenizer's BOS, so a BOS
                  tokenizer scores P(BOS | BOS) first, as HFLM does), prefix token, max_length.
  generate_until  stops = `until` + the EOS string, max_gen_toks (default 256), the prompt
                  left-truncated to max_length - max_gen_toks, output cut at the first stop string.
Batching is warmfast's: score rows of every arm packed under a token budget (max_batch_tokens),
generation by continuous batching with at most batch_size sequences per step ("auto": 64 or
max_batch_size). Sampled generations (do_sample=True) follow warmfast's (seed, prompt)-keyed
random stream, the same for every arm, not torch's.

Arms: `arm=NAME` answers for one adapter (or `base`); `peft=DIR` is HFLM's spelling of one adapter.
With `all_arms=True` (set by `warmfast lm-eval ... arm=all`, see lm_eval_cli.py) every request is
scored for every arm in the same batches, and the sibling runs of the other arms read the answers
from a per-process memo instead of running the model again.
"""
from __future__ import annotations

import logging
from pathlib import Path

import jinja2
from lm_eval import utils as lm_utils
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs, postprocess_generated_text

import warmfast as wf
from warmfast.engine.generator import default_request_id
from warmfast.integrations.engines import BASE, check_device, parse_adapters, resolve_dtype, shared_engine

log = logging.getLogger("warmfast")
SAMPLING_KEYS = ("do_sample", "temperature", "top_p", "top_k", "min_p", "seed")
_MEMO: dict[object, dict[tuple, dict[str, object]]] = {}  # engine -> request key -> arm -> answer


def clear_arm_memo() -> None:
    """Forget the answers kept for sibling arm runs (the lm-eval command calls it after its runs)."""
    _MEMO.clear()


def _batch_size(value, max_batch_size, where: str) -> int:
    """lm-eval's batch_size ("auto", "auto:N" or an int) -> sequences per generation step."""
    if isinstance(value, str) and value.startswith("auto"):
        return int(max_batch_size or 64)
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: batch_size must be an int, 'auto' or 'auto:N', got {value!r}") from None
    if n < 1:
        raise ValueError(f"{where}: batch_size must be >= 1, got {n}")
    return n


@register_model("warmfast")
class WarmfastLM(TemplateLM):
    """A base model and its LoRA adapters on one warmfast Engine; answers for one arm (or all)."""

    def __init__(self, pretrained: str, adapters=None, arm: str | None = None, peft: str | None = None,
                 all_arms: bool = False, dtype: str = "auto", backend: str = "auto",
                 max_length: int | None = None, max_batch_tokens: int = 8192,
                 add_bos_token: bool | None = None, prefix_token_id: int | None = None,
                 trust_remote_code: bool = False, batch_size=1, max_batch_size: int | None = None,
                 device: str | None = "cpu", tensor_parallel: int = 1) -> None:
        super().__init__()
        where = "lm-eval --model warmfast"
        if trust_remote_code:
            raise ValueError(f"{where}: trust_remote_code=True: warmfast runs no model code from the hub")
        named = parse_adapters(adapters, f"{where} model_args adapters")
        arm = self._resolve_arm(named, arm, peft, where)
        self.arms = [BASE, *named] if all_arms else [arm]
        self.arm = arm
        self.adapter_dir = named.get(arm)
        device = check_device(str(device or "cpu"), where)
        self.engine = shared_engine(pretrained, named, device=device,
                                    dtype=resolve_dtype(dtype, pretrained, where), backend=backend,
                                    max_seq_len=max_length, max_batch_tokens=int(max_batch_tokens),
                                    tensor_parallel=int(tensor_parallel))
        if max_length is not None and int(max_length) > self.engine.max_seq_len:
            raise ValueError(f"{where}: max_length={max_length} exceeds the model's "
                             f"{self.engine.max_seq_len} positions ({Path(pretrained) / 'config.json'})")
        self.tokenizer = self.engine.tok.hf
        self.pretrained = str(pretrained)
        self.add_bos_token = add_bos_token
        self.custom_prefix_token_id = prefix_token_id
        self.gen_batch_size = _batch_size(batch_size, max_batch_size, where)
        self._device = self.engine.device

    @staticmethod
    def _resolve_arm(named: dict[str, str], arm, peft, where: str) -> str:
        if peft is not None:  # HFLM's one-adapter argument: that adapter is the arm
            same = [n for n, p in named.items() if Path(p).resolve() == Path(peft).resolve()]
            if not same:
                name = Path(str(peft)).name or "peft"
                named[name] = str(peft)
                same = [name]
            if arm is not None and arm != same[0]:
                raise ValueError(f"{where}: arm={arm!r} but peft={peft} is adapter {same[0]!r}")
            arm = same[0]
        arm = BASE if arm is None else str(arm)
        if arm == "all":
            raise ValueError(
                f"{where}: arm=all runs every arm from one scoring pass and writes one results entry "
                "per arm; lm-eval's own command builds one model per run, so use `warmfast lm-eval "
                "--model warmfast --model_args ...,arm=all ...` (or pass arm=NAME)")
        if arm != BASE and arm not in named:
            raise ValueError(f"{where}: arm={arm!r} is not an adapter; adapters are {list(named)} "
                             f"(arm={BASE} is the model without an adapter)")
        return arm

    # ---- what lm-eval reads ------------------------------------------------------------------
    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        if self.custom_prefix_token_id is not None:
            return int(self.custom_prefix_token_id)
        if self.tokenizer.bos_token_id is not None:
            return self.tokenizer.bos_token_id
        return self.tokenizer.eos_token_id

    @property
    def max_length(self) -> int:
        return self.engine.max_seq_len

    @property
    def max_gen_toks(self) -> int:
        return 256

    @property
    def tokenizer_name(self) -> str:
        return self.tokenizer.name_or_path.replace("/", "__")

    def get_model_info(self) -> dict:
        return {"warmfast_version": wf.__version__, "warmfast_arm": self.arm,
                "warmfast_adapter": self.adapter_dir, "warmfast_backend": self.engine.backend,
                "model_dtype": str(self.engine.dtype).removeprefix("torch.")}

    def tok_encode(self, string: str, add_special_tokens: bool | None = None,
                   left_truncate_len: int | None = None, **kwargs) -> list[int]:
        """HFLM's rule: explicit flag, else add_bos_token, else the tokenizer's default; a string
        that already starts with the prefix token's text gets no second one."""
        flag = add_special_tokens if add_special_tokens is not None else self.add_bos_token
        if add_special_tokens is None and string.startswith(self.tokenizer.decode(self.prefix_token_id)):
            flag = False
        ids = self.tokenizer.encode(string, **({} if flag is None else {"add_special_tokens": flag}))
        return ids[-left_truncate_len:] if left_truncate_len else ids

    def tok_decode(self, tokens, skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=skip_special_tokens)

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        def render(history):
            return self.tokenizer.apply_chat_template(
                history, tokenize=False, add_generation_prompt=add_generation_prompt,
                continue_final_message=not add_generation_prompt)
        try:
            return render(chat_history)
        except jinja2.exceptions.TemplateError:  # as HFLM: templates that refuse a system role
            log.warning("chat template failed; retrying without the system message(s)")
            return render([m for m in chat_history if m["role"] != "system"])

    # ---- scoring -----------------------------------------------------------------------------
    def _memo_answers(self, keys: list[tuple], run) -> list:
        """Answers of this arm for each key. One arm: run(keys, [arm]) directly. All arms: keys
        not yet answered are run for every arm at once, and kept for the sibling arm runs."""
        if len(self.arms) == 1:
            return run(keys, self.arms)[self.arm]
        memo = _MEMO.setdefault(self.engine, {})
        missing = list(dict.fromkeys(k for k in keys if k not in memo))
        if missing:
            fresh = run(missing, self.arms)
            for i, k in enumerate(missing):
                memo[k] = {a: fresh[a][i] for a in self.arms}
        return [memo[k][self.arm] for k in keys]

    def _score_rows(self, keys: list[tuple], arms: list[str]) -> dict[str, list[tuple[float, bool]]]:
        reqs = [wf.ScoreRequest(list(ctx), list(cont), None if a == BASE else a)
                for a in arms for _, ctx, cont in keys]
        res = self.engine.score(reqs, progress=True)
        n = len(keys)
        return {a: [(r.logprob, r.is_greedy) for r in res[i * n:(i + 1) * n]] for i, a in enumerate(arms)}

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False,
                              override_bs: int | None = None) -> list[tuple[float, bool]]:
        keys = []
        for n, (_, ctx, cont) in enumerate(requests):
            if not ctx or not cont or len(cont) > self.max_length:
                raise ValueError(f"loglikelihood request #{n}: needs 1..{self.max_length} continuation "
                                 f"tokens and a context; got {len(ctx)} context, {len(cont)} continuation")
            row = (ctx + cont)[-(self.max_length + 1):]  # HFLM: left-truncate, max_length fed
            keys.append(("ll", tuple(row[:len(row) - len(cont)]), tuple(cont)))
        answers = self._memo_answers(keys, self._score_rows)
        for (req_str, _, _), ans in zip(requests, answers):
            if req_str is not None:
                self.cache_hook.add_partial("loglikelihood", req_str, ans)
        return answers

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        windows, counts = [], []
        for (text,) in [r.args for r in requests]:
            pairs = [lm_utils.make_disjoint_window(w) for w in lm_utils.get_rolling_token_windows(
                token_list=self.tok_encode(text), prefix_token=self.prefix_token_id,
                max_seq_len=self.max_length, context_len=1)]
            windows.extend((None, ctx, cont) for ctx, cont in pairs)
            counts.append(len(pairs))
        per_window = self._loglikelihood_tokens(windows, disable_tqdm=disable_tqdm)
        totals, k = [], 0
        for req, n in zip(requests, counts):
            totals.append(sum(lp for lp, _ in per_window[k:k + n]))
            k += n
            self.cache_hook.add_partial("loglikelihood_rolling", (req.args[0],), totals[-1])
        return totals

    # ---- generation --------------------------------------------------------------------------
    def _prompt_ids(self, context: str, max_ctx_len: int) -> list[int]:
        """HFLM's tok_batch_encode for one string: no BOS added to a string that starts with the
        BOS text, else add_bos_token, else the tokenizer's default; then left-truncated."""
        bos = self.tokenizer.bos_token
        flag = False if bos is not None and context.startswith(bos) else self.add_bos_token
        ids = self.tokenizer.encode(context, **({} if flag is None else {"add_special_tokens": flag}))
        return ids[-max_ctx_len:]

    def _generation(self, context: str, gen_kwargs: dict, n: int) -> tuple:
        kwargs = dict(normalize_gen_kwargs(gen_kwargs, self.max_gen_toks))
        until = handle_stop_sequences(kwargs.pop("until", None),
                                      eos=self.tok_decode(self.eot_token_id, skip_special_tokens=False))
        max_gen = kwargs.pop("max_gen_toks")
        unknown = sorted(set(kwargs) - set(SAMPLING_KEYS))
        if unknown:
            raise ValueError(f"generate_until request #{n}: generation kwargs {unknown} are not supported "
                             f"by warmfast (supported: until, max_gen_toks, {', '.join(SAMPLING_KEYS)})")
        if max_gen >= self.max_length:
            raise ValueError(f"generate_until request #{n}: max_gen_toks={max_gen} must be less than "
                             f"the maximum length {self.max_length}")
        sample = bool(kwargs.get("do_sample"))
        settings = (float(kwargs.get("temperature", 0.0)) if sample else 0.0,
                    float(kwargs.get("top_p", 1.0)), int(kwargs.get("top_k", 0) or 0),
                    float(kwargs.get("min_p", 0.0)), int(kwargs.get("seed", 0) or 0))
        ids = self._prompt_ids(context, self.max_length - max_gen)
        return ("gen", tuple(ids), max_gen, tuple(until), settings)

    def _generate_rows(self, keys: list[tuple], arms: list[str]) -> dict[str, list[str]]:
        seen: dict[tuple, int] = {}
        reqs = []
        for key in keys:
            _, ids, max_gen, until, (temp, top_p, top_k, min_p, seed) = key
            # repeats of one prompt (lm-eval's `repeats`) draw distinct samples: the k-th copy
            # gets the k-th stream; every arm draws the same streams (common random numbers)
            seen[key] = k = seen.get(key, -1) + 1
            reqs.append(dict(prompt=list(ids), max_new_tokens=max_gen, stop=[s for s in until if s],
                             temperature=temp, top_p=top_p, top_k=top_k, min_p=min_p, seed=seed,
                             request_id=(default_request_id(list(ids)) + k) % 2**64))
        batch = [wf.GenerateRequest(**r, adapter=None if a == BASE else a) for a in arms for r in reqs]
        res = self.engine.generate(batch, max_batch_size=self.gen_batch_size, progress=True)
        n = len(keys)
        return {a: [postprocess_generated_text(self.tok_decode(r.token_ids), list(key[3]), None)
                    for r, key in zip(res[i * n:(i + 1) * n], keys)] for i, a in enumerate(arms)}

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        args = [r.args for r in requests]
        keys = [self._generation(ctx, kw, n) for n, (ctx, kw) in enumerate(args)]
        if len(self.arms) > 1 and len(set(keys)) < len(keys):  # repeats: distinct streams, no memo
            texts = self._generate_rows(keys, [self.arm])[self.arm]
        else:
            texts = self._memo_answers(keys, self._generate_rows)
        for (ctx, kw), text in zip(args, texts):
            self.cache_hook.add_partial("generate_until", (ctx, kw), text)
        return texts

