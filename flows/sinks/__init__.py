"""Where the flow's results go: Redis for the latest state and the alert streams (``redis_sink``)."""

from pipetwin.flows.sinks.redis_sink import (RedisSink, RedisWriter, SinkStats, get_alert, open_alerts,
                                             read_state, recent_summaries, write_alert, write_state)

__all__ = ["RedisSink", "RedisWriter", "SinkStats", "write_state", "read_state", "recent_summaries",
           "write_alert", "get_alert", "open_alerts"]
