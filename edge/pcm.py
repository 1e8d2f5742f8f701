"""Pipeline PCM: 16 kHz, mono, signed 16-bit little-endian (what Vosk models expect).

Audio in (files, microphone, Wyoming), the recognizer and the recorder all speak it.
"""

PIPELINE_RATE = 16000
"""Samples per second of pipeline audio."""
SAMPLE_BYTES = 2
"""Bytes per pipeline sample (int16)."""
FRAME_SAMPLES = 480
"""Samples in one analysis frame (30 ms): the unit the segmenter works in."""
FRAME_BYTES = FRAME_SAMPLES * SAMPLE_BYTES
FRAME_SECONDS = FRAME_SAMPLES / PIPELINE_RATE
