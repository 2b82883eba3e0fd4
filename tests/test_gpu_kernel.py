"""The Triton kernel (gpu_kernel.py) against the evaluator (kernel.pixel_kernel), switch by switch.

On the CPU the kernel runs in Triton's interpreter (TRITON_INTERPRET=1: the same kernel source, each
operation evaluated by numpy), so its arithmetic is checked on every machine with `triton` installed (the
`gpu` extra; CI installs it); under NB_DEVICE=cuda (tox -e cuda) the same tests run the compiled kernel on the
device, and the dispatch tests check that a CUDA plan takes it. Without triton the module skips.
"""

from __future__ import annotations

import importlib
import os
import sys

import pytest
import torch

CUDA = os.environ.get("NB_DEVICE", "cpu").startswith("cuda")
# triton decorates its own library (tl.zeros, ...) when it is imported: the interpreter must be on by then, so
# it is switched on here, at collection, before any test can import triton (torch.compile looks for it); it
# stays on for the session, which only matters to CUDA kernels (none run on the CPU)
if not CUDA and "triton" not in sys.modules:
    os.environ["TRITON_INTERPRET"] = "1"
pytest.importorskip("triton")

from nanobragg_torch import kernel as K  # noqa: E402
from nanobragg_torch.cli import config_from_flags  # noqa: E402
from nanobragg_torch.engine import render  # noqa: E402
from nanobragg_torch.parity.goldens import golden_dir  # noqa: E402
from nanobragg_torch.plan import build_plan  # noqa: E402

BASE = ("-cell 70 80 90 75 85 95 -misset 10 20 30 -N 4 -default_F 100 -lambda 1 -distance 60 -detpixels 12 "
        "-pixel 0.8 -oversample 1")
# every switch of KernelSpec the kernel takes, and every sample axis longer than one (few samples each: the
# interpreter evaluates each loop iteration in Python)
CASES = {
    "square": "",
    "round": "-round_xtal",
    "gauss": "-gauss_xtal",
    "tophat": "-tophat_spots -fudge 2",
    "n_inactive": "-Na 1 -Nb 3 -Nc 5",
    "curved": "-curved_det",
    "point_pixel": "-point_pixel",
    "thick": "-detector_thick 200 -detector_thicksteps 3 -detector_abs 300",
    "dmin_polar_first": "-dmin 4 -divergence 0.3 -divsteps 3",
    "nopolar": "-nopolar",
    "oversample_polar": "-oversample_polar -oversample 2 -dispersion 5 -dispsteps 2",
    "oversample_thick_omega": "-oversample_thick -oversample_omega -oversample 2 -detector_thick 100 "
    "-detector_thicksteps 2",
    "mosaic_phi": "-mosaic 1 -mosaic_domains 3 -phi 5 -osc 2 -phisteps 2",
    "grid_sources": "-hkl {inputs}/p1_h4.hkl -dispersion 2 -dispsteps 2 -oversample 2",
    "xds_tilted": "-xds -twotheta 20 -detector_rotx 5 -oversample 2",
}


@pytest.fixture(scope="module")
def gk():
    """gpu_kernel with its kernels decorated for this run: interpreted on the CPU, compiled under
    NB_DEVICE=cuda (triton reads TRITON_INTERPRET when a function is decorated)."""
    if not CUDA and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("triton was imported before this module switched its interpreter on: run this file alone")
    import nanobragg_torch.gpu_kernel as module

    return importlib.reload(module)


def _plan(flags: str, dtype: torch.dtype, device: torch.device, **kw):
    argv = flags.format(inputs=golden_dir() / "inputs").split()
    cfg, _ = config_from_flags(argv, cwd=os.devnull)
    return build_plan(cfg, dtype, device, compile=False, **kw)


def _check(gk, plan, rtol: float, sin: str = "poly") -> None:
    spec, x = plan.kernel.spec, plan.kernel.inputs
    idx = plan.pixel_order
    with torch.no_grad():
        ref, ref_omega = K.pixel_kernel(spec, x, idx)
        value, omega = gk.pixel_kernel_triton(spec, x, idx, sin=sin)
    assert float(ref.abs().max()) > 0
    torch.testing.assert_close(value, ref, rtol=rtol, atol=rtol * float(ref.abs().max()))
    torch.testing.assert_close(omega, ref_omega, rtol=rtol, atol=0.0)


@pytest.mark.parametrize("name", sorted(CASES))
def test_triton_equals_evaluator_float64(gk, name, device):
    plan = _plan(f"{BASE} {CASES[name]}", torch.float64, device)
    assert gk.unsupported(plan.kernel.spec, plan.kernel.inputs) is None
    _check(gk, plan, 1e-12)


@pytest.mark.parametrize("sin", ["poly", "libsin"])
@pytest.mark.parametrize("name", ["square", "mosaic_phi", "grid_sources", "xds_tilted"])
def test_triton_equals_evaluator_float32(gk, name, sin, device):
    """float32: the evaluator's library sin against the polynomial (or the device's sin), summed in another
    order: a few float32 ulps of the brightest pixel."""
    plan = _plan(f"{BASE} {CASES[name]}", torch.float32, device)
    _check(gk, plan, 1e-5, sin)


def test_triton_precise_hkl(gk, device):
    """A float32 plan with float64 Miller indices (kernel.reduced): the index arithmetic stays float64."""
    plan = _plan(f"{BASE} -N 40", torch.float32, device, precise_hkl=True)
    assert plan.kernel.spec.precise_hkl and plan.kernel.inputs.cells.dtype == torch.float64
    _check(gk, plan, 1e-5)


def test_triton_batched_cells(gk, device):
    """(B, R, 3, 3) cells (batch.py's shared path): one image per cell set, each the evaluator's."""
    plan = _plan(f"{BASE} {CASES['mosaic_phi']}", torch.float64, device)
    x = plan.kernel.inputs
    turned = x.cells @ torch.linalg.matrix_exp(torch.tensor([[0, -0.01, 0], [0.01, 0, 0], [0, 0, 0]],
                                                            dtype=x.cells.dtype, device=x.cells.device))
    cells = torch.stack([x.cells, turned])
    xb = x._replace(cells=cells)
    with torch.no_grad():
        ref, _ = K.pixel_kernel(plan.kernel.spec, xb, plan.pixel_order)
        value, _ = gk.pixel_kernel_triton(plan.kernel.spec, xb, plan.pixel_order)
    assert value.shape == ref.shape == (2, plan.pixel_order.numel())
    assert not torch.allclose(ref[0], ref[1])
    torch.testing.assert_close(value, ref, rtol=1e-12, atol=1e-12 * float(ref.abs().max()))


def test_triton_refuses_what_it_does_not_render(gk):
    plan = _plan(BASE, torch.float64, torch.device("cpu"))
    spec = plan.kernel.spec
    import dataclasses

    assert "panel" in gk.unsupported(dataclasses.replace(spec, panels=2), plan.kernel.inputs)
    with pytest.raises(ValueError, match="sin mode"):
        gk.pixel_kernel_triton(spec, plan.kernel.inputs, plan.pixel_order, sin="fast")


def test_dispatch_cpu_never_takes_triton():
    """The Triton kernel is a CUDA path: a CPU plan keeps its eager/AOT forms even with triton installed."""
    cfg, _ = config_from_flags(BASE.split(), cwd=os.devnull)
    for compile in (None, True):
        plan = build_plan(cfg, torch.float32, "cpu", compile=compile)
        assert plan.kernel.mode != "triton"


@pytest.mark.cuda
def test_dispatch_cuda_render_takes_triton(device):
    """A CUDA plan without gradients renders through the Triton kernel, and the image is the eager one; with
    gradients it takes the autograd path."""
    if not CUDA:
        pytest.skip("needs NB_DEVICE=cuda")
    cfg, _ = config_from_flags(f"{BASE} {CASES['mosaic_phi']}".split(), cwd=os.devnull)
    plan = build_plan(cfg, torch.float64, device)
    assert plan.kernel.mode == "triton"
    with torch.no_grad():
        image = render(plan).image
        ref = render(build_plan(cfg, torch.float64, device, compile=False)).image
    torch.testing.assert_close(image, ref, rtol=1e-12, atol=1e-12 * float(ref.abs().max()))
    distance = torch.tensor(0.06, dtype=torch.float64, device=device, requires_grad=True)
    import dataclasses

    cfg_g = dataclasses.replace(cfg, detector=dataclasses.replace(cfg.detector, distance=distance))
    image = render(build_plan(cfg_g, torch.float64, device)).image
    image.sum().backward()
    assert distance.grad is not None and torch.isfinite(distance.grad)
