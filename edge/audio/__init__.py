"""Audio in: WAV files and the microphone, both delivered as pipeline PCM (edge.pcm)."""
