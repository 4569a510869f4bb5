"""The engine: every state transition of a batch, and the pure rules behind them
(ARCHITECTURE.md, "Rooms and layers")."""
