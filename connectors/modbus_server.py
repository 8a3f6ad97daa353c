"""A real Modbus TCP field device for the simulator and tests: pymodbus' server with the point
table's Modbus points as holding registers.

The register image is ours (one uint16 array per device, spanning its lowest to highest point
register, gaps readable as 0 so a poller may bridge them). pymodbus' SimData/SimDevice datastore
defines the same span, and the device's ``action`` hook (run on every access, documented as the
way to update registers) copies our image into the datastore before each read and takes client
writes back. So ``set_values`` is a plain synchronous call, safe from any code on the server's
loop, and values survive a stop/start.

Faults (``set_fault``) act per point, on any request touching its registers: ``"exception"``
answers with a Modbus exception (device failure); ``"timeout"`` sends no reply at all, so the
client times out as with a hung device. ``stop()``/``start()`` make the server go away and come
back on the same port.
"""

from __future__ import annotations

import asyncio
import functools

import numpy as np
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from pipetwin.connectors.modbus import encode_block
from pipetwin.connectors.points import ModbusAddress, PointTable

__all__ = ["FAULT_KINDS", "ModbusFieldServer"]

FAULT_KINDS = ("exception", "timeout")
_WRITE_CODES = (6, 16, 22, 23)


class ModbusFieldServer:
    """Serves the Modbus points of ``points`` on ``host:port`` (``port=0``: a free port, kept
    across restarts). ``await start()`` returns the line ``modbus HOST:PORT``."""

    def __init__(self, points: PointTable, host: str = "127.0.0.1", port: int = 0):
        self.points, self.host, self.port = points, host, port
        self._rows = {pid: r for pid, r in zip(points.ids, range(len(points)))
                      if points.protocol[r] == "modbus"}
        if not self._rows:
            raise ValueError(f"point table {points.site!r} has no Modbus points")
        self._images = _images(points.address[r] for r in self._rows.values())
        self._faults: dict[str, str] = {}
        self._drop_replies = 0
        self._server: ModbusTcpServer | None = None
        self._bound_port = port

    @property
    def bound_port(self) -> int:
        return self._bound_port

    @property
    def address(self) -> str:
        return f"modbus {self.host}:{self._bound_port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    async def start(self) -> str:
        """Listen (again); returns ``modbus HOST:PORT`` for the simulator to print."""
        if self._server is not None:
            return self.address
        devices = [SimDevice(id=unit, simdata=[SimData(start, values=[0] * len(image), datatype=DataType.REGISTERS)],
                             action=functools.partial(self._action, unit))
                   for unit, (start, image) in self._images.items()]
        server = ModbusTcpServer(devices, address=(self.host, self._bound_port), trace_packet=self._trace_packet)
        await server.serve_forever(background=True)
        self._server = server
        self._bound_port = server.transport.sockets[0].getsockname()[1]
        return self.address

    async def stop(self) -> None:
        """Close the listener and every client connection (the device goes away)."""
        if self._server is not None:
            server, self._server = self._server, None
            await server.shutdown()
            await asyncio.sleep(0)

    async def __aenter__(self) -> ModbusFieldServer:
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    def set_values(self, si: dict[str, float]) -> None:
        """Hold these SI values (converted to the points' raw units and register types)."""
        for pid, value in si.items():
            row = self._row(pid)
            a: ModbusAddress = self.points.address[row]
            raw = self.points.from_si(np.array([row]), np.array([value], float))
            self.set_registers(a.unit, a.register, encode_block(raw, a.type, a.order)[0])

    def set_registers(self, unit: int, register: int, words) -> None:
        """Write raw words into a device's image (tests, odd devices)."""
        start, image = self._images[unit]
        words = np.asarray(words, dtype=np.uint16)
        if register < start or register + len(words) > start + len(image):
            raise ValueError(f"registers {register}..{register + len(words) - 1} are outside device {unit}")
        image[register - start:register - start + len(words)] = words

    def registers(self, unit: int) -> tuple[int, np.ndarray]:
        """(first register, copy of the image) of a device."""
        start, image = self._images[unit]
        return start, image.copy()

    def set_fault(self, point_id: str, kind: str | None) -> None:
        """Make requests touching the point fail: ``"exception"`` or ``"timeout"``; None clears."""
        self._row(point_id)
        if kind is None:
            self._faults.pop(point_id, None)
        elif kind in FAULT_KINDS:
            self._faults[point_id] = kind
        else:
            raise ValueError(f"fault kind {kind!r} is not one of {FAULT_KINDS} or None")

    def clear_faults(self) -> None:
        self._faults.clear()

    def _row(self, point_id: str) -> int:
        try:
            return self._rows[point_id]
        except KeyError:
            raise KeyError(f"{point_id!r} is not a Modbus point of {self.points.site!r}") from None

    def _fault_for(self, unit: int, address: int, count: int) -> str | None:
        for pid, kind in self._faults.items():
            a: ModbusAddress = self.points.address[self._rows[pid]]
            if a.unit == unit and a.register < address + count and address < a.register + a.words:
                return kind
        return None

    async def _action(self, unit: int, function_code: int, start_address: int, address: int, count: int,
                      current_registers: list[int], set_values) -> ExcCodes | None:
        """pymodbus calls this on every access of a device, before answering."""
        kind = self._fault_for(unit, address, count)
        if kind == "exception":
            return ExcCodes.DEVICE_FAILURE
        if kind == "timeout":
            # The reply is built and sent right after this returns, with no await in between,
            # so the next reply sent is this one: ``_trace_packet`` swallows it.
            self._drop_replies += 1
        start, image = self._images[unit]
        if function_code in _WRITE_CODES and set_values:
            image[address - start:address - start + len(set_values)] = set_values
        offset = address - start_address
        current_registers[offset:offset + count] = image[address - start:address - start + count].tolist()
        return None

    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        if sending and self._drop_replies:
            self._drop_replies -= 1
            return b""
        return data


def _images(addresses) -> dict[int, tuple[int, np.ndarray]]:
    """Per device: (first register, zeroed uint16 image up to its last point register)."""
    spans: dict[int, tuple[int, int]] = {}
    for a in addresses:
        lo, hi = spans.get(a.unit, (a.register, a.register + a.words))
        spans[a.unit] = (min(lo, a.register), max(hi, a.register + a.words))
    return {unit: (lo, np.zeros(hi - lo, np.uint16)) for unit, (lo, hi) in sorted(spans.items())}
