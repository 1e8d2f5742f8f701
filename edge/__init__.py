"""edge: on-device privacy middleware for voice assistants.

Speech is transcribed offline (Vosk), every session is tagged with a household
profile, and what a profile keeps is governed by its retention policy.
"""

__version__ = "0.1.0"
