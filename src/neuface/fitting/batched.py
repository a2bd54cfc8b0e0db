"""Many clips per device: NeuFace on K sequences in one process as one batched computation.

Every clip keeps its own copy of the optimised encoder weights (stacked along a leading K axis) and its own Adam
state, schedule, window order, E-step targets and loss curves — exactly the state of a single fit
(:func:`~neuface.fitting.neuface.fit_neuface`). A step runs the next window of every active clip through one
``torch.func.vmap`` of ``functional_call`` over the stacked weights (one forward and one backward for all K; a
convolution over stacked weights becomes a grouped convolution), then each clip's loss is computed from its own
outputs with the single fit's code, and one functional Adam update with per-clip learning rates and step counts
updates the clips that took part. The clips do not interact: the sum of their losses has, per clip, the gradient
of that clip's loss.

* Windows of different sizes (a shorter last window, clips with other view counts) are padded with copies of
  the window's last image; the padded outputs are dropped before the loss, so they get no gradient.
* A clip whose loss is non-finite or diverges is *dropped*: its slot takes no further step, it is reported as a
  :class:`~neuface.fitting.forward.FitFailure`, the others go on unchanged.
* Clips finish independently (each by its own stopping rule); finished clips leave the batch.

Results equal K single fits up to float rounding (grouped vs plain convolution; see the tests for the tolerance).
Not supported here: ``final_full_steps`` and ``compile`` (a single fit has them). Checkpoints are per batch (one
file for the K clips: stacked weights, Adam state and every clip's state; keyed by the settings and the inputs
the caller names), so a preempted batch resumes exactly where it stopped.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass, field, fields

import torch
from torch import nn
from torch.func import functional_call, vmap
from tqdm import tqdm

from neuface.encoders.base import EncoderOutput, FlameEncoder, freeze_batchnorm
from neuface.errors import NeufaceError
from neuface.fitting.checkpoint import Checkpointer
from neuface.fitting.config import AnnotatorSettings
from neuface.fitting.data import SequenceBatch, images_to_input
from neuface.fitting.estep import TargetCollector, Targets
from neuface.fitting.forward import FitFailure, autocast, frame_chunks, guard_loss, prepare_encoder
from neuface.fitting.neuface import (
    LOSS_NAMES,
    FitOutcome,
    Schedule,
    finish_fit,
    loss_from_output,
    next_targets,
    optimisable_parameters,
    window_order,
)
from neuface.flame import FlameLayer

log = logging.getLogger(__name__)

__all__ = ["StackedEncoder", "StackedAdam", "fit_neuface_batch"]

_FIELDS = tuple(f.name for f in fields(EncoderOutput))


class StackedEncoder:
    """K copies of ``encoder``'s conv/linear weights stacked on a leading axis; everything else shared.

    ``encoder`` must be prepared (eval, BatchNorm frozen); a copy of it is the functional template (inputs in the
    default memory format: channels-last is not available inside ``vmap``).
    """

    def __init__(self, encoder: FlameEncoder, k: int) -> None:
        encoder = copy.deepcopy(encoder).to(memory_format=torch.contiguous_format)
        encoder._channels_last = False
        self.base = encoder
        optimised = {id(p) for p in optimisable_parameters(encoder)}
        self.stacked: dict[str, torch.Tensor] = {}
        self.shared: dict[str, torch.Tensor] = {}
        for name, p in encoder.named_parameters():
            if id(p) in optimised:
                self.stacked[name] = p.detach().unsqueeze(0).repeat(k, *([1] * p.dim())).requires_grad_(True)
            else:
                self.shared[name] = p.detach()
        self.shared.update({name: b for name, b in encoder.named_buffers()})
        self.k = k

    def _call(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = functional_call(self.base, {**self.shared, **params}, (x,))
        return tuple(getattr(out, f) for f in _FIELDS)

    def __call__(self, x: torch.Tensor, clips: list[int]) -> list[EncoderOutput]:
        """(k', B, 3, S, S) float inputs of clips ``clips`` → their k' :class:`EncoderOutput` (B each)."""
        if len(clips) == self.k:
            params = self.stacked
        else:
            idx = torch.as_tensor(clips, device=x.device)
            params = {n: t.index_select(0, idx) for n, t in self.stacked.items()}
        outs = vmap(self._call, in_dims=(0, 0))(params, x)
        return [EncoderOutput(*(o[j].float() for o in outs)) for j in range(len(clips))]

    def clip(self, k: int) -> nn.Module:
        """A module computing clip ``k``'s encoder (no gradient): for its E-step and final prediction."""
        return _ClipModule(self, k)


class _ClipModule(nn.Module):
    def __init__(self, stack: StackedEncoder, k: int) -> None:
        super().__init__()
        self._stack, self._k = [stack], k  # a list: not registered as a submodule

    def forward(self, x: torch.Tensor) -> EncoderOutput:
        stack = self._stack[0]
        params = {n: t[self._k].detach() for n, t in stack.stacked.items()}
        return functional_call(stack.base, {**stack.shared, **params}, (x,))


class StackedAdam:
    """Adam (torch's update, no weight decay, no AMSGrad) on stacked tensors, with a learning rate and a step
    count per clip; :meth:`step` updates only the clips it is given."""

    def __init__(self, params: dict[str, torch.Tensor], k: int, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        self.params, self.k, self.betas, self.eps = params, k, betas, eps
        self.exp_avg = {n: torch.zeros_like(p) for n, p in params.items()}
        self.exp_avg_sq = {n: torch.zeros_like(p) for n, p in params.items()}
        self.steps = [0] * k

    def state(self) -> dict:
        return {"exp_avg": {n: t.clone() for n, t in self.exp_avg.items()},
                "exp_avg_sq": {n: t.clone() for n, t in self.exp_avg_sq.items()}, "steps": list(self.steps)}

    def load_state(self, state: dict) -> None:
        for name in self.params:
            self.exp_avg[name].copy_(state["exp_avg"][name])
            self.exp_avg_sq[name].copy_(state["exp_avg_sq"][name])
        self.steps = list(state["steps"])

    @torch.no_grad()
    def step(self, clips: list[int], lrs: list[float]) -> None:
        if not clips:
            return
        b1, b2 = self.betas
        for k in clips:
            self.steps[k] += 1
        idx = torch.as_tensor(clips, device=next(iter(self.params.values())).device)
        step_size = torch.tensor([lr / (1 - b1 ** self.steps[k]) for k, lr in zip(clips, lrs, strict=True)],
                                 dtype=torch.float64)
        bc2_sqrt = torch.tensor([math.sqrt(1 - b2 ** self.steps[k]) for k in clips], dtype=torch.float64)
        for name, p in self.params.items():
            g = p.grad.index_select(0, idx)
            shape = (-1,) + (1,) * (p.dim() - 1)
            m = self.exp_avg[name].index_select(0, idx).mul_(b1).add_(g, alpha=1 - b1)
            v = self.exp_avg_sq[name].index_select(0, idx).mul_(b2).addcmul_(g, g, value=1 - b2)
            denom = (v.sqrt() / bc2_sqrt.to(p).reshape(shape)).add_(self.eps)
            new = p.index_select(0, idx) - step_size.to(p).reshape(shape) * (m / denom)
            self.exp_avg[name].index_copy_(0, idx, m)
            self.exp_avg_sq[name].index_copy_(0, idx, v)
            p.index_copy_(0, idx, new)


@dataclass
class _Clip:
    """One clip's state in the batch (what a single fit keeps in local variables)."""

    seq: SequenceBatch
    windows: list[tuple[int, int]]
    sched: Schedule
    collector: TargetCollector | None
    targets: Targets = Targets()
    pass_idx: int = 0
    win_idx: int = 0
    order: list[int] = field(default_factory=list)
    pass_sum: list[float] = field(default_factory=lambda: [0.0, 0])
    losses: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in LOSS_NAMES})
    step: int = 0
    initial: float = math.nan
    lr: float = 0.0
    passes_run: int = 0
    failure: FitFailure | None = None
    finished: bool = False

    @property
    def active(self) -> bool:
        return self.failure is None and not self.finished

    _SCALARS = ("pass_idx", "win_idx", "order", "pass_sum", "losses", "step", "initial", "lr", "passes_run",
                "finished")

    def state(self) -> dict:
        """Everything the remaining steps depend on, as plain values and tensors (``weights_only`` loadable)."""
        return {**{k: getattr(self, k) for k in self._SCALARS}, "sched": self.sched.state(),
                "targets": tuple(self.targets), "failure": None if self.failure is None else str(self.failure),
                "collector": None if self.collector is None else self.collector.state()}

    def load_state(self, state: dict) -> None:
        for k in self._SCALARS:
            setattr(self, k, state[k])
        self.sched = Schedule(**state["sched"])
        self.targets = Targets(*state["targets"])
        self.failure = None if state["failure"] is None else FitFailure(state["failure"])
        if self.collector is not None and state["collector"] is not None:
            self.collector.load_state(state["collector"])


def fit_neuface_batch(encoder: FlameEncoder, flame: FlameLayer, seqs: list[SequenceBatch],
                      settings: AnnotatorSettings, device: torch.device,
                      checkpointer: Checkpointer | None = None) -> list[FitOutcome | FitFailure]:
    """NeuFace on every sequence of ``seqs`` at once, each from ``encoder``'s weights (left unchanged).

    Args:
        checkpointer: one checkpoint for the batch, written every ``checkpoint_every`` batched steps and on
            SIGTERM (then :class:`~neuface.fitting.checkpoint.Preempted` is raised); its ``inputs`` should name
            every clip's input digests. A matching checkpoint is resumed.
    Returns:
        per sequence in order, its :class:`~neuface.fitting.neuface.FitOutcome` or the
        :class:`~neuface.fitting.forward.FitFailure` that dropped it.
    """
    if not seqs:
        return []
    if settings.method != "neuface":
        raise NeufaceError(f"batched fitting is for method 'neuface', got {settings.method!r}")
    if settings.final_full_steps or settings.compile:
        raise NeufaceError("final_full_steps and compile are not supported by the K-clip batched fit")
    prepare_encoder(encoder, device, channels_last=False)
    freeze_batchnorm(encoder, freeze_affine=True)
    flame = flame.to(device)
    input_size = int(getattr(encoder, "input_size", 224))
    stack = StackedEncoder(encoder, len(seqs))
    adam = StackedAdam(stack.stacked, len(seqs))
    clips = [_Clip(seq, frame_chunks(seq.n_frames, 1, settings.window_frames), Schedule(lr=settings.lr),
                   TargetCollector(seq.n_frames, seq.n_views, settings) if settings.e_step == "reuse" else None)
             for seq in seqs]
    total_max = sum(settings.n_passes * len(c.windows) for c in clips)
    bar = tqdm(total=total_max, desc=f"neuface x{len(seqs)}", unit="step", disable=not settings.progress,
               leave=False)
    batch_step = _resume(checkpointer, stack, adam, clips)
    bar.update(sum(c.step for c in clips))

    def payload() -> dict:
        return {"stacked": {n: t.detach().clone() for n, t in stack.stacked.items()},
                "adam": adam.state(), "clips": [c.state() for c in clips], "sequences": [s.sequence for s in seqs]}

    try:
        for c in clips:
            if settings.n_passes == 0:
                c.finished = True
        while any(c.active for c in clips):
            active = [k for k, c in enumerate(clips) if c.active]
            for k in active:
                _start_pass_if_due(clips[k], stack, k, flame, settings, device, input_size)
            _batched_step(stack, adam, clips, active, flame, settings, device, input_size, bar)
            batch_step += 1
            if checkpointer is not None:
                checkpointer.after_step(batch_step, payload)
    finally:
        bar.close()
    results: list[FitOutcome | FitFailure] = []
    for k, c in enumerate(clips):
        if c.failure is not None:
            log.error("%s: dropped from the batch: %s", c.seq.sequence, c.failure)
            results.append(c.failure)
            continue
        if not c.sched.stop_reason:
            c.sched.stop_reason = f"maximum of {settings.n_passes} passes"
        try:
            results.append(finish_fit(stack.clip(k), c.seq, settings, device, input_size, c.windows, c.sched,
                                      c.losses, c.step, c.passes_run, c.lr or settings.lr))
        except FitFailure as exc:
            results.append(exc)
    return results


def _resume(checkpointer: Checkpointer | None, stack: StackedEncoder, adam: StackedAdam, clips: list[_Clip]) -> int:
    """Load a matching batch checkpoint into the batch; returns the batched steps already done (0: fresh)."""
    ckpt = checkpointer.load() if checkpointer is not None else None
    if ckpt is None:
        return 0
    names = [c.seq.sequence for c in clips]
    if ckpt.get("sequences") != names:
        log.warning("discarding the batch checkpoint %s: it is of the clips %s, this batch is %s; starting fresh",
                    checkpointer.path, ckpt.get("sequences"), names)
        return 0
    with torch.no_grad():
        for name, t in stack.stacked.items():
            t.copy_(ckpt["stacked"][name])
    adam.load_state(ckpt["adam"])
    for c, state in zip(clips, ckpt["clips"], strict=True):
        c.load_state(state)
    return int(ckpt["step"])


def _start_pass_if_due(c: _Clip, stack: StackedEncoder, k: int, flame: FlameLayer, settings: AnnotatorSettings,
                       device: torch.device, input_size: int) -> None:
    if c.win_idx:
        return
    c.targets = next_targets(stack.clip(k), flame, c.seq, settings, device, input_size, c.collector)
    c.lr = c.sched.lr_for_pass(settings, c.pass_idx)
    c.order = window_order(len(c.windows), settings, c.pass_idx)


def _batched_step(stack: StackedEncoder, adam: StackedAdam, clips: list[_Clip], active: list[int],
                  flame: FlameLayer, settings: AnnotatorSettings, device: torch.device, input_size: int,
                  bar: tqdm) -> None:
    spans = [clips[k].windows[clips[k].order[clips[k].win_idx]] for k in active]
    inputs = [images_to_input(clips[k].seq.images[s:e].flatten(0, 1), input_size, device)
              for k, (s, e) in zip(active, spans, strict=True)]
    n_max = max(x.shape[0] for x in inputs)
    x = torch.stack([torch.cat([x, x[-1:].expand(n_max - x.shape[0], -1, -1, -1)]) for x in inputs])
    with autocast(device, settings.amp):
        outs = stack(x, active)
    total, stepped, parts_of = None, [], {}
    for j, (k, (s, e)) in enumerate(zip(active, spans, strict=True)):
        c = clips[k]
        out = outs[j].index(slice(0, inputs[j].shape[0]))
        loss, parts = loss_from_output(out, flame, c.seq, s, e, settings, device, c.targets, c.collector)
        try:
            c.initial = guard_loss(float(loss.detach()), c.initial, settings.divergence_factor,
                                   f"pass {c.pass_idx} window {c.order[c.win_idx]} (step {c.step})")
        except FitFailure as exc:
            c.failure = exc
            log.warning("%s: %s; dropped from the batch, the other clips go on", c.seq.sequence, exc)
            continue
        total = loss if total is None else total + loss
        stepped.append(k)
        parts_of[k] = (parts, float(loss.detach()), e - s)
    for t in stack.stacked.values():
        t.grad = None
    if total is not None:
        total.backward()
    adam.step(stepped, [clips[k].lr for k in stepped])
    for k in stepped:
        _advance(clips[k], settings, *parts_of[k])
        bar.update(1)


def _advance(c: _Clip, settings: AnnotatorSettings, parts: dict, value: float, n_frames: int) -> None:
    c.step += 1
    for name in LOSS_NAMES:
        c.losses[name].append(float(parts[name]))
    c.pass_sum[0] += float(parts["l2d"]) * n_frames
    c.pass_sum[1] += n_frames
    c.win_idx += 1
    if c.win_idx < len(c.windows):
        return
    stop = c.sched.end_pass(settings, c.pass_idx, c.pass_sum[0] / max(1, c.pass_sum[1]))
    c.pass_sum = [0.0, 0]
    c.pass_idx += 1
    c.passes_run = c.pass_idx
    c.win_idx = 0
    if stop or c.pass_idx >= settings.n_passes:
        c.finished = True
