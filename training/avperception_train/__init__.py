"""avperception training package: data engine, teachers and students, evaluation, export.

It imports the runtime package (avperception) for arrays, DSP and models, so
training and runtime share one implementation.
"""

__version__ = "0.1.0"
