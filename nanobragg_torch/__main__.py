import os
import sys

from .cli import main

code = main()
# every output file is written and closed by now: skip the interpreter's teardown of torch's modules and
# thread pools (0.1-0.5 s of a small run's wall time; tools/bench.py --startup, "exit")
try:
    sys.stdout.flush()
    sys.stderr.flush()
except OSError:  # stdout's reader left (`| head`): nothing more to say
    pass
os._exit(code)
