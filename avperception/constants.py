"""Physical constants with one definition each, shared by every default in the package."""

#: speed of sound in air at about 20 degrees C (m/s): the default of every ``speed_of_sound`` / ``c`` argument
SPEED_OF_SOUND = 343.0
