"""The tamper-evident audit trail: a hash-chained ledger of alerts, operator actions, studies and reports."""
