import signal
import sys

from .ops.cli import main

code = main()
# the work is done: a Ctrl-C while the interpreter shuts down has nothing left to stop, and
# would only print a traceback from an exit handler
signal.signal(signal.SIGINT, signal.SIG_IGN)
sys.exit(code)
