"""Runs a command with its output into LOG, then writes the command's peak
resident memory, in KiB, as the log's last line ("peak_rss_kib N"); exits
with the command's status. For scripts/bench_long_context.sh.

    peak_rss.py LOG COMMAND...
"""

import resource
import subprocess
import sys


def main():
    log, cmd = sys.argv[1], sys.argv[2:]
    with open(log, "w") as f:
        status = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT).returncode
        f.write(f"peak_rss_kib {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}\n")
    sys.exit(status)


if __name__ == "__main__":
    main()
