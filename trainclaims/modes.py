"""The numerics modes by name (no torch here: the plugin, the report readers and the gate use the
names without importing torch). What each mode does is in :mod:`trainclaims.numerics`."""

from __future__ import annotations

MODES: dict[str, str] = {
    "ieee": "IEEE float32 matmul and convolution, eager (the reference)",
    "tf32": "TensorFloat-32 for float32 matmul (cuBLAS) and convolution (cuDNN); CUDA, Ampere or newer",
    "bf16-autocast": "torch.autocast to bfloat16 around the forward pass and the loss",
    "fp16-autocast": "torch.autocast to float16 around the forward pass and the loss, GradScaler where it trains",
    "compile": "torch.compile of the trained model (inductor), IEEE float32",
}
REFERENCE = "ieee"


def mode_order(mode: str) -> int:
    """Where ``mode`` sorts among the modes (the order of :data:`MODES`; unknown names last)."""
    return list(MODES).index(mode) if mode in MODES else len(MODES)


def parse_modes(text: str) -> tuple[str, ...]:
    """``"ieee,bf16-autocast"`` -> ("ieee", "bf16-autocast"); an error names the unknown ones."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ValueError(f"no mode given; accepted: {', '.join(MODES)}")
    unknown = [n for n in names if n not in MODES]
    if unknown:
        raise ValueError(f"unknown mode {', '.join(map(repr, unknown))}; accepted: {', '.join(MODES)}")
    return tuple(dict.fromkeys(names))
