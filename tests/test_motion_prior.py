"""Facial motion prior: state construction against naive loops, the CVAE's pieces (KL, velocity consistency,
gradcheck), the one-step likelihood against the constant-velocity baseline on held-out synthetic motion, rollouts,
the strict prior file, kill-and-resume of training, and the CLI (train / sample / eval, h5 verify / export)."""

from __future__ import annotations

import json
import logging

import h5py
import numpy as np
import pytest
import torch
from test_fit_resume import StopAfter
from train_helpers import pack_motion_dataset, tiny_flame_files

from neuface.errors import ModelFormatError, NeufaceError
from neuface.fitting.checkpoint import Preempted
from neuface.geometry.rotations import axis_angle_to_matrix, matrix_to_axis_angle
from neuface.synthetic.motion import sample_motion
from neuface.train.motion_prior import (
    constant_velocity_nll,
    constant_velocity_prediction,
    cvae_one_step_nll,
    fit_constant_velocity,
    gaussian_kl,
    load_motion_prior,
)
from neuface.train.motion_sample import STABILITY_FACTOR, rollout
from neuface.train.motion_state import (
    Segment,
    StateLayout,
    consistent_velocities,
    motion_states,
    normalisation_stats,
    project_rotation,
    state_rotations,
    transition_pairs,
)
from neuface.train.motion_train import PriorSettings, PriorTrainer, split_validation, train_motion_prior

FPS = 25.0


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    return tiny_flame_files(tmp_path_factory.mktemp("kit"))


def synthetic_segments(layer, seeds, n_frames: int) -> list[Segment]:
    out = []
    for seed in seeds:
        m = sample_motion(n_frames, fps=FPS, seed=seed)
        states = motion_states(layer, torch.as_tensor(m.shape), torch.as_tensor(m.expression),
                               torch.as_tensor(m.global_pose), torch.as_tensor(m.pose[:, 3:6]), FPS).float()
        out.append(Segment(states, "synthetic", f"m{seed}", "front", 0, FPS, torch.as_tensor(m.shape).float()))
    return out


def test_state_against_naive_loops(kit):
    layer = kit["layer"]
    m = sample_motion(12, fps=FPS, seed=5)
    x = motion_states(layer, torch.as_tensor(m.shape), torch.as_tensor(m.expression), torch.as_tensor(m.global_pose),
                      torch.as_tensor(m.pose[:, 3:6]), FPS)
    lay = StateLayout(50)
    assert x.shape == (12, lay.dim) and lay.dim == 12 + 50 + 408
    p = lay.parts
    rot = axis_angle_to_matrix(torch.as_tensor(m.global_pose))
    torch.testing.assert_close(state_rotations(x, lay), rot)  # 6D -> rotation
    torch.testing.assert_close(project_rotation(x, lay), x)  # valid 6D is a fixed point of the projection
    for t in range(12):  # one FLAME call per frame: head-local landmarks (no global, neck or eye rotation)
        pose = torch.zeros(1, 12, dtype=torch.float64)
        pose[0, 3:6] = torch.as_tensor(m.pose[t, 3:6])
        ref = layer(shape=torch.as_tensor(m.shape)[None], expression=torch.as_tensor(m.expression[t])[None],
                    pose=pose).landmarks3d[0]
        torch.testing.assert_close(x[t, p["landmarks"]].reshape(68, 3), ref)
        prev = max(t, 1) - 1  # backward differences; frame 0 takes frame 1's
        cur = max(t, 1)
        v_ref = (x[cur, p["landmarks"]] - x[prev, p["landmarks"]]) * FPS
        torch.testing.assert_close(x[t, p["landmark_vel"]], v_ref)
        w_ref = matrix_to_axis_angle(rot[cur] @ rot[prev].T) * FPS
        torch.testing.assert_close(x[t, p["rot_vel"]], w_ref)
    torch.testing.assert_close(x[:, p["jaw"]], torch.as_tensor(m.pose[:, 3:6]))
    torch.testing.assert_close(x[:, p["expression"]], torch.as_tensor(m.expression))
    # velocities re-derived from the next state's positions reproduce the data exactly
    torch.testing.assert_close(consistent_velocities(x[1:], x[:-1], FPS, lay), x[1:])
    with pytest.raises(NeufaceError, match="2 frames"):
        motion_states(layer, torch.as_tensor(m.shape), torch.as_tensor(m.expression[:1]),
                      torch.as_tensor(m.global_pose[:1]), torch.as_tensor(m.pose[:1, 3:6]), FPS)


def test_constant_velocity_prediction_is_exact_for_constant_velocity():
    lay = StateLayout(2)
    t = torch.arange(4, dtype=torch.float64)
    omega = torch.tensor([0.1, -0.3, 0.2], dtype=torch.float64)
    rot = axis_angle_to_matrix(t[:, None] * omega / FPS)  # R_t = exp(t ω / fps)
    lmk = torch.randn(68 * 3, dtype=torch.float64) + t[:, None] * 0.01
    x = torch.cat([rot[..., :, 0], rot[..., :, 1], omega.expand(4, 3), torch.zeros(4, 5), lmk,
                   torch.full((4, 204), 0.01 * FPS, dtype=torch.float64)], dim=1)
    pred = constant_velocity_prediction(x[:-1], torch.full((3,), FPS, dtype=torch.float64), lay)
    torch.testing.assert_close(pred, x[1:])


def test_kl_matches_torch_distributions_and_gradchecks():
    from torch.distributions import Normal, kl_divergence

    g = torch.Generator().manual_seed(0)
    mq, lq, mp, lp = (torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(4))
    ref = kl_divergence(Normal(mq, (0.5 * lq).exp()), Normal(mp, (0.5 * lp).exp())).sum(-1)
    torch.testing.assert_close(gaussian_kl(mq, lq, mp, lp), ref)
    assert torch.autograd.gradcheck(gaussian_kl, (mq, lq, mp, lp))
    lay = StateLayout(1)
    a = torch.randn(2, lay.dim, generator=g, dtype=torch.float64)
    b = (a + 0.01 * torch.randn(2, lay.dim, generator=g, dtype=torch.float64)).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda n: consistent_velocities(n, a, FPS, lay), (b,))


def _trained(segments, steps=700, **kw):
    pairs = transition_pairs(segments)
    norm = normalisation_stats([s.states for s in segments])
    settings = PriorSettings(steps=steps, batch_size=128, hidden=128, latent_dim=16, lr=2e-3, **kw)
    trainer = PriorTrainer(pairs["states"], pairs["src"], pairs["dst"], pairs["fps"], norm, StateLayout(50),
                           settings)
    trainer.run()
    return trainer, pairs, norm


def test_cvae_one_step_likelihood_beats_constant_velocity_on_held_out_motion(kit):
    from neuface.train.motion_prior import constant_velocity_base

    lay = StateLayout(50)
    train = synthetic_segments(kit["layer"], range(160), 50)
    test = synthetic_segments(kit["layer"], range(1000, 1006), 100)  # seeds never seen in training
    trainer, pairs, norm = _trained(train)
    cv_sigma = fit_constant_velocity(pairs["states"][pairs["src"]], pairs["states"][pairs["dst"]], pairs["fps"],
                                     norm, lay)
    tp = transition_pairs(test)
    x, src, dst, fps = tp["states"], tp["src"], tp["dst"], tp["fps"]
    cv = constant_velocity_nll(x[src], x[dst], fps, norm, lay, cv_sigma).mean()
    xn = (x - norm["mean"]) / norm["std"]
    base = constant_velocity_base(xn[src], fps, norm, lay)
    cvae = cvae_one_step_nll(trainer.model.eval(), xn[src], xn[dst], base,
                             generator=torch.Generator().manual_seed(0)).mean()
    logging.getLogger(__name__).info("held-out one-step NLL per dim: CVAE %.3f, constant velocity %.3f", cvae, cv)
    assert cvae < cv - 0.2, (float(cvae), float(cv))


def test_rollout_ten_seconds_finite_bounded_and_diverse(kit, tmp_path):
    """Without any clamp: the decoder's damped dynamics and bounded innovation keep 10 s of samples near the
    training range (the `stable` criterion of `neuface prior eval`)."""
    root = tmp_path
    data = pack_motion_dataset(root, kit["flame"], range(6), n_frames=40)
    out = root / "prior.pt"
    train_motion_prior([data], kit["flame"], kit["embedding"], out,
                       PriorSettings(steps=30, batch_size=32, hidden=32, latent_dim=8))
    prior = load_motion_prior(out)
    x0 = prior.raw["normalisation"]["mean"][None]
    g = torch.Generator().manual_seed(0)
    samples = rollout(prior, x0, FPS, 250, 4, g)
    assert samples.shape == (1, 4, 251, prior.layout.dim)
    assert torch.isfinite(samples).all()
    n = prior.normalisation
    lo, hi = n["min"] - STABILITY_FACTOR * (n["max"] - n["min"]), n["max"] + STABILITY_FACTOR * (n["max"] - n["min"])
    assert (samples >= lo).all() and (samples <= hi).all()
    assert (samples[0, 0] - samples[0, 1]).abs().max() > 0  # latent draws differ per sample
    again = rollout(prior, x0, FPS, 250, 4, torch.Generator().manual_seed(0))
    torch.testing.assert_close(again, samples)  # seeded


def test_decoder_dynamics_stay_bounded_whatever_the_network_says():
    """An adversarial decoder (huge weights, always pushing one way) cannot make the mean diverge: outside the
    support box a position follows the damped spring p' = p + κ(1−r)(p − p_prev) − r·e + Δ with |Δ| <=
    MAX_INNOVATION σ_d, so it settles at a bounded distance from the box; inside the box the box changes nothing."""
    from neuface.train.motion_prior import MAX_INNOVATION, RESTORE, MotionCVAE

    torch.manual_seed(0)
    model = MotionCVAE(state_dim=4, latent_dim=2, hidden=8)
    x_in, base_in = torch.rand(3, 4) - 0.5, torch.rand(3, 4) - 0.5
    free = model.decode(torch.zeros(3, 2), x_in, base_in)
    model.set_box({"min": -torch.ones(4), "max": torch.ones(4), "mean": torch.zeros(4), "std": torch.ones(4)},
                  margin=0.0)
    torch.testing.assert_close(model.decode(torch.zeros(3, 2), x_in, base_in, support=True), free, rtol=0, atol=0)
    with torch.no_grad():
        model.decoder_net[-1].bias.fill_(1e6)
    bound = 1.0 + 2.0 * MAX_INNOVATION / RESTORE  # σ_d = 1 here
    prev = x = torch.zeros(1, 4)
    worst = 0.0
    for _ in range(20000):
        base = x + (x - prev)  # the constant-velocity step in normalised units
        prev, x = x, model.decode(torch.zeros(1, 2), x, base, support=True)
        worst = max(worst, float(x.abs().max()))
        assert torch.isfinite(x).all() and worst <= bound, worst
    assert worst > 1.0  # it did push past the box: the bound is what held it
    prev = x = torch.zeros(1, 4)
    for _ in range(200):  # without the support step (the likelihood's mean) the same push runs away
        prev, x = x, model.decode(torch.zeros(1, 2), x, x + (x - prev))
    assert float(x.abs().max()) > 10 * bound


def test_untrained_model_is_the_constant_velocity_baseline(kit):
    """ρ and κ start within 1e-5 of 1 and the decoder σ at the baseline's residual scale, so an untrained CVAE
    scores held-out motion like the constant-velocity baseline (the difference is the small initial KL)."""
    segs = synthetic_segments(kit["layer"], range(6), 40)
    train, held = segs[:4], segs[4:]
    pairs, vp = transition_pairs(train), transition_pairs(held)
    norm = normalisation_stats([s.states for s in train])
    lay = StateLayout(50)
    trainer = PriorTrainer(pairs["states"], pairs["src"], pairs["dst"], pairs["fps"], norm, lay,
                           PriorSettings(hidden=16, latent_dim=4), validation=vp)
    rho, kappa = trainer.model.dynamics()
    assert float((1 - rho).max()) < 2e-5 and float((1 - kappa).max()) < 2e-5 and float(rho.max()) < 1.0
    sigma = fit_constant_velocity(pairs["states"][pairs["src"]], pairs["states"][pairs["dst"]], pairs["fps"], norm,
                                  lay)
    x = vp["states"]
    cv = float(constant_velocity_nll(x[vp["src"]], x[vp["dst"]], vp["fps"], norm, lay, sigma).mean())
    assert abs(trainer.validation_nll() - cv) < 0.05, (trainer.validation_nll(), cv)


def test_prior_file_strict_round_trip_and_errors(kit, tmp_path):
    data = pack_motion_dataset(tmp_path, kit["flame"], range(3), n_frames=20)
    out = tmp_path / "p.pt"
    train_motion_prior([data], kit["flame"], kit["embedding"], out,
                       PriorSettings(steps=5, batch_size=8, hidden=16, latent_dim=4, max_sequences=2, subset_seed=1))
    raw = torch.load(out, weights_only=True)
    assert raw["format"] == "neuface.motion_prior" and raw["format_version"] == 2
    prior = load_motion_prior(out)
    for k, v in raw["state_dict"].items():
        torch.testing.assert_close(prior.model.state_dict()[k], v)
    lin = prior.lineage
    assert lin["steps"] == 5 and lin["datasets"][0]["n_sequences"] == 2 and len(lin["datasets"][0]["sequences"]) == 2
    assert lin["datasets"][0]["annotator"] == "neuface" and len(lin["datasets"][0]["sha256"]) == 64
    assert lin["fps"] == [FPS] and lin["settings"]["max_sequences"] == 2 and lin["neuface_version"]
    # one of the two sequences held out for model selection, validated at the last step
    assert lin["validation"]["n_segments"] == 1 and lin["n_segments"] == 1 and lin["validation"]["selected_step"] == 5
    assert lin["validation"]["sequences"][0].split(":")[1] in lin["datasets"][0]["sequences"]
    assert prior.config["state_dim"] == prior.layout.dim == 470
    bad = tmp_path / "bad.pt"
    torch.save({**raw, "format": "something.else"}, bad)
    with pytest.raises(ModelFormatError, match="not a neuface.motion_prior"):
        load_motion_prior(bad)
    torch.save({**raw, "format_version": 1}, bad)
    with pytest.raises(ModelFormatError, match="format_version"):
        load_motion_prior(bad)
    torch.save({k: v for k, v in raw.items() if k != "normalisation"}, bad)
    with pytest.raises(ModelFormatError, match="normalisation"):
        load_motion_prior(bad)
    torch.save({**raw, "config": {**raw["config"], "hidden": 17}}, bad)
    with pytest.raises(ModelFormatError, match="weights do not match"):
        load_motion_prior(bad)
    bad.write_bytes(b"not a torch file")
    with pytest.raises(ModelFormatError):
        load_motion_prior(bad)
    with pytest.raises(NeufaceError, match="does not exist"):
        load_motion_prior(tmp_path / "missing.pt")


def test_training_killed_and_resumed_equals_uninterrupted(kit, tmp_path, caplog):
    data = pack_motion_dataset(tmp_path, kit["flame"], range(4), n_frames=20)
    # 4 sequences: 1 held out, validated every 3 steps, so the best model so far is in the checkpoints too
    settings = PriorSettings(steps=12, batch_size=16, hidden=16, latent_dim=4, checkpoint_every=5, curve_every=1,
                             rollout_steps=2, val_every=3)

    def run(out, ckpt=None, stop=None, s=settings):
        return train_motion_prior([data], kit["flame"], kit["embedding"], out, s, checkpoint=ckpt,
                                  curve=out.with_suffix(".csv"), stop=stop)

    run(tmp_path / "ref.pt")
    ckpt = tmp_path / "prior.ckpt"
    for n in (3, 4):  # stopped after step 4, then (resumed at 4) after step 9
        with pytest.raises(Preempted):
            run(tmp_path / "out.pt", ckpt, StopAfter(n))
        assert ckpt.exists() and not (tmp_path / "out.pt").exists()
    run(tmp_path / "out.pt", ckpt)
    assert not ckpt.exists()
    a, b = torch.load(tmp_path / "ref.pt", weights_only=True), torch.load(tmp_path / "out.pt", weights_only=True)
    for key, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][key], value, rtol=0, atol=0)
    assert (tmp_path / "ref.csv").read_text() == (tmp_path / "out.csv").read_text()
    assert len((tmp_path / "ref.csv").read_text().splitlines()) == 13
    val = a["lineage"]["validation"]
    assert val["n_segments"] == 1 and val["selected_step"] in (3, 6, 9, 12)
    assert b["lineage"]["validation"] == val
    # a checkpoint written with other settings is discarded with a warning
    with pytest.raises(Preempted):
        run(tmp_path / "x.pt", ckpt, StopAfter(2))
    other = PriorSettings(**{**settings.__dict__, "lr": 5e-4})
    with caplog.at_level(logging.WARNING):
        run(tmp_path / "x.pt", ckpt, s=other)
    assert "discarding checkpoint" in caplog.text and not ckpt.exists()


@pytest.fixture
def cli(monkeypatch):
    import neuface.cli as cli_mod
    import neuface.cli.train as train_mod

    mods = tuple(cli_mod.COMMAND_MODULES) + tuple(m for m in ("train", "prior", "h5")
                                                  if m not in cli_mod.COMMAND_MODULES)
    monkeypatch.setattr(cli_mod, "COMMAND_MODULES", mods)
    monkeypatch.setattr(train_mod, "TRAIN_MODULES", ("neuface.cli.train_prior",))
    return lambda *argv: cli_mod.main([str(a) for a in argv])


def test_cli_train_sample_eval_and_h5_tools(kit, tmp_path, cli):
    train = pack_motion_dataset(tmp_path / "train", kit["flame"], range(8), n_frames=40, n_views=2)
    test = pack_motion_dataset(tmp_path / "test", kit["flame"], range(100, 103), split="test", n_frames=60)
    prior, curve = tmp_path / "p.pt", tmp_path / "curve.csv"
    flame = ("--flame", kit["flame"], "--embedding", kit["embedding"])
    assert cli("train", "motion-prior", "--dataset", train, *flame, "--out", prior, "--steps", 20,
               "--batch-size", 16, "--hidden", 32, "--latent-dim", 4, "--seed", 1, "--curve", curve,
               "--curve-every", 5, "--checkpoint", tmp_path / "ck.pt", "--checkpoint-every", 7) == 0
    assert load_motion_prior(prior).lineage["settings"]["seed"] == 1
    assert curve.read_text().splitlines()[0] == "step,loss,nll_per_dim,kl,consistency,val_nll"
    assert curve.read_text().splitlines()[-1].split(",")[-1] != ""  # validated at the last step
    assert not (tmp_path / "ck.pt").exists()
    samples = tmp_path / "samples.h5"
    assert cli("prior", "sample", "--prior", prior, "--start", test, "--sequence", "m101", "--frame", 3, *flame,
               "--seconds", 2, "--n-samples", 3, "--seed", 0, "--out", samples, "--clamp") == 0
    with h5py.File(samples) as f:
        assert f.attrs["n_sequences"] == 3 and sorted(f["sequences"]) == ["sample_000", "sample_001", "sample_002"]
        g = f["sequences/sample_001"]
        assert g["global_pose"].shape == (51, 1, 3) and g.attrs["fps"] == FPS and not g["detected"][()].any()
        assert f.attrs["prior_start_sequence"] == "m101" and f.attrs["prior_start_frame"] == 3
        with h5py.File(test) as t:
            np.testing.assert_allclose(g["shape"][()], t["sequences/m101/shape"][()])
            np.testing.assert_allclose(g["global_pose"][0, 0], t["sequences/m101/global_pose"][3, 0], atol=1e-5)
    assert cli("h5", "verify", samples) == 0
    assert cli("h5", "export", samples, "--sequence", "sample_000", "--out", tmp_path / "npz") == 0
    assert cli("h5", "export", samples, "--sequence", "sample_000", "--out", tmp_path / "obj", "--format", "obj",
               "--frames", "0,50", *flame) == 0
    assert len(list((tmp_path / "obj").glob("*.obj"))) == 2
    out = tmp_path / "eval.json"
    # the prior's own kind of held-out motion: fitted-like motion (parameter noise) next to the clean --test motion
    own = pack_motion_dataset(tmp_path / "own", kit["flame"], range(200, 202), split="test", n_frames=30,
                              param_noise=0.01)
    empty = pack_motion_dataset(tmp_path / "empty", kit["flame"], range(1), split="test", n_frames=10)
    with h5py.File(empty, "a") as f:
        for name in list(f["sequences"]):
            del f["sequences"][name]
        f.attrs["n_sequences"] = 0
    assert cli("prior", "eval", "--prior", prior, "--test", test, *flame, "--label", "tiny", "--out", out,
               "--seconds", 2, "--n-samples", 3, "--n-starts", 2, "--seed", 0, "--clamp", "--own-test", own) == 0
    res = json.loads(out.read_text())
    assert res["own_test"]["n_test_pairs"] == 2 * 29 and res["own_test"]["paths"] == [str(own)]
    assert isinstance(res["own_test"]["one_step_nll"], float) and res["own_test"]["one_step_nll"] != res["one_step_nll"]
    assert res["format"] == "neuface.eval.motion_prior" and res["format_version"] == 1 and res["label"] == "tiny"
    for key in ("fd", "apd_cm", "one_step_nll", "const_velocity_nll", "max_landmark_dev_m", "fps"):
        assert isinstance(res[key], float), key
    assert res["fd_train_vs_test"] is not None and res["fd_train_vs_test"] >= 0
    assert res["n_test_pairs"] == 3 * 59 and res["test"][0]["n_sequences"] == 3 and res["seconds"] == 2.0
    assert isinstance(res["stable"], bool) and res["prior"]["lineage"]["steps"] == 20
    assert cli("prior", "eval", "--prior", test, "--test", test, *flame, "--label", "x", "--out", out) == 2
    # held-out data of its own kind with no motion (every sequence rejected): own_test null, not a failed eval
    assert cli("prior", "eval", "--prior", prior, "--test", test, *flame, "--label", "tiny", "--out", out,
               "--seconds", 1, "--n-samples", 2, "--n-starts", 1, "--own-test", empty) == 0
    assert json.loads(out.read_text())["own_test"] is None
    # its own kind is the test split itself (the oracle prior in the workflow): the same numbers, not recomputed
    assert cli("prior", "eval", "--prior", prior, "--test", test, *flame, "--label", "tiny", "--out", out,
               "--seconds", 1, "--n-samples", 2, "--n-starts", 1, "--own-test", test) == 0
    same = json.loads(out.read_text())
    assert same["own_test"]["one_step_nll"] == same["one_step_nll"] and same["own_test"]["n_test_pairs"] == 3 * 59
    assert same["own_test"]["sha256"] == [same["test"][0]["sha256"]] and same["own_test"]["paths"] == [str(test)]


def test_validation_split_holds_out_whole_sequences(kit, caplog):
    segs = synthetic_segments(kit["layer"], range(10), 6)
    # a second segment (another view / shot) of every sequence: they must stay on the same side
    segs += [Segment(s.states, s.path, s.sequence, "left", 0, s.fps, s.shape) for s in segs]
    train, held = split_validation(segs, 0.2, seed=3)
    held_ids, train_ids = {s.sequence for s in held}, {s.sequence for s in train}
    assert len(held_ids) == 2 and len(held) == 4 and not held_ids & train_ids and len(train_ids) == 8
    assert split_validation(segs, 0.2, seed=3)[1] == held  # seeded
    assert split_validation(segs, 0.0, seed=3) == (segs, [])
    assert len({s.sequence for s in split_validation(segs, 0.01, seed=0)[1]}) == 1  # at least one held out
    two = segs[:2]
    assert len(split_validation(two, 0.9, seed=0)[0]) == 1  # at least one left to train on
    with caplog.at_level(logging.WARNING):
        assert split_validation(segs[:1], 0.5, seed=0) == (segs[:1], [])
    assert "validation off" in caplog.text
    with pytest.raises(NeufaceError, match="val_fraction"):
        PriorSettings(val_fraction=1.0).validate()


def test_model_selection_keeps_the_best_held_out_step(kit, monkeypatch):
    """The model of the step with the lowest held-out NLL is the one kept, not the last one; the held-out NLL is
    the CVAE's negative ELBO on the held-out pairs with draws that do not change between evaluations."""
    from neuface.train.motion_prior import constant_velocity_base

    segs = synthetic_segments(kit["layer"], range(5), 12)
    train, held = split_validation(segs, 0.4, seed=0)
    pairs, vp = transition_pairs(train), transition_pairs(held)
    norm = normalisation_stats([s.states for s in train])
    lay = StateLayout(50)
    settings = PriorSettings(steps=6, batch_size=8, hidden=16, latent_dim=4, lr=1e-2, val_every=1, curve_every=1)
    trainer = PriorTrainer(pairs["states"], pairs["src"], pairs["dst"], pairs["fps"], norm, lay, settings,
                           validation=vp)
    value = trainer.validation_nll()
    assert value == trainer.validation_nll()  # same draws every time
    x = (vp["states"] - norm["mean"]) / norm["std"]
    base = constant_velocity_base(x[vp["src"]], vp["fps"], norm, lay)
    ref = cvae_one_step_nll(trainer.model.eval(), x[vp["src"]], x[vp["dst"]], base, n_draws=2,
                            generator=torch.Generator().manual_seed(settings.seed + 7919)).mean()
    assert value == pytest.approx(float(ref), rel=1e-6)
    # scripted validation values: the minimum is at step 3
    script, snapshots = iter([5.0, 4.0, 1.0, 3.0, float("nan"), 2.0]), {}
    monkeypatch.setattr(trainer, "validation_nll", lambda: next(script))
    real_step = trainer.step

    def step():
        parts = real_step()
        snapshots[trainer.step_count] = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        return parts

    monkeypatch.setattr(trainer, "step", step)
    history = trainer.run()
    assert [r["val_nll"] for r in history][:4] == [5.0, 4.0, 1.0, 3.0]
    assert trainer.best["step"] == 3 and trainer.best["val_nll"] == 1.0
    for key, v in trainer.model.state_dict().items():
        torch.testing.assert_close(v, snapshots[3][key], rtol=0, atol=0)
    assert any((snapshots[6][k] != snapshots[3][k]).any() for k in snapshots[3])  # the last step's model differs


def test_validation_scores_an_even_subset_of_many_held_out_pairs(kit, monkeypatch):
    import neuface.train.motion_train as motion_train

    segs = synthetic_segments(kit["layer"], range(3), 12)
    pairs, vp = transition_pairs(segs[:2]), transition_pairs(segs[2:])  # 11 held-out pairs
    norm = normalisation_stats([s.states for s in segs[:2]])
    monkeypatch.setattr(motion_train, "VAL_MAX_PAIRS", 4)
    trainer = PriorTrainer(pairs["states"], pairs["src"], pairs["dst"], pairs["fps"], norm, StateLayout(50),
                           PriorSettings(hidden=8, latent_dim=2), validation=vp)
    x = (vp["states"] - norm["mean"]) / norm["std"]
    torch.testing.assert_close(trainer.val["x_t"], x[vp["src"][[0, 3, 6, 10]]])  # first, last and evenly between
    torch.testing.assert_close(trainer.val["x_next"], x[vp["dst"][[0, 3, 6, 10]]])


def test_training_on_an_empty_split_is_a_clear_error(kit, tmp_path):
    """A split whose every sequence the filter rejected is packed with no sequence: a user error, not a crash."""
    import h5py

    data = pack_motion_dataset(tmp_path, kit["flame"], range(1), n_frames=10)
    with h5py.File(data, "a") as f:
        for name in list(f["sequences"]):
            del f["sequences"][name]
        f.attrs["n_sequences"] = 0
    with pytest.raises(NeufaceError, match="no motion to train on"):
        train_motion_prior([data], kit["flame"], kit["embedding"], tmp_path / "p.pt", PriorSettings(steps=2))


def test_cli_sample_refuses_to_write_diverged_samples(kit, tmp_path, cli, monkeypatch):
    """A generation with non-finite states is an error and writes nothing (never zeros in place of NaN)."""
    import neuface.train.motion_sample as motion_sample

    data = pack_motion_dataset(tmp_path, kit["flame"], range(4), n_frames=30)
    prior, out = tmp_path / "p.pt", tmp_path / "samples.h5"
    flame = ("--flame", kit["flame"], "--embedding", kit["embedding"])
    assert cli("train", "motion-prior", "--dataset", data, *flame, "--out", prior, "--steps", 5,
               "--batch-size", 8, "--hidden", 16, "--latent-dim", 4) == 0
    real = motion_sample.rollout
    monkeypatch.setattr(motion_sample, "rollout", lambda *a, **k: real(*a, **k) * float("nan"))
    assert cli("prior", "sample", "--prior", prior, "--start", data, *flame, "--seconds", 1, "--n-samples", 2,
               "--seed", 0, "--out", out) == 2
    assert not out.exists()
