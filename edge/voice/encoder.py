"""The speaker encoder: resemblyzer's GE2E network run in numpy.

An utterance's trimmed speech is cut into 1.6 s partials (1.3 per second, so they
overlap); each runs through a 3-layer LSTM (40 mel bands in, 256 hidden), whose last
hidden state goes through a linear layer, ReLU and L2 normalisation. The utterance's
voice print is the normalised mean of its partials' (resemblyzer's embed_utterance).

Cost is what matters on a Pi: all partials of an utterance run as one batch; each
layer's input projection is one matrix product over every time step, leaving one
(partials x 256) @ (256 x 1024) product per step; the sigmoid gates are computed as
tanh of half their input (the halving folded into the weights), so each step takes a
single tanh over all four gates, written in place.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from edge.errors import AudioError, ModelError
from edge.pcm import PIPELINE_RATE
from edge.voice.features import HOP, N_MELS, mel_spectrogram, preprocess
from edge.voice.weights import load_weights

HIDDEN = 256
"""LSTM width, and the length of a voice print."""
LAYERS = 3
GEMM_FROM = 4
"""Partials from which a step's recurrent product is one matrix product; fewer run one
vector product each. OpenBLAS's matrix product of 2 or 3 rows by the (256 x 1024) weights
costs twice as much a row as its vector product (measured on this project's AMD EPYC:
~55 against ~26 us; from 4 rows it is ~24): tagging's first partials are 2 rows."""

Embedding = NDArray[np.float32]
"""A voice print: 256 float32 numbers of unit length."""


@dataclass(frozen=True)
class EncoderSettings:
    """How an utterance is cut into partials (resemblyzer's defaults)."""

    partial_frames: int = 160
    """Mel frames (10 ms each) in one partial: 1.6 s, what the network was trained on."""
    rate: float = 1.3
    """Partials per second of speech. The cost is proportional to the number of partials:
    1.0 saves about a third (prints then differ slightly from resemblyzer's: cosine ~0.99)."""
    min_coverage: float = 0.75
    """Share of the last partial speech must fill for that partial to count."""
    min_speech: float = 1.2
    """Seconds of speech, once long silences are trimmed, an utterance needs: speech
    filling `min_coverage` of one partial (shorter ones give unreliable prints)."""
    batch: int = 16
    """Partials run through the network at once (~1 MB of working memory each)."""


@dataclass(frozen=True)
class _Layer:
    """One LSTM layer, gates reordered to (input, forget, output, cell) and the three
    sigmoid gates' rows halved: sigmoid(z) = (1 + tanh(z / 2)) / 2."""

    w_in: NDArray[np.float32]
    """(inputs, 4 x 256): the input projection, transposed."""
    w_rec: NDArray[np.float32]
    """(256, 4 x 256): the recurrent projection, transposed."""
    bias: NDArray[np.float32]
    """(4 x 256): both of torch's biases, summed."""

    @classmethod
    def from_torch(
        cls, w_ih: NDArray[np.float32], w_hh: NDArray[np.float32], b_ih: NDArray[np.float32], b_hh: NDArray[np.float32]
    ) -> _Layer:
        h = HIDDEN
        order = np.r_[0 : 2 * h, 3 * h : 4 * h, 2 * h : 3 * h]  # torch's (i, f, g, o) to (i, f, o, g)
        scale = np.r_[np.full(3 * h, 0.5), np.ones(h)].astype(np.float32)
        return cls(
            w_in=np.ascontiguousarray((w_ih[order] * scale[:, None]).T),
            w_rec=np.ascontiguousarray((w_hh[order] * scale[:, None]).T),
            bias=((b_ih + b_hh)[order] * scale).astype(np.float32),
        )

    def run(self, x: NDArray[np.float32]) -> NDArray[np.float32]:
        """(time, batch, inputs) to the hidden states (time, batch, 256), from zero state."""
        steps, batch, _ = x.shape
        h = HIDDEN
        gates = (x.reshape(steps * batch, -1) @ self.w_in).reshape(steps, batch, 4 * h)
        gates += self.bias
        out = np.empty((steps, batch, h), dtype=np.float32)
        cell = np.zeros((batch, h), dtype=np.float32)
        recurrent = np.empty((batch, 4 * h), dtype=np.float32)
        scratch = np.empty((batch, h), dtype=np.float32)
        for t in range(steps):
            g = gates[t]
            if t:
                if batch < GEMM_FROM:
                    for row in range(batch):
                        np.matmul(out[t - 1, row], self.w_rec, out=recurrent[row])
                else:
                    np.matmul(out[t - 1], self.w_rec, out=recurrent)
                g += recurrent
            np.tanh(g, out=g)
            sig = g[:, : 3 * h]
            sig *= 0.5
            sig += 0.5
            cell *= g[:, h : 2 * h]
            np.multiply(g[:, :h], g[:, 3 * h :], out=scratch)
            cell += scratch
            np.tanh(cell, out=scratch)
            np.multiply(g[:, 2 * h : 3 * h], scratch, out=out[t])
        return out


class SpeakerEncoder:
    """Voice prints of utterances. Load once (~0.05 s, 5.4 MiB of weights); `embed` keeps
    no state between calls, so threads may share one encoder."""

    def __init__(self, weights: Mapping[str, NDArray[np.float32]], settings: EncoderSettings | None = None, where: str = "weights") -> None:
        self.settings = settings or EncoderSettings()
        shapes: dict[str, tuple[int, ...]] = {f"lstm.weight_ih_l{k}": (4 * HIDDEN, N_MELS if k == 0 else HIDDEN) for k in range(LAYERS)}
        shapes |= {f"lstm.weight_hh_l{k}": (4 * HIDDEN, HIDDEN) for k in range(LAYERS)}
        shapes |= {f"lstm.bias_{kind}_l{k}": (4 * HIDDEN,) for kind in ("ih", "hh") for k in range(LAYERS)}
        shapes |= {"linear.weight": (HIDDEN, HIDDEN), "linear.bias": (HIDDEN,)}
        wrong = [
            f"{name} {weights[name].shape if name in weights else 'missing'}, expected {shape}"
            for name, shape in shapes.items()
            if name not in weights or weights[name].shape != shape
        ]
        if wrong:
            raise ModelError(f"{where}: not the speaker encoder's weights: " + "; ".join(wrong))
        self._layers = [
            _Layer.from_torch(*(weights[f"lstm.{kind}_l{k}"] for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")))
            for k in range(LAYERS)
        ]
        self._linear_w = np.ascontiguousarray(weights["linear.weight"].T)
        self._linear_b = weights["linear.bias"].astype(np.float32)

    @classmethod
    def load(cls, path: Path | None = None, settings: EncoderSettings | None = None) -> SpeakerEncoder:
        """The pretrained encoder from `path`, by default resemblyzer 0.1.4's installed file
        (its digest is checked either way)."""
        return cls(load_weights(path), settings, str(path) if path else "resemblyzer's pretrained.pt")

    def embed(self, pcm: bytes) -> Embedding:
        """The voice print of one utterance of pipeline PCM (16 kHz mono int16)."""
        return self.embed_speech(pcm)[0]

    def embed_speech(self, pcm: bytes) -> tuple[Embedding, float]:
        """The voice print of one utterance, and the seconds of speech it was made from
        (AudioError when there is too little)."""
        mels, speech = self.partial_mels(pcm)
        prints = self.embed_partials(mels)
        try:
            return mean_print(prints), speech
        finally:
            prints.fill(0)
            mels.fill(0)

    def partial_mels(self, pcm: bytes) -> tuple[NDArray[np.float32], float]:
        """The (partials, frames, 40) mel spectrograms of an utterance's partials, in order, and
        the seconds of speech they were cut from (AudioError when there is too little): so a
        caller can embed the first partials and decide whether it needs the rest."""
        wav = preprocess(pcm)
        speech = len(wav) / PIPELINE_RATE
        if speech < self.settings.min_speech:
            raise AudioError(
                f"too little speech to recognise the voice: {speech:.2f} s once long silences are trimmed "
                f"({len(pcm) / 2 / PIPELINE_RATE:.2f} s of audio); at least {self.settings.min_speech:.1f} s of speech are needed"
            )
        starts = self.partial_starts(len(wav))
        frames = self.settings.partial_frames
        end = (starts[-1] + frames) * HOP
        mel = mel_spectrogram(np.pad(wav, (0, max(0, end - len(wav)))))
        return np.stack([mel[s : s + frames] for s in starts]), speech

    def partial_starts(self, samples: int) -> list[int]:
        """First mel frame of each partial of `samples` samples of trimmed speech
        (resemblyzer's compute_partial_slices)."""
        frames = self.settings.partial_frames
        n_frames = int(np.ceil((samples + 1) / HOP))
        step = int(np.round(PIPELINE_RATE / self.settings.rate / HOP))
        if not 0 < step <= frames:
            raise ModelError(f"speaker encoder rate {self.settings.rate}/s: partials would not cover the speech; use 0.625 to 100")
        starts = list(range(0, max(1, n_frames - frames + step + 1), step))
        coverage = (samples - starts[-1] * HOP) / (frames * HOP)
        if coverage < self.settings.min_coverage and len(starts) > 1:
            starts.pop()
        return starts

    def embed_partials(self, mels: NDArray[np.float32]) -> NDArray[np.float32]:
        """(partials, frames, 40) mel spectrograms to (partials, 256) unit-length prints."""
        out = np.empty((len(mels), HIDDEN), dtype=np.float32)
        for first in range(0, len(mels), self.settings.batch):
            x = np.ascontiguousarray(mels[first : first + self.settings.batch].transpose(1, 0, 2), dtype=np.float32)
            for layer in self._layers:
                x = layer.run(x)
            raw = np.maximum(x[-1] @ self._linear_w + self._linear_b, 0)
            out[first : first + len(raw)] = raw / np.maximum(np.linalg.norm(raw, axis=1, keepdims=True), np.finfo(np.float32).tiny)
        return out


def mean_print(prints: NDArray[np.float32]) -> Embedding:
    """The voice print of an utterance from its partials' (partials, 256): their normalised mean."""
    return _unit(np.mean(prints, axis=0))


def _unit(vector: NDArray[np.float32]) -> Embedding:
    norm = np.linalg.norm(vector)
    return (vector / norm if norm > 0 else vector).astype(np.float32)


def average(prints: Sequence[Embedding]) -> Embedding:
    """One voice print for several utterances of a voice: their normalised mean
    (resemblyzer's embed_speaker)."""
    if not prints:
        raise ValueError("average() needs at least one voice print")
    return _unit(np.mean(np.stack(prints), axis=0))


def cosine(a: NDArray[np.float32], b: NDArray[np.float32]) -> float:
    """Cosine similarity: 1 for the same direction; 0 when either vector is zero."""
    norms = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.dot(a, b)) / norms if norms > 0 else 0.0
