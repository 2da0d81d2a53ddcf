"""GPU inventory: real GPUs through NVML, or virtual ones where there is no driver.

Virtual GPUs let a laptop or a CI machine exercise the whole scheduling path: they
are assigned through ``CUDA_VISIBLE_DEVICES`` exactly like real ones, they just
have no hardware behind them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Gpu:
    index: int
    uuid: str
    name: str
    memory_bytes: int
    virtual: bool = False

    def to_dict(self) -> dict:
        return {
            "index": self.index,
            "uuid": self.uuid,
            "name": self.name,
            "memory_bytes": self.memory_bytes,
            "virtual": self.virtual,
        }


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def nvml_gpus() -> list[Gpu]:
    """The GPUs NVML sees; raises ``pynvml.NVMLError`` where there is no driver."""
    import pynvml

    pynvml.nvmlInit()
    try:
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            gpus.append(
                Gpu(
                    index=index,
                    uuid=_text(pynvml.nvmlDeviceGetUUID(handle)),
                    name=_text(pynvml.nvmlDeviceGetName(handle)),
                    memory_bytes=int(pynvml.nvmlDeviceGetMemoryInfo(handle).total),
                )
            )
        return gpus
    finally:
        pynvml.nvmlShutdown()


def virtual_gpus(count: int, node: str, memory_bytes: int) -> list[Gpu]:
    return [
        Gpu(index=i, uuid=f"VIRTUAL-{node}-{i}", name="Virtual GPU", memory_bytes=memory_bytes, virtual=True)
        for i in range(count)
    ]


def discover(mode: str, virtual_count: int, node: str, virtual_memory_bytes: int) -> tuple[str, list[Gpu]]:
    """Returns ``(mode_in_use, gpus)``.

    ``mode`` is ``"auto"`` (NVML if a driver answers, else virtual), ``"nvml"``
    (fail without a driver) or ``"virtual"``.
    """
    if mode in ("auto", "nvml"):
        import pynvml

        try:
            gpus = nvml_gpus()
        except pynvml.NVMLError as e:
            if mode == "nvml":
                raise RuntimeError(f"GPU discovery through NVML failed: {e}") from e
            log.warning("NVML unavailable (%s): using %d virtual GPUs", e, virtual_count)
        else:
            log.info("NVML found %d GPU(s): %s", len(gpus), ", ".join(g.name for g in gpus))
            return "nvml", gpus
    elif mode != "virtual":
        raise ValueError(f"unknown GPU mode {mode!r}; use auto, nvml or virtual")
    else:
        log.info("Using %d virtual GPUs (GPU mode 'virtual')", virtual_count)
    return "virtual", virtual_gpus(virtual_count, node, virtual_memory_bytes)


def nvml_utilization(indices: list[int]) -> dict[int, int]:
    """Current utilisation (percent) of the given GPUs, as NVML reports it."""
    import pynvml

    pynvml.nvmlInit()
    try:
        return {
            i: int(pynvml.nvmlDeviceGetUtilizationRates(pynvml.nvmlDeviceGetHandleByIndex(i)).gpu)
            for i in indices
        }
    finally:
        pynvml.nvmlShutdown()
