"""``make demo-offline``: what the offline tools see in a capture, without a switch
(``iotclass inspect`` and the paper's segment features by category); ``make demo`` is the
end-to-end one.

Uses a home capture from ../shared/datasets when present, else a generated one.
"""

from __future__ import annotations

import os
import sys
import tempfile

from classifier.cli import main as iotclass
from classifier.shared import datasets_root


def main() -> int:
    root = datasets_root()
    tmp = tempfile.mkdtemp(prefix="iotclass-demo-")
    if root and (root / "home").is_dir():
        capture = str(root / "home" / "training_2023-5-26_1_13_9.pcapng.gz")
        labels = str(root / "home" / "devices.csv")
    else:
        from testing.synth import default_network, write_devices_csv, write_network_capture
        net = default_network()
        capture = os.path.join(tmp, "synthetic.pcap")
        labels = os.path.join(tmp, "devices.csv")
        write_network_capture(capture, net, 3600.0, seed=1)
        write_devices_csv(labels, net)
    print(f"== iotclass inspect {capture}")
    iotclass(["inspect", capture, "--devices", labels])
    out = os.path.join(tmp, "segments.csv")
    print(f"\n== iotclass features segments {capture} --set paper --out {out}")
    iotclass(["features", "segments", capture, "--devices", labels, "--set", "paper", "--labelled-only",
              "--out", out])
    import pandas as pd
    frame = pd.read_csv(out)
    print(frame.groupby("category")[["n_user", "len_user_mean", "n_control", "len_control_mean"]].mean().round(1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
