"""``edgepack quickstart``: the whole mission on embedded defaults, in a fresh folder, offline.

Trains a tiny digits model (sklearn's bundled data) and registers it, converts it to ONNX, quantizes it
to INT8, compiles an FPGA package, builds the multi-arch module image (an OCI layout, or pushed with a
registry), writes and validates the IoT Edge deployment manifest, serves the scoring module and scores
test images over HTTP (and MQTT when a broker answers); :func:`run_quickstart` returns the
:class:`Report`.
"""

from packager.quickstart.report import Report, StepResult
from packager.quickstart.run import DEFAULT_DIRECTORY, SKIPPABLE, STEP_NAMES, run_quickstart
from packager.quickstart.steps import Options

__all__ = ["DEFAULT_DIRECTORY", "SKIPPABLE", "STEP_NAMES", "Options", "Report", "StepResult", "run_quickstart"]
