"""NeuFace's convergence-aware schedule, window order, identity tying, graded multi-view confidence and the
official temporal-loss scale (pure functions; the fits themselves are in test_fitting.py)."""

from __future__ import annotations

import math

import pytest
import torch

from neuface.errors import NeufaceError
from neuface.fitting import losses as L
from neuface.fitting.config import PAPER_SCHEDULE, AnnotatorSettings, resolve_annotator
from neuface.fitting.neuface import Schedule, tied_shape, window_order


def run_schedule(settings: AnnotatorSettings, l2d: list[float]) -> tuple[int, Schedule, list[float]]:
    """Feed per-pass L2D values; returns (passes run, schedule, lr of each pass)."""
    sched, lrs = Schedule(lr=settings.lr), []
    for p, value in enumerate(l2d):
        lrs.append(sched.lr_for_pass(settings, p))
        if sched.end_pass(settings, p, value):
            return p + 1, sched, lrs
    return len(l2d), sched, lrs


def test_stops_at_the_patience_th_plateau_and_decays_the_lr_before():
    s = AnnotatorSettings(lr=1e-3, converge_tol=0.01, patience=2, min_passes=3, lr_schedule="plateau",
                          lr_decay=0.5)
    # 10 % better per pass for 5 passes, then flat: plateau at pass 6 (lr halved), stop at pass 7
    l2d = [1.0 * 0.9 ** i for i in range(5)] + [0.9 ** 4] * 10
    n, sched, lrs = run_schedule(s, l2d)
    assert n == 7 and sched.plateaus == 2 and "converged" in sched.stop_reason
    assert lrs[:6] == [1e-3] * 6 and lrs[6] == pytest.approx(5e-4)
    assert sched.pass_l2d == l2d[:7]


def test_a_loss_still_falling_never_stops_and_tol_zero_is_the_fixed_schedule():
    falling = [0.95 ** i for i in range(40)]  # 5 % per pass > tol
    n, sched, _ = run_schedule(AnnotatorSettings(converge_tol=0.01), falling)
    assert n == 40 and sched.stop_reason == "" and sched.plateaus == 0
    flat = [1.0] * 30
    n, sched, lrs = run_schedule(AnnotatorSettings(converge_tol=0.0, lr=2e-5), flat)
    assert n == 30 and sched.plateaus == 0 and set(lrs) == {2e-5}


def test_min_passes_and_a_worse_pass_count_as_plateau():
    s = AnnotatorSettings(converge_tol=0.01, patience=1, min_passes=4)
    n, _, _ = run_schedule(s, [1.0, 1.0, 1.0, 1.0, 1.0])
    assert n == 4  # passes 2 and 3 are flat but come before min_passes
    n, _, _ = run_schedule(AnnotatorSettings(converge_tol=0.01, patience=1, min_passes=2), [1.0, 1.2, 1.0])
    assert n == 2  # a pass that got worse is a plateau too


def test_cosine_schedule_goes_from_lr_to_its_floor():
    s = AnnotatorSettings(lr=1.0, lr_schedule="cosine", lr_min_factor=0.1, n_passes=10, converge_tol=0.0)
    _, _, lrs = run_schedule(s, [1.0] * 10)
    assert lrs[0] == pytest.approx(1.0) and all(a > b for a, b in zip(lrs, lrs[1:], strict=False))
    assert lrs[-1] > 0.1 and lrs[-1] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.9)))


def test_window_order_is_a_seeded_permutation_per_pass():
    s = AnnotatorSettings(shuffle_windows=True, seed=3)
    orders = [window_order(9, s, p) for p in range(4)]
    assert all(sorted(o) == list(range(9)) for o in orders)
    assert len({tuple(o) for o in orders}) > 1  # changes from pass to pass
    assert orders == [window_order(9, s, p) for p in range(4)]  # and is the same on a rerun / resume
    assert window_order(9, s.replace(seed=4), 0) != orders[0]
    assert window_order(9, s.replace(shuffle_windows=False), 2) == list(range(9))


def test_tied_shape_modes():
    beta = torch.randn(6, 100, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(tied_shape(beta, "free"), beta)
    mean = tied_shape(beta, "mean")
    assert mean.shape == beta.shape and torch.allclose(mean, beta.mean(0).expand(6, -1))
    first = tied_shape(beta, "first")
    assert torch.equal(first, beta[:1].expand(6, -1))
    first.sum().backward()  # only the first image's β gets a gradient, as in the official code
    assert beta.grad[0].abs().sum() > 0 and beta.grad[1:].abs().sum() == 0


def test_softmax_view_confidence_analytic_and_masked():
    cos = torch.tensor([[[1.0, 0.5], [0.9, 0.5], [0.2, 0.1]]], dtype=torch.float64)  # (F=1, V=3, N=2)
    visible = torch.tensor([[[True, False], [True, False], [False, False]]])
    w = L.softmax_view_confidence(cos, visible, temperature=0.1)
    e = math.exp(1.0)  # exp((1.0 - 0.9) / 0.1)
    torch.testing.assert_close(w[0, :, 0], torch.tensor([e / (e + 1), 1 / (e + 1), 0.0], dtype=torch.float64))
    assert torch.equal(w[0, :, 1], torch.zeros(3, dtype=torch.float64))  # seen by no view: weight 0
    # a colder temperature gives the most frontal view more weight; a hotter one spreads it
    assert L.softmax_view_confidence(cos, visible, 0.02)[0, 0, 0] > w[0, 0, 0]
    assert L.softmax_view_confidence(cos, visible, 10.0)[0, 0, 0] < w[0, 0, 0]
    target = L.multiview_target(torch.randn(1, 3, 2, 3, dtype=torch.float64), w)
    assert torch.isfinite(target).all()


def test_temporal_loss_official_scale_against_a_loop():
    q = torch.nn.functional.normalize(torch.randn(7, 3, 4, dtype=torch.float64), dim=-1)
    t = torch.nn.functional.normalize(torch.randn(7, 3, 4, dtype=torch.float64), dim=-1)
    loop = sum(((q[:, v] - t[:, v]) ** 2).mean() for v in range(3))  # per-component MSE, summed over views
    torch.testing.assert_close(L.temporal_loss_official(q, t), loop)
    torch.testing.assert_close(L.temporal_loss_official(q, t), L.temporal_loss(q, t) * 3 / 4)


def test_paper_preset_is_the_official_schedule():
    s = resolve_annotator("neuface_paper")
    assert (s.lr, s.n_passes, s.window_frames, s.converge_tol, s.lr_schedule, s.shuffle_windows, s.shape_mode,
            s.lambda_beta, s.view_confidence, s.view_temperature) == \
        (2e-5, 100, 20, 0.0, "constant", False, "first", 0.0, "softmax", 0.1)
    assert PAPER_SCHEDULE["method"] == "neuface"


@pytest.mark.parametrize("bad", [{"lr_schedule": "step"}, {"shape_mode": "tied"}, {"view_confidence": "soft"},
                                 {"lr_decay": 0.0}, {"lr_decay": 1.5}, {"converge_tol": -1.0},
                                 {"view_temperature": 0.0}, {"patience": 0}, {"min_passes": -1}])
def test_schedule_settings_are_checked(bad):
    with pytest.raises(NeufaceError):
        AnnotatorSettings.from_dict(bad)
