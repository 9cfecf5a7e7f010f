"""Peak memory of parse_lead on a message with one 25 MB attachment.

Run from the repository root::

    python benchmarks/memory_attachment.py [--size-mb 25] [--store]

The message is built in one child interpreter and measured in another, so
that neither inherits the other's peak: Linux keeps ru_maxrss across fork and
exec. The baseline is the peak resident set size (ru_maxrss) after importing
leadparse and building the default pipeline, before reading the message; the
result is the peak after parse_lead returns. Their
difference includes the raw message bytes the caller holds. The target is a
difference of at most three times the message size. Linux only, because
ru_maxrss is read in KiB as Linux reports it.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from pathlib import Path

MIB = 1024 * 1024


def build_message(size: int) -> bytes:
    """Build a multipart message with a short body and one random binary file."""
    message = MIMEMultipart()
    message["From"] = "Dana Reyes <dana@example.com>"
    message["To"] = "sales@example.net"
    message["Subject"] = "Drawings for the quote"
    message["Message-ID"] = "<memory-benchmark@example.com>"
    message.attach(MIMEText("Drawings attached, please quote.\n", "plain"))
    payload = random.Random(0).randbytes(size)
    attachment = MIMEApplication(payload, "octet-stream", Name="drawings.bin")
    attachment["Content-Disposition"] = 'attachment; filename="drawings.bin"'
    message.attach(attachment)
    return message.as_bytes()


_MEASURE = """
import json, resource, sys, tempfile
from leadparse import Policy, parse_lead
from leadparse.store import FileSystemStore
from leadparse.pipeline import Pipeline
Pipeline.default()
baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
raw = open(sys.argv[1], "rb").read()
policy = Policy()
if sys.argv[2] == "store":
    policy = Policy(attachment_store=FileSystemStore(tempfile.mkdtemp()))
lead = parse_lead(raw, policy=policy)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"baseline": baseline, "peak": peak,
                  "attachments": [a.size for a in lead.attachments]}))
"""


def main() -> None:
    """Write the message to a temporary file and measure one parse of it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--size-mb", type=float, default=25.0, help="attachment size in MiB"
    )
    parser.add_argument(
        "--store", action="store_true", help="store attachments on disk"
    )
    parser.add_argument("--write-message", metavar="PATH", help=argparse.SUPPRESS)
    args = parser.parse_args()
    size = int(args.size_mb * MIB)
    if args.write_message:
        Path(args.write_message).write_bytes(build_message(size))
        return

    with tempfile.NamedTemporaryFile(suffix=".eml") as handle:
        subprocess.run(
            [
                sys.executable,
                __file__,
                "--size-mb",
                str(args.size_mb),
                "--write-message",
                handle.name,
            ],
            check=True,
        )
        raw_size = Path(handle.name).stat().st_size
        output = subprocess.run(
            [
                sys.executable,
                "-c",
                _MEASURE,
                handle.name,
                "store" if args.store else "none",
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    result = json.loads(output)
    above = result["peak"] - result["baseline"]
    print(f"python {sys.version.split()[0]} on {sys.platform}")
    print(f"message size:        {raw_size / MIB:8.1f} MiB ({raw_size} bytes)")
    print(f"attachment sizes:    {result['attachments']}")
    print(f"baseline peak RSS:   {result['baseline'] / MIB:8.1f} MiB")
    print(f"parse peak RSS:      {result['peak'] / MIB:8.1f} MiB")
    print(
        f"above baseline:      {above / MIB:8.1f} MiB = {above / raw_size:.2f}x message size"
    )
    print("target:              <= 3.00x message size")


if __name__ == "__main__":
    main()
