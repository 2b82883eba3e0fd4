"""Memory at the edges (issue 30, point 1): the budget is this process's real limit (ulimit -v, cgroup, free
memory, NB_MEMORY_LIMIT: the smallest), a failed allocation anywhere in a run is one line with no output, and an
almost empty F grid is stored sparsely with the dense grid's values bit for bit (nearest and tricubic)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from nanobragg_torch import memory
from nanobragg_torch.cli import config_from_flags, main
from nanobragg_torch.config import SparseGrid, StructureFactors
from nanobragg_torch.io.hkl import DENSE_ALWAYS_BYTES, read_hkl_file
from nanobragg_torch.simulate import simulate

ROOT = Path(__file__).resolve().parents[1]
H14 = ROOT / "golden" / "inputs" / "p1_h14.hkl"
FLAGS = ["-cell", "100", "100", "100", "90", "90", "90", "-N", "5", "-lambda", "1", "-distance", "100"]
# python + torch + numpy map about 0.8 GiB; this leaves a few hundred MiB for the run
ULIMIT_KB = 1_500_000


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "NB_MEMORY_LIMIT"}
    env.update(PYTHONPATH=str(ROOT), NB_COMPILE="0", OMP_NUM_THREADS="1", NB_BACKGROUND_COMPILE="0")
    return env


def _under_ulimit(args: list[str], cwd: Path, kb: int = ULIMIT_KB) -> subprocess.CompletedProcess:
    """`ulimit -v kb; python -m nanobragg_torch ARGS` in a shell, as a user on a batch system runs it."""
    line = " ".join(["python", "-m", "nanobragg_torch", *args])
    return subprocess.run(["bash", "-c", f"ulimit -v {kb}; exec {line}"], cwd=cwd, env=_env(), capture_output=True,
                          text=True, timeout=300)


def test_budget_is_the_address_space_limit():
    code = "from nanobragg_torch import memory; b, n = memory.memory_limit(); print(b); print(n)"
    out = subprocess.run(["bash", "-c", f"ulimit -v {ULIMIT_KB}; exec {sys.executable} -c '{code}'"],
                         env=_env(), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    budget, name = out.stdout.splitlines()
    assert "ulimit -v" in name
    assert 0 < int(budget) < ULIMIT_KB * 1024 - 100 * 2**20  # less what the process has mapped already


def test_env_limit_only_lowers_the_budget(monkeypatch):
    monkeypatch.delenv("NB_MEMORY_LIMIT", raising=False)
    real = memory.memory_budget()
    monkeypatch.setenv("NB_MEMORY_LIMIT", str(real * 100))
    assert memory.memory_budget() <= real * 1.1  # a higher NB_MEMORY_LIMIT does not raise the real limit
    monkeypatch.setenv("NB_MEMORY_LIMIT", "12345")
    assert memory.memory_limit() == (12345, "NB_MEMORY_LIMIT")


@pytest.mark.parametrize("version", ["v2", "v1"])
def test_cgroup_limit_is_read(tmp_path, monkeypatch, version):
    files = ("memory.max", "memory.current") if version == "v2" else ("memory.limit_in_bytes",
                                                                      "memory.usage_in_bytes")
    parent, leaf = tmp_path, tmp_path / "job"
    leaf.mkdir()
    (parent / files[0]).write_text("max\n" if version == "v2" else "9223372036854771712\n")
    (leaf / files[0]).write_text(f"{300 * 2**20}\n")
    (leaf / files[1]).write_text(f"{100 * 2**20}\n")
    monkeypatch.setattr(memory, "_cgroup_dirs", lambda: [(leaf, *files), (parent, *files)])
    monkeypatch.setattr(memory, "_CACHE", {})
    monkeypatch.delenv("NB_MEMORY_LIMIT", raising=False)
    room, name = memory.cgroup_room()
    assert room == 200 * 2**20 and files[0] in name
    assert memory.memory_budget() <= 200 * 2**20


def test_two_far_reflections_render_sparse_under_ulimit(tmp_path):
    """The issue's file: 0 0 0 and 1000000000 0 0 (a 7.45 GiB dense grid) renders under ulimit -v, and its image
    is bit for bit that of the same F values on a small dense grid."""
    (tmp_path / "two.hkl").write_text("0 0 0 100\n1000000000 0 0 100\n")
    (tmp_path / "small.hkl").write_text("0 0 0 100\n1 0 0 0\n")
    args = [*FLAGS, "-detpixels", "64"]
    far = _under_ulimit(["-hkl", "two.hkl", *args, "-floatfile", "far.bin"], tmp_path)
    assert far.returncode == 0, far.stderr
    assert "stored sparsely" in far.stdout and "7.45 GiB" in far.stdout
    near = _under_ulimit(["-hkl", "small.hkl", *args, "-floatfile", "near.bin"], tmp_path)
    assert near.returncode == 0, near.stderr
    far_img, near_img = (np.fromfile(tmp_path / f, dtype=np.float32) for f in ("far.bin", "near.bin"))
    assert far_img.max() > 0 and np.array_equal(far_img, near_img)


def test_cube_corners_render_sparse_under_ulimit(tmp_path):
    (tmp_path / "cube.hkl").write_text("0 0 0 100\n1200 1200 1200 100\n")
    out = _under_ulimit(["-hkl", "cube.hkl", *FLAGS, "-detpixels", "32", "-floatfile", "o.bin", "-interpolate"],
                        tmp_path)
    assert out.returncode == 0, out.stderr
    assert "12.9 GiB" in out.stdout and (tmp_path / "o.bin").stat().st_size == 32 * 32 * 4


def test_refusal_names_the_process_limit(tmp_path):
    (tmp_path / "two.hkl").write_text("0 0 0 100\n1000000000 0 0 100\n")
    out = _under_ulimit(["-hkl", "two.hkl", *FLAGS, "-detpixels", "20000", "-floatfile", "o.bin", "-dump", "F.bin"],
                        tmp_path)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nanobragg: error: ")
    assert "ulimit -v" in lines[0] and ("-detpixels" in lines[0] or "-dump" in lines[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["two.hkl"]


def test_fdump_of_a_sparse_grid_is_refused_when_it_cannot_be_dense(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "two.hkl").write_text("0 0 0 100\n1000000000 0 0 100\n")
    monkeypatch.setenv("NB_MEMORY_LIMIT", str(2**30))
    assert main(["-hkl", "two.hkl", *FLAGS, "-detpixels", "16", "-floatfile", "o.bin", "-dump", "F.bin"]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["two.hkl"]


def test_fdump_of_a_small_sparse_grid_is_the_dense_one(tmp_path, monkeypatch):
    """A sparse grid that fits densely is written as the C's Fdump (the dense grid, padded)."""
    from nanobragg_torch.io.fdump import read_fdump

    monkeypatch.chdir(tmp_path)
    (tmp_path / "far.hkl").write_text("0 0 0 100\n-3 1 0 7\n5000000 0 0 100\n")
    assert main(["-hkl", "far.hkl", *FLAGS, "-detpixels", "16", "-floatfile", "o.bin", "-dump", "F.bin"]) == 0
    grid, meta = read_fdump(tmp_path / "F.bin")
    assert grid.shape == (5000004, 2, 1) and meta["h_min"] == -3
    assert grid[3, 0, 0] == 100 and grid[0, 1, 0] == 7 and grid[-1, 0, 0] == 100 and np.count_nonzero(grid) == 3


def _numpy_oom(*args, **kwargs):
    np.empty(1 << 52, dtype=np.uint8)  # numpy's _ArrayMemoryError, as a real failed allocation raises it


def _torch_oom(*args, **kwargs):
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")


def _cpu_allocator(*args, **kwargs):
    raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: "
                       "you tried to allocate 296352004 bytes. Error code 12 (Cannot allocate memory)")


def _not_enough(*args, **kwargs):
    raise RuntimeError("$ Torch: not enough memory: you tried to allocate 8GB. Buy new RAM!")


def _enomem(*args, **kwargs):
    raise OSError(12, "Cannot allocate memory")


# where a run allocates: reading the HKL file, planning, rendering, the noise image, writing a file
STAGES = {
    "read": "nanobragg_torch.cli.read_structure_factors",
    "plan": "nanobragg_torch.outputs.build_plan",
    "render": "nanobragg_torch.outputs.render",
    "noise": "nanobragg_torch.noise.noise_image",
    "write": "nanobragg_torch.outputs.write_smv",
}


@pytest.mark.parametrize("stage", sorted(STAGES))
@pytest.mark.parametrize("fail", [_numpy_oom, _torch_oom, _cpu_allocator, _not_enough, _enomem])
def test_failed_allocation_anywhere_is_one_line_and_no_output(tmp_path, monkeypatch, capsys, stage, fail):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "f.hkl").write_text("0 0 0 100\n1 1 1 50\n")
    monkeypatch.setattr(STAGES[stage], fail)
    argv = ["-hkl", "f.hkl", *FLAGS, "-detpixels", "16", "-floatfile", "o.bin", "-intfile", "o.img",
            "-noisefile", "n.img", "-seed", "3"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("nanobragg: error: ")
    # an OS error while writing names the file (outputs._writing); every other failure is memory.allocation_failure's
    assert "memory" in err[0].lower() and ("no output written" in err[0] or stage == "write")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.hkl"]


def test_other_runtime_errors_are_not_memory(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "f.hkl").write_text("0 0 0 100\n")

    def boom(*args, **kwargs):
        raise RuntimeError("a bug, not memory")

    monkeypatch.setattr("nanobragg_torch.outputs.render", boom)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["-hkl", "f.hkl", *FLAGS, "-detpixels", "8", "-floatfile", "o.bin"])
    assert memory.allocation_failure(ValueError("out of memory")) is None


def test_failed_allocation_under_ulimit_from_the_command_line(tmp_path):
    """A real failed allocation under ulimit -v, past the estimates (a render step that asks for 64 GiB)."""
    code = ("import runpy, torch, nanobragg_torch.kernel as K; real = K.sample_sum\n"
            "def big(x, terms):\n    torch.empty(1 << 33, dtype=torch.float64)\n    return real(x, terms)\n"
            "K.sample_sum = big; runpy.run_module('nanobragg_torch', run_name='__main__')")
    (tmp_path / "run.py").write_text(code)
    (tmp_path / "f.hkl").write_text("0 0 0 100\n")
    out = subprocess.run(["bash", "-c", f"ulimit -v {ULIMIT_KB}; exec {sys.executable} run.py -hkl f.hkl "
                          f"{' '.join(FLAGS)} -detpixels 8 -floatfile o.bin"],
                         cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "out of memory" in lines[0] and "ulimit -v" in lines[0], out.stderr
    assert not (tmp_path / "o.bin").exists()


# ---- the sparse store: the dense grid's values, bit for bit --------------------------------------------------


def _sparse_of(sf: StructureFactors, filled: np.ndarray) -> StructureFactors:
    grid = np.asarray(sf.grid)
    keys = np.flatnonzero(filled.reshape(-1)).astype(np.int64)
    store = SparseGrid(keys, grid.reshape(-1)[keys].copy(), grid.shape, 0.0)
    return dataclasses.replace(sf, grid=store)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("interpolate", [False, True])
def test_sparse_lookup_is_bitwise_the_dense_one(dtype, interpolate):
    """p1_h14.hkl (an ordinary file, 23132 of 24389 cells filled) through the dense grid and the sparse store:
    nearest-neighbour and tricubic images identical."""
    argv = ["-hkl", str(H14), "-cell", "50", "60", "70", "90", "90", "90", "-N", "2" if interpolate else "5",
            "-lambda", "1", "-distance", "60", "-detpixels", "48", "-pixel", "0.4", "-oversample", "1",
            "-interpolate" if interpolate else "-nointerpolate"]
    cfg, _ = config_from_flags(argv)
    sf = cfg.crystal.structure_factors
    _, meta = read_hkl_file(H14)
    filled = np.asarray(sf.grid) != 0.0
    assert filled.sum() > 20000
    sparse = dataclasses.replace(cfg, crystal=dataclasses.replace(cfg.crystal, structure_factors=_sparse_of(sf,
                                                                                                            filled)))
    dense_img = simulate(cfg, dtype=dtype, compile=False)
    sparse_img = simulate(sparse, dtype=dtype, compile=False)
    assert dense_img.abs().max() > 0
    assert torch.equal(dense_img, sparse_img)


def test_sparse_gradients_flow_to_the_values():
    cfg, _ = config_from_flags(["-hkl", str(H14), *FLAGS[:12], "60", "-detpixels", "12", "-pixel",
                                "0.4", "-oversample", "1"])
    sf = cfg.crystal.structure_factors
    grid = np.asarray(sf.grid)
    keys = np.flatnonzero(grid.reshape(-1)).astype(np.int64)
    values = torch.tensor(grid.reshape(-1)[keys], requires_grad=True)
    store = SparseGrid(keys, values, grid.shape, 0.0)
    cfg = dataclasses.replace(cfg, crystal=dataclasses.replace(cfg.crystal, structure_factors=dataclasses.replace(
        sf, grid=store)))
    simulate(cfg, dtype=torch.float64, compile=False).sum().backward()
    assert values.grad is not None and values.grad.abs().sum() > 0


def test_reader_chooses_the_store(tmp_path):
    small = tmp_path / "small.hkl"
    small.write_text("0 0 0 1\n40 40 40 2\n")  # 41^3 cells: under DENSE_ALWAYS_BYTES, dense
    grid, _ = read_hkl_file(small)
    assert isinstance(grid, np.ndarray) and 8 * grid.size <= DENSE_ALWAYS_BYTES
    far = tmp_path / "far.hkl"
    far.write_text("0 0 0 1\n400 400 400 2\n-1 0 0 3\n")
    notes: list[str] = []
    grid, meta = read_hkl_file(far, default_F=5.0, notes=notes)
    assert isinstance(grid, SparseGrid) and grid.shape == (402, 401, 401) and grid.fill == 5.0
    assert meta["h_min"] == -1 and meta["hkls"] == 3 and "stored sparsely" in notes[0]
    dense = grid.dense()
    assert dense[1, 0, 0] == 1 and dense[401, 400, 400] == 2 and dense[0, 0, 0] == 3 and dense[5, 5, 5] == 5.0
