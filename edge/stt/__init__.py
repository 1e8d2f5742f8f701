"""Offline speech-to-text with Vosk: finding a model, and decoding sessions."""
