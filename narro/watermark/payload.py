"""What a mark carries, and the channel code around it (shared by every watermark version).

32 bits (organisation id: 8 bits, clip tag: 24 bits of sha256 over the content key) + CRC-16/CCITT
= 48 bits, convolutionally encoded (K=7, rate 1/2, generators 171/133 octal, 6 tail bits) into
108 coded bits, decoded by soft-decision Viterbi. A payload counts only if its CRC matches.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

DEFAULT_ORG = 0x6E
"""Organisation id embedded when none is configured ('n' for narro); settings.watermark.org_id."""

PAYLOAD_BITS, CRC_BITS, TAIL = 32, 16, 6
_K, _G = 7, (0o171, 0o133)
CODED_BITS = 2 * (PAYLOAD_BITS + CRC_BITS + TAIL)


@dataclass(frozen=True)
class Payload:
    """What a mark says: who published it and which clip version it is."""

    org: int
    clip_tag: int

    def as_int(self) -> int:
        return (self.org << 24) | self.clip_tag

    @classmethod
    def from_int(cls, value: int) -> Payload:
        return cls(org=value >> 24, clip_tag=value & 0xFFFFFF)

    def hex(self) -> str:
        return f"{self.as_int():08x}"

    def as_dict(self) -> dict[str, object]:
        return {"payload": self.hex(), "org": self.org, "clip_tag": f"{self.clip_tag:06x}"}


def clip_tag(content_key: str) -> int:
    """24 bits naming one clip version: the head of sha256 over its content key."""
    return int.from_bytes(hashlib.sha256(content_key.encode("ascii")).digest()[:3], "big")


def payload_for(content_key: str, org: int = DEFAULT_ORG) -> Payload:
    if not 0 <= org < 256:
        raise ValueError("organisation id must fit in 8 bits")
    return Payload(org=org, clip_tag=clip_tag(content_key))


def crc16(bits: np.ndarray) -> np.ndarray:
    crc = 0xFFFF
    for bit in bits:
        top = ((crc >> 15) & 1) ^ int(bit)
        crc = ((crc << 1) & 0xFFFF) ^ (0x1021 if top else 0)
    return np.array([(crc >> (15 - i)) & 1 for i in range(16)], dtype=np.int8)


def _bits(value: int, width: int) -> np.ndarray:
    return np.array([(value >> (width - 1 - i)) & 1 for i in range(width)], dtype=np.int8)


def _conv_encode(bits: np.ndarray) -> np.ndarray:
    state, out = 0, []
    for bit in np.concatenate([bits, np.zeros(TAIL, dtype=np.int8)]):
        state = ((state << 1) | int(bit)) & 0x7F
        out += [bin(state & g).count("1") & 1 for g in _G]
    return np.array(out, dtype=np.int8)


def coded(payload: Payload) -> np.ndarray:
    """The 108 coded bits (0/1) that carry `payload`."""
    message = _bits(payload.as_int(), PAYLOAD_BITS)
    return _conv_encode(np.concatenate([message, crc16(message)]))


def _trellis() -> tuple[np.ndarray, np.ndarray]:
    states = 1 << (_K - 1)
    nxt = np.arange(states)
    # For next state s (6 bits), the input bit is s & 1 and the predecessors are (s >> 1) | (0 or 32).
    preds = np.stack([nxt >> 1, (nxt >> 1) | (states >> 1)])  # (2, states)
    regs = (preds << 1 | (nxt & 1)) & 0x7F  # full 7-bit register per (pred choice, next state)
    outs = np.stack([np.vectorize(lambda r, g=g: bin(r & g).count("1") & 1)(regs) for g in _G])
    return preds, 2.0 * outs - 1.0


_PREDS, _SIGNS = _trellis()


def viterbi(soft: np.ndarray) -> np.ndarray:
    """Soft-decision Viterbi for the K=7 code: `soft` > 0 means coded bit 1; 0 is an erasure."""
    states = _PREDS.shape[1]
    nxt = np.arange(states)
    steps = len(soft) // 2
    metric = np.full(states, -np.inf)
    metric[0] = 0.0
    back = np.zeros((steps, states), dtype=np.int8)
    for t in range(steps):
        branch = _SIGNS[0] * soft[2 * t] + _SIGNS[1] * soft[2 * t + 1]  # (2, states)
        candidates = metric[_PREDS] + branch
        choice = np.argmax(candidates, axis=0)
        back[t] = choice
        metric = candidates[choice, nxt]
    state = 0  # the tail brings the encoder back to zero
    bits = np.zeros(steps, dtype=np.int8)
    for t in range(steps - 1, -1, -1):
        bits[t] = state & 1
        state = _PREDS[back[t, state], state]
    return bits[: steps - TAIL]


def decode(soft: np.ndarray) -> tuple[Payload | None, float]:
    """The payload the soft coded bits spell (None unless its CRC matches) and the share of
    coded-bit decisions that agree with it re-encoded (1.0 = a clean channel)."""
    bits = viterbi(soft)
    message, crc = bits[:PAYLOAD_BITS], bits[PAYLOAD_BITS:]
    payload = Payload.from_int(int("".join(map(str, message)), 2))
    recoded = 2.0 * coded(payload) - 1.0
    seen = soft != 0
    agreement = float(np.mean(np.sign(soft[seen]) == recoded[seen])) if seen.any() else 0.0
    return (payload if np.array_equal(crc, crc16(message)) else None), agreement
