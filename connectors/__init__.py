"""Field connectors: OPC-UA, Modbus, meter feeds, replay, field simulator (issue 3)."""
