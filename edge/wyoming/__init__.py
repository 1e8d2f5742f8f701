"""edge as a Wyoming speech-to-text server: Home Assistant Assist and Rhasspy 3 send an
utterance, edge tags, seals, decodes and audits it like any other session, then answers."""
