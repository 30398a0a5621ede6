"""edge-sdk on Flower: the app's ServerApp and ClientApp come from ``edge_sdk.flower``."""
