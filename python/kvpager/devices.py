"""Device spellings: which kvpager backend and CUDA ordinal a device argument asks for."""

from typing import Optional


def parse_device(device) -> tuple[Optional[str], Optional[int]]:
    """(backend, ordinal) for a device given as None, "cpu", "cuda", "cuda:N", an int N or a
    torch.device.

    None leaves both to KVPAGER_BACKEND / KVPAGER_DEVICE (default: CUDA when a device is
    present, else the host backend). "cpu" selects the host backend. Raises ValueError for
    anything else.
    """
    if device is None:
        return None, None
    if isinstance(device, bool):
        raise ValueError(f"not a device: {device!r}")
    if isinstance(device, int):
        return "cuda", device
    text = str(device)  # torch.device prints as "cuda:0" / "cpu"
    if text == "cpu":
        return "host", None
    if text == "cuda":
        return "cuda", None
    if text.startswith("cuda:") and text[5:].isdigit():
        return "cuda", int(text[5:])
    raise ValueError(f"unknown device {device!r} (use 'cpu', 'cuda' or 'cuda:N')")
