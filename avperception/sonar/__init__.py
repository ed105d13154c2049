"""Active sonar: the ping onsets in a recording, one window per ping, and the emitter's bookkeeping.

- :mod:`.onset`: the sweep's direct path (:class:`DirectPath`), onset refinement and detection, and the
  round-trip latency of a full-duplex device;
- :mod:`.align`: :class:`PingAligner`, from an audio stream and Ping stamps to windows whose sample 0
  is the sweep's onset;
- :mod:`.emitter`: :class:`PingSchedule`, what the capture node writes to the speaker and where each
  onset lands in the input;
- :mod:`.calibrate`: ``avperception calibrate-latency``.

Pure numpy/scipy; only :mod:`.calibrate` opens a sound device (sounddevice, imported when used).
"""

from .align import SKIP_REASONS, AlignedWindow, PingAligner
from .emitter import PingSchedule, onset_stamp
from .onset import DirectPath, detect_onsets, direct_score, estimate_output_latency, refine_onset

__all__ = ["AlignedWindow", "DirectPath", "PingAligner", "PingSchedule", "SKIP_REASONS", "detect_onsets",
           "direct_score", "estimate_output_latency", "onset_stamp", "refine_onset"]
