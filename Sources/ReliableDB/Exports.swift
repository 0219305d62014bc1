// The time types (MonotonicTime, ReliabilityClock, SystemClock, alarms) live in ReliableDBClock,
// which the pool shares; every user of ReliableDB sees them through this import.
@_exported import ReliableDBClock
