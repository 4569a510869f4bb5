"""The main event router: a Pub/Sub push becomes one engine call; ``wiring`` builds the engine."""
