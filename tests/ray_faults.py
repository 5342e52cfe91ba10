"""A fault that Ray's workers see, for tests/test_scale.py's retried partition: Ray runs
``fail_first_partition_once`` in every worker process it starts (``worker_process_setup_hook``), and
the first partition task to start after it fails with an OSError; a marker file that the failing attempt
removes makes it fail once only, whichever worker retries it. Not a test module (no ``test_`` prefix)."""

import os
from pathlib import Path

import sceneloc.scale.ray_mapping as scale

#: the marker file: present until the first attempt fails
MARKER_ENV = "SCENELOC_TEST_FAULT_MARKER"


def fail_first_partition_once() -> None:
    marker = Path(os.environ[MARKER_ENV])
    real = scale.map_scene

    def flaky(dataset, out, *args, **kwargs):
        with open(marker.with_suffix(".attempts"), "a") as log:   # one line per attempt, any worker
            log.write(f"{Path(out).name}\n")
        try:
            marker.unlink()
        except FileNotFoundError:
            return real(dataset, out, *args, **kwargs)
        raise OSError(f"injected fault: {Path(out).name} lost its disk")

    scale.map_scene = flaky
