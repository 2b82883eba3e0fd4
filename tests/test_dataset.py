"""nanobragg-dataset: SPEC checks, per-shot parameters as a pure function of (seed, index), the local engine,
--only, --resume after a killed driver, and the per-shot SMV/CBF formats."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
import torch

from nanobragg_torch.batch import simulate_batch
from nanobragg_torch.constants import RTD
from nanobragg_torch.dataset import load_experiment, load_spec, make_dataset, render_only, shot_parameters
from nanobragg_torch.dataset.cli import main
from nanobragg_torch.dataset.shots import shot_config, uniform_rotation
from nanobragg_torch.dataset.store import image_sha256, read_stored
from nanobragg_torch.errors import InputError
from nanobragg_torch.rng import umat2misset
from nanobragg_torch.vectors import rotate_xyz

FLAGS = "-cell 100 100 100 90 90 90 -default_F 100 -lambda 1 -distance 100 -detpixels 32 -pixel 0.2 -N 3"


def write_spec(folder, *, count=6, shard_size=2, batch_size=2, vary=None, output=None, flags=FLAGS) -> str:
    vary = vary if vary is not None else {"orientation": '"random"', "N": "[2, 3]", "fluence_jitter": "0.2",
                                          "noise": "true"}
    text = f'[experiment]\nflags = "{flags}"\n[shots]\ncount = {count}\nseed = 11\nshard_size = {shard_size}\n'
    text += f"batch_size = {batch_size}\n[vary]\n" + "".join(f"{k} = {v}\n" for k, v in vary.items())
    if output:
        text += "[output]\n" + "".join(f"{k} = {v}\n" for k, v in output.items())
    path = os.path.join(folder, "spec.toml")
    with open(path, "w") as handle:
        handle.write(text)
    return path


def manifest(out) -> list[dict]:
    with open(os.path.join(out, "manifest.jsonl")) as handle:
        return [json.loads(line) for line in handle]


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """One single-process run of the default test SPEC: (spec path, output folder, summary)."""
    folder = tmp_path_factory.mktemp("local")
    spec = write_spec(folder)
    out = os.path.join(folder, "out")
    return spec, out, make_dataset(spec, out, progress=False)


# --- the SPEC -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("vary, output, message", [
    ({"colour": "1"}, None, "[vary] colour: unknown key"),
    ({"N": "[5, 2]"}, None, "[vary] N: range [5, 2] is empty"),
    ({"N": '"big"'}, None, "[vary] N: expected an integer"),
    ({"orientation": "[[1, 2]]"}, None, "[vary] orientation[0]: expected [rx, ry, rz]"),
    ({"fluence_jitter": "1.5"}, None, "[vary] fluence_jitter: must be in [0, 1)"),
    ({"noise": "1"}, None, "[vary] noise: expected true or false"),
    ({}, {"format": '"tiff"'}, "[output] format: expected one of hdf5, smv, cbf"),
])
def test_bad_spec_names_the_key(tmp_path, vary, output, message):
    with pytest.raises(InputError, match=r"spec\.toml: " + _re(message)):
        load_spec(write_spec(tmp_path, vary=vary, output=output))


def _re(text: str) -> str:
    import re

    return re.escape(text)


def test_bad_flags_and_output_flags_are_refused(tmp_path):
    with pytest.raises(InputError, match=r"\[experiment\] flags: .*-bogus"):
        load_experiment(load_spec(write_spec(tmp_path, flags=FLAGS + " -bogus 1")))
    with pytest.raises(InputError, match=r"\[experiment\] flags: the floatfile output is not for datasets"):
        load_experiment(load_spec(write_spec(tmp_path, flags=FLAGS + " -floatfile x.bin")))


def test_cli_error_is_one_line_and_writes_nothing(tmp_path, capsys):
    spec = write_spec(tmp_path, vary={"N": "0"})
    out = tmp_path / "out"
    assert main([spec, "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("nanobragg-dataset: error: ") and "[vary] N: must be >= 1" in err and "\n" not in err
    assert not out.exists()


# --- per-shot parameters ------------------------------------------------------------------------------------

def test_misset_angles_follow_the_c_rotation_order():
    """umat2misset(R) are angles the engine's rotate_xyz (x, then y, then z) turns into R itself."""
    rng = np.random.default_rng(3)
    for _ in range(20):
        R = uniform_rotation(rng)
        assert np.allclose(R @ R.T, np.eye(3), atol=1e-12) and np.isclose(np.linalg.det(R), 1.0)
        angles = [torch.tensor(a, dtype=torch.float64) for a in umat2misset(R)]
        v = torch.tensor(rng.normal(size=(4, 3)))
        assert torch.allclose(rotate_xyz(v, *angles), v @ torch.tensor(R).T, atol=1e-12)


def test_random_orientations_are_uniform():
    """The mean of a Haar-uniform rotation matrix is zero; a bias towards any axis would show here."""
    rng = np.random.default_rng(5)
    mean = np.mean([uniform_rotation(rng) for _ in range(4000)], axis=0)
    assert np.abs(mean).max() < 0.05


def test_shot_parameters_are_a_function_of_seed_and_index(tmp_path):
    spec = load_spec(write_spec(tmp_path, count=50))
    base = load_experiment(spec).config
    a = [shot_parameters(spec, base, i) for i in range(50)]
    b = [shot_parameters(spec, base, i) for i in reversed(range(50))][::-1]
    assert a == b
    assert len({p.misset for p in a}) == 50 and {p.N for p in a} == {2, 3} and len({p.noise_seed for p in a}) == 50
    fluences = np.array([p.fluence for p in a]) / float(base.beam.fluence)
    assert 0.8 < fluences.mean() < 1.2 and fluences.std() > 0.05
    # one more variation leaves the other draws alone (one stream per quantity)
    spec2 = dataclasses.replace(spec, wavelength_jitter=0.01)
    c = [shot_parameters(spec2, base, i) for i in range(50)]
    assert [p.misset for p in c] == [p.misset for p in a] and [p.N for p in c] == [p.N for p in a]
    assert len({p.wavelength for p in c}) == 50
    # another seed, other shots
    assert shot_parameters(dataclasses.replace(spec, seed=12), base, 0).misset != a[0].misset
    with pytest.raises(IndexError):
        shot_parameters(spec, base, 50)


def test_orientation_list_cycles(tmp_path):
    spec = load_spec(write_spec(tmp_path, vary={"orientation": "[[10, 20, 30], [0, 0, 5]]"}))
    base = load_experiment(spec).config
    got = [shot_parameters(spec, base, i).misset for i in range(3)]
    assert got[0] == got[2] == (10 / RTD, 20 / RTD, 30 / RTD) and got[1] == (0.0, 0.0, 5 / RTD)


def test_fluence_scaling_matches_a_render_at_that_fluence(tmp_path):
    """The renderer scales the base-fluence image: the engine's image is proportional to the fluence."""
    spec = load_spec(write_spec(tmp_path, vary={"fluence_jitter": "0.3", "orientation": '"random"'}))
    ex = load_experiment(spec)
    from nanobragg_torch.dataset.render import render_shots

    shot = shot_parameters(spec, ex.config, 1)
    assert abs(shot.fluence / float(ex.config.beam.fluence) - 1) > 0.01
    got = render_shots(ex, [shot], 1)[0].image
    cfg = shot_config(ex.config, shot)
    cfg = dataclasses.replace(cfg, beam=dataclasses.replace(cfg.beam, fluence=shot.fluence))
    want = simulate_batch([cfg], dtype=torch.float32, vectorize=True)[0].numpy()  # the same path, fluence set
    assert got.max() > 0 and not np.array_equal(got, want / shot.fluence * float(ex.config.beam.fluence))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=0)  # one float32 rounding apart


# --- the local engine -----------------------------------------------------------------------------------------

def test_local_run_writes_every_shot_once(local_run):
    spec_path, out, summary = local_run
    spec = load_spec(spec_path)
    lines = manifest(out)
    assert [x["index"] for x in lines] == list(range(spec.count))
    assert summary.shots == spec.count and summary.retried == 0 and summary.skipped == 0
    assert sorted(os.listdir(os.path.join(out, "shards"))) == [
        f"shard-{k:06d}.{ext}" for k in range(3) for ext in ("h5", "jsonl")]
    base = load_experiment(spec).config
    for line in lines:
        assert line["params"] == shot_parameters(spec, base, line["index"]).as_dict()
        image = read_stored(out, line)
        assert image.dtype == np.float32 and image.shape == (32, 32) and image.max() > 0
        assert image_sha256(image) == line["sha256"]
    with h5py.File(os.path.join(out, "shards", "shard-000001.h5")) as h5:
        assert list(h5["shot_index"][:]) == [2, 3]
        assert h5["images"].chunks == (1, 32, 32) and h5["images"].compression == "gzip"
        assert h5["noise"].dtype == np.uint16
        assert list(h5["N"][:]) == [lines[2]["params"]["N"], lines[3]["params"]["N"]]
        assert image_sha256(h5["noise"][1]) == lines[3]["noise_sha256"]


def test_only_renders_the_same_image_alone(local_run, tmp_path):
    """Shot 3 was rendered in a batch of two with shot 2; alone it has the same bytes."""
    spec_path, out, _ = local_run
    line = render_only(spec_path, str(tmp_path), 3)
    want = manifest(out)[3]
    assert line["sha256"] == want["sha256"] and line["noise_sha256"] == want["noise_sha256"]
    assert line["params"] == want["params"]


def test_pool_run_gives_the_same_manifest(local_run, tmp_path):
    spec_path, out, _ = local_run
    summary = make_dataset(spec_path, str(tmp_path / "pool"), workers=2, progress=False)
    assert summary.workers == 2
    assert manifest(tmp_path / "pool") == manifest(out)


def test_existing_dataset_needs_resume_and_the_same_spec(local_run, tmp_path):
    spec_path, out, _ = local_run
    with pytest.raises(InputError, match="already holds a dataset"):
        make_dataset(spec_path, out, progress=False)
    other = write_spec(tmp_path, count=7)
    with pytest.raises(InputError, match="differs from the SPEC"):
        make_dataset(other, out, resume=True, progress=False)


def test_resume_rerenders_only_damaged_or_missing_shards(local_run, tmp_path):
    spec_path, out, _ = local_run
    import shutil

    copy = str(tmp_path / "copy")
    shutil.copytree(out, copy)
    os.unlink(os.path.join(copy, "manifest.jsonl"))
    os.unlink(os.path.join(copy, "shards", "shard-000000.jsonl"))  # rendered, not marked done
    with h5py.File(os.path.join(copy, "shards", "shard-000002.h5"), "r+") as h5:
        h5["images"][0, 5, 5] += 1.0  # a damaged shard fails its sha256
    open(os.path.join(copy, "shards", ".shard-000001.h5.0123456789ab.tmp"), "w").close()  # a killed writer's
    summary = make_dataset(spec_path, copy, resume=True, progress=False)
    assert summary.skipped == 2 and summary.shots == 4
    assert manifest(copy) == manifest(out)
    assert not [n for n in os.listdir(os.path.join(copy, "shards")) if n.endswith(".tmp")]


@pytest.mark.parametrize("fmt", ["smv", "cbf"])
def test_per_shot_formats(tmp_path, fmt):
    fabio = pytest.importorskip("fabio")
    spec = write_spec(tmp_path, count=3, shard_size=2, output={"format": f'"{fmt}"'},
                      vary={"orientation": '"random"', "noise": "true"})
    out = tmp_path / "out"
    make_dataset(spec, str(out), progress=False)
    lines = manifest(out)
    assert [x["file"] for x in lines] == [f"shots/shot-{i:06d}.{'img' if fmt == 'smv' else 'cbf'}" for i in range(3)]
    assert sorted(os.listdir(out / "shards")) == ["shard-000000.jsonl", "shard-000001.jsonl"]
    for line in lines:
        img = fabio.open(os.path.join(out, line["file"]))
        assert img.data.shape == (32, 32) and img.data.max() >= 40  # counts with the ADC offset
        assert image_sha256(img.data.astype(np.uint16 if fmt == "smv" else np.int32)) == line["sha256"]
    only = render_only(spec, str(tmp_path / "only"), 2)
    assert only["sha256"] == lines[2]["sha256"] and only["float_sha256"] == lines[2]["float_sha256"]
    os.unlink(out / "manifest.jsonl")
    again = make_dataset(spec, str(out), resume=True, progress=False)  # the files verify as read back
    assert again.skipped == 3 and again.shots == 0 and manifest(out) == lines


def test_driver_killed_mid_run_then_resumed(tmp_path):
    """SIGKILL the driver after its first finished shard; --resume completes it, the same bytes as a clean run."""
    spec = write_spec(tmp_path, count=12, shard_size=1)
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "nanobragg_torch.dataset.cli", spec, "--out", str(out), "--no-progress",
           "--threads", "1"]
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not list(out.glob("shards/shard-*.jsonl")):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no shard finished in 120 s"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    done = len(list((out / "shards").glob("shard-*.jsonl")))
    assert 1 <= done < 12 and not (out / "manifest.jsonl").exists()
    resumed = subprocess.run(cmd + ["--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "shots already done" in resumed.stdout
    clean = make_dataset(spec, str(tmp_path / "clean"), progress=False)
    assert clean.shots == 12
    assert manifest(out) == manifest(tmp_path / "clean")
    assert not [p for p in (out / "shards").iterdir() if p.name.endswith(".tmp")]
    assert math.isfinite(clean.shots_per_second)


def test_pool_worker_killed_mid_run(tmp_path):
    """SIGKILL one process of a local pool: the unfinished shards run again, each shot once, same bytes."""
    psutil = pytest.importorskip("psutil")
    spec = write_spec(tmp_path, count=12, shard_size=1)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "nanobragg_torch.dataset.cli", spec, "--out", str(out), "--no-progress",
           "--workers", "2", "--threads", "1"]
    proc = subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not list(out.glob("shards/shard-*.jsonl")):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no shard finished in 120 s"
            time.sleep(0.05)
        workers = [c for c in psutil.Process(proc.pid).children()
                   if any("spawn_main" in a for a in c.cmdline())]
        assert len(workers) == 2
        workers[0].kill()
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, stderr[-3000:]
    retried = int(stdout.split(" failure(s) retried")[0].rsplit(" ", 1)[1])
    assert retried >= 1, stdout
    clean = make_dataset(spec, str(tmp_path / "clean"), progress=False)
    assert clean.shots == 12 and manifest(out) == manifest(tmp_path / "clean")


def test_ray_engine_without_ray_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    spec = write_spec(tmp_path, count=2)
    assert main([spec, "--out", str(tmp_path / "out"), "--engine", "ray", "--no-progress"]) == 2
    assert capsys.readouterr().err.strip() == (
        'nanobragg-dataset: error: --engine ray: Ray is not installed (pip install -e ".[ray]")')
    assert not (tmp_path / "out").exists()


def test_only_out_of_range(tmp_path, capsys):
    spec = write_spec(tmp_path, count=2)
    assert main([spec, "--out", str(tmp_path / "one"), "--only", "2"]) == 2
    assert "--only 2: the SPEC has shots 0..1" in capsys.readouterr().err
