"""Who is speaking: a speaker encoder that runs on the device, in numpy.

resemblyzer's pretrained GE2E encoder (PyPI, Apache-2.0) turns an utterance into a
256-number voice print; two prints of the same voice point the same way. Only its
weights file is used: it is read without torch (weights), the audio is prepared as
resemblyzer prepares it (features), and the network runs in numpy (encoder), so
torch, hundreds of MiB, never becomes a dependency of edge.
"""
