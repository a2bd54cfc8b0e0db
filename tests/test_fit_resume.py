"""Preemption safety: a fit killed after a checkpoint and rerun equals an uninterrupted fit; SIGTERM → 143."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from neuface.fitting import api
from neuface.fitting.checkpoint import Checkpointer, Preempted
from neuface.fitting.config import config_hash, resolve_annotator
from neuface.fitting.demo_data import write_synthetic_sequence
from neuface.fitting.output import DATASETS, read_fit
from neuface.flame import FlameLayer

TESTS = Path(__file__).resolve().parent
SETTINGS = {"lr": 3e-4, "n_passes": 4, "window_frames": 2, "checkpoint_every": 1, "progress": False,
            "deterministic": True}
FLAMEFIT = {"flamefit_steps": [3, 4], "checkpoint_every": 1, "progress": False}

# Runs the CLI with the tests' tiny encoder in place of neuface.encoders (same seed → same initial weights).
SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
import torch
torch.set_num_threads(1)
from test_fitting import TinyEncoder
from neuface.fitting import api
api.load_encoder = lambda kind, weights, device: TinyEncoder(0)
import neuface.cli as cli
if "fit" not in cli.COMMAND_MODULES:
    cli.COMMAND_MODULES = (*cli.COMMAND_MODULES, "fit")
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict:
    from neuface.cli import main

    kit = tmp_path_factory.mktemp("kit")
    assert main(["kit", "build", "--out", str(kit)]) == 0
    flame, emb = kit / "flame" / "generic_model.pkl", kit / "flame" / "landmark_embedding.npy"
    seq = write_synthetic_sequence(tmp_path_factory.mktemp("seq"), FlameLayer.from_files(flame, emb),
                                   n_frames=6, views=("front", "right_30"), size=64, seed=2)
    return {"flame": flame, "embedding": emb, "crops": seq.crops, "landmarks": seq.landmarks}


def argv(inputs: dict, annotator: str, settings: dict, out: Path, ckpt: Path | None) -> list[str]:
    args = ["fit", "--crops", str(inputs["crops"]), "--landmarks", str(inputs["landmarks"]), "--flame",
            str(inputs["flame"]), "--embedding", str(inputs["embedding"]), "--annotator", annotator, "--settings",
            json.dumps(settings), "--encoder", "tiny", "--out", str(out), "--device", "cpu"]
    return args + (["--checkpoint", str(ckpt)] if ckpt else [])


def run_cli(args: list[str], kill_after_checkpoint: Path | None = None) -> int:
    return run_cli_logged(args, kill_after_checkpoint)[0]


def run_cli_logged(args: list[str], kill_after_checkpoint: Path | None = None) -> tuple[int, str]:
    """``run_cli`` that also returns the command's log (stderr)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT.format(tests=str(TESTS)), *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if kill_after_checkpoint is not None:
        deadline = time.time() + 120
        while not kill_after_checkpoint.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=300)
    if proc.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(err.decode()[-3000:])
    return proc.returncode, err.decode()


def test_killed_and_resumed_fit_equals_uninterrupted(inputs, tmp_path):
    annotator, settings = "neuface", SETTINGS
    ref = tmp_path / "ref.h5"
    _reference_fit(inputs, annotator, settings, ref)
    out, ckpt = tmp_path / "out.h5", tmp_path / "fit.ckpt"
    rc = run_cli(argv(inputs, annotator, settings, out, ckpt), kill_after_checkpoint=ckpt)
    assert rc == -signal.SIGKILL, "the run finished before it could be killed"
    assert ckpt.exists() and not out.exists()
    step = torch.load(ckpt, weights_only=True)["step"]
    assert run_cli(argv(inputs, annotator, settings, out, ckpt)) == 0
    assert not ckpt.exists(), "the checkpoint is deleted after a successful fit"
    a, b = read_fit(ref), read_fit(out)
    for key in DATASETS:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    for key in a["losses"]:
        np.testing.assert_array_equal(a["losses"][key], b["losses"][key], err_msg=key)
    assert step < len(a["losses"]["total"])


def _reference_fit(inputs: dict, annotator: str, settings: dict, out: Path) -> None:
    """An uninterrupted fit in process, single-threaded like the CLI runs, with the CLI's tiny encoder."""
    from test_fitting import TinyEncoder

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        api.run_fit(inputs["crops"], inputs["landmarks"], inputs["flame"], inputs["embedding"], annotator,
                    resolve_annotator(annotator, {**settings, "encoder": "tiny", "device": "cpu"}), out,
                    encoder=TinyEncoder(0))
    finally:
        torch.set_num_threads(threads)


def test_killed_fit_whose_input_changed_starts_fresh(inputs, tmp_path):
    """kill -> change an input file -> rerun: the checkpoint (of the old input) is discarded, naming the input,
    and the result equals an uninterrupted fit of the new input; an input whose content did not change (only its
    mtime) still resumes."""
    import shutil

    import h5py

    annotator, settings = "neuface", SETTINGS
    mine = {**inputs, "landmarks": tmp_path / "landmarks.h5"}
    shutil.copyfile(inputs["landmarks"], mine["landmarks"])
    out, ckpt = tmp_path / "out.h5", tmp_path / "fit.ckpt"
    # unchanged content (touched only): resumed
    rc, _ = run_cli_logged(argv(mine, annotator, settings, out, ckpt), kill_after_checkpoint=ckpt)
    assert rc == -signal.SIGKILL and ckpt.exists(), "the run finished before it could be killed"
    assert set(torch.load(ckpt, weights_only=True)["inputs"]) == {"crops", "landmarks", "flame", "embedding",
                                                                  "encoder_weights"}
    os.utime(mine["landmarks"], (time.time() + 5, time.time() + 5))
    rc, log = run_cli_logged(argv(mine, annotator, settings, out, ckpt))
    assert rc == 0 and "resuming from checkpoint" in log and "discarding checkpoint" not in log, log
    # changed content: a fresh start, equal to an uninterrupted fit of the changed input
    out.unlink()
    rc, _ = run_cli_logged(argv(mine, annotator, settings, out, ckpt), kill_after_checkpoint=ckpt)
    assert rc == -signal.SIGKILL and ckpt.exists() and not out.exists()
    with h5py.File(mine["landmarks"], "r+") as f:
        f["views/front/landmarks"][...] = f["views/front/landmarks"][()] + 1.5
    rc, log = run_cli_logged(argv(mine, annotator, settings, out, ckpt))
    assert rc == 0 and not ckpt.exists()
    assert "discarding checkpoint" in log and "inputs changed: landmarks" in log and "settings changed" not in log
    assert "resuming from checkpoint" not in log, log
    ref = tmp_path / "ref.h5"
    _reference_fit(mine, annotator, settings, ref)
    a, b = read_fit(ref), read_fit(out)
    for key in DATASETS:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    np.testing.assert_array_equal(a["losses"]["total"], b["losses"]["total"])


def test_checkpoint_of_other_inputs_is_ignored(tmp_path, caplog):
    ckpt = tmp_path / "c.pt"
    digests = {"crops": "a" * 64, "landmarks": "b" * 64, "encoder_weights": "none"}
    Checkpointer(ckpt, 1, "hash-a", "neuface", inputs=digests).after_step(1, lambda: {"x": torch.zeros(1)})
    assert torch.load(ckpt, weights_only=True)["inputs"] == digests
    assert Checkpointer(ckpt, 1, "hash-a", "neuface", inputs=lambda: dict(digests)).load()["step"] == 1
    assert Checkpointer(ckpt, 1, "hash-a", "neuface", inputs={**digests, "crops": "c" * 64}).load() is None
    assert "inputs changed: crops" in caplog.text and "settings changed" not in caplog.text
    caplog.clear()
    assert Checkpointer(ckpt, 1, "hash-b", "neuface", inputs={**digests, "landmarks": "c" * 64}).load() is None
    assert "settings changed" in caplog.text and "inputs changed: landmarks" in caplog.text
    caplog.clear()
    Checkpointer(ckpt, 1, "hash-a", "neuface").after_step(1, lambda: {"x": torch.zeros(1)})  # no digests recorded
    assert Checkpointer(ckpt, 1, "hash-a", "neuface", inputs=digests).load() is None
    assert "records no input digests" in caplog.text
    calls = []
    lazy = Checkpointer(tmp_path / "none.pt", 1, "hash-a", "neuface", inputs=lambda: calls.append(1) or digests)
    assert lazy.load() is None and not calls  # nothing to resume: nothing hashed


def test_input_digests_are_cached_per_path_mtime_and_size(inputs, tmp_path, monkeypatch):
    import shutil

    crops = tmp_path / "crops.h5"
    shutil.copyfile(inputs["crops"], crops)
    hashed = []
    real = api.sha256_file
    monkeypatch.setattr(api, "sha256_file", lambda p: hashed.append(Path(p).name) or real(p))
    first = api._input_sha256s(crops, inputs["landmarks"], inputs["flame"], inputs["embedding"], None)
    assert first["encoder_weights"] == "none" and first["crops"] == real(crops)
    api._input_sha256s(crops, inputs["landmarks"], inputs["flame"], inputs["embedding"], None)
    assert hashed.count("crops.h5") == 1  # the second call used the cache
    with open(crops, "ab") as fh:
        fh.write(b"\0")  # same path, new size and mtime: hashed again
    assert api._input_sha256s(crops, inputs["landmarks"], inputs["flame"], inputs["embedding"], None)["crops"] \
        != first["crops"]
    assert hashed.count("crops.h5") == 2


class StopAfter:
    """A StopSignal stand-in that requests a stop once polled ``n`` times (in-process preemption)."""

    def __init__(self, n: int) -> None:
        self.n = n

    @property
    def requested(self) -> bool:
        self.n -= 1
        return self.n < 0


def test_flamefit_preempted_and_resumed_equals_uninterrupted(inputs, tmp_path):
    from test_fitting import TinyEncoder

    settings = resolve_annotator("flamefit", FLAMEFIT)

    def run(out, ckpt=None, stop=None):
        return api.run_fit(inputs["crops"], inputs["landmarks"], inputs["flame"], inputs["embedding"], "flamefit",
                           settings, out, checkpoint=ckpt, encoder=TinyEncoder(0), stop=stop)

    run(tmp_path / "ref.h5")
    ckpt = tmp_path / "ff.ckpt"
    for n in (2, 3):  # preempted in stage 1, then again in stage 2
        with pytest.raises(Preempted):
            run(tmp_path / "out.h5", ckpt, StopAfter(n))
        assert ckpt.exists() and not (tmp_path / "out.h5").exists()
    run(tmp_path / "out.h5", ckpt)
    a, b = read_fit(tmp_path / "ref.h5"), read_fit(tmp_path / "out.h5")
    for key in DATASETS:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    np.testing.assert_array_equal(a["losses"]["total"], b["losses"]["total"])
    assert not ckpt.exists()


def test_sigterm_checkpoints_and_exits_143(inputs, tmp_path, monkeypatch):
    """In process: SIGTERM (from a watcher thread once a checkpoint exists) → checkpoint kept, exit code 143."""
    from test_fitting import TinyEncoder

    import neuface.cli as cli

    if "fit" not in cli.COMMAND_MODULES:
        monkeypatch.setattr(cli, "COMMAND_MODULES", (*cli.COMMAND_MODULES, "fit"))
    monkeypatch.setattr(api, "load_encoder", lambda kind, weights, device: TinyEncoder(0))
    out, ckpt = tmp_path / "out.h5", tmp_path / "fit.ckpt"

    def watcher():
        deadline = time.time() + 60
        while not ckpt.exists() and time.time() < deadline:
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=watcher, daemon=True)
    thread.start()
    rc = cli.main(argv(inputs, "neuface", {**SETTINGS, "checkpoint_every": 3}, out, ckpt))
    thread.join()
    assert rc == 143 and ckpt.exists() and not out.exists()
    payload = torch.load(ckpt, weights_only=True)
    assert payload["config_hash"] == config_hash(resolve_annotator("neuface", {**SETTINGS, "encoder": "tiny"}))
    assert payload["step"] < SETTINGS["n_passes"] * 3


def test_checkpoint_with_other_settings_is_ignored(tmp_path, caplog):
    ckpt = tmp_path / "c.pt"
    Checkpointer(ckpt, 1, "hash-a", "neuface").after_step(1, lambda: {"x": torch.zeros(1)})
    assert Checkpointer(ckpt, 1, "hash-a", "neuface").load()["step"] == 1
    assert Checkpointer(ckpt, 1, "hash-b", "neuface").load() is None
    assert "other settings" in caplog.text
    assert Checkpointer(ckpt, 1, "hash-a", "flamefit").load() is None
    Checkpointer(ckpt, 1, "hash-a", "neuface").done()
    assert not ckpt.exists()


def test_tiny_encoder_is_deterministic_for_a_seed():
    from test_fitting import TinyEncoder

    a, b = TinyEncoder(0), copy.deepcopy(TinyEncoder(0))
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)
