"""Checks of Hugging Face transformers as it comes, on your own model and data: Trainer's gradient
accumulation against the large batch, the loss Trainer logs under accumulation, a causal LM's own
loss with ``num_items_in_batch``, ``gradient_checkpointing_enable()`` with Dropout, and what
``DataCollatorForLanguageModeling`` masks. Each returns a :class:`trainclaims.checks.Checked` (the
gap, the bound, the broken side's gap on the same inputs, the numbers), as the PyTorch checks do.

transformers (and accelerate, which Trainer needs) are imported when a check runs:
``pip install 'trainclaims[hf]'``. Every check runs on the CPU in float32, with no download: a
model from a config, batches as tensors. Batches are mappings with ``input_ids``,
``attention_mask`` and Hugging Face's ``labels`` (unshifted: the model shifts them; -100 where no
token is predicted). Trainer's runs take the batches in order (no shuffling), one optimizer step
per batch, each batch cut into ``k`` micro-batches of its rows.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import math
import tempfile
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from trainclaims.checks.base import Checked, batch_list, parameter_gap, rtol, sgd
from trainclaims.checks.preconditions import diverged, require_no_dropout
from trainclaims.errors import Misuse, NotMeasured
from trainclaims.step import batch_size, split

IGNORE_INDEX = -100
INSTALL = "pip install 'trainclaims[hf]'"
# The logged loss is compared to the large batch's to this relative gap: Trainer rounds what it logs
# to 4 decimals (a loss near 4: 1.3e-5 relative at most). Measured (CPU, transformers 4.45.2-5.25.0,
# the tiny GPT-2 of the family's tests, seeds 0-4): where the logged loss is the large batch's,
# |logged / large - 1| <= 1.2e-5; each micro-batch's mean averaged 2.0e-3-1.5e-2; k times: ~1.
LOGGED_MAX_GAP = 1e-3


def require_transformers(trainer: bool = False) -> Any:
    """transformers, or :class:`NotMeasured` (a skip) with the install line; with ``trainer``,
    accelerate too (Trainer needs it)."""
    import importlib.util

    missing = [m for m in ("transformers", "accelerate")[: 2 if trainer else 1] if importlib.util.find_spec(m) is None]
    if missing:
        raise NotMeasured(f"the Hugging Face checks need {' and '.join(missing)}: {INSTALL}")
    import transformers

    return transformers


# --------------------------------------------------------------------------- data


def rows(batches: Sequence[Mapping[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
    """The batches' rows in order, as a dataset Trainer takes (each row a mapping of tensors)."""
    return [{key: value[i] for key, value in b.items()} for b in batches for i in range(batch_size(b))]


class _Rows(torch.utils.data.Dataset):
    def __init__(self, items: list[dict[str, torch.Tensor]]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.items[i]


def predicted_tokens(batch: Mapping[str, torch.Tensor]) -> int:
    """The labels a causal LM predicts from Hugging Face's unshifted labels: every counted label
    but each sequence's first (the model shifts them: position t predicts label t+1)."""
    return int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())


def _lm_batches(batches: Any, check: str) -> list[Mapping[str, torch.Tensor]]:
    out = batch_list(batches, check)
    if not all(isinstance(b, Mapping) and "labels" in b and "input_ids" in b for b in out):
        raise Misuse(f"{check}: each batch must be a mapping with input_ids and labels (Hugging Face's, unshifted)")
    return out


# --------------------------------------------------------------------------- Trainer


def _sequential_trainer(transformers: Any) -> type:
    """Trainer that takes the rows in order (no shuffling), on every release measured: its sampler
    method takes no argument up to 4.51 and the dataset after."""
    from torch.utils.data import SequentialSampler

    class SequentialTrainer(transformers.Trainer):
        def _get_train_sampler(self, *args: Any, **kwargs: Any) -> Any:
            dataset = args[0] if args else kwargs.get("train_dataset")
            return SequentialSampler(dataset if dataset is not None else self.train_dataset)

    return SequentialTrainer


def _arguments(transformers: Any, folder: str, rows_per_device: int, k: int, lr: float, seed: int) -> Any:
    settings: dict[str, Any] = {
        "output_dir": folder,
        "per_device_train_batch_size": rows_per_device,
        "gradient_accumulation_steps": k,
        "num_train_epochs": 1,
        "learning_rate": lr,
        "lr_scheduler_type": "constant",
        "max_grad_norm": 0.0,  # no clipping: the claims compare the steps themselves
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "seed": seed,
        "dataloader_num_workers": 0,
        "disable_tqdm": True,
    }
    known = inspect.signature(transformers.TrainingArguments.__init__).parameters
    settings["use_cpu" if "use_cpu" in known else "no_cuda"] = True
    return transformers.TrainingArguments(**settings)


def trainer_run(
    model: nn.Module,
    batches: Sequence[Mapping[str, torch.Tensor]],
    k: int,
    optimizer: torch.optim.Optimizer,
    seed: int = 0,
) -> dict[str, Any]:
    """``model`` trained by Trainer on ``batches`` (one optimizer step each, ``k`` micro-batches
    of its rows, ``optimizer`` as given, a constant learning rate, no clipping): the parameters
    before each step, the loss it logged at each step, and what it decided (whether the model
    takes loss kwargs)."""
    transformers = require_transformers(trainer=True)
    n = batch_size(batches[0])
    if any(batch_size(b) != n for b in batches) or n % k:
        raise Misuse(f"trainer: every batch must hold the same number of rows, a multiple of k={k}")
    before: list[list[torch.Tensor]] = []

    class Snapshots(transformers.TrainerCallback):
        def on_step_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
            if len(before) == state.global_step:
                before.append([p.detach().clone() for p in model.parameters()])

    lr = optimizer.param_groups[0]["lr"]
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Trainer's notices on a CPU run without a tokenizer
        trainer = _sequential_trainer(transformers)(
            model=model,
            args=_arguments(transformers, folder, n // k, k, lr, seed),
            train_dataset=_Rows(rows(batches)),
            data_collator=transformers.default_data_collator,
            optimizers=(optimizer, None),
            callbacks=[Snapshots()],
        )
        trainer.remove_callback(transformers.trainer_callback.PrinterCallback)
        with contextlib.redirect_stdout(None):
            trainer.train()
    logged = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return {
        "before": before,
        "logged": logged,
        "steps": trainer.state.global_step,
        "model_accepts_loss_kwargs": getattr(trainer, "model_accepts_loss_kwargs", None),
    }


def _shifted_token_sum(model: nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The cross entropy summed over the labels a causal LM predicts (its logits at t, label t+1)."""
    inputs = {key: value for key, value in batch.items() if key != "labels"}
    logits = model(**inputs).logits[:, :-1]
    labels = batch["labels"][:, 1:]
    return torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
    )


def _plain_steps(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Sequence[Mapping[str, torch.Tensor]],
    k: int = 1,
    recipe: str = "large",
) -> None:
    """The references, in a plain loop: ``"large"``: one step on each whole batch with the model's
    own loss (its token mean); ``"mean"``: each of k micro-batches' own mean / k (Trainer before
    transformers 4.46, the broken side); ``"unshifted"``: the token sum over every counted label,
    the first of each sequence too (one more per row than the model predicts)."""
    model.train()
    for whole in batches:
        optimizer.zero_grad(set_to_none=True)
        if recipe == "unshifted":
            (_shifted_token_sum(model, whole) / int((whole["labels"] != IGNORE_INDEX).sum())).backward()
        else:
            parts = [whole] if recipe == "large" else split(whole, k)
            for part in parts:
                (model(**part).loss / len(parts)).backward()
        optimizer.step()


def _copies(model_fn: Callable[[], nn.Module], optimizer_fn: Callable[..., Any]) -> tuple[nn.Module, Any]:
    model = model_fn().float()
    return model, optimizer_fn(model.parameters())


def trainer_accumulation(
    model_fn: Callable[[], nn.Module],
    batches: Sequence[Mapping[str, torch.Tensor]],
    *,
    k: int,
    optimizer_fn: Callable[..., torch.optim.Optimizer] | None = None,
    seed: int = 0,
    contrast: bool = True,
) -> Checked:
    """Trainer with ``gradient_accumulation_steps=k`` takes the steps of Trainer on the k-times
    larger batch without accumulation: after ``len(batches)`` steps their parameters agree to
    float32's rounding (how Trainer normalizes a step is :func:`trainer_count`'s claim; here the
    same rows go through both). The broken side (each micro-batch's own mean / k, Trainer before
    4.46), trained in a plain loop, must be beyond the bound against the same reference:
    micro-batches with equal token counts cannot tell the two apart. SGD by default (an adaptive
    optimizer turns rounding noise into whole updates); the model must not draw random numbers
    (Dropout off)."""
    batches = _lm_batches(batches, "trainer_accumulation")
    optimizer_fn = optimizer_fn or sgd(lr=0.1, momentum=0.0)
    require_no_dropout(model_fn(), "trainer_accumulation")
    accumulated, opt = _copies(model_fn, optimizer_fn)
    run = trainer_run(accumulated, batches, k, opt, seed)
    large, large_opt = _copies(model_fn, optimizer_fn)
    trainer_run(large, batches, 1, large_opt, seed)
    gap = parameter_gap(accumulated.parameters(), large.parameters())
    broken = None
    if contrast:
        mean_k, mean_k_opt = _copies(model_fn, optimizer_fn)
        _plain_steps(mean_k, mean_k_opt, batches, k, "mean")
        broken = parameter_gap(mean_k.parameters(), large.parameters())
    worst, worst_gap = diverged(accumulated, large)
    transformers = require_transformers()
    return Checked(
        "trainer_accumulation",
        f"Trainer with gradient_accumulation_steps={k} takes the steps of Trainer on the {k}-times larger batch "
        f"after {len(batches)} steps",
        "equal",
        gap,
        rtol(torch.float32),
        {
            "k": k,
            "steps": run["steps"],
            "predicted_tokens_per_micro_batch": [[predicted_tokens(p) for p in split(b, k)] for b in batches],
            "model_accepts_loss_kwargs": run["model_accepts_loss_kwargs"],
            "model": type(accumulated).__name__,
            "transformers": transformers.__version__,
        },
        broken=broken,
        broken_recipe="each micro-batch's own mean / k",
        hint=f"the parameter that parted most: {worst} ({worst_gap:.3g})",
    )


def trainer_count(
    model_fn: Callable[[], nn.Module],
    batches: Sequence[Mapping[str, torch.Tensor]],
    *,
    optimizer_fn: Callable[..., torch.optim.Optimizer] | None = None,
    seed: int = 0,
    contrast: bool = True,
) -> Checked:
    """Trainer's step (no accumulation) is the model's own step: the loss over the labels the
    model predicts, its token mean (the model shifts Hugging Face's labels, so each sequence's
    first label is predicted by nothing); after ``len(batches)`` steps Trainer's parameters and a
    plain loop's on the model's own loss agree to float32's rounding. Trainer divides by
    ``num_items_in_batch`` where the model takes loss kwargs: counting every label, the first of
    each row too, makes each step smaller by the share of rows in the count (the broken side,
    trained in a plain loop, must be beyond the bound)."""
    batches = _lm_batches(batches, "trainer_count")
    optimizer_fn = optimizer_fn or sgd(lr=0.1, momentum=0.0)
    require_no_dropout(model_fn(), "trainer_count")
    trained, opt = _copies(model_fn, optimizer_fn)
    run = trainer_run(trained, batches, 1, opt, seed)
    own, own_opt = _copies(model_fn, optimizer_fn)
    _plain_steps(own, own_opt, batches)
    broken = None
    if contrast:
        counted, counted_opt = _copies(model_fn, optimizer_fn)
        _plain_steps(counted, counted_opt, batches, recipe="unshifted")
        broken = parameter_gap(counted.parameters(), own.parameters())
    worst, worst_gap = diverged(trained, own)
    transformers = require_transformers()
    hint = f"the parameter that parted most: {worst} ({worst_gap:.3g})"
    if run["model_accepts_loss_kwargs"] and getattr(trained, "loss_type", None) != "ForCausalLM":
        hint += (
            f"; likely: Trainer counts every label where the model's loss_type is not ForCausalLM "
            f"({type(trained).__name__}'s is {getattr(trained, 'loss_type', None)!r}): set model.loss_type = "
            "'ForCausalLM' before building Trainer (transformers >= 5.10 then counts labels[..., 1:])"
        )
    return Checked(
        "trainer_count",
        f"Trainer's step is the model's own (its token mean over the labels it predicts) after {len(batches)} steps",
        "equal",
        parameter_gap(trained.parameters(), own.parameters()),
        rtol(torch.float32),
        {
            "steps": run["steps"],
            "predicted": [predicted_tokens(b) for b in batches],
            "labels": [int((b["labels"] != IGNORE_INDEX).sum()) for b in batches],
            "model_accepts_loss_kwargs": run["model_accepts_loss_kwargs"],
            "loss_type": getattr(trained, "loss_type", None),
            "model": type(trained).__name__,
            "transformers": transformers.__version__,
        },
        broken=broken,
        broken_recipe="the token sum over every label (the first of each row too)",
        hint=hint,
    )


def trainer_logged_loss(
    model_fn: Callable[[], nn.Module],
    batches: Sequence[Mapping[str, torch.Tensor]],
    *,
    k: int,
    optimizer_fn: Callable[..., torch.optim.Optimizer] | None = None,
    seed: int = 0,
) -> Checked:
    """The loss Trainer logs at each step under ``gradient_accumulation_steps=k`` is the loss of
    the step, as Trainer logs it for the k-times larger batch without accumulation: each logged
    value is divided by the large batch's token mean at the parameters before that step, for both
    runs, and the gap is the largest relative gap of the two ratios over the steps (a count that
    Trainer gets wrong in both is :func:`trainer_count`'s claim; Trainer rounds what it logs to 4
    decimals: :data:`LOGGED_MAX_GAP`). The broken side, the mean of the micro-batches' own means
    (what Trainer logged before 4.46), at the same parameters, must be beyond the bound."""
    batches = _lm_batches(batches, "trainer_logged_loss")
    optimizer_fn = optimizer_fn or sgd(lr=0.1, momentum=0.0)
    require_no_dropout(model_fn(), "trainer_logged_loss")
    probe = model_fn().float()

    def over_large(k_run: int) -> tuple[list[float], list[float], dict[str, Any]]:
        model, opt = _copies(model_fn, optimizer_fn)
        run = trainer_run(model, batches, k_run, opt, seed)
        if len(run["logged"]) != len(batches):
            raise Misuse(f"trainer_logged_loss: Trainer logged {len(run['logged'])} losses over {len(batches)} steps")
        ratios, broken = [], []
        with torch.no_grad():
            for params, whole, logged in zip(run["before"], batches, run["logged"], strict=True):
                for p, value in zip(probe.parameters(), params, strict=True):
                    p.copy_(value)
                probe.train()
                large = float(probe(**whole).loss)
                ratios.append(logged / large)
                broken.append(sum(float(probe(**part).loss) for part in split(whole, k)) / k / large)
        return ratios, broken, run

    accumulated, means, run = over_large(k)
    large, _, _ = over_large(1)
    gaps = [abs(a / b - 1) for a, b in zip(accumulated, large, strict=True)]
    broken = [abs(m / b - 1) for m, b in zip(means, large, strict=True)]
    transformers = require_transformers()
    return Checked(
        "trainer_logged_loss",
        f"the loss Trainer logs with gradient_accumulation_steps={k} is the step's, as it logs the {k}-times larger "
        "batch's",
        "equal",
        max(gaps),
        LOGGED_MAX_GAP,
        {
            "k": k,
            "steps": run["steps"],
            "accumulated_over_large_mean": accumulated,
            "large_over_large_mean": large,
            "logged": run["logged"],
            "model": type(probe).__name__,
            "transformers": transformers.__version__,
        },
        broken=max(broken),
        broken_recipe="the mean of the micro-batches' own means",
    )


# --------------------------------------------------------------------------- the model's own loss


def model_loss_with_num_items(
    model_fn: Callable[[], nn.Module], batches: Sequence[Mapping[str, torch.Tensor]], *, k: int
) -> Checked:
    """A causal LM's own loss given ``num_items_in_batch`` (the step's count of predicted labels)
    returns each micro-batch's token sum over that count, so the k micro-batches' losses add up to
    the whole batch's token mean: the gap is the largest relative gap of that sum to the whole
    batch's loss. The broken side, without ``num_items_in_batch`` (each micro-batch's own mean,
    added up), must be beyond the bound. A model whose forward does not take the argument (GPT-2
    before transformers 4.48) does not hold: the gap is NaN, with the error."""
    batches = _lm_batches(batches, "model_loss_with_num_items")
    model = model_fn().float()
    model.train()
    require_no_dropout(model, "model_loss_with_num_items")
    gaps, broken = [], []
    refused = ""
    with torch.no_grad():
        for whole in batches:
            large = float(model(**whole).loss)
            count = sum(predicted_tokens(p) for p in split(whole, k))
            try:
                total = sum(float(model(**p, num_items_in_batch=count).loss) for p in split(whole, k))
            except TypeError as err:
                refused = f"{type(model).__name__}.forward refuses num_items_in_batch ({str(err)[:120]})"
                total = math.nan
            gaps.append(abs(total / large - 1))
            broken.append(abs(sum(float(model(**p).loss) for p in split(whole, k)) / large - 1))
    result = Checked(
        "model_loss_with_num_items",
        f"the model's own loss with num_items_in_batch, added over {k} micro-batches, is the whole batch's token mean",
        "equal",
        max(gaps),
        rtol(torch.float32),
        {"k": k, "gap_per_batch": gaps, "takes_num_items_in_batch": not refused},
        broken=max(broken),
        broken_recipe="each micro-batch's own mean, added up",
    )
    if refused:
        result.refute(refused)
    return result


# --------------------------------------------------------------------------- gradient checkpointing


def _grads(model: nn.Module) -> list[torch.Tensor]:
    return [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]


def gradient_checkpointing(
    model_fn: Callable[[], nn.Module],
    batches: Sequence[Mapping[str, torch.Tensor]],
    *,
    kwargs: dict[str, Any] | None = None,
    seed: int = 0,
    contrast: bool = True,
) -> Checked:
    """``model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)`` (default:
    Hugging Face's own, ``use_reentrant=True``) leaves every gradient unchanged, bit for bit, with
    Dropout on in training mode: a plain copy and a checkpointed one, each seeded once, over the
    batches (the gap: the largest relative gap of the gradients). The broken side, the same with
    ``preserve_rng_state=False``, must differ: a model that draws nothing random in its
    checkpointed layers cannot tell, and says so."""
    batches = _lm_batches(batches, "gradient_checkpointing")
    base = model_fn().float()
    if not any(isinstance(m, nn.Dropout) and m.p > 0 for m in base.modules()):
        raise Misuse("gradient_checkpointing: the model has no Dropout with p > 0: the claim is about its masks")

    implicit: list[str] = []  # torch's warning where transformers leaves use_reentrant to torch's default

    def gradients(settings: dict[str, Any] | None) -> list[list[torch.Tensor]]:
        model = copy.deepcopy(base)
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")  # "use_cache=True is incompatible with gradient checkpointing"
            if settings is not None:
                enable(model)(settings or None)
            model.train()
            torch.manual_seed(seed)
            out = []
            for b in batches:
                model.zero_grad(set_to_none=True)
                model(**b).loss.backward()
                out.append(_grads(model))
        implicit.extend(
            str(w.message)[:160] for w in seen if "use_reentrant parameter should be passed" in str(w.message)
        )
        return out

    def gap(a: list[list[torch.Tensor]], b: list[list[torch.Tensor]]) -> float:
        return max(parameter_gap(x, y) for x, y in zip(a, b, strict=True))

    def enable(model: nn.Module) -> Callable[[Any], None]:
        # activation_checkpointing_enable where the release has it (transformers 5.x deprecates the old name)
        if hasattr(model, "activation_checkpointing_enable"):
            return lambda s: model.activation_checkpointing_enable(activation_checkpointing_kwargs=s)
        return lambda s: model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=s)

    plain = gradients(None)
    checkpointed = gradients(dict(kwargs or {}))
    broken = gap(gradients({**(kwargs or {}), "preserve_rng_state": False}), plain) if contrast else None
    return Checked(
        "gradient_checkpointing",
        f"gradient_checkpointing_enable({kwargs or ''}) leaves every gradient unchanged with Dropout on",
        "exact",
        gap(checkpointed, plain),
        0.0,
        {"batches": len(batches), "kwargs": dict(kwargs or {}), "torch_warned": sorted(set(implicit))},
        broken=broken,
        broken_recipe="preserve_rng_state=False",
    )


# --------------------------------------------------------------------------- the collator


def word_tokenizer(words: Sequence[str], eos: str = "<eos>", pad: str | None = None) -> Any:
    """A word-level tokenizer built here (no download): ``words`` and ``eos`` (and ``pad`` where it
    is a token of its own), with ``eos`` as the pad token where ``pad`` is None (GPT-2's practice)."""
    require_transformers()
    import tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, eos: 1} | ({pad: 2} if pad else {})
    for word in words:
        vocab.setdefault(word, len(vocab))
    model = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    model.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=model, unk_token="[UNK]", eos_token=eos, pad_token=pad or eos)


def collator_labels(tokenizer: Any, texts: Sequence[str]) -> dict[str, int]:
    """What ``DataCollatorForLanguageModeling(tokenizer, mlm=False)`` does to the labels of
    ``texts`` (each ending in the EOS token): how many real EOS labels it masks (-100), how many
    other real labels, and how many padding labels it leaves."""
    require_transformers()
    from transformers import DataCollatorForLanguageModeling

    features = [{"input_ids": tokenizer(t)["input_ids"]} for t in texts]
    batch = DataCollatorForLanguageModeling(tokenizer=tokenizer, mlm=False)(features)
    ids, labels = batch["input_ids"], batch["labels"]
    real = torch.zeros_like(ids, dtype=torch.bool)
    for i, f in enumerate(features):
        n = len(f["input_ids"])
        if tokenizer.padding_side == "left":
            real[i, ids.shape[1] - n :] = True
        else:
            real[i, :n] = True
    eos = real & (ids == tokenizer.eos_token_id)
    return {
        "real_eos": int(eos.sum()),
        "real_eos_masked": int((labels[eos] == IGNORE_INDEX).sum()),
        "other_real_masked": int((labels[real & ~eos] == IGNORE_INDEX).sum()),
        "padding": int((~real).sum()),
        "padding_left": int((labels[~real] != IGNORE_INDEX).sum()),
    }
