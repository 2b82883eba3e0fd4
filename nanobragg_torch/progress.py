"""The progress bar of long renders (tqdm on stderr): pixels done, samples/s, time left.

The C prints `N% done` lines on stdout (`progress_meter`); we draw a bar on stderr instead, so stdout keeps
only the C's report lines. Default: shown on a terminal once a render has run for `DELAY_S`; `-progress`
forces it (any stderr, at once), `-noprogress` silences it. The engine takes the callback that
`progress_bar` yields (`engine.render(progress=...)`: called after each chunk with pixels done and total).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator

from tqdm import tqdm

DELAY_S = 2.0  # renders shorter than this stay silent in the default mode

ProgressCallback = Callable[[int, int], None]  # (pixels done, pixels in the render)


def shown(force: bool | None) -> bool:
    """Whether a bar is drawn: `force` (-progress / -noprogress) when given, else only on a terminal."""
    if force is not None:
        return force
    return sys.stderr.isatty()


@contextlib.contextmanager
def progress_bar(pixels: int, samples_per_pixel: int, force: bool | None = None
                 ) -> Iterator[ProgressCallback | None]:
    """A callback for `engine.render(progress=...)` drawing a tqdm bar on stderr (`pixels` rendered), or None
    when not shown."""
    if not shown(force):
        yield None
        return
    bar = tqdm(total=pixels, unit="px", unit_scale=True, file=sys.stderr, delay=0.0 if force else DELAY_S,
               desc="render", bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} px "
               "[{elapsed}<{remaining}{postfix}]", postfix="? samples/s", dynamic_ncols=True)

    def update(done: int, total: int) -> None:
        if bar.total != total:
            bar.total = total
        rate = bar.format_dict.get("rate")
        if rate:
            bar.set_postfix_str(f"{rate * samples_per_pixel:.3g} samples/s", refresh=False)
        bar.update(done - bar.n)

    try:
        yield update
    finally:
        bar.close()
