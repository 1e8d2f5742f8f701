"""Bech32 (BIP 173) without the 90-character limit, as age uses it for keys."""

from __future__ import annotations

_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_GENERATOR = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)


def _polymod(values: list[int]) -> int:
    checksum = 1
    for value in values:
        top = checksum >> 25
        checksum = (checksum & 0x1FFFFFF) << 5 ^ value
        for bit in range(5):
            checksum ^= _GENERATOR[bit] if (top >> bit) & 1 else 0
    return checksum


def _expand_hrp(hrp: str) -> list[int]:
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def _convert_bits(data: bytes | list[int], from_bits: int, to_bits: int, pad: bool) -> list[int]:
    accumulator, bits, out = 0, 0, []
    max_value = (1 << to_bits) - 1
    for value in data:
        accumulator = (accumulator << from_bits) | value
        bits += from_bits
        while bits >= to_bits:
            bits -= to_bits
            out.append((accumulator >> bits) & max_value)
    if pad and bits:
        out.append((accumulator << (to_bits - bits)) & max_value)
    elif not pad and (bits >= from_bits or (accumulator << (to_bits - bits)) & max_value):
        raise ValueError("invalid bech32 padding")
    return out


def encode(hrp: str, data: bytes) -> str:
    """Lowercase bech32 string; callers upper-case it where the format wants that."""
    hrp = hrp.lower()
    words = _convert_bits(data, 8, 5, pad=True)
    checksum = _polymod(_expand_hrp(hrp) + words + [0] * 6) ^ 1
    words += [(checksum >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(_CHARSET[w] for w in words)


def decode(text: str) -> tuple[str, bytes]:
    """(hrp, data); raises ValueError for mixed case, bad characters or a bad checksum."""
    if text.lower() != text and text.upper() != text:
        raise ValueError("mixed-case bech32")
    text = text.lower()
    split = text.rfind("1")
    if split < 1 or len(text) - split < 7:
        raise ValueError("malformed bech32")
    hrp, rest = text[:split], text[split + 1 :]
    if any(c not in _CHARSET for c in rest) or any(not 33 <= ord(c) <= 126 for c in hrp):
        raise ValueError("invalid bech32 character")
    words = [_CHARSET.index(c) for c in rest]
    if _polymod(_expand_hrp(hrp) + words) != 1:
        raise ValueError("bad bech32 checksum")
    return hrp, bytes(_convert_bits(words[:-6], 5, 8, pad=False))
