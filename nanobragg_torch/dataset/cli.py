"""Console script `nanobragg-dataset SPEC --out DIR`: render a many-shot dataset (see docs/datasets.md)."""

from __future__ import annotations

import argparse
import sys

from ..errors import InputError
from .run import make_dataset, print_line, render_only


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nanobragg-dataset", description="Render the shots of a dataset SPEC (TOML).")
    p.add_argument("spec", help="the SPEC file (TOML; see docs/datasets.md)")
    p.add_argument("--out", required=True, help="output folder (on a Ray cluster: a path every node shares)")
    p.add_argument("--engine", choices=("local", "ray"), default="local")
    p.add_argument("--address", default=None,
                   help="Ray cluster: 'auto', HOST:PORT (ray start --head on the head node); none: a local instance")
    p.add_argument("--workers", type=int, default=1, help="local: processes (1: this process); ray without "
                   "--address: size of the local instance (default 1)")
    p.add_argument("--threads", type=int, default=None, help="torch threads per worker (default: cores/workers)")
    p.add_argument("--gpus-per-task", type=float, default=None,
                   help="ray: GPUs per shard task (default: 1 when the cluster has GPUs, else 0; 0.5 shares one)")
    p.add_argument("--retries", type=int, default=3, help="times a shard whose worker died is run again")
    p.add_argument("--resume", action="store_true", help="keep the verified shards in --out, render the rest")
    p.add_argument("--only", type=int, default=None, metavar="SHOT",
                   help="render shot SHOT alone into --out and print its manifest line")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        for name in ("workers", "threads", "retries"):
            value = getattr(args, name)
            if value is not None and value < (0 if name == "retries" else 1):
                raise InputError(f"flag --{name}: expected a positive number, got {value}")
        if args.gpus_per_task is not None and args.gpus_per_task < 0:
            raise InputError(f"flag --gpus-per-task: expected >= 0, got {args.gpus_per_task}")
        if args.address is not None and args.engine != "ray":
            raise InputError("flag --address: only with --engine ray")
        if args.only is not None:
            print_line(render_only(args.spec, args.out, args.only))
            return 0
        summary = make_dataset(args.spec, args.out, args.engine, args.workers, args.address, args.threads,
                               args.gpus_per_task, args.retries, args.resume, progress=not args.no_progress)
    except InputError as exc:
        print(f"nanobragg-dataset: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. --out not writable
        print(f"nanobragg-dataset: error: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # a shard lost more often than --retries allows
        print(f"nanobragg-dataset: failed: {exc} (the finished shards stay; run again with --resume)",
              file=sys.stderr)
        return 1
    print(summary.line(args.engine))
    return 0


if __name__ == "__main__":
    sys.exit(main())
