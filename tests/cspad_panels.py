"""A private, test-side flattening of a dxtbx detector dictionary (hierarchy of groups, panels in local frames)
into lab-frame PanelConfigs, for the multi-panel tests and tools/bench_panels.py (the package's reader of
dxtbx files is another module's job; this keeps the tests independent of it).

dxtbx's rule (VirtualPanelFrame.update_global_frame): a node's lab fast/slow axes are R_parent @ local axes and
its lab origin is R_parent @ local origin + parent origin, R_parent = [fast | slow | fast x slow] of the
parent in the lab; the root's parent is the lab frame. Lengths in mm in the file, metres here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from nanobragg_torch.config import PanelConfig


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def flatten(path: str | Path) -> list[PanelConfig]:
    """Every panel of the dxtbx detector dictionary at `path` in lab coordinates, in panel-index order."""
    data = json.loads(Path(path).read_text())
    panels: dict[int, PanelConfig] = {}

    def walk(node: dict, R: np.ndarray, origin: np.ndarray) -> None:
        f = R @ _unit(node["fast_axis"])
        s = R @ _unit(node["slow_axis"])
        o = R @ np.asarray(node["origin"], dtype=np.float64) + origin
        frame = np.stack([f, s, np.cross(f, s)], axis=1)
        for child in node.get("children", []):
            if "panel" in child:
                p = data["panels"][child["panel"]]
                pf = frame @ _unit(p["fast_axis"])
                ps = frame @ _unit(p["slow_axis"])
                po = frame @ np.asarray(p["origin"], dtype=np.float64) + o
                fpix, spix = p["image_size"]
                px = p["pixel_size"]
                assert px[0] == px[1], "square pixels"
                panels[child["panel"]] = PanelConfig(
                    origin=tuple(po * 1e-3), fast_axis=tuple(pf), slow_axis=tuple(ps), pixel_size=px[0] * 1e-3,
                    fpixels=int(fpix), spixels=int(spix), name=p.get("name", ""),
                )
            else:
                walk(child, frame, o)

    walk(data["hierarchy"], np.eye(3), np.zeros(3))
    return [panels[i] for i in sorted(panels)]
