"""Physical constants and stream limits with one definition each, shared by every default in the package."""

#: speed of sound in air at about 20 degrees C (m/s): the default of every ``speed_of_sound`` / ``c`` argument
SPEED_OF_SOUND = 343.0

#: longest audio message accepted (s): longer ones are dropped as ``oversized`` (a stalled or misconfigured driver);
#: the default of perception_node's ``max_chunk_seconds`` and of :class:`~avperception.audio.ingest.AudioIngest`
MAX_CHUNK_SECONDS = 1.0

# how a student's layout head gives the floor and the ceiling (models.student.StudentConfig.layout_heights)
LAYOUT_HEIGHTS = ("direct", "ordered")
